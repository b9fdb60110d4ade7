"""The module a checkpoint describes (its meta: pretraining, or a fine-tuned task) and the
inputs its `init` takes.
"""

import jax.numpy as jnp

from bert_jax.model.pretraining import BertForPreTraining
from bert_jax.model.tasks import BertForTask


def model_for(model_config, meta):
  """The module a checkpoint's `meta` describes: pretraining, or a fine-tuned task."""
  task = meta.get("task")
  if task is None:
    return BertForPreTraining(model_config)
  return BertForTask(model_config, task, meta["num_labels"])


def dummy_inputs(model, length=8):
  """Positional arguments that `model.init` needs (ids of ones, shape (1, length))."""
  ids = jnp.ones((1, length), jnp.int32)
  if isinstance(model, BertForPreTraining):
    return ids, ids, ids, ids[:, :1]
  return ids, ids, ids
