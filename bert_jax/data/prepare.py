"""`bert-jax prepare`: a corpus into a tokenizer, ArrayRecord shards and a manifest.

Layout of a prepared dir:

    manifest.json                 written last: a dir with a manifest is complete
    tokenizer.model | vocab.txt | tokenizer.json
                                  trained on a sample (SentencePiece), or a copy of
                                  config.tokenizer.path (tokenizer.json: Hugging Face's)
    tokenizer_settings.json       what a trained tokenizer.model was trained on: its settings
                                  and the input (files, sizes, times): another retrains it
    shards/{train,eval}-NNNNN.array_record   one pair per work unit
    shards/unit-NNNNN.json        a unit's counts, settings, tokenizer fingerprint and the size
                                  and SHA-256 of its shards, written after them: a resume with
                                  the same settings skips the unit

The prepared dir may be a URL (`gs://bucket/data`): a unit then writes its shards in a
local temporary folder and uploads them, and writes its `unit-NNNNN.json` only once the
uploads are complete; the manifest still comes last. The manifest lists each shard's size
and SHA-256, which readers of a remote dir check their local copies against.

Work units (`sources.plan_units`: files, byte ranges of large files, parts of a TFDS split)
run in a process pool, each streaming its documents through chunks of
`config.data.documents_per_chunk`, so memory stays constant whatever the corpus size. A
unit's output depends only on the settings and the unit (its own seeded RNG), never on
the number of workers. Documents go to eval by a seeded hash (`config.data.eval_fraction`).
Each unit's documents become rows (`instances`), written as records (`records`).

Ctrl-C stops the workers quietly (they ignore SIGINT; the parent ends them) and the next
run resumes. A preparation that fails removes the folders it created, unless they hold
something a rerun uses (a trained tokenizer, finished units).
"""

import collections
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bert_jax import progress as progress_lib
from bert_jax import storage
from bert_jax.data import records, sources
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.data import units as units_lib
from bert_jax.data.units import SHARDS, SPLITS
from bert_jax.errors import UserError

if TYPE_CHECKING:
  import ml_collections

MANIFEST = "manifest.json"
TOKENIZER_SETTINGS = "tokenizer_settings.json"
# 4 (2026-12-01): byte-level BPE sentences keep the space before them, and nsp / sop chunks of
# few documents draw random segments from other units too: rows of 3 are prepared again.
FORMAT_VERSION = 4
# The settings that choose the sentences a tokenizer is trained on (`sources.sample_sentences`).
_SAMPLE_KEYS = ("input", "input_stamp", "input_format", "text_field", "tfds_split", "num_shards")


def settings_of(config: "ml_collections.ConfigDict", *, stamp: bool = True) -> dict:
  """What the prepared data depends on (a mismatch means: prepare again); without
  `stamp`, its "input_stamp" (the input files' sizes and times) is None.

  Raises:
    UserError: the input names no file (`stamp`), or config.tokenizer.path does not exist.
  """
  d, t = config.data, config.tokenizer
  return json.loads(
    json.dumps(
      {
        "format_version": FORMAT_VERSION,
        "input": d.input,
        "input_stamp": sources.stamp(d.input, tfds_data_dir=d.tfds_data_dir) if stamp else None,
        "input_format": d.input_format,
        "text_field": d.text_field,
        "tfds_split": d.tfds_split,
        "num_shards": d.num_shards,
        "strict": d.strict,
        "objective": d.objective,
        "packing": d.packing,
        "documents_per_chunk": d.documents_per_chunk,
        "max_seq_length": d.max_seq_length,
        "short_seq_prob": d.short_seq_prob,
        "dupe_factor": d.dupe_factor,
        "eval_fraction": d.eval_fraction,
        "seed": config.seed,
        # The tokenizer given, by content: a copy elsewhere is the same tokenizer (and the
        # settings that train one do not apply to it).
        "tokenizer": {
          "sha256": _sha256(t.path) if t.path else None,
          "vocab_size": None if t.path else t.vocab_size,
          "model_type": None if t.path else t.model_type,
          "input_sentence_size": None if t.path else t.input_sentence_size,
          "lowercase": t.lowercase,
        },
      }
    )
  )


