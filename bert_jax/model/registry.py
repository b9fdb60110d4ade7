"""The module a checkpoint describes (its meta: the family, pretraining or a fine-tuned
task) and the inputs its `init` takes.
"""

import jax.numpy as jnp

from bert_jax.model import families, tasks


def model_for(model_config, meta):
  """The module a checkpoint's `meta` describes: the family's pretraining model, or a
  fine-tuned task's.
  """
  task = meta.get("task")
  if task is None:
    return families.family(model_config.arch).pretraining(model_config)
  return tasks.ForTask(model_config, task, meta["num_labels"])


def config_for(meta):
  """The model config of a checkpoint's `meta`."""
  return families.config_from_dict(meta["model"])


def dummy_inputs(model, length=8):
  """Positional arguments that `model.init` needs (ids of ones, shape (1, length))."""
  ids = jnp.ones((1, length), jnp.int32)
  if isinstance(model, tasks.ForTask):
    return ids, ids, ids
  return ids, ids, ids, ids[:, :1]
