"""The work units of `prepare`: each unit's documents become its train and eval shards and
its done file, in a pool of worker processes.

A unit's output depends only on the settings and the unit (its own seeded RNG), never on
the number of workers. Documents go to eval by a seeded hash (`eval_fraction`). A remote
prepared dir's shards are written in a local temporary folder and uploaded; the done file
`shards/unit-NNNNN.json` (counts, settings, tokenizer fingerprint, each shard's size and
SHA-256) is written only after them, so a rerun skips exactly the finished units. Workers
ignore Ctrl-C; the parent ends them.
"""

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time

import numpy as np

from bert_jax import progress as progress_lib
from bert_jax import storage
from bert_jax.data import instances, records, sources
from bert_jax.data import tokenizer as tokenizer_lib

SHARDS = "shards"
SPLITS = ("train", "eval")


def unit_paths(data_dir, unit_index):
  """({split: shard path}, done-file path) of unit `unit_index` in `data_dir`."""
  base = storage.join(data_dir, SHARDS)
  return (
    {s: storage.join(base, f"{s}-{unit_index:05d}.array_record") for s in SPLITS},
    storage.join(base, f"unit-{unit_index:05d}.json"),
  )


def run_units(units, job, num_workers, log, progress):
  """Runs the units not yet done; returns each unit's counts and its shards' {split:
  {"bytes", "sha256"}} (empty for a unit done by an older version), in unit order.
  """
  counts, files, todo = {}, {}, []
  storage.invalidate_cache(job["data_dir"])
  _remove_units_past(job["data_dir"], len(units), log)
  for i, unit in enumerate(units):
    _, done_path = unit_paths(job["data_dir"], i)
    try:
      done = storage.read_json(done_path)
      if (
        done["settings"] == job["settings"]
        and done["unit"] == repr(unit)
        and done.get("tokenizer_fingerprint") == job["tokenizer_fingerprint"]
      ):
        counts[i], files[i] = done["counts"], done.get("files", {})
        continue
    except (OSError, ValueError, KeyError):
      pass
    todo.append((i, unit))
  if len(todo) < len(units):
    log(f"data: {len(units) - len(todo)} of {len(units)} shards already done; resuming")
  workers = min(num_workers or os.cpu_count() or 1, max(1, len(todo)))
  bar = progress_lib.Bar(len(todo), "prepare", "shard", shown=progress and bool(todo))
  tokens, t0 = 0, time.time()
  args = [(i, unit, job, neighbours(units, i)) for i, unit in todo]
  if workers == 1:
    results = map(process_unit, args)
  else:
    with _sigint_ignored():  # workers spawned now ignore Ctrl-C from their start on
      pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_sigint)
    results = pool.imap_unordered(process_unit, args)
  try:
    for i, unit_counts, unit_files in results:
      counts[i], files[i] = unit_counts, unit_files
      tokens += unit_counts.get("tokens", 0)  # a unit of empty files counts none
      bar.update(note=f"{tokens / max(time.time() - t0, 1e-9) / 1e3:,.0f}k tokens/s")
  finally:
    bar.close()
    if workers > 1:
      pool.terminate()
  return [counts[i] for i in range(len(units))], [files[i] for i in range(len(units))]


# The names `unit_paths` gives a unit's shards and done file.
_UNIT_FILE = re.compile(rf"(?:(?:{'|'.join(SPLITS)})-(\d{{5}})\.array_record|unit-(\d{{5}})\.json)")


def _remove_units_past(data_dir, num_units, log):
  """Removes the shards and done files of units numbered `num_units` and up: an earlier
  preparation cut short with more shards left them, and neither this plan nor the data
  read them (the manifest lists the shards), but a copy of the folder would carry them.
  """
  folder = storage.join(data_dir, SHARDS)
  if not storage.isdir(folder):
    return
  stale = [
    name
    for name in storage.listdir(folder)
    if (match := _UNIT_FILE.fullmatch(name)) and int(match[1] or match[2]) >= num_units
  ]
  for name in stale:
    storage.remove(storage.join(folder, name))
  if stale:
    log(f"data: removed {len(stale)} files of units past this plan's {num_units} in {folder}")


