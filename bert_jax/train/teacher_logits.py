"""The teacher's logits of a distillation's train rows, kept in its workdir.

Labelling every train row is the slow start of `bert-jax distill` (a large teacher on many
unlabelled texts: hours). A run stopped after it (preempted, Ctrl-C) reads the logits back
when it starts again instead of labelling the rows again. The file is used only when its
key matches: the teacher (its path, step and classifier head) and the rows' token ids; any
other teacher or data is labelled anew.
"""

import hashlib
import io
import zipfile

import jax
import numpy as np

from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.finetune import evaluate as evaluate_lib

FILE = run_lib.TEACHER_LOGITS
ROW_KEYS = evaluate_lib.INPUT_KEYS  # the arrays the teacher reads


def key(teacher_path: str, teacher_step: int, teacher_params, arrays: dict) -> str:
  """The sha256 of what the logits depend on: the teacher and the rows' token arrays."""
  digest = hashlib.sha256(f"{teacher_path}\n{int(teacher_step)}\n".encode())
  for name, leaf in sorted(_head(teacher_params).items()):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  for name in ROW_KEYS:
    array = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}{array.shape}{array.dtype}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _head(params) -> dict:
  """The teacher's classifier leaves by path: what tells two teachers of one path apart."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(params["classifier"])
  return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def read(workdir: str, expected_key: str) -> np.ndarray | None:
  """The logits kept in `workdir` under `expected_key`, or None (no file, another key, or
  a file that does not read).
  """
  path = storage.join(workdir, FILE)
  if not storage.isfile(path):
    return None
  try:
    with np.load(io.BytesIO(storage.read_bytes(path))) as kept:
      if str(kept["key"]) != expected_key:
        return None
      return np.asarray(kept["logits"], np.float32)
  except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
    return None  # a damaged file (cut short, empty): label again, and write it anew


def write(workdir: str, logits_key: str, logits: np.ndarray) -> None:
  """Keeps `logits` in `workdir` under `logits_key` (atomically)."""
  buffer = io.BytesIO()
  np.savez(buffer, key=np.array(logits_key), logits=np.asarray(logits, np.float32))
  storage.write_bytes(storage.join(workdir, FILE), buffer.getvalue())
