"""GLUE QQP (F1) with the paper's recipe: configs/finetune/glue.py:qqp.

bert-jax finetune --config configs/finetune/qqp.py --workdir runs/qqp \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "qqp")
