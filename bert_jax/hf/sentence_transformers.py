"""The sentence-transformers side of an embedding run's export.

The family's base model (`BertModel`, `RobertaModel`, ...: the encoder rows of its
pretraining table without the model prefix) and the module files that make
`SentenceTransformer(DIR)` pool and normalise as the run does, with no custom code:

    modules.json                        Transformer -> Pooling (-> Normalize)
    sentence_bert_config.json           max_seq_length: the run's
    config_sentence_transformers.json   cosine similarity
    1_Pooling/config.json               the run's pooling mode
    2_Normalize/config.json             when the run normalises

The module types are the `sentence_transformers.models.*` names that every release since
2.0 reads (6.x maps them to its own classes).
"""

import dataclasses
import json
import os

from bert_jax import storage
from bert_jax.hf import convert

# Our family -> the `transformers` base model class and its prefix in the pretraining table.
BASE_MODELS = {
  "bert": ("BertModel", "bert."),
  "roberta": ("RobertaModel", "roberta."),
  "distilbert": ("DistilBertModel", "distilbert."),
  "electra": ("ElectraModel", "electra."),
  "albert": ("AlbertModel", "albert."),
  "modernbert": ("ModernBertModel", "model."),
}
POOLING_DIR, NORMALIZE_DIR = "1_Pooling", "2_Normalize"
# The meta key of an import's settings from these files (`read_modules`), which embed uses.
META_KEY = "sentence_transformers"
MODULE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MODULE_DIRS = (POOLING_DIR, NORMALIZE_DIR)
_POOLING_KEYS = {
  "cls": "pooling_mode_cls_token",
  "mean": "pooling_mode_mean_tokens",
  "max": "pooling_mode_max_tokens",
}


def base_architecture(arch: str) -> str:
  """The `transformers` base model class of our family `arch` (e.g. "BertModel")."""
  return BASE_MODELS[arch][0]


def base_rows(family, model) -> list[convert.Row]:
  """The encoder rows (our `bert/` parameters, the pooler included where the family has
  one) of `family`'s pretraining table, named as its base model names them (no prefix).
  """
  prefix = BASE_MODELS[family.ARCH][1]
  rows = []
  for row in family.table(model, "pretraining"):
    if row.ours[0] != "bert":
      continue
    if not row.hf.startswith(prefix):
      raise ValueError(f"{family.ARCH} encoder tensor {row.hf} lacks the prefix {prefix!r}")
    rows.append(dataclasses.replace(row, hf=row.hf[len(prefix) :]))
  return rows


def write_modules(
  directory: str, *, pooling: str, normalize: bool, hidden_size: int, max_seq_length: int
) -> None:
  """Writes the sentence-transformers module files (see the module docstring) into the
  local folder `directory`, beside the exported model.
  """
  modules = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
  ]
  if normalize:
    modules.append(
      {
        "idx": 2,
        "name": "2",
        "path": NORMALIZE_DIR,
        "type": "sentence_transformers.models.Normalize",
      }
    )
  pooling_config = {"word_embedding_dimension": hidden_size}
  pooling_config.update({key: mode == pooling for mode, key in _POOLING_KEYS.items()})
  pooling_config["pooling_mode_mean_sqrt_len_tokens"] = False
  _write_json(os.path.join(directory, "modules.json"), modules)
  _write_json(
    os.path.join(directory, "sentence_bert_config.json"),
    {"max_seq_length": max_seq_length, "do_lower_case": False},
  )
  _write_json(
    os.path.join(directory, "config_sentence_transformers.json"),
    {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
  )
  _write_json(os.path.join(directory, POOLING_DIR, "config.json"), pooling_config)
  if normalize:  # a file, so that the folder exists in a bucket too
    _write_json(os.path.join(directory, NORMALIZE_DIR, "config.json"), {})


def read_modules(hf_dir: str) -> dict | None:
  """What the sentence-transformers files of a checkpoint say about its vectors: {"pooling":
  "cls" | "mean" | "max", "normalize": bool, "max_seq_length": int | None}; None without a
  modules.json, or when its pipeline is not Transformer -> Pooling (-> Normalize) of one
  mode we pool by (weighted mean, a dense layer: other pipelines).
  """
  modules_path = storage.join(hf_dir, "modules.json")
  if not storage.exists(modules_path):
    return None
  try:
    modules = storage.read_json(modules_path)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
      return None
    pooling = storage.read_json(storage.join(hf_dir, modules[1]["path"], "config.json"))
    modes = [mode for mode, key in _POOLING_KEYS.items() if pooling.get(key)]
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if len(modes) != 1 or len(others) != 1:
      return None
    settings_path = storage.join(hf_dir, "sentence_bert_config.json")
    settings = storage.read_json(settings_path) if storage.exists(settings_path) else {}
  except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
    return None  # not the files sentence-transformers writes: read as a plain checkpoint
  return {
    "pooling": modes[0],
    "normalize": kinds[-1] == "Normalize",
    "max_seq_length": settings.get("max_seq_length"),
  }


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
