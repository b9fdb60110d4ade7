"""GLUE WNLI (accuracy) with the paper's recipe: configs/finetune/glue.py:wnli.

bert-jax finetune --config configs/finetune/wnli.py --workdir runs/wnli \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "wnli")
