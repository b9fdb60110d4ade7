"""`bert-jax import-hf`: a Hugging Face BERT checkpoint -> a bert_jax workdir to start from.

The workdir gets `checkpoints/0/` (parameters and meta, no optimizer state) and
`tokenizer/`: the checkpoint's WordPiece tokenizer as a `tokenizer.json`, with the
lowercasing and accent stripping it was trained with, or, for bert_jax's own export of a
SentencePiece run, that SentencePiece model (`tokenizer.model`). `pretrain` and fine-tuning take it as
`config.init_from`; `config.model.size="checkpoint"` adopts its architecture and tokenizer.
Heads the checkpoint lacks (a sentence-transformers `BertModel` has no MLM head) are
initialised from the seed and listed; tensors we do not use are listed too. The checkpoint
directory and the workdir may be URLs (`gs://...`).

A fine-tuned checkpoint (`*ForSequenceClassification`, `*ForTokenClassification`,
`*ForQuestionAnswering`: `task_heads`) keeps its head: the run is a fine-tuned run of that
task, its labels `id2label`'s, with a `config.json` of the fine-tuning defaults at the
tokenizer's `model_max_length`, so `predict`, `evaluate` and `export-hf` work on it, and
`finetune` from it continues the head on data of its labels (`pretrain` takes the encoder).

An ELECTRA discriminator (`ElectraForPreTraining`) with its generator (`ElectraForMaskedLM`:
`--generator DIR`, or the `generator/` folder of the checkpoint, as `export-hf` writes a
replaced-token-detection run) imports as one replaced-token-detection model, to continue
pretraining as ELECTRA does; the discriminator's embeddings are the shared ones.

`read_checkpoint` and `read_tokenizer` read a checkpoint without writing a run (`distill`
reads a Hugging Face teacher with them).
"""

import dataclasses
import os
import shutil
import tempfile
import types

import flax.linen as nn
import jax
import numpy as np

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.hf import (
  convert,
  families,
  family_tokenizers,
  files,
  sentence_transformers,
  task_heads,
  tokenizer_files,
)
from bert_jax.model import bert, registry, tasks
from bert_jax.model import families as model_families

# The longest texts of an imported fine-tuned run (`predict --max-seq-length` reads longer
# ones): every text is encoded this long on the host, before batches are cut to their longest.
MAX_SEQ_LENGTH = 512


@dataclasses.dataclass
class Checkpoint:
  """A Hugging Face checkpoint read into our model, on the host (nothing written)."""

  family: types.ModuleType  # its `hf.families` module
  head: task_heads.Head | None  # the fine-tuning head kept; None: a pretraining model
  model_cfg: bert.BertConfig  # the family's config, vocabulary padded
  model: nn.Module  # `tasks.ForTask` with a head, else the family's pretraining model
  params: dict  # numpy arrays, unrolled layers
  hf_vocab: int  # the vocabulary rows of the checkpoint (before padding)
  initialized: list[str]  # the table groups the checkpoint lacks, initialised from the seed
  ignored: list[str]  # the tensors not used (a generator's prefixed `generator/`)
  generator_dir: str | None  # the ELECTRA generator read with the discriminator


