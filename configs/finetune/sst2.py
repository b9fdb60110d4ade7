"""GLUE SST-2 (accuracy) with the paper's recipe: configs/finetune/glue.py:sst2.

bert-jax finetune --config configs/finetune/sst2.py --workdir runs/sst2 \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "sst2")
