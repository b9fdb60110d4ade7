"""`bert-jax export-hf`: a run's checkpoint -> a Hugging Face model directory.

Writes `config.json`, `model.safetensors` (parameters only, float32, Hugging Face's names)
and the tokenizer files, so that `transformers` loads it offline with no custom code:
  - a pretraining run: `BertForPreTraining` (MLM and NSP heads; the decoder tied to the word
    embeddings), for `AutoModelForMaskedLM` and `pipeline("fill-mask")`; an ELECTRA
    replaced-token-detection run writes its discriminator (`ElectraForPreTraining`) and,
    in `generator/`, its generator (`ElectraForMaskedLM`), each a whole model directory;
  - a fine-tuned run (its best eval, unless --step): `BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` with `id2label` /
    `label2id`, for `pipeline("text-classification" | "token-classification" |
    "question-answering")`; the tokenizer's `model_max_length` is the run's
    max_seq_length, so `truncation=True` cuts texts where training did;
  - a sentence-embedding run (task "embedding"), or an import of a sentence-transformers
    checkpoint: the family's base model (`BertModel`, `RobertaModel`, ...) plus the
    sentence-transformers modules (`modules.json`, `sentence_bert_config.json`,
    `1_Pooling/`, `2_Normalize/` when the run normalises; `hf.sentence_transformers`), so
    `SentenceTransformer(DIR).encode` gives `bert-jax embed`'s vectors.
The checkpoint may come from any mesh: it is restored onto one device. The workdir and
--out may be URLs (`gs://...`); the files are the same bytes as a local export's.
"""

import os
import shutil
import tempfile

import jax
import numpy as np

from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.hf import convert, families, files, tokenizer_files
from bert_jax.hf import sentence_transformers as st
from bert_jax.hf.families import electra as electra_hf

# What an export writes: the only files (and folders) --overwrite replaces in an existing --out.
EXPORT_FILES = (files.CONFIG, files.SAFETENSORS) + tokenizer_files.EXPORT_FILES + st.MODULE_FILES
EXPORT_DIRS = st.MODULE_DIRS + (electra_hf.GENERATOR_FOLDER,)
# Entries that make a directory a bert_jax run (`run`'s layout), never an export target.
_RUN_ENTRIES = run_lib.RUN_FOLDERS + (run_lib.METRICS,)  # config.json: see _is_run_config
_SHOWN = 5  # entries named in an error