def _sha256(path):
  if not storage.isfile(path):
    raise UserError(
      f"config.tokenizer.path={path!r} does not exist; give a SentencePiece "
      f".model, a WordPiece vocab.txt or a Hugging Face tokenizer.json, or "
      f"leave it empty to train one"
    )
  return storage.sha256(path)


def read_manifest(data_dir: str) -> dict | None:
  """The manifest.json of prepared data, or None when it is missing or unreadable."""
  storage.invalidate_cache(data_dir)  # another process may have written it meanwhile
  try:
    return storage.read_json(storage.join(data_dir, MANIFEST))
  except (OSError, ValueError):
    return None


def _differences(old, new, prefix=""):
  """'key: old there, new here' for each setting that differs."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} there, {b!r} here")
  return out


def _prepared(manifest, config, data_dir, log) -> dict:
  """The manifest of the complete data in `data_dir`, when `config` would make the same
  rows: every setting must match, but the input may differ when `config.data.input` reads
  no file here (a recipe's placeholder on a pod that trains from a bucket, a corpus moved
  after preparing), and its files may have changed since (a resumed run keeps reading the
  rows it started on). Either is said in one line.

  Raises:
    UserError: another setting, or another input that exists here.
  """
  there, here = manifest.get("settings", {}), settings_of(config, stamp=False)
  if there.get("format_version") != FORMAT_VERSION:
    raise UserError(
      f"{data_dir} holds data an older bert_jax prepared (format {there.get('format_version')}; "
      f"this one reads {FORMAT_VERSION}); delete it, or set another config.data.prepared_dir, "
      f"to prepare it again"
    )
  other_input = there.get("input") != here["input"]
  try:
    stamp = sources.stamp(config.data.input, tfds_data_dir=config.data.tfds_data_dir)
  except UserError:
    stamp = None  # reads no file here
  ignored = ("input", "input_stamp") if stamp is None or not other_input else ("input_stamp",)
  differences = _differences(
    {k: v for k, v in there.items() if k not in ignored},
    {k: v for k, v in here.items() if k not in ignored},
  )
  if differences:
    shown = "; ".join(differences[:4]) + (
      f"; and {len(differences) - 4} more" if len(differences) > 4 else ""
    )
    raise UserError(
      f"{data_dir} holds data prepared with other settings ({shown}); give the settings it "
      f"was prepared with (its {MANIFEST} lists them), set another "
      f"config.data.prepared_dir, or delete {data_dir}"
    )
  if other_input:
    log(
      f"data: config.data.input={here['input']!r} reads no file here; using "
      f"{data_dir} as prepared from {there.get('input')!r}"
    )
  elif stamp != there.get("input_stamp"):
    log(
      f"data: the input files changed since {data_dir} was prepared; using it as prepared "
      f"(delete it, or set another config.data.prepared_dir, to prepare again)"
    )
  log(f"data: {data_dir} is prepared ({manifest['splits']['train']['rows']} train rows)")
  return manifest


def prepare(
  config: "ml_collections.ConfigDict",
  data_dir: str,
  log: Callable[[str], None] = print,
  progress: bool = True,
) -> dict:
  """Prepares (or reuses, or finishes) `data_dir`; returns its manifest.

  Args:
    config: a pretraining config (`config.data`, `config.tokenizer`, `config.seed`).
    data_dir: the prepared dir (made if missing).
    log: where the progress and summary lines go.
    progress: show a progress bar over the shards.

  Returns:
    The manifest (also `data_dir/manifest.json`).

  Raises:
    UserError: bad input or settings, or a complete `data_dir` made with other settings.
      Folders this call made are removed again unless something useful was written in
      them (a trained tokenizer, finished shards).
  """
  old = read_manifest(data_dir)
  if old is not None:
    return _prepared(old, config, data_dir, log)
  settings = settings_of(config)
  d = config.data
  units = sources.plan_units(
    d.input,
    input_format=d.input_format,
    num_units=d.num_shards,
    text_field=d.text_field,
    tfds_split=d.tfds_split,
    tfds_data_dir=d.tfds_data_dir,
  )
  if config.tokenizer.path:
    _check_has_text(config, units)
  # A given tokenizer's copy is made again at no cost (nothing is trained beside it).
  copies = tokenizer_lib.FILE_NAMES if config.tokenizer.path else ()
  with _removed_if_failed(storage.join(data_dir, SHARDS), copies):
    tok = _tokenizer(config, data_dir, units, settings, log, progress)
    job = {
      "data_dir": data_dir,
      "tokenizer": tok.model_path,
      "tokenizer_fingerprint": tok.fingerprint,
      "settings": settings,
      "lowercase": config.tokenizer.lowercase,
    }
    t0 = time.time()
    unit_counts, unit_files = units_lib.run_units(units, job, d.num_workers, log, progress)
    manifest = _manifest(units, unit_counts, unit_files, tok, settings)
    manifest["seconds"] = round(time.time() - t0, 1)
    storage.write_text(
      storage.join(data_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    )
  c = manifest["counts"]
  log(
    f"data: {c['documents']} documents, {c['tokens']} tokens -> "
    f"{manifest['splits']['train']['rows']} train / {manifest['splits']['eval']['rows']} eval "
    f"rows of {d.max_seq_length} in {len(units)} shards ({manifest['seconds']} s)"
  )
  for line in _notes(c, d):
    log(line)
  return manifest


def _notes(counts: dict, data_config) -> list[str]:
  """One line for each kind of input that preparation skipped or cut."""
  notes = []
  if counts.get("empty_documents"):
    notes.append(
      f"data: skipped {progress_lib.count(counts['empty_documents'], 'empty document')} (a "
      f"file, JSON line or TFDS record without text)"
    )
  if counts["invalid_utf8_lines"]:
    notes.append(
      f"data: skipped {counts['invalid_utf8_lines']} non-UTF-8 lines "
      f"(config.data.strict=True names the first)"
    )
  if counts["bad_json_lines"]:
    notes.append(
      f"data: skipped {counts['bad_json_lines']} JSON lines that are not JSON or hold no "
      f"string in config.data.text_field={data_config.text_field!r}"
    )
  if _cuts_much(counts):
    notes.append(f"data: {_truncation_hint(counts, data_config.input_format)}")
  return notes


# A note when cutting sentences to fit a sentence pair lost this share of the tokens or more.
CUT_NOTE_SHARE = 0.01


def _cut_share(counts: dict) -> float:
  """The share of the corpus's tokens that sentences cut to fit a pair lost."""
  cut = counts.get("cut_tokens", 0)  # (manifests before 2026-11-30 do not count them)
  return cut / max(cut + counts["tokens"], 1)


