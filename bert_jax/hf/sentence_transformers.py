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

import numpy as np

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
# Base models that build a pooler our family has no weights for: RobertaModel's (RoBERTa
# pretrains without one). The export writes it as zeros, so that the model loads whole,
# without `transformers`' "newly initialized" report; sentence-transformers pools the
# tokens and never reads it (its pooler_output is 0).
ZERO_POOLERS = {"roberta": "pooler.dense"}
POOLING_DIR, NORMALIZE_DIR = "1_Pooling", "2_Normalize"
# The meta key of an import's settings from these files (`read_modules`), which embed uses.
META_KEY = "sentence_transformers"
MODULE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MODULE_DIRS = (POOLING_DIR, NORMALIZE_DIR)
# The module pipelines we run (embed pools, then normalises where the last is Normalize).
_PIPELINES = (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
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


def zero_pooler(arch: str, hidden_size: int) -> dict:
  """{name: zeros} of the pooler `ZERO_POOLERS` names for the family `arch`; {} for others."""
  if arch not in ZERO_POOLERS:
    return {}
  name = ZERO_POOLERS[arch]
  return {
    f"{name}.weight": np.zeros((hidden_size, hidden_size), np.float32),
    f"{name}.bias": np.zeros((hidden_size,), np.float32),
  }


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


def read_modules(hf_dir: str) -> tuple[dict | None, str | None]:
  """What the sentence-transformers files of a checkpoint say about its vectors.

  Returns:
    (settings, unread): settings {"pooling": "cls" | "mean" | "max", "normalize": bool,
    "max_seq_length": int | None} for a Transformer -> Pooling (-> Normalize) pipeline of
    one mode we pool by, else None; unread: where a modules.json names another pipeline (a
    Dense layer, weighted mean pooling), what it is, for a note that embed's vectors will
    not be `SentenceTransformer.encode`'s; else None (no modules.json: a plain checkpoint).
  """
  modules_path = storage.join(hf_dir, "modules.json")
  if not storage.exists(modules_path):
    return None, None
  kinds, modes = [], []
  try:
    modules = storage.read_json(modules_path)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] == ["Transformer", "Pooling"]:
      pooling = storage.read_json(storage.join(hf_dir, modules[1]["path"], "config.json"))
      modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    ours = {key: mode for mode, key in _POOLING_KEYS.items()}
    if kinds not in _PIPELINES or len(modes) != 1 or modes[0] not in ours:
      return None, _pipeline(kinds, modes)
    settings_path = storage.join(hf_dir, "sentence_bert_config.json")
    settings = storage.read_json(settings_path) if storage.exists(settings_path) else {}
  except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
    return None, f"{_pipeline(kinds, modes)}, unreadable: {e}"
  return {
    "pooling": ours[modes[0]],
    "normalize": kinds[-1] == "Normalize",
    "max_seq_length": settings.get("max_seq_length"),
  }, None


def _pipeline(kinds: list[str], modes: list[str]) -> str:
  """modules.json's pipeline as a note names it: "Transformer -> Pooling (mean_tokens) -> Dense"."""
  shown = ", ".join(m.removeprefix("pooling_mode_") for m in modes) or "no mode"
  named = [f"{k} ({shown})" if k == "Pooling" else k for k in kinds]
  return " -> ".join(named) or "no modules"


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