def read_checkpoint(
  hf_dir: str,
  hf: dict,
  *,
  generator_dir: str | None = None,
  vocab_multiple: int = 128,
  seed: int = 0,
  log=print,
) -> Checkpoint:
  """The model of `hf_dir` with the head its config.json names: a fine-tuning head
  (`task_heads.head_of`: `*ForSequenceClassification` ...) in a `tasks.ForTask`, else
  the family's pretraining model (an ELECTRA discriminator with its generator).

  Args:
    hf_dir: a Hugging Face checkpoint directory, local or a URL.
    hf: its config.json (`files.read_config`).
    generator_dir: see `import_hf`.
    vocab_multiple: pad the vocabulary rows to a multiple of this.
    seed: initialises the parts the checkpoint lacks (a pretraining model's heads).
    log: prints a note when an ELECTRA generator's embeddings differ.

  Raises:
    UserError: weights that are not those config.json describes (a shape, the encoder or
      a fine-tuning head's tensors missing), or a generator given for a model without one.
  """
  family = families.for_model_type(hf["model_type"])
  head = task_heads.head_of(hf)
  kwargs = family.model_kwargs(hf)
  generator_dir = _generator_dir(family, hf_dir, generator_dir, head)
  if generator_dir is not None:
    kwargs["generator_hidden_size"] = family.generator_hidden_size(
      kwargs, files.read_config(generator_dir), storage.join(generator_dir, files.CONFIG)
    )
  hf_vocab = kwargs["vocab_size"]
  kwargs["vocab_size"] = config_lib.padded_vocab_size(hf_vocab, vocab_multiple)
  model_cfg = model_families.family(family.ARCH).config(**kwargs)
  model, parts = _model_and_parts(family, model_cfg, head)
  folders = {"": hf_dir, getattr(family, "GENERATOR_FOLDER", None): generator_dir}
  checkpoint, ignored = _read_parts(family, parts, folders)
  if head is not None:
    _check_head(hf_dir, head, parts[0][2], checkpoint[""])
  params, missing, unused = _convert(
    family, model_cfg, checkpoint, model, parts, seed, hf_vocab, log
  )
  return Checkpoint(
    family=family,
    head=head,
    model_cfg=model_cfg,
    model=model,
    params=params,
    hf_vocab=hf_vocab,
    initialized=missing,
    ignored=sorted(ignored + unused),
    generator_dir=generator_dir,
  )


def _model_and_parts(family, model_cfg, head):
  """(our module, the Hugging Face models it is: `families.model_parts`) of `model_cfg`
  with a fine-tuning `head` (a `tasks.ForTask`), or the family's pretraining model.
  """
  if head is None:
    model = model_families.family(family.ARCH).pretraining(model_cfg)
    return model, families.model_parts(family, model_cfg)
  model = tasks.ForTask(model_cfg, head.task, head.num_labels)
  return model, families.model_parts(family, model_cfg, head.task)


def _read_parts(family, parts, folders):
  """({folder: its tensors}, the names not read) of each part, from the directory
  `folders` names for its folder (the model's "", an ELECTRA generator's `generator`).
  """
  checkpoint, ignored = {}, []
  for folder, _, rows, _ in parts:
    naming = task_heads.naming(family, rows)
    checkpoint[folder], not_read = files.read_tensors(folders[folder], naming)
    ignored += [f"{folder}/{name}" if folder else name for name in not_read]
  return checkpoint, ignored


_OWN_TOKENIZER = (
  "put the model's own tokenizer files in the folder (tokenizer.json, or vocab.txt / "
  "vocab.json + merges.txt, as the model was saved with them)"
)


def read_tokenizer(hf_dir: str, out_dir: str, checkpoint: Checkpoint, hf: dict, log=print):
  """The tokenizer of `hf_dir`, written into the local folder `out_dir` and loaded, checked
  against the model of `checkpoint` (read from `hf_dir`, whose config.json is `hf`).

  Raises:
    UserError: a tokenizer we do not read, or one with more tokens than the model has rows
      or another [PAD] than the model's positions count from (RoBERTa).
  """
  tokenizer = tokenizer_lib.load(tokenizer_files.import_tokenizer(hf_dir, out_dir))
  hf_vocab = checkpoint.hf_vocab
  if tokenizer.vocab_size > hf_vocab:
    raise UserError(
      f"the tokenizer of {hf_dir} has {tokenizer.vocab_size} tokens but the "
      f"model only {hf_vocab} rows (config.json vocab_size): they do not belong "
      f"together; {_OWN_TOKENIZER}"
    )
  pad = getattr(checkpoint.model_cfg, "pad_token_id", None)  # RoBERTa's positions count from it
  if pad is not None and tokenizer.pad_id != pad:
    raise UserError(
      f"the tokenizer of {hf_dir} pads with id {tokenizer.pad_id} but config.json's "
      f"pad_token_id is {pad}: they do not belong together; {_OWN_TOKENIZER}"
    )
  said = hf.get("pad_token_id")  # elsewhere only padding: a mismatch hints at a stray tokenizer
  if pad is None and isinstance(said, int) and said != tokenizer.pad_id:
    log(
      f"note: the tokenizer of {hf_dir} pads with id {tokenizer.pad_id} but config.json's "
      f"pad_token_id is {said}: check that the two belong together"
    )
  return tokenizer


