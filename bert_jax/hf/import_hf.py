"""`bert-jax import-hf`: a Hugging Face BERT checkpoint -> a bert_jax workdir to start from.

The workdir gets `checkpoints/0/` (parameters and meta, no optimizer state) and
`tokenizer/`: the checkpoint's WordPiece tokenizer as a `tokenizer.json`, with the
lowercasing and accent stripping it was trained with, or, for bert_jax's own export of a
SentencePiece run, that SentencePiece model (`tokenizer.model`). `pretrain` and fine-tuning take it as
`config.init_from`; `config.model.size="checkpoint"` adopts its architecture and tokenizer.
Heads the checkpoint lacks (a sentence-transformers `BertModel` has no MLM head) are
initialised from the seed and listed; tensors we do not use are listed too. The checkpoint
directory and the workdir may be URLs (`gs://...`).
"""

import os
import shutil
import tempfile

import flax.linen as nn
import jax
import numpy as np

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.hf import convert, families, files, tokenizer_files
from bert_jax.model import bert
from bert_jax.model import families as model_families


def import_hf(
  hf_dir: str, workdir: str, *, vocab_multiple: int = 128, seed: int = 0, log=print
) -> bert.BertConfig:
  """Converts the checkpoint in `hf_dir` into `workdir`.

  Everything is read and checked before anything is written; the workdir must not hold
  checkpoints yet.

  Args:
    hf_dir: a Hugging Face BERT checkpoint directory (config.json, weights, tokenizer),
      local or a URL.
    workdir: the new run directory, local or a URL.
    vocab_multiple: pad the vocabulary rows to a multiple of this.
    seed: initialises the heads the checkpoint lacks.
    log: prints the summary lines.

  Returns:
    The model config of the imported run.

  Raises:
    UserError: `hf_dir` is not a BERT checkpoint we can run, its tokenizer is not one we
      read, or `workdir` already holds checkpoints.
  """
  hf = files.read_config(hf_dir)
  family = families.for_model_type(hf["model_type"])
  checkpoint_dir = run_lib.path(workdir, run_lib.CHECKPOINTS)
  if storage.isdir(checkpoint_dir) and storage.listdir(checkpoint_dir):
    raise UserError(f"{workdir} already holds checkpoints; import into a new --workdir")
  tensors, ignored = files.read_tensors(hf_dir, family)
  kwargs = family.model_kwargs(hf)
  hf_vocab = kwargs["vocab_size"]
  multiple = max(1, vocab_multiple)
  kwargs["vocab_size"] = -(-hf_vocab // multiple) * multiple
  model_family = model_families.family(family.ARCH)
  model_cfg = model_family.config(**kwargs)
  model = model_family.pretraining(model_cfg)

  # The tokenizer is written and checked in a local folder (beside a local workdir, so it
  # moves in by rename), then put in place whole.
  if storage.is_remote(workdir):
    staging = tempfile.mkdtemp(prefix=".import-tokenizer.")
  else:
    staging = os.path.join(workdir, ".import-tokenizer")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
  try:
    tokenizer = tokenizer_lib.load(tokenizer_files.import_tokenizer(hf_dir, staging))
    if tokenizer.vocab_size > hf_vocab:
      raise UserError(
        f"the tokenizer of {hf_dir} has {tokenizer.vocab_size} tokens but the "
        f"model only {hf_vocab} rows (config.json vocab_size); they do not belong "
        f"together"
      )
    pad = getattr(model_cfg, "pad_token_id", None)  # RoBERTa's positions count from it
    if pad is not None and tokenizer.pad_id != pad:
      raise UserError(
        f"the tokenizer of {hf_dir} pads with id {tokenizer.pad_id} but config.json's "
        f"pad_token_id is {pad}; they do not belong together"
      )
    initial = _initial_params(model, seed)
    rows = family.table(model_cfg)
    params, missing = convert.from_hf(tensors, initial, rows, hf_vocab)
    ignored = sorted(ignored + list(set(tensors) - {row.hf for row in rows}))
    _put_in_place(staging, run_lib.path(workdir, run_lib.TOKENIZER))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  meta = {
    "model": config_lib.model_dict(model_cfg),
    "step": 0,
    "tokenizer_fingerprint": tokenizer.fingerprint,
    "imported_from": storage.absolute(hf_dir),
    "hf_vocab_size": hf_vocab,
    "initialized": missing,
  }
  checkpoints = ckpt_lib.Checkpoints(checkpoint_dir, keep=1, async_save=False)
  checkpoints.save_params(0, jax.tree_util.tree_map(jax.numpy.asarray, params), meta)
  checkpoints.close()

  arch = (
    f"{hf['model_type']} L{model_cfg.num_layers} H{model_cfg.hidden_size} A{model_cfg.num_heads}, "
    f"vocab {hf_vocab} (padded to {model_cfg.vocab_size})"
  )
  case = {True: " (lowercased)", False: " (cased)"}.get(getattr(tokenizer, "lowercase", None), "")
  log(f"imported {hf_dir}: {arch}, {tokenizer.kind} tokenizer{case}")
  if missing:
    log("initialised (not in the checkpoint): " + ", ".join(family.GROUPS[g] for g in missing))
  if ignored:
    shown = ", ".join(ignored[:6]) + (f" and {len(ignored) - 6} more" if len(ignored) > 6 else "")
    log(f"not used: {shown}")
  log(f"-> {checkpoint_dir}/0; start from it with --config.init_from={workdir}")
  return model_cfg


def _put_in_place(staging: str, final: str) -> None:
  """Replaces folder `final` with the local folder `staging`: a rename, or an upload of
  each file into a URL.
  """
  storage.rmtree(final)
  if not storage.is_remote(final):
    os.replace(staging, final)
    return
  for name in sorted(os.listdir(staging)):
    storage.copy(os.path.join(staging, name), storage.join(final, name))


def _initial_params(model, seed):
  """Freshly initialised numpy params (the values of heads the checkpoint lacks)."""
  ids = np.zeros((1, 8), np.int32)
  params = jax.jit(lambda key: model.init(key, ids, ids, ids, ids[:, :1])["params"])(
    jax.random.key(seed)
  )
  return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(params))
