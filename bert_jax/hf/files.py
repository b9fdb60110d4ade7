"""Hugging Face checkpoint directories: `config.json`, and the tensors.

Reads `model.safetensors` or `pytorch_model.bin`, single or sharded (`*.index.json`), naming
each tensor as its family's table does (`hf.families`: e.g. with or without the `bert.`
prefix of `BertModel` vs `BertForPreTraining`). Writes `model.safetensors` and a
`config.json` that `transformers` loads without custom code. Directories may be local or
URLs (`gs://...`): every file goes through `storage`.
"""

import io
import json

import numpy as np

from bert_jax import errors, storage
from bert_jax.errors import UserError
from bert_jax.hf import families

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"


def read_config(hf_dir: str) -> dict:
  """The checkpoint's config.json as a dict, checked to be a model we can run.

  Args:
    hf_dir: a Hugging Face checkpoint directory.

  Returns:
    The parsed config.json.

  Raises:
    UserError: naming the file, when it is missing, not a JSON object, of a model type we
      do not read, lacks an architecture key (or has one that is not a positive integer),
      or asks for a setting our model does not implement; naming the bucket, when a URL's
      cannot be used.
  """
  if storage.is_remote(hf_dir) and (problem := storage.unreachable(hf_dir)):
    raise UserError(f"--hf {hf_dir}: {problem}; check the bucket name and access")
  path = storage.join(hf_dir, CONFIG)
  if not storage.isfile(path):
    if not storage.exists(hf_dir) and not storage.is_remote(hf_dir):
      raise UserError(
        f"{hf_dir} is not a directory here; bert-jax reads Hugging Face checkpoints from "
        f"disk and never downloads: fetch it first (huggingface-cli download {hf_dir} "
        f"--local-dir DIR, or save_pretrained(DIR)) and give --hf DIR"
      )
    raise UserError(
      f"{hf_dir} has no config.json; give a Hugging Face checkpoint directory "
      f"(config.json, model.safetensors or pytorch_model.bin, vocab.txt)"
    )
  try:
    hf = storage.read_json(path)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(
      f"{path} is not valid JSON ({errors.first_line(e, 120)}); restore the checkpoint's "
      f"config.json"
    ) from None
  if not isinstance(hf, dict):
    raise UserError(
      f"{path} holds a JSON {type(hf).__name__}, not an object of settings; restore the "
      f"checkpoint's config.json"
    )
  kind = hf.get("model_type")
  if kind is None:
    raise UserError(
      f"{path} has no model_type; import-hf reads the model types "
      f"{', '.join(families.model_types())}: give a Hugging Face checkpoint's config.json"
    )
  family = families.for_model_type(kind)
  if family is None:
    architectures = hf.get("architectures")
    names = ", ".join(map(str, architectures)) if isinstance(architectures, list) else ""
    raise UserError(
      f"{path} is a {kind!r} model{f' ({names})' if names else ''}; import-hf reads the model types "
      f"{', '.join(families.model_types())}"
    )
  family.check_config(hf, path)
  return hf


def check_sizes(hf: dict, path: str, required: tuple, optional: tuple = ()) -> None:
  """Bad input: a `required` key missing from `hf`, or a size key that is not a positive
  integer.

  Raises:
    UserError: naming `path` and the keys.
  """
  missing = [key for key in required if key not in hf]
  if missing:
    raise UserError(
      f"{path} lacks {', '.join(missing)}; a {hf['model_type']} config.json names its "
      f"architecture ({', '.join(required)}): restore the checkpoint's config.json"
    )
  bad = [
    f"{key}={hf[key]!r}"
    for key in required + optional
    if key in hf and (not isinstance(hf[key], int) or isinstance(hf[key], bool) or hf[key] < 1)
  ]
  if bad:
    raise UserError(f"{path} has {', '.join(bad)}; each must be a positive integer")


def check_supported(path: str, unsupported: list[str], name: str) -> None:
  """Bad input: settings of the checkpoint (`unsupported`, described) that our `name`
  model does not implement.
  """
  if unsupported:
    raise UserError(
      f"{path} has settings bert_jax's {name} does not implement: {'; '.join(unsupported)}"
    )


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
          f"weight_map: {errors.first_line(e, 120)}); restore it"
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


def read_tensors(hf_dir: str, family) -> tuple[dict, list[str]]:
  """The tensors of a Hugging Face checkpoint directory, named as the family's table.

  Args:
    hf_dir: holds model.safetensors or pytorch_model.bin, single or sharded.
    family: the checkpoint's `hf.families` module (`families.for_model_type`).

  Returns:
    ({table name: float32 array}, sorted names of tensors not used).

  Raises:
    UserError: no weights, or a weight file that cannot be read.
  """
  kind, weight_files = _weight_files(hf_dir)
  tensors, ignored = {}, []
  for path in weight_files:
    for name, value in _read_file(kind, path).items():
      normalized = family.tensor_name(name)
      if normalized == "":
        continue  # a buffer or a tied copy: not a parameter of its own
      if normalized is None:
        ignored.append(name)
      else:
        tensors.setdefault(normalized, np.asarray(value, dtype=np.float32))
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