def _cuts_much(counts: dict) -> bool:
  return _cut_share(counts) >= CUT_NOTE_SHARE or 2 * counts["truncated_sentences"] > max(
    counts["sentences"], 1
  )


def _truncation_hint(counts: dict, input_format: str) -> str:
  split_them = (
    "if a line holds a paragraph or a whole document, set config.data.input_format=document "
    "(sentences split at . ! ? 。！？), or raise"
    if input_format != "document"
    else "raise"  # already split at sentence ends: the sentences are that long
  )
  return (
    f"{counts['truncated_sentences']} of {counts['sentences']} sentences were longer than a "
    f"sentence pair's first segment (config.data.max_seq_length - 3) and were cut to fit, "
    f"losing {_cut_share(counts):.0%} of the tokens; {split_them} config.data.max_seq_length "
    f"(config.data.objective=mlm splits long sentences across rows instead)"
  )


@contextlib.contextmanager
def _removed_if_failed(path: str, copies=()):
  """Makes `path` (and its parents); if the body fails, removes the folders it made that hold
  nothing useful: nothing, or only `.tmp` files of writes cut short and `copies` (file names:
  a given tokenizer's copy). Never touches a folder that existed before. A URL has no
  folders to make or remove.
  """
  if storage.is_remote(path):
    yield
    return
  made = storage.folders_to_make(path)
  os.makedirs(path, exist_ok=True)
  try:
    yield
  except BaseException:
    storage.remove_empty(made, disposable=lambda name: name.endswith(".tmp") or name in copies)
    raise


def _no_text(config, units) -> UserError:
  """The error for an input that gave no sentence."""
  hint = sources.text_field_hint(units)
  return UserError(
    f"config.data.input={config.data.input!r} has no text"
    + (
      hint
      or ": the files are empty or every line was skipped as non-UTF-8 "
      "(config.data.strict=True names the first such line); give UTF-8 text"
    )
  )


