"""GLUE with the paper's recipe (Devlin et al. 2018, §4.1 and A.3); the task is the argument.

    bert-jax finetune --config configs/finetune/glue.py:sst2 --workdir runs/sst2 \
      --config.init_from=runs/bert_base [--config.train.learning_rate=3e-5]

Tasks: cola, sst2, mrpc, qqp, stsb (regression), mnli (evaluated on the matched dev set;
mnli_mismatched trains the same model and evaluates on the mismatched one), qnli, rte,
wnli. Batch 32, 3 epochs, 10 % warmup then linear decay, dropout 0.1, 128 tokens. The
paper picks the learning rate from 5e-5, 4e-5, 3e-5 and 2e-5 on the dev set; 2e-5 is the
default here, and `python -m bert_jax.finetune.glue` runs the whole sweep and writes Table 1.
Columns, splits and metrics come from the TFDS registry (`bert_jax/finetune/tfds_tasks.py`);
`config_lib.tfds_finetune_config(key)` is the part every TFDS recipe shares.
"""

import difflib

from bert_jax import config as config_lib
from bert_jax.finetune import tfds_tasks
from bert_jax.finetune.glue import LEARNING_RATES


def glue_tasks():
  """The registry's GLUE tasks that have a train split (all but the diagnostic `ax`)."""
  return [
    key
    for key, task in tfds_tasks.TASKS.items()
    if task.name.startswith("glue/") and task.train_split
  ]


def get_config(task=None):
  tasks = glue_tasks()
  if task not in tasks:
    close = difflib.get_close_matches(str(task), tasks, n=1)
    meant = f"did you mean :{close[0]}? " if close else ""
    raise ValueError(
      f"give the GLUE task after ':', e.g. configs/finetune/glue.py:sst2, "
      f"not {task!r}; {meant}tasks: {', '.join(tasks)}"
    )
  c = config_lib.tfds_finetune_config(task)
  c.data.max_seq_length = 128
  c.train.epochs = 3.0
  c.train.batch_size = 32
  c.train.learning_rate = min(LEARNING_RATES)  # the paper's lowest, 2e-5; pick on dev
  return c