def run_meta(checkpoint: Checkpoint, tokenizer) -> dict:
  """The meta a run of `checkpoint` with `tokenizer` starts from: the model, the tokenizer's
  fingerprint and, with a fine-tuning head, its task and labels.
  """
  meta = {
    "model": config_lib.model_dict(checkpoint.model_cfg),
    "tokenizer_fingerprint": tokenizer.fingerprint,
  }
  if checkpoint.head is not None:
    meta.update(checkpoint.head.meta())
  return meta


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
  checkpoints yet. A fine-tuned checkpoint (`task_heads`) keeps its head, and the run gets
  a `config.json` for `predict` and `evaluate`.

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
    UserError: `hf_dir` is not a BERT checkpoint we can run (or a fine-tuned one without
      its head's tensors), its tokenizer is not one we read, or `workdir` already holds
      checkpoints.
  """
  hf = files.read_config(hf_dir)
  checkpoint_dir = run_lib.path(workdir, run_lib.CHECKPOINTS)
  if storage.isdir(checkpoint_dir) and storage.listdir(checkpoint_dir):
    raise UserError(f"{workdir} already holds checkpoints; import into a new --workdir")
  read = read_checkpoint(
    hf_dir, hf, generator_dir=generator_dir, vocab_multiple=vocab_multiple, seed=seed, log=log
  )
  model_cfg = read.model_cfg
  tokenizer = _write_tokenizer(hf_dir, workdir, read, hf, log)
  meta = {
    **run_meta(read, tokenizer),
    "step": 0,
    "imported_from": storage.absolute(hf_dir),
    "hf_vocab_size": read.hf_vocab,
    "initialized": read.initialized,
  }
  modules, unread = sentence_transformers.read_modules(hf_dir)
  if read.head is None and modules:
    meta[sentence_transformers.META_KEY] = modules  # embed pools, normalises and cuts as they say
  limit = None if read.head is None else _text_limit(hf_dir, model_cfg)
  if limit is not None:  # predict and evaluate read the run's config.json
    meta["max_seq_length"] = min(limit, MAX_SEQ_LENGTH)
    run_lib.write_config(_task_config(read, meta["max_seq_length"]), workdir)
  checkpoints = ckpt_lib.Checkpoints(checkpoint_dir, keep=1, async_save=False)
  checkpoints.save_params(0, jax.tree_util.tree_map(jax.numpy.asarray, read.params), meta)
  checkpoints.close()
  _summary(hf_dir, hf, read, tokenizer, meta, limit, workdir, log)
  if read.head is None and unread:
    log(
      f"note: its modules.json is a sentence-transformers pipeline bert-jax does not run "
      f"({unread}); embed pools plainly (mean, or --pooling), so its vectors are not "
      f"SentenceTransformer.encode's"
    )
  return model_cfg


def _write_tokenizer(hf_dir, workdir, read, hf, log):
  """The tokenizer of `hf_dir` (`read_tokenizer`), put in `workdir`'s `tokenizer/`.

  It is written and checked in a local folder (beside a local workdir, so it moves in by
  rename), then put in place whole; a failure leaves no folder the import made.
  """
  made = []  # the folders made for the staging: removed again if the import fails
  if storage.is_remote(workdir):
    staging = tempfile.mkdtemp(prefix=".import-tokenizer.")
  else:
    staging = os.path.join(workdir, ".import-tokenizer")
    shutil.rmtree(staging, ignore_errors=True)
    made = storage.folders_to_make(workdir)
    os.makedirs(staging)
  try:
    tokenizer = read_tokenizer(hf_dir, staging, read, hf, log)
    _put_in_place(staging, run_lib.path(workdir, run_lib.TOKENIZER))
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    storage.remove_empty(made)
    raise
  shutil.rmtree(staging, ignore_errors=True)
  return tokenizer


def _summary(hf_dir, hf, read, tokenizer, meta, limit, workdir, log):
  """The import's lines: the model and tokenizer, the head kept (texts cut at
  meta["max_seq_length"] of the checkpoint's `limit`), the parts initialised and the
  tensors not used, and where the run is.
  """
  model_cfg, family = read.model_cfg, read.family
  arch = (
    f"{hf['model_type']} L{model_cfg.num_layers} H{model_cfg.hidden_size} A{model_cfg.num_heads}, "
    f"vocab {read.hf_vocab} (padded to {model_cfg.vocab_size})"
  )
  case = {True: " (lowercased)", False: " (cased)"}.get(getattr(tokenizer, "lowercase", None), "")
  if read.generator_dir is not None:
    arch += (
      f", generator {read.generator_dir}: H{model_cfg.generator_hidden_size} "
      f"(replaced-token detection)"
    )
  log(f"imported {hf_dir}: {arch}, {tokenizer.kind} tokenizer{case}")
  if read.head is not None:
    log(
      f"kept {read.head.describe()}; texts cut at {meta['max_seq_length']} tokens: predict, "
      f"evaluate and export-hf use it, and fine-tuning on data of these labels continues it"
    )
    if limit > meta["max_seq_length"]:
      log(
        f"note: the checkpoint reads up to {limit} tokens, the run {MAX_SEQ_LENGTH}; for "
        f"longer texts give predict or evaluate --max-seq-length (up to {limit})"
      )
  elif unkept := task_heads.unkept_head(hf):
    log(f"note: {unkept}")
  if modules := meta.get(sentence_transformers.META_KEY):
    cut = f", texts cut at {modules['max_seq_length']} tokens" if modules["max_seq_length"] else ""
    log(
      f"sentence-transformers: {modules['pooling']} pooling"
      f"{', normalised' if modules['normalize'] else ''}{cut}: bert-jax embed gives these "
      f"vectors"
    )
  if read.initialized:
    groups = (family.GROUPS.get(g, g) for g in read.initialized)
    log("initialised (not in the checkpoint): " + ", ".join(groups))
  ignored = read.ignored
  if ignored:
    shown = ", ".join(ignored[:6]) + (f" and {len(ignored) - 6} more" if len(ignored) > 6 else "")
    log(f"not used: {shown}")
  checkpoint_dir = run_lib.path(workdir, run_lib.CHECKPOINTS)
  log(f"-> {checkpoint_dir}/0; start from it with --config.init_from={workdir}")


def _check_head(hf_dir, head, rows, tensors):
  """UserError when the weights lack tensors of the fine-tuning head config.json names."""
  absent = [row.hf for row in rows if row.group == "head" and row.hf not in tensors]
  if absent:
    raise UserError(
      f"{hf_dir} is a {head.architecture} (config.json) but its weights have no "
      f"{head.task} head ({absent[0]}, ...); save the fine-tuned model again "
      f"(save_pretrained), or fine-tune its encoder with bert_jax"
    )


def _text_limit(hf_dir: str, model_cfg) -> int:
  """The length a fine-tuned checkpoint's texts are cut at: its tokenizer's
  `model_max_length` (what a `transformers` pipeline truncates at), at most the model's
  positions.
  """
  config = family_tokenizers.read_json(storage.join(hf_dir, "tokenizer_config.json")) or {}
  said = config.get("model_max_length") if isinstance(config, dict) else None
  if isinstance(said, int) and not isinstance(said, bool) and 0 < said < model_cfg.max_length:
    return said
  return model_cfg.max_length


def _task_config(read: Checkpoint, max_seq_length: int):
  """The config.json of an imported fine-tuned run: the fine-tuning defaults with its task,
  family and length (`predict` and `evaluate` read the columns and lengths there).
  """
  config = config_lib.finetune_base_config()
  config.task = read.head.task
  config.model.arch = read.model_cfg.arch
  encoding_lib.set_max_seq_length(config.data, max_seq_length)
  return config


def _generator_dir(family, hf_dir: str, given: str | None, head) -> str | None:
  """The generator to pair with the model of `hf_dir`: `given`, else `hf_dir`'s
  `generator/` folder when the family pairs one (ELECTRA) and it holds a config.json;
  None for a model with a fine-tuning `head`.

  Raises:
    UserError: a generator given for a family without one, or for a fine-tuned model.
  """
  folder = getattr(family, "GENERATOR_FOLDER", None)
  if given is not None:
    if folder is None:
      raise UserError(
        f"--generator is for an ELECTRA discriminator; {hf_dir} is a {family.ARCH} model"
      )
    if head is not None:
      raise UserError(
        f"--generator is for an ELECTRA discriminator (ElectraForPreTraining); {hf_dir} is "
        f"a {head.architecture}: drop --generator"
      )
    return given
  if head is None and folder is not None:
    if storage.isfile(storage.join(hf_dir, folder, files.CONFIG)):
      return storage.join(hf_dir, folder)
  return None


def _convert(family, model_cfg, checkpoint, model, parts, seed, hf_vocab, log):
  """Our params from the checkpoint's tensors ({folder: tensors}: the model's, and a
  generator's): (params, the groups initialised, the tensor names not used).

  The parts are those an export of `model_cfg` writes (`families.model_parts`): with a
  generator, each of the two models is read from its own tensors, and the discriminator's
  embeddings replace the generator's copy (one line says when they differ). Parameters
  the tables lack (the pooler of a token or QA model, which its head does not read) or the
  checkpoint lacks are initialised from `seed`; a model read whole is not initialised.
  """
  abstract = run_lib.abstract_params(model)
  leaves = {tuple(k.key for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract)}
  covered = {row.ours for _, _, rows, _ in parts for row in rows}
  absent = {
    row.ours for folder, _, rows, _ in parts for row in rows if row.hf not in checkpoint[folder]
  }
  uninitialised = (leaves - covered) | absent  # no table row, or a row the checkpoint lacks
  initial = _initial_params(model, seed, abstract, uninitialised) if uninitialised else abstract
  params, missing, unused = {}, set(), []
  for folder, _, rows, _ in reversed(parts):  # the generator first: the model's bert/ wins
    tensors = checkpoint[folder]
    part, part_missing = convert.from_hf(tensors, initial, rows, hf_vocab)
    if "bert" in params and "bert" in part:
      _compare_embeddings(params["bert"]["embeddings"], part["bert"]["embeddings"], log)
    params.update(part)
    missing.update(part_missing)
    prefix = f"{folder}/" if folder else ""
    unused += [prefix + name for name in set(tensors) - {row.hf for row in rows}]
  return _filled(params, initial), sorted(missing), unused


def _filled(params: dict, initial: dict) -> dict:
  """`params` with the entries of `initial` (a whole params tree) it lacks."""
  out = dict(params)
  for name, value in initial.items():
    if name not in out:
      out[name] = value
    elif isinstance(value, dict):
      out[name] = _filled(out[name], value)
  return out


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


def _initial_params(model, seed, abstract, paths):
  """`abstract` (the params' shapes) with the leaves at `paths` freshly initialised from
  `seed` as numpy arrays (the heads the checkpoint lacks). Only those are computed: XLA drops
  the rest of the init (a whole MiniLM's random tables took seconds on CPU), and each leaf
  has the value a whole init gives it.
  """
  inputs = registry.dummy_inputs(model)

  def init(key):
    params = nn.meta.unbox(model.init(key, *inputs)["params"])
    return {path: convert.get_path(params, path) for path in paths}

  values = jax.jit(init)(jax.random.key(seed))
  out = jax.tree_util.tree_map(lambda x: x, abstract)  # a copy to fill
  for path, value in values.items():
    convert.set_path(out, path, np.asarray(value))
  return out
