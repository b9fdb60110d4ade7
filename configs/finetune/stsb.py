"""GLUE STS-B (regression, Spearman) with the paper's recipe: configs/finetune/glue.py:stsb.

bert-jax finetune --config configs/finetune/stsb.py --workdir runs/stsb \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "stsb")
