"""`bert-jax import-hf`: a Hugging Face BERT checkpoint -> a bert_jax workdir to start from.

The workdir gets `checkpoints/0/` (parameters and meta, no optimizer state) and
`tokenizer/`: the checkpoint's WordPiece tokenizer as a `tokenizer.json`, with the
lowercasing and accent stripping it was trained with, or, for bert_jax's own export of a
SentencePiece run, that SentencePiece model (`tokenizer.model`). `pretrain` and fine-tuning take it as
`config.init_from`; `config.model.size="checkpoint"` adopts its architecture and tokenizer.
Heads the checkpoint lacks (a sentence-transformers `BertModel` has no MLM head) are
initialised from the seed and listed; tensors we do not use are listed too. The checkpoint
directory and the workdir may be URLs (`gs://...`).

An ELECTRA discriminator (`ElectraForPreTraining`) with its generator (`ElectraForMaskedLM`:
`--generator DIR`, or the `generator/` folder of the checkpoint, as `export-hf` writes a
replaced-token-detection run) imports as one replaced-token-detection model, to continue
pretraining as ELECTRA does; the discriminator's embeddings are the shared ones.
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
  hf_dir: str,
  workdir: str,
  *,
  generator_dir: str | None = None,
  vocab_multiple: int = 128,
  seed: int = 0,
  log=print,
) -> bert.BertConfig:
  """Converts the checkpoint in `hf_dir` into `workdir`.

  Everything is read and checked before anything is written; the workdir must not hold
  checkpoints yet.

  Args:
    hf_dir: a Hugging Face BERT checkpoint directory (config.json, weights, tokenizer),
      local or a URL.
    workdir: the new run directory, local or a URL.
    generator_dir: an ELECTRA generator to pair with the discriminator in `hf_dir`; None:
      `hf_dir`'s `generator/` folder when it has one.
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
  generator_dir = _generator_dir(family, hf_dir, generator_dir)
  checkpoint = {"": tensors}  # folder -> its tensors: the model, and a generator's
  if generator_dir is not None:
    kwargs["generator_hidden_size"] = family.generator_hidden_size(
      kwargs, files.read_config(generator_dir), storage.join(generator_dir, files.CONFIG)
    )
    checkpoint[family.GENERATOR_FOLDER], generator_ignored = files.read_tensors(
      generator_dir, family
    )
    ignored += [f"{family.GENERATOR_FOLDER}/{name}" for name in generator_ignored]
  hf_vocab = kwargs["vocab_size"]
  multiple = max(1, vocab_multiple)
  kwargs["vocab_size"] = -(-hf_vocab // multiple) * multiple
  model_family = model_families.family(family.ARCH)
  model_cfg = model_family.config(**kwargs)
  model = model_family.pretraining(model_cfg)

  # The tokenizer is written and checked in a local folder (beside a local workdir, so it
  # moves in by rename), then put in place whole.
  made = []  # the folders made for the staging: removed again if the import fails
  if storage.is_remote(workdir):
    staging = tempfile.mkdtemp(prefix=".import-tokenizer.")
  else:
    staging = os.path.join(workdir, ".import-tokenizer")
    shutil.rmtree(staging, ignore_errors=True)
    made = storage.folders_to_make(workdir)
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
    said = hf.get("pad_token_id")  # elsewhere only padding: a mismatch hints at a stray tokenizer
    if pad is None and isinstance(said, int) and said != tokenizer.pad_id:
      log(
        f"note: the tokenizer of {hf_dir} pads with id {tokenizer.pad_id} but config.json's "
        f"pad_token_id is {said}: check that the two belong together"
      )
    params, missing, unused = _convert(family, model_cfg, checkpoint, model, seed, hf_vocab, log)
    ignored = sorted(ignored + unused)
    _put_in_place(staging, run_lib.path(workdir, run_lib.TOKENIZER))
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    storage.remove_empty(made)
    raise
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
  if generator_dir is not None:
    arch += (
      f", generator {generator_dir}: H{model_cfg.generator_hidden_size} (replaced-token detection)"
    )
  log(f"imported {hf_dir}: {arch}, {tokenizer.kind} tokenizer{case}")
  if missing:
    log("initialised (not in the checkpoint): " + ", ".join(family.GROUPS[g] for g in missing))
  if ignored:
    shown = ", ".join(ignored[:6]) + (f" and {len(ignored) - 6} more" if len(ignored) > 6 else "")
    log(f"not used: {shown}")
  log(f"-> {checkpoint_dir}/0; start from it with --config.init_from={workdir}")
  return model_cfg


def _generator_dir(family, hf_dir: str, given: str | None) -> str | None:
  """The generator to pair with the model of `hf_dir`: `given`, else `hf_dir`'s
  `generator/` folder when the family pairs one (ELECTRA) and it holds a config.json.

  Raises:
    UserError: a generator given for a family without one.
  """
  folder = getattr(family, "GENERATOR_FOLDER", None)
  if given is not None:
    if folder is None:
      raise UserError(
        f"--generator is for an ELECTRA discriminator; {hf_dir} is a {family.ARCH} model"
      )
    return given
  if folder is not None and storage.isfile(storage.join(hf_dir, folder, files.CONFIG)):
    return storage.join(hf_dir, folder)
  return None


def _convert(family, model_cfg, checkpoint, model, seed, hf_vocab, log):
  """Our params from the checkpoint's tensors ({folder: tensors}: the model's, and a
  generator's): (params, the groups initialised, the tensor names not used).

  The parts are those an export of `model_cfg` writes (`families.model_parts`): with a
  generator, each of the two models is read from its own tensors, and the discriminator's
  embeddings replace the generator's copy (one line says when they differ).
  """
  initial = _initial_params(model, seed)
  params, missing, unused = {}, set(), []
  parts = families.model_parts(family, model_cfg)
  for folder, _, rows, _ in reversed(parts):  # the generator first: the model's bert/ wins
    tensors = checkpoint[folder]
    part, part_missing = convert.from_hf(tensors, initial, rows, hf_vocab)
    if "bert" in params and "bert" in part:
      _compare_embeddings(params["bert"]["embeddings"], part["bert"]["embeddings"], log)
    params.update(part)
    missing.update(part_missing)
    prefix = f"{folder}/" if folder else ""
    unused += [prefix + name for name in set(tensors) - {row.hf for row in rows}]
  return params, sorted(missing), unused


def _compare_embeddings(generator, discriminator, log):
  """One line when a generator's embeddings are not the discriminator's (they are shared)."""
  diff = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(
      jax.tree_util.tree_leaves(generator), jax.tree_util.tree_leaves(discriminator), strict=True
    )
  )
  if diff > 0:
    log(
      f"the generator's embeddings differ from the discriminator's (by up to {diff:.3g}); "
      f"the discriminator's are the shared ones"
    )


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
