"""GLUE RTE (accuracy) with the paper's recipe: configs/finetune/glue.py:rte.

bert-jax finetune --config configs/finetune/rte.py --workdir runs/rte \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "rte")
