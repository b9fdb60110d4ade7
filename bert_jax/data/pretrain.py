"""Pretraining data: preparation into the workdir, and masked tf.data batches.

`prepare_pretraining_data` turns a corpus into `tokenizer.model`,
`train.npz`, `eval.npz` and `manifest.json` (written last, so a data dir with a
manifest is complete). `make_dataset` streams masked batches from the arrays.

The stream is a pure function of the step: global position
`pos = step * batch_size + row` picks example
`index_shuffle(pos % N, seed(epoch))` with `epoch = pos // N`, and the mask
seed depends only on (seed, epoch, example). So resuming at `start_step`, or
splitting each global batch across processes, yields exactly the same rows.
"""

import glob
import hashlib
import json
import os
import platform
import random
import time
import zipfile

import numpy as np
import tensorflow as tf

from bert_jax.data import corpus
from bert_jax.data import instances
from bert_jax.data import masking
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError

# tf.data runs on the host; keep TensorFlow off the accelerators JAX trains on.
tf.config.set_visible_devices([], "GPU")

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
SPLITS = ("train", "eval")
ARRAY_KEYS = ("input_ids", "token_type_ids", "next_sentence_labels")
_FORMAT_VERSION = 1
# Salts that separate the shuffle and mask random streams of one seed.
_SHUFFLE_SALT = 0x5EED5
_MASK_SALT = 0x3A5C