def _check_has_text(config, units) -> None:
  """Refuses an input without a sentence before anything is written (a given tokenizer
  is not trained, which would find it out).
  """
  first = sources.sample_sentences(
    units, max_sentences=1, seed=config.seed, strict=config.data.strict
  )
  if next(iter(first), None) is None:
    raise _no_text(config, units)


def _trained_on(settings: dict) -> dict:
  """What a trained tokenizer depends on: its settings, and the input it sampled."""
  return {
    "tokenizer": settings["tokenizer"],
    "sample": {key: settings[key] for key in _SAMPLE_KEYS},
    "seed": settings["seed"],
  }


def _read_stamp(path: str):
  try:
    return storage.read_json(path)
  except (OSError, ValueError):
    return None


# The tokenizer kind a family's own checkpoints use, where it is not the default's.
FAMILY_TOKENIZERS = {"roberta": "bytelevel_bpe", "modernbert": "bytelevel_bpe"}
# The families whose trained byte-level BPE names its special tokens as RoBERTa's (<s>,
# </s>, <mask>); others take BERT's names ([CLS], [SEP], [MASK]). The ids are the same.
ROBERTA_NAMED = ("roberta",)


def _tokenizer(config, data_dir, units, settings, log, progress):
  """The prepared dir's tokenizer: a copy of config.tokenizer.path, or trained (once per
  input and settings: `tokenizer_settings.json` records them).
  """
  t = config.tokenizer
  stamp = storage.join(data_dir, TOKENIZER_SETTINGS)
  if t.path:
    target = storage.join(data_dir, tokenizer_lib.load(t.path, lowercase=t.lowercase).file_name)
    storage.write_bytes(target, storage.read_bytes(t.path))
    tok = tokenizer_lib.load(target, lowercase=t.lowercase)
    log(f"tokenizer: {t.path} ({tok.kind}, {tok.vocab_size} pieces)")
  else:
    target = storage.join(data_dir, tokenizer_lib.trained_file_name(t.model_type))
    trained_on = _trained_on(settings)
    done = storage.exists(target) and _read_stamp(stamp) == trained_on
    arch = config.get("model", {}).get("arch")
    if not done and arch in FAMILY_TOKENIZERS and t.model_type != FAMILY_TOKENIZERS[arch]:
      log(
        f"note: config.model.arch={arch!r} with a {t.model_type} tokenizer; {arch}'s own is "
        f"--config.tokenizer.model_type={FAMILY_TOKENIZERS[arch]}"
      )
    if not done:
      log(
        f"tokenizer: training {t.vocab_size} {t.model_type} pieces on up to "
        f"{t.input_sentence_size:,} sentences of the input (config.tokenizer."
        f"input_sentence_size)..."
      )
      t0 = time.time()
      seen, errors = collections.Counter(), []

      def sample():
        # A bar while the sentences are read (up to input_sentence_size: a smaller corpus
        # ends sooner), then a line: the pieces are learnt after, without progress.
        reading = progress_lib.Bar(
          t.input_sentence_size, "tokenizer: reading", "sentence", shown=progress, leave=False
        )
        try:
          with reading:
            for sentence in sources.sample_sentences(
              units,
              max_sentences=t.input_sentence_size,
              seed=config.seed,
              strict=config.data.strict,
            ):
              seen["sentences"] += 1
              reading.update()
              yield sentence
          seen["read through"] = 1
        except Exception as e:  # reading failed: that error, not SentencePiece's "no text"
          errors.append(e)
          raise
        if seen["sentences"]:
          log(
            f"tokenizer: read {seen['sentences']:,} sentences in {time.time() - t0:.1f} s; "
            f"learning the pieces..."
          )

      try:
        tokenizer_lib.train_tokenizer(
          sample(),
          target,
          vocab_size=t.vocab_size,
          model_type=t.model_type,
          lowercase=t.lowercase,
          layout="roberta" if arch in ROBERTA_NAMED else "bert",
          input_sentence_size=t.input_sentence_size,
          seed=config.seed,
        )
      except UserError:
        if errors:
          raise errors[0] from None
        if seen["read through"] and not seen["sentences"]:  # (not: refused before reading)
          raise _no_text(config, units) from None
        raise
      except BaseException as e:  # Ctrl-C, SIGTERM: taken once SentencePiece has learnt
        if getattr(e, "model_kept", False):  # its pieces of the whole sample: kept
          storage.write_json(stamp, trained_on)
          log(f"tokenizer: learnt before the stop, kept: {target} (the rerun starts there)")
        raise
      storage.write_json(stamp, trained_on)
      took = time.time() - t0
    tok = tokenizer_lib.load(target, lowercase=t.lowercase)  # as the workers load it
    if not done:  # the pieces it has: a small corpus may give fewer than asked (refused below)
      log(f"tokenizer: trained {tok.vocab_size} pieces in {took:.1f} s")
  if not t.path and tok.vocab_size != t.vocab_size:  # a given tokenizer has its own size
    raise UserError(
      f"tokenizer {target} has {tok.vocab_size} pieces but "
      f"config.tokenizer.vocab_size is {t.vocab_size}; set it to {tok.vocab_size}"
    )
  return tok