def _ignore_sigint():
  """Pool initializer: Ctrl-C reaches every process of the terminal's group, but only the
  parent acts on it (it ends the pool); a worker would print its own traceback.
  """
  signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_ignored():
  """SIGINT ignored in this (main) thread while the body runs: a process spawned meanwhile
  inherits the disposition, so it ignores Ctrl-C from its first instruction on.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)


_worker_tokenizers = {}


def _worker_tokenizer(job):
  key = job["tokenizer"]
  if key not in _worker_tokenizers:
    _worker_tokenizers[key] = tokenizer_lib.load(key, lowercase=job["lowercase"])
  return _worker_tokenizers[key]


def encode_document(tok, document, max_sentence, stats, *, pairs: bool) -> list[list[int]]:
  """Token ids of a document's sentences, as in the document (`tokenizer.as_in_the_text`;
  with `pairs`, nsp and sop, each as after a space: a first word without its space would
  tell a document's start, a random B's or a swapped A's, from the rest), each cut to
  `max_sentence` tokens (None: whole; the cuts counted in `stats`), empty ones dropped.
  """
  sentences = []
  for sentence in tok.encode_batch(tokenizer_lib.as_in_the_text(tok, document, all_spaced=pairs)):
    if max_sentence is not None and len(sentence) > max_sentence:
      stats["truncated_sentences"] += 1
      stats["cut_tokens"] += len(sentence) - max_sentence
      sentence = sentence[:max_sentence]
    if sentence:
      sentences.append(sentence)
  return sentences


# A chunk of fewer documents than this draws nsp/sop's random B from other units' too: the
# first documents of its split in the units after its own (google-research/bert draws from
# the whole corpus; a unit of one large document, a book, would otherwise draw from that
# document itself).
FEW_DOCUMENTS = 10
NEIGHBOUR_UNITS = 4
SCANNED_PER_NEIGHBOUR = 64  # documents read from each, to find some of the split
DOCUMENTS_PER_NEIGHBOUR = 4
SENTENCES_PER_NEIGHBOUR_DOCUMENT = 64


def neighbours(units, unit_index) -> list:
  """(index, unit) of the units after `unit_index` (wrapping round, not itself) that a chunk
  of few documents draws random segments from.
  """
  count = min(NEIGHBOUR_UNITS, len(units) - 1)
  indices = [(unit_index + k) % len(units) for k in range(1, count + 1)]
  return [(i, units[i]) for i in indices]


def _neighbour_documents(neighbour_units, tok, settings, max_sentence, split) -> list:
  """Token ids of a few documents of `split` (as their own units split them: no eval text in
  train rows, nor the reverse) among the first of each neighbour unit.
  """
  s, documents = settings, []
  for index, unit in neighbour_units:
    read = sources.read_unit(unit, collections.Counter(), strict=s["strict"])
    taken = 0
    with contextlib.closing(read):
      for doc_index, document in zip(range(SCANNED_PER_NEIGHBOUR), read):
        if _is_eval(s["seed"], index, doc_index, s["eval_fraction"]) != (split == "eval"):
          continue
        sentences = document[:SENTENCES_PER_NEIGHBOUR_DOCUMENT]
        ids = encode_document(tok, sentences, max_sentence, collections.Counter(), pairs=True)
        if ids:
          documents.append(ids)
          taken += 1
        if taken == DOCUMENTS_PER_NEIGHBOUR:
          break
  return documents


def _is_eval(seed, unit_index, doc_index, fraction):
  digest = hashlib.blake2b(f"{seed}/{unit_index}/{doc_index}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") < fraction * 2.0**64


def process_unit(args):
  """Documents of one unit -> its train and eval shards, then its done file (runs in a
  worker); returns (unit index, counts, the shards' sizes and SHA-256).
  """
  unit_index, unit, job, neighbour_units = args
  s = job["settings"]
  paths, done_path = unit_paths(job["data_dir"], unit_index)
  # ArrayRecord writes local files: a remote dir's shards are staged in a temporary folder.
  staging = tempfile.mkdtemp(prefix="bert_jax_shards_") if storage.is_remote(done_path) else None
  try:
    counts, files = _write_unit(unit_index, unit, job, paths, staging, neighbour_units)
  finally:
    if staging:
      shutil.rmtree(staging, ignore_errors=True)
  storage.write_text(
    done_path,
    json.dumps(
      {
        "settings": s,
        "unit": repr(unit),
        "tokenizer_fingerprint": job["tokenizer_fingerprint"],
        "counts": counts,
        "files": files,
      }
    ),
  )
  return unit_index, counts, files


def _write_unit(unit_index, unit, job, paths, staging, neighbour_units=()):
  """Writes the shards of one unit to `paths` (through `staging`, a local folder, when they
  are remote); returns its counts and its shards' {split: {"bytes", "sha256"}}. A chunk of
  fewer than FEW_DOCUMENTS documents draws random segments from `neighbour_units`' too.
  """
  from array_record.python import array_record_module

  s = job["settings"]
  tok = _worker_tokenizer(job)
  dtype = records.token_dtype(tok.vocab_size)
  local = {
    k: os.path.join(staging, storage.name(p)) if staging else p + ".tmp" for k, p in paths.items()
  }
  # One record per group, uncompressed: random access reads 3x faster than with zstd.
  writers = {
    k: array_record_module.ArrayRecordWriter(local[k], "group_size:1,uncompressed") for k in paths
  }
  stats = collections.Counter()
  chunks = {k: [] for k in SPLITS}
  rng = random.Random(f"{s['seed']}/{unit_index}")
  # Pair objectives cut a sentence longer than a row's segment A to it ([CLS] A [SEP] B
  # [SEP]), as google-research/bert's pairs lose it; mlm rows split it across rows, whole.
  pairs = s["objective"] != "mlm"
  max_sentence = s["max_seq_length"] - 3 if pairs else None
  token_counts = np.zeros(tok.vocab_size, np.int64)
  others = {}  # split -> the neighbours' documents of it, read when a chunk first needs them

  def flush(split):
    few = pairs and len(chunks[split]) < FEW_DOCUMENTS
    if few and split not in others:
      others[split] = _neighbour_documents(neighbour_units, tok, s, max_sentence, split)
    rows = instances.rows_from_documents(
      chunks[split],
      objective=s["objective"],
      max_seq_length=s["max_seq_length"],
      short_seq_prob=s["short_seq_prob"],
      rng=rng,
      cls_id=tok.cls_id,
      sep_id=tok.sep_id,
      packing=s["packing"],
      dupe_factor=s["dupe_factor"] if split == "train" else 1,
      others=others[split] if few else (),
    )
    for tokens, segment_lengths, label in rows:
      writers[split].write(records.encode_row(tokens, segment_lengths, label, dtype))
      stats[f"{split}_rows"] += 1
      stats[f"{split}_padding"] += s["max_seq_length"] - len(tokens)
    chunks[split].clear()

  for doc_index, document in enumerate(sources.read_unit(unit, stats, strict=s["strict"])):
    sentences = encode_document(tok, document, max_sentence, stats, pairs=pairs)
    if not sentences:
      stats["empty_documents"] += 1
      continue
    split = "eval" if _is_eval(s["seed"], unit_index, doc_index, s["eval_fraction"]) else "train"
    stats[f"{split}_documents"] += 1
    stats["sentences"] += len(sentences)
    stats["tokens"] += sum(map(len, sentences))
    if split == "train":
      token_counts += np.bincount(np.concatenate(sentences), minlength=tok.vocab_size)
    chunks[split].append(sentences)
    if len(chunks[split]) >= s["documents_per_chunk"]:
      flush(split)
  files = {}
  for split in SPLITS:
    if chunks[split]:
      flush(split)
    writers[split].close()
    files[split] = {"bytes": os.path.getsize(local[split]), "sha256": storage.sha256(local[split])}
    if staging:
      storage.copy(local[split], paths[split])  # the upload is whole when it returns
    else:
      os.replace(local[split], paths[split])
  stats["token_counts"] = token_counts.tolist()
  return dict(stats), files