def _write_atomic(path: str, write) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Like `np.savez`, but byte-reproducible (fixed zip timestamps)."""
  def write(f):
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
      for key in sorted(arrays):
        info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
        with zf.open(info, "w", force_zip64=True) as member:
          np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]),
                                    allow_pickle=False)
  _write_atomic(path, write)


def _corpus_stamp(spec: str):
  """What identifies the corpus without reading it: files, sizes, mtimes."""
  if spec == corpus.BUILTIN_PYTHON_DOCS:
    return ["python", platform.python_version()]
  stamp = []
  for part in spec.split(","):
    part = os.path.expanduser(part.strip())
    for path in sorted(glob.glob(part)) if part else []:
      if os.path.isfile(path):
        st = os.stat(path)
        stamp.append([path, st.st_size, st.st_mtime_ns])
  return stamp


def _file_sha256(path: str) -> str:
  if not os.path.isfile(path):
    raise UserError(f"tokenizer model {path} does not exist; fix "
                    f"config.tokenizer.path or leave it empty to train one")
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _files_intact(data_dir: str, file_sizes: dict[str, int]) -> bool:
  for name, size in file_sizes.items():
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path) or os.path.getsize(path) != size:
      return False
  return bool(file_sizes)


def _read_manifest(data_dir: str):
  try:
    with open(os.path.join(data_dir, MANIFEST)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _split_documents(documents, eval_fraction: float, seed: int):
  """Deterministic split of documents; both parts keep corpus order."""
  n = len(documents)
  if n < 2:
    raise UserError(
        f"the corpus has {n} document(s); at least 2 are needed (train and "
        f"eval, and random next sentences); separate documents by blank lines")
  order = list(range(n))
  random.Random(seed).shuffle(order)
  n_eval = min(n - 1, max(1, round(n * eval_fraction)))
  eval_set = set(order[:n_eval])
  train = [d for i, d in enumerate(documents) if i not in eval_set]
  held_out = [d for i, d in enumerate(documents) if i in eval_set]
  return train, held_out


def _tokenize(tok, documents):
  """document -> sentences (str) becomes document -> sentences -> ids."""
  flat = [s for doc in documents for s in doc]
  ids = tok.encode_batch(flat)
  out, start = [], 0
  for doc in documents:
    out.append(ids[start:start + len(doc)])
    start += len(doc)
  return out


def _most_frequent_token_id(input_ids: np.ndarray, vocab_size: int) -> int:
  counts = np.bincount(input_ids.ravel(), minlength=vocab_size)
  counts[list(tokenizer_lib.SPECIAL_IDS)] = 0
  return int(np.argmax(counts))


def prepare_pretraining_data(data_dir: str, *,
                             input: str,  # pylint: disable=redefined-builtin
                             vocab_size: int, max_seq_length: int,
                             short_seq_prob: float,
                             eval_fraction: float, seed: int,
                             dupe_factor: int = 1,
                             tokenizer_path: str | None = None,
                             log=print) -> dict:
  """Prepares (or reuses) tokenizer, NSP instances and manifest in `data_dir`.

  If `data_dir/manifest.json` records the same settings (corpus files with
  their sizes and mtimes included), the files are reused without reading the
  corpus. Otherwise the old manifest is removed first, every file is written
  to `*.tmp` and renamed, and the manifest comes last.

  Args:
    data_dir: output directory (created).
    input: `builtin:python_docs`, or a glob / comma-separated globs of text
      files, one sentence per line, blank line between documents.
    vocab_size: SentencePiece vocabulary size.
    max_seq_length: length of every instance.
    short_seq_prob: probability of a shorter target length (original BERT).
    eval_fraction: fraction of documents held out for eval (at least one).
    seed: seed of the split, the tokenizer and the instances.
    dupe_factor: passes over the train documents.
    tokenizer_path: an existing SentencePiece model to use instead of training.
    log: called with short progress lines.

  Returns:
    The manifest: `settings`, `tokenizer_file`, `tokenizer_fingerprint` (sha256
    of the model), `vocab_size`, `max_seq_length`, `counts` per split
    (documents, sentences, tokens, instances, random_next_fraction),
    `most_frequent_token_id` (non-special, in train: an MLM accuracy baseline)
    and `file_sizes`.

  Raises:
    UserError: bad corpus, bad settings or a mismatching tokenizer.
  """
  if not 0.0 <= eval_fraction < 1.0:
    raise UserError(f"eval_fraction must be in [0, 1), got {eval_fraction}; "
                    f"fix config.data.eval_fraction (e.g. 0.01)")
  if max_seq_length < 5:
    raise UserError(f"max_seq_length {max_seq_length} is too short for "
                    f"[CLS] A [SEP] B [SEP]; use at least 5 (usually 128)")
  settings = {
      "format_version": _FORMAT_VERSION,
      "input": input,
      "corpus_stamp": _corpus_stamp(input),
      "vocab_size": vocab_size,
      "max_seq_length": max_seq_length,
      "short_seq_prob": short_seq_prob,
      "eval_fraction": eval_fraction,
      "seed": seed,
      "dupe_factor": dupe_factor,
      "tokenizer_path": tokenizer_path,
      "tokenizer_sha256": (_file_sha256(tokenizer_path)
                           if tokenizer_path else None),
  }
  settings = json.loads(json.dumps(settings))  # tuples -> lists, as on disk
  manifest_path = os.path.join(data_dir, MANIFEST)
  old = _read_manifest(data_dir)
  if (old is not None and old.get("settings") == settings and
      _files_intact(data_dir, old.get("file_sizes", {}))):
    log(f"data: reusing {data_dir} ({old['counts']['train']['instances']} "
        f"train instances)")
    return old

  t0 = time.time()
  documents = corpus.load_documents(input)
  train_docs, eval_docs = _split_documents(documents, eval_fraction, seed)
  log(f"corpus: {len(documents)} documents, "
      f"{sum(map(len, documents))} sentences in {time.time() - t0:.1f} s")

  os.makedirs(data_dir, exist_ok=True)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the files below no longer match it
  model_path = os.path.join(data_dir, TOKENIZER)
  t0 = time.time()
  if tokenizer_path:
    with open(tokenizer_path, "rb") as f:
      data = f.read()
    _write_atomic(model_path, lambda f: f.write(data))
    tok = tokenizer_lib.Tokenizer(model_path)
    if tok.vocab_size != vocab_size:
      raise UserError(
          f"tokenizer {tokenizer_path} has {tok.vocab_size} pieces but "
          f"config.tokenizer.vocab_size is {vocab_size}; set it to "
          f"{tok.vocab_size}")
    log(f"tokenizer: using {tokenizer_path} ({vocab_size} pieces)")
  else:
    tokenizer_lib.train_sentencepiece(train_docs, model_path,
                                      vocab_size=vocab_size, seed=seed)
    tok = tokenizer_lib.Tokenizer(model_path)
    log(f"tokenizer: trained {vocab_size} pieces in {time.time() - t0:.1f} s")

  counts, file_sizes = {}, {TOKENIZER: os.path.getsize(model_path)}
  most_frequent = None
  # Eval needs no duplication; its own seed keeps the two streams apart.
  for split, docs, split_seed, dupes in (
      ("train", train_docs, seed, dupe_factor),
      ("eval", eval_docs, seed + 1, 1)):
    t0 = time.time()
    ids = _tokenize(tok, docs)
    arrays = instances.create_nsp_instances(
        ids, max_seq_length=max_seq_length, short_seq_prob=short_seq_prob,
        seed=split_seed, cls_id=tok.cls_id, sep_id=tok.sep_id,
        pad_id=tok.pad_id, dupe_factor=dupes)
    path = os.path.join(data_dir, f"{split}.npz")
    _save_npz(path, arrays)
    file_sizes[f"{split}.npz"] = os.path.getsize(path)
    counts[split] = {
        "documents": len(docs),
        "sentences": sum(map(len, docs)),
        "tokens": sum(len(s) for doc in ids for s in doc),
        "instances": len(arrays["input_ids"]),
        # Majority-class baseline for NSP accuracy (above 0.5 when documents
        # are short: a one-sentence chunk always gets a random next).
        "random_next_fraction": float(arrays["next_sentence_labels"].mean()),
    }
    if split == "train":
      most_frequent = _most_frequent_token_id(arrays["input_ids"], vocab_size)
    log(f"{split}: {counts[split]['instances']} instances of length "
        f"{max_seq_length} from {counts[split]['tokens']} tokens in "
        f"{time.time() - t0:.1f} s")

  manifest = {
      "settings": settings,
      "tokenizer_file": TOKENIZER,
      "tokenizer_fingerprint": tok.fingerprint,
      "vocab_size": tok.vocab_size,
      "max_seq_length": max_seq_length,
      "counts": counts,
      "most_frequent_token_id": most_frequent,
      "file_sizes": file_sizes,
  }
  text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
  _write_atomic(manifest_path, lambda f: f.write(text.encode()))
  return manifest


def load_split(data_dir: str, split: str) -> dict[str, np.ndarray]:
  """Loads `train` or `eval` arrays of a prepared data dir."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
  path = os.path.join(data_dir, f"{split}.npz")
  # Without a manifest the files may be half-written leftovers.
  if not (os.path.exists(os.path.join(data_dir, MANIFEST)) and
          os.path.exists(path)):
    raise UserError(f"{data_dir} is not a prepared data dir (no {MANIFEST} or "
                    f"{split}.npz); prepare the data first or fix the path")
  with np.load(path, allow_pickle=False) as npz:
    return {key: npz[key] for key in ARRAY_KEYS}


