"""GLUE QNLI (accuracy) with the paper's recipe: configs/finetune/glue.py:qnli.

bert-jax finetune --config configs/finetune/qnli.py --workdir runs/qnli \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "qnli")
