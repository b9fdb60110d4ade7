"""GLUE CoLA (Matthews correlation) with the paper's recipe: configs/finetune/glue.py:cola.

    bert-jax finetune --config configs/finetune/cola.py --workdir runs/cola \
      --config.init_from=runs/bert_base
"""

import importlib.util
import pathlib

_SPEC = importlib.util.spec_from_file_location(
    "glue_recipe", pathlib.Path(__file__).with_name("glue.py"))
glue = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(glue)


def get_config():
  return glue.get_config("cola")
