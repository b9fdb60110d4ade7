"""GLUE MRPC (F1) with the paper's recipe: configs/finetune/glue.py:mrpc.

bert-jax finetune --config configs/finetune/mrpc.py --workdir runs/mrpc \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "mrpc")
