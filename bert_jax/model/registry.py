"""The module a checkpoint describes (its meta: the family, pretraining, a fine-tuned task or
a sentence-embedding model) and the inputs its `init` takes.
"""

import jax.numpy as jnp

from bert_jax.model import embedding, families, tasks


def model_for(model_config, meta):
  """The module a checkpoint's `meta` describes: the family's pretraining model, a
  fine-tuned task's, or a sentence-embedding model (task "embedding").
  """
  task = meta.get("task")
  if task is None:
    return families.family(model_config.arch).pretraining(model_config)
  if task == embedding.TASK:
    return embedding.from_meta(model_config, meta)
  return tasks.ForTask(model_config, task, meta["num_labels"])


def config_for(meta):
  """The model config of a checkpoint's `meta`."""
  return families.config_from_dict(meta["model"])


def dummy_inputs(model, length=8):
  """Positional arguments that `model.init` needs (ids of ones, shape (1, length))."""
  ids = jnp.ones((1, length), jnp.int32)
  if isinstance(model, (tasks.ForTask, embedding.SentenceEmbedder)):
    return ids, ids, ids
  return ids, ids, ids, ids[:, :1]
