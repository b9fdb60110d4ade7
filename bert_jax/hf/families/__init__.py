"""Each encoder family's Hugging Face side: one module per family (`MODULES`).

A family module defines:
- `ARCH`: our `config.model.arch`; `MODEL_TYPES`: the config.json `model_type`s it reads;
- `ARCHITECTURES`: {head: the `transformers` class an export names}, for "pretraining" and
  each fine-tuning task;
- `GROUPS`: {table group: how import names it when the checkpoint lacks it};
- `check_config(hf, path)`: UserError for a config.json our model cannot run;
- `model_kwargs(hf)`: our config's keyword arguments (vocab_size: the checkpoint's rows);
- `hf_config(model, vocab_size, tokenizer)`: the config.json of an export (the head's
  `architectures` and labels are added by the caller);
- `tensor_name(name)`: a checkpoint's tensor name as the table names it; "" for buffers
  and tied copies (skipped), None for tensors the table does not use (listed);
- `table(model, head)`: the `convert.Row`s of the model with `head` ("pretraining" or a
  task), in Hugging Face's order;
- optionally `export_parts(model, head)`: the models an export writes, when not the one of
  `table` (ELECTRA's replaced-token detection: the discriminator and, in a folder, the
  generator), with `GENERATOR_FOLDER` and `generator_hidden_size(kwargs, hf, path)`, which
  `import-hf` reads such a pair back with.
"""

import importlib

MODULES = {
  "bert": "bert_jax.hf.families.bert",
  "roberta": "bert_jax.hf.families.roberta",
  "distilbert": "bert_jax.hf.families.distilbert",
  "electra": "bert_jax.hf.families.electra",
  "albert": "bert_jax.hf.families.albert",
  "modernbert": "bert_jax.hf.families.modernbert",
}


def _available():
  """The family modules that exist in this installation."""
  found = {}
  for arch, name in MODULES.items():
    try:
      found[arch] = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name != name:
        raise
  return found


def for_arch(arch: str):
  """The Hugging Face module of our family `arch`."""
  return importlib.import_module(MODULES[arch])


def model_parts(family, model, head: str = "pretraining") -> list[tuple[str, object, list, str]]:
  """(folder within an export, model config, table rows, architecture) of each Hugging Face
  model that `model` with `head` is: the family's `export_parts` where it has them
  (ELECTRA's replaced-token detection is two), else the one model of its table. Export
  writes them and import reads them back.
  """
  if hasattr(family, "export_parts"):
    return family.export_parts(model, head)
  return [("", model, family.table(model, head), family.ARCHITECTURES[head])]


def model_types() -> tuple[str, ...]:
  """Every config.json `model_type` import-hf reads."""
  return tuple(t for module in _available().values() for t in module.MODEL_TYPES)


def for_model_type(model_type: str):
  """The family module that reads config.json's `model_type`, or None."""
  for module in _available().values():
    if model_type in module.MODEL_TYPES:
      return module
  return None
