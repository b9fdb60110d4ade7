"""GLUE MNLI (matched dev accuracy) with the paper's recipe: configs/finetune/glue.py:mnli.

bert-jax finetune --config configs/finetune/mnli.py --workdir runs/mnli \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "mnli")
