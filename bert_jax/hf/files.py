"""Hugging Face checkpoint directories: `config.json` <-> our BertConfig, and the tensors.

Reads `model.safetensors` or `pytorch_model.bin`, single or sharded (`*.index.json`), with
or without the `bert.` prefix (`BertModel` vs `BertForPreTraining` / `BertForMaskedLM`), and
the old TF-converted `LayerNorm.gamma` / `beta` names. Writes `model.safetensors` and a
`config.json` that `transformers` loads without custom code. Directories may be local or
URLs (`gs://...`): every file goes through `storage`.
"""

import io
import json

import numpy as np

from bert_jax import storage
from bert_jax.errors import UserError

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
# Hugging Face keys that are not parameters, or are tied copies of ones we read.
_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight")
_BERT_PARTS = ("embeddings.", "encoder.", "pooler.")
_ACTIVATIONS = ("gelu",)  # exact erf GELU, as our model
# config.json keys without a default: the architecture (see `model_kwargs`).
_REQUIRED = (
  "vocab_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
)
_OPTIONAL_SIZES = ("max_position_embeddings", "type_vocab_size")


def read_config(hf_dir: str) -> dict:
  """The checkpoint's config.json as a dict, checked to be a BERT we can run.

  Args:
    hf_dir: a Hugging Face checkpoint directory.

  Returns:
    The parsed config.json.

  Raises:
    UserError: naming the file, when it is missing, not a JSON object, not a BERT, lacks
      an architecture key (or has one that is not a positive integer), or asks for a
      setting our BERT does not implement; naming the bucket, when a URL's cannot be used.
  """
  if storage.is_remote(hf_dir) and (problem := storage.unreachable(hf_dir)):
    raise UserError(f"--hf {hf_dir}: {problem}; check the bucket name and access")
  path = storage.join(hf_dir, CONFIG)
  if not storage.isfile(path):
    raise UserError(
      f"{hf_dir} has no config.json; give a Hugging Face checkpoint directory "
      f"(config.json, model.safetensors or pytorch_model.bin, vocab.txt)"
    )
  try:
    hf = storage.read_json(path)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(
      f"{path} is not valid JSON ({_first_line(e)}); restore the checkpoint's config.json"
    ) from None
  if not isinstance(hf, dict):
    raise UserError(
      f"{path} holds a JSON {type(hf).__name__}, not an object of settings; restore the "
      f"checkpoint's config.json"
    )
  kind = hf.get("model_type")
  if kind is None:
    raise UserError(
      f"{path} has no model_type; import-hf reads BERT checkpoints (model_type 'bert'): "
      f"give a Hugging Face checkpoint's config.json"
    )
  if kind != "bert":
    architectures = hf.get("architectures")
    names = ", ".join(map(str, architectures)) if isinstance(architectures, list) else ""
    raise UserError(
      f"{path} is a {kind!r} model ({names}); import-hf reads BERT checkpoints "
      f"(model_type 'bert') only"
    )
  unsupported = []
  if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
    unsupported.append(f"hidden_act={hf['hidden_act']!r} (only exact 'gelu')")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    unsupported.append("a decoder / cross-attention (only the BERT encoder)")
  if unsupported:
    raise UserError(
      f"{path} has settings bert_jax's BERT does not implement: {'; '.join(unsupported)}"
    )
  missing = [key for key in _REQUIRED if key not in hf]
  if missing:
    raise UserError(
      f"{path} lacks {', '.join(missing)}; a BERT config.json names its architecture "
      f"({', '.join(_REQUIRED)}): restore the checkpoint's config.json"
    )
  bad = [
    f"{key}={hf[key]!r}"
    for key in _REQUIRED + _OPTIONAL_SIZES
    if key in hf and (not isinstance(hf[key], int) or isinstance(hf[key], bool) or hf[key] < 1)
  ]
  if bad:
    raise UserError(f"{path} has {', '.join(bad)}; each must be a positive integer")
  return hf


def _first_line(error: Exception) -> str:
  return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


def model_kwargs(hf: dict) -> dict:
  """BertConfig keyword arguments (before vocabulary padding) of a Hugging Face config.

  Args:
    hf: a config.json checked by `read_config`.

  Returns:
    {BertConfig field: value}; the keys config.json may omit get Hugging Face's defaults.
  """
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    max_position_embeddings=hf.get("max_position_embeddings", 512),
    type_vocab_size=hf.get("type_vocab_size", 2),
    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
    initializer_range=hf.get("initializer_range", 0.02),
  )


def hf_config(
  model, vocab_size: int, pad_token_id: int, architecture: str = "BertForPreTraining"
) -> dict:
  """config.json contents for our `model` with `vocab_size` real rows.

  Args:
    model: a `bert.BertConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    pad_token_id: the tokenizer's [PAD] id.
    architecture: the `transformers` class that loads the export.

  Returns:
    The config.json contents, as a dict.
  """
  config = {
    "architectures": [architecture],
    "model_type": "bert",
    "vocab_size": vocab_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_act": "gelu",
    "hidden_dropout_prob": model.hidden_dropout,
    "attention_probs_dropout_prob": model.attention_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "type_vocab_size": model.type_vocab_size,
    "initializer_range": model.initializer_range,
    "layer_norm_eps": model.layer_norm_eps,
    "pad_token_id": pad_token_id,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "dtype": "float32",
  }
  return config