def export_hf(
  workdir: str, out_dir: str, *, step: int | None = None, overwrite: bool = False, log=print
) -> str:
  """Exports the checkpoint of `workdir` at `step` into the Hugging Face directory `out_dir`.

  The files are written to a temporary folder (beside a local `out_dir`, else a local
  one) and moved or uploaded in at the end, so an export that fails before then leaves
  `out_dir` as it was.

  Args:
    workdir: a run directory (pretraining, fine-tuned, or imported), local or a URL.
    out_dir: the directory to write, local or a URL; it must be new or empty, or, with `overwrite`, hold
      only the files of an earlier export (`EXPORT_FILES`), which are replaced.
    step: the checkpoint step; None: the best eval of a fine-tuned run, else the latest.
    overwrite: replace an earlier export in `out_dir`.
    log: prints the one-line summary.

  Returns:
    `out_dir`.

  Raises:
    UserError: `out_dir` is a file, a run directory, in a folder this user may not write
      in, in a bucket that does not exist, or holds files that are not an export's
      (listing them); no checkpoint at `step`.
  """
  _check_out_dir(workdir, out_dir, overwrite)
  run = run_lib.load(workdir, step)
  model = run.model.config
  vocab_size = run.meta.get("hf_vocab_size") or run.tokenizer.vocab_size
  params = jax.tree_util.tree_map(np.asarray, convert.unscan(run.params))
  head = run.meta.get("task", "pretraining")
  family = families.for_arch(model.arch)
  embedding = _sentence_pipeline(run, head)
  if embedding is not None:
    parts = [("", model, st.base_rows(family, model), st.base_architecture(model.arch))]
  else:
    parts = families.model_parts(family, model, head)
  models = []  # (folder, tensors, config.json) of each model the export writes
  for folder, part_model, rows, architecture in parts:
    config = {"architectures": [architecture]}
    config.update(family.hf_config(part_model, vocab_size, run.tokenizer))
    if head != "pretraining" and embedding is None:
      config = files.task_config(config, head, run.meta.get("labels"))
    tensors = convert.to_hf(params, rows, vocab_size)
    if embedding is not None:
      tensors.update(st.zero_pooler(model.arch, model.hidden_size))
    models.append((folder, tensors, config))

  if storage.is_remote(out_dir):
    staging = tempfile.mkdtemp(prefix=".export-hf.")
  else:  # beside out_dir: the same file system, so the files move in by rename
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.", dir=parent)
  try:
    for folder, tensors, config in models:
      target = os.path.join(staging, folder)
      os.makedirs(target, exist_ok=True)
      files.write(target, tensors, config)
      tokenizer_files.export_tokenizer(
        run.tokenizer,
        target,
        model_max_length=run.meta.get("max_seq_length", model.max_length),
        arch=model.arch,
      )
    if embedding is not None:
      st.write_modules(staging, hidden_size=model.hidden_size, **embedding)
    _move_into(staging, out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # a local temporary folder
  written = " + ".join(
    f"{config['architectures'][0]}{' in ' + folder + '/' if folder else ''} "
    f"({len(tensors)} tensors)"
    for folder, tensors, config in models
  )
  if embedding is not None:
    normalised = ", normalised" if embedding["normalize"] else ""
    written += f" + sentence-transformers modules ({embedding['pooling']} pooling{normalised})"
  log(f"exported step {run.step} of {workdir}: {written}, vocab {vocab_size} -> {out_dir}")
  return out_dir


def _sentence_pipeline(run, head: str) -> dict | None:
  """`st.write_modules`' pooling, normalize and max_seq_length for the export of `run`: an
  embedding run's, or an import's of a sentence-transformers checkpoint (its files'
  settings, as `embed` uses them: the export is that checkpoint again, not a pretraining
  model whose MLM and NSP heads the import initialised); None: a model without them.
  """
  if head == "embedding" and (e := run.meta.get("embedding")):
    length = run.meta.get("max_seq_length", run.model.config.max_length)
    return {"pooling": e["pooling"], "normalize": e["normalize"], "max_seq_length": length}
  modules = run.meta.get(st.META_KEY) if head == "pretraining" else None
  if not modules:
    return None
  return {k: modules[k] for k in ("pooling", "normalize", "max_seq_length")}


def _move_into(staging: str, out_dir: str) -> None:
  """Moves the staged files into `out_dir` (made if new), replacing those of an earlier
  export there, and removes that export's other files (and nothing else). Each file is
  replaced whole: renamed in locally, uploaded into a URL.
  """
  storage.makedirs(out_dir)
  staged = sorted(os.listdir(staging))
  for name in staged:
    source, target = os.path.join(staging, name), storage.join(out_dir, name)
    if os.path.isdir(source):  # a sentence-transformers module folder: replaced whole
      if storage.isdir(target):
        storage.rmtree(target)
      storage.makedirs(target)
      for inner in sorted(os.listdir(source)):
        _move_file(os.path.join(source, inner), storage.join(target, inner), out_dir)
    else:
      _move_file(source, target, out_dir)
  for name in EXPORT_FILES:  # e.g. the vocab.txt of an earlier WordPiece export
    if name not in staged:
      storage.remove(storage.join(out_dir, name))
  for name in EXPORT_DIRS:  # e.g. 2_Normalize of an earlier normalising export
    if name not in staged and storage.isdir(storage.join(out_dir, name)):
      storage.rmtree(storage.join(out_dir, name))


def _move_file(source: str, target: str, out_dir: str) -> None:
  """One staged file into place: renamed in locally, uploaded into a URL."""
  if storage.is_remote(out_dir):
    storage.copy(source, target)
  else:
    os.replace(source, target)


def _check_out_dir(workdir: str, out_dir: str, overwrite: bool) -> None:
  """UserError unless `out_dir` may receive an export (see `export_hf`); writes nothing."""
  if storage.is_remote(out_dir) and (problem := storage.unreachable(out_dir)):
    raise UserError(f"--out {out_dir}: {problem}; check the bucket name and access")
  if storage.isfile(out_dir):
    raise UserError(f"--out {out_dir} is a file; give a directory")
  out, work = _real(out_dir), _real(workdir)
  if work == out or work.startswith(out + "/"):
    raise UserError(
      f"--out {out_dir} would replace the run directory {workdir}; "
      f"export into a directory of its own"
    )
  if folder := storage.unwritable_folder(out_dir):
    raise UserError(f"--out {out_dir}: you may not write in {folder}; export elsewhere")
  if not storage.isdir(out_dir):
    return
  entries = storage.listdir(out_dir)
  run_entries = [n for n in entries if n in _RUN_ENTRIES or _is_run_config(out_dir, n)]
  if run_entries:
    raise UserError(
      f"--out {out_dir} is a bert_jax run directory (it holds {_listing(run_entries)}); "
      f"export into a directory of its own"
    )
  if entries and not overwrite:
    raise UserError(
      f"--out {out_dir} is not empty; choose a new directory or pass --overwrite to replace "
      f"an earlier export there"
    )
  foreign = [n for n in entries if not _is_export_file(out_dir, n)]
  if foreign:
    raise UserError(
      f"--out {out_dir} holds {_listing(foreign)}, which an export does not write; "
      f"--overwrite replaces only {', '.join(EXPORT_FILES + EXPORT_DIRS)}: move the others away or "
      f"choose a new directory"
    )


def _real(path: str) -> str:
  """`path` resolved (links, `..`) when local; a URL without its trailing slash."""
  return path.rstrip("/") if storage.is_remote(path) else os.path.realpath(path)


def _listing(names: list[str]) -> str:
  """The first few names, and how many more."""
  shown = ", ".join(names[:_SHOWN])
  return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _is_export_file(out_dir: str, name: str) -> bool:
  """Whether `name` in `out_dir` is a file an export writes (a Hugging Face config.json)."""
  path = storage.join(out_dir, name)
  if name in EXPORT_DIRS:
    return not os.path.islink(path) and storage.isdir(path)
  if name not in EXPORT_FILES or os.path.islink(path) or not storage.isfile(path):
    return False
  return name != files.CONFIG or "model_type" in (_json_object(path) or {})


def _is_run_config(out_dir: str, name: str) -> bool:
  """Whether `name` is a run's resolved config.json (a `train` and a `model` section)."""
  if name != run_lib.CONFIG:
    return False
  config = _json_object(storage.join(out_dir, name)) or {}
  return "model_type" not in config and isinstance(config.get("train"), dict)


def _json_object(path: str) -> dict | None:
  """The JSON object in `path`, or None when the file is not one."""
  try:
    value = storage.read_json(path)
  except (OSError, ValueError, UnicodeDecodeError):
    return None
  return value if isinstance(value, dict) else None