def _manifest(units, unit_counts, unit_files, tok, settings):
  total = collections.Counter()
  token_counts = np.zeros(tok.vocab_size, np.int64)
  for c in unit_counts:
    token_counts += np.asarray(c.get("token_counts", 0), np.int64)
    total.update({k: v for k, v in c.items() if k != "token_counts"})
  token_counts[tok.special_table()] = 0
  length = settings["max_seq_length"]
  splits = {}
  for split in SPLITS:
    rows = total[f"{split}_rows"]
    splits[split] = {
      "rows": rows,
      "documents": total[f"{split}_documents"],
      "density": round(1 - total[f"{split}_padding"] / max(rows * length, 1), 4),
      "shards": [
        {
          "file": f"{SHARDS}/{split}-{i:05d}.array_record",
          "rows": c.get(f"{split}_rows", 0),
          **f.get(split, {}),  # bytes, sha256
        }
        for i, (c, f) in enumerate(zip(unit_counts, unit_files))
      ],
    }
  hint = f" ({_truncation_hint(total, settings['input_format'])})" if _cuts_much(total) else ""
  if splits["train"]["rows"] == 0:
    field = sources.text_field_hint(units) if not total["documents"] else ""
    raise UserError(
      f"the corpus {settings['input']!r} gave no training rows "
      f"({total['documents']} documents)" + (field or f"; give more text{hint}")
    )
  if splits["eval"]["rows"] == 0:
    documents = total["documents"]
    fraction = settings["eval_fraction"]
    if documents < 2:
      raise UserError(
        f"no eval rows: the input is {documents} document, and eval holds out whole "
        f"documents; split it into several (original BERT's format: a blank line between "
        f"documents; config.data.input_format=document: one per file){hint}"
      )
    wanted = max(0.01, min(0.5, math.ceil(500 / documents) / 100))  # ~5 documents
    wanted = wanted if wanted > fraction else min(0.5, 2 * fraction)
    raise UserError(
      f"no eval rows: {splits['eval']['documents']} of the {documents} documents were held "
      f"out at config.data.eval_fraction={fraction} (each document goes to eval with that "
      f"chance); raise it (e.g. --config.data.eval_fraction={wanted:g}) or give more "
      f"documents{hint}"
    )
  counts = {
    k: total[k]
    for k in (
      "documents",
      "empty_documents",
      "sentences",
      "tokens",
      "truncated_sentences",
      "cut_tokens",
      "invalid_utf8_lines",
      "bad_json_lines",
    )
  }
  return {
    "settings": settings,
    "tokenizer_file": storage.name(tok.model_path),
    "tokenizer_kind": tok.kind,
    "tokenizer_fingerprint": tok.fingerprint,
    "vocab_size": tok.vocab_size,
    "special_ids": dict(zip(("pad", "unk", "cls", "sep", "mask"), map(int, tok.special_ids))),
    "token_dtype": np.dtype(records.token_dtype(tok.vocab_size)).name,
    "max_seq_length": length,
    "num_shards": len(units),
    "counts": counts,
    "splits": splits,
    "most_frequent_token_id": int(np.argmax(token_counts)),
  }