def make_dataset(arrays: dict[str, np.ndarray], *, batch_size: int, seed: int,
                 vocab_size: int, max_predictions: int,
                 mask_rate: float = 0.15, start_step: int = 0,
                 num_steps: int | None = None, shuffle: bool = True,
                 process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """Masked batches for this process, a pure function of the step.

  Args:
    arrays: `input_ids`, `token_type_ids` (N, L), `next_sentence_labels` (N,).
    batch_size: the GLOBAL batch size; this process yields
      `batch_size // process_count` rows per step.
    seed: seed of the shuffle and the masks.
    vocab_size: vocabulary size (for random replacement tokens).
    max_predictions: P, masked positions per row.
    mask_rate: fraction of non-special tokens to predict.
    start_step: first step to yield (resume).
    num_steps: stop before this step; None repeats forever.
    shuffle: permute each epoch (index_shuffle); False reads in order.
    process_index: this process's rank.
    process_count: number of processes sharing each global batch.

  Returns:
    A dataset of dicts: `input_ids`, `token_type_ids`, `attention_mask`
    int32 (b, L); `masked_lm_positions`, `masked_lm_ids` int32 (b, P);
    `masked_lm_weights` float32 (b, P); `next_sentence_labels` int32 (b,).
  """
  if batch_size % process_count:
    raise UserError(f"batch size {batch_size} is not divisible by the "
                    f"{process_count} processes; make it a multiple of "
                    f"{process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index {process_index} not in [0, {process_count})")
  n = len(arrays["input_ids"])
  if n == 0:
    raise UserError("the data split has no instances; use a larger corpus or a "
                    "smaller max_seq_length")
  rows = batch_size // process_count
  # Variables, not constants: tf.data would serialize captured constants into
  # its graph (slow for GBs, and a 2 GB proto limit). Host memory, never an
  # accelerator's.
  with tf.device("/CPU:0"):
    table = {k: tf.Variable(arrays[k], trainable=False, dtype=tf.int32)
             for k in ARRAY_KEYS}

  def example(j):
    # j counts this process's rows from start_step on.
    step = start_step + j // rows
    pos = step * batch_size + process_index * rows + j % rows
    epoch, k = pos // n, pos % n
    if shuffle:
      shuffle_seed = tf.random.experimental.stateless_fold_in(
          tf.constant([seed, _SHUFFLE_SALT], tf.int64), epoch)
      index = tf.random.experimental.index_shuffle(
          k, shuffle_seed, tf.constant(n - 1, tf.int64))
    else:
      index = k
    mask_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(
            tf.constant([seed, _MASK_SALT], tf.int64), epoch), index)
    input_ids = tf.gather(table["input_ids"], index)
    out = masking.mask_sequence(
        input_ids, mask_seed, vocab_size=vocab_size,
        mask_id=tokenizer_lib.MASK_ID, special_ids=tokenizer_lib.SPECIAL_IDS,
        max_predictions=max_predictions, mask_rate=mask_rate)
    out["token_type_ids"] = tf.gather(table["token_type_ids"], index)
    out["attention_mask"] = tf.cast(input_ids != tokenizer_lib.PAD_ID, tf.int32)
    out["next_sentence_labels"] = tf.gather(table["next_sentence_labels"],
                                            index)
    return out

  if num_steps is None:
    ds = tf.data.Dataset.counter(0, dtype=tf.int64)
  else:
    ds = tf.data.Dataset.range(max(0, num_steps - start_step) * rows)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(rows, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def numpy_batches(dataset: tf.data.Dataset):
  """Iterates a dataset of dicts as dicts of numpy arrays."""
  return dataset.as_numpy_iterator()