def task_config(config: dict, task: str, labels: list[str] | None) -> dict:
  """`config` (from hf_config) with a fine-tuned head's settings: the label names
  (id2label / label2id, so pipelines print them) and the problem type.

  Args:
    config: the `hf_config` of the encoder.
    task: classification, regression, tokens or qa.
    labels: the label names by id, or None.

  Returns:
    A new dict; `config` is unchanged.
  """
  config = dict(config)
  if task == "regression":
    config.update(
      num_labels=1, problem_type="regression", id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0}
    )
  elif labels:
    config.update(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if task == "classification":
      config["problem_type"] = "single_label_classification"
  return config


def _weight_files(hf_dir):
  """(kind, files) of the checkpoint's weights, sharded or not."""
  for kind, single, index in (
    ("safetensors", SAFETENSORS, "model.safetensors.index.json"),
    ("torch", "pytorch_model.bin", "pytorch_model.bin.index.json"),
  ):
    index_path = storage.join(hf_dir, index)
    if storage.isfile(index_path):
      try:
        shards = sorted(set(storage.read_json(index_path)["weight_map"].values()))
      except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
          f"{index_path} is not a Hugging Face weight index (a JSON object with a "
          f"weight_map: {_first_line(e)}); restore it"
        ) from None
      return kind, [storage.join(hf_dir, s) for s in shards]
    if storage.isfile(storage.join(hf_dir, single)):
      return kind, [storage.join(hf_dir, single)]
  raise UserError(
    f"{hf_dir} has no model.safetensors or pytorch_model.bin (nor a sharded "
    f"*.index.json); TensorFlow / Flax-only checkpoints: convert them in "
    f"transformers first"
  )


def _read_file(kind, path):
  """{name: array} of one weight file: a local file read in place, a URL's bytes in memory."""
  remote = storage.is_remote(path)
  if kind == "safetensors":
    from safetensors.numpy import load, load_file

    try:
      return load(storage.read_bytes(path)) if remote else load_file(path)
    except Exception as e:  # safetensors raises its own error types
      raise UserError(f"cannot read {path}: {e}; the file is damaged or not safetensors") from None
  try:
    import torch
  except ImportError:
    raise UserError(
      f"{path} is a PyTorch pickle, which needs torch to read: "
      f"pip install torch (a CPU wheel is enough)"
    ) from None
  source = io.BytesIO(storage.read_bytes(path)) if remote else path
  state = torch.load(source, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()}


def normalize_name(name: str) -> str:
  """A checkpoint's tensor name as BertForPreTraining names it.

  Args:
    name: a tensor name of a BERT checkpoint (BertModel, BertForPreTraining, BertForMaskedLM,
      TF-converted).

  Returns:
    The name with the `bert.` prefix, `LayerNorm.weight` / `bias` for TF's `gamma` /
    `beta`, and `cls.predictions.bias` for the tied decoder bias.
  """
  if name.startswith(_BERT_PARTS):
    name = "bert." + name
  name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
    "LayerNorm.beta", "LayerNorm.bias"
  )
  if name.endswith("cls.predictions.decoder.bias"):
    return "cls.predictions.bias"  # the same tensor as cls.predictions.bias (tied)
  return name


def read_tensors(hf_dir: str) -> tuple[dict, list[str]]:
  """The tensors of a Hugging Face checkpoint directory.

  Args:
    hf_dir: holds model.safetensors or pytorch_model.bin, single or sharded.

  Returns:
    ({BertForPreTraining name: float32 array}, sorted names of tensors not used).

  Raises:
    UserError: no weights, or a weight file that cannot be read.
  """
  kind, files = _weight_files(hf_dir)
  tensors, ignored = {}, []
  for path in files:
    for name, value in _read_file(kind, path).items():
      if name.endswith(_IGNORED):
        continue
      normalized = normalize_name(name)
      if normalized.startswith(("bert.", "cls.")):
        tensors.setdefault(normalized, np.asarray(value, dtype=np.float32))
      else:
        ignored.append(name)
  return tensors, sorted(ignored)


def write(out_dir: str, tensors: dict, config: dict) -> None:
  """model.safetensors and config.json into `out_dir` (which exists), each atomically.

  Args:
    out_dir: the export's directory (local or a URL).
    tensors: {Hugging Face name: float32 numpy array} (`convert.to_hf`).
    config: the config.json contents (`hf_config`, `task_config`).
  """
  from safetensors.numpy import save

  # The bytes save_file would write, through storage (atomic, and URLs).
  storage.write_bytes(storage.join(out_dir, SAFETENSORS), save(tensors, metadata={"format": "pt"}))
  storage.write_text(storage.join(out_dir, CONFIG), json.dumps(config, indent=2) + "\n")
