"""GLUE CoLA (Matthews correlation) with the paper's recipe: configs/finetune/glue.py:cola.

bert-jax finetune --config configs/finetune/cola.py --workdir runs/cola \
      --config.init_from=runs/bert_base
"""

from bert_jax import config as config_lib


def get_config():
  return config_lib.finetune_recipe("glue", "cola")
