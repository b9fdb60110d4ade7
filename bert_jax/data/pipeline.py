"""Masked batches from prepared shards: per-process files, a pure function of the step.

The data of a split is read in `lanes` streams; lane l owns every `lanes`-th non-empty
shard from l (disjoint, and together covering), and each process reads a contiguous block
of lanes, so only its own files. A lane's n rows form one index space; its stream is
endless: position `q = step * rows + r` reads row `permute(q % n)` of epoch `q // n`, with a
keyed permutation per epoch, and masks it with a key of (seed, epoch, shard, record). So
the global batch of a step depends only on (seed, step, lanes): resuming at a step yields
exactly the batches an uninterrupted run would, on any process count that divides the
lanes, and no process ever runs out of data while another waits for it. The data position
(`position()`) goes into every checkpoint.

A split with fewer non-empty shards than `lanes` (a small corpus, or its eval split) is
read in fewer lanes: the most that `lane_count` allows.

`batches` runs `batch_at` under tf.data (parallel, prefetched) or, where TensorFlow is not
installed (GPU images), under a thread pool: the same numpy function either way.

ArrayRecord reads local files. A prepared dir in a bucket (`gs://...`) is read from local
copies in `cache_dir`: each process copies only the shards of its own lanes, once, and
checks each copy against the size and SHA-256 the manifest lists. A local dir is read in
place.
"""

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from bert_jax import errors, storage
from bert_jax import progress as progress_lib
from bert_jax.data import masking, prepare, records, units
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError

_RANDOM_ACCESS = "readahead_buffer_size:0,max_parallelism:0"
# A seed word of each lane's epoch order (`masking.permute_index`), beside the seed, the
# lane's first shard and the epoch.
_EPOCH_ORDER_SALT = 0x5EED5

BATCH_KEYS = (
  "input_ids",
  "token_type_ids",
  "attention_mask",
  "position_ids",
  "masked_lm_positions",
  "masked_lm_ids",
  "masked_lm_weights",
  "next_sentence_labels",
)


def lane_count(lanes: int, non_empty_shards: int, process_count: int, batch_size: int) -> int:
  """How many lanes a split is read in: `lanes`, or fewer when it has fewer non-empty shards.

  Then the largest count that divides `lanes`, is a multiple of `process_count`, is at most
  `non_empty_shards` and divides `batch_size`: the split still splits evenly between the
  processes, and each step still takes as many rows from every lane.

  Args:
    lanes: config.data.lanes (a multiple of `process_count` that divides `batch_size`).
    non_empty_shards: the shards of the split holding rows.
    process_count: the processes reading the split.
    batch_size: the global batch.

  Returns:
    The lane count; 0 when none fits (fewer non-empty shards than processes).
  """
  if non_empty_shards >= lanes:
    return lanes
  for count in range(min(lanes, non_empty_shards), 0, -1):
    if lanes % count == 0 and count % process_count == 0 and batch_size % count == 0:
      return count
  return 0


class _Lane:
  """The shards of one lane of a split (every `lanes`-th non-empty one), read by random access."""

  def __init__(
    self,
    data_dir: str,
    numbered_shards: list[tuple[int, dict]],
    lane: int,
    lanes: int,
    cache_dir: str,
  ):
    mine = numbered_shards[lane::lanes]
    from array_record.python import array_record_module

    self.names = [storage.join(data_dir, s["file"]) for _, s in mine]  # for messages
    self.data_dir = data_dir
    self.readers = []
    for name, (_, shard) in zip(self.names, mine):
      local = _local_shard(data_dir, shard, cache_dir)
      with self._damaged_names(name):
        self.readers.append(array_record_module.ArrayRecordReader(local, _RANDOM_ACCESS))
    self.shard_numbers = np.array([i for i, _ in mine], np.int64)
    self.starts = np.cumsum([0] + [s["rows"] for _, s in mine])
    self.size = int(self.starts[-1])
    self.lock = threading.Lock()  # one reader per file; reads are fast, decoding is not

  def read(self, index: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """Records at local indices (n,) and their rows' global ids (shard << 32 | record)."""
    which = np.searchsorted(self.starts, index, side="right") - 1
    offsets = index - self.starts[which]
    out = [None] * len(index)
    with self.lock:
      for w in np.unique(which):
        rows = np.flatnonzero(which == w)
        with self._damaged_names(self.names[w]):
          records = self.readers[w].read(offsets[rows].tolist())
        for row, record in zip(rows, records):
          out[row] = record
    return out, (self.shard_numbers[which] << 32) | offsets

  @contextlib.contextmanager
  def _damaged_names(self, name: str):
    """A shard ArrayRecord cannot read (a damaged disk or copy) as one line with the fix."""
    try:
      yield
    except RuntimeError as e:
      raise _damaged(name, self.data_dir, errors.first_line(e, 160)) from None


def _damaged(name: str, data_dir: str, why: str) -> UserError:
  """Bad input: the shard `name` of the prepared data in `data_dir` (local or in a bucket)
  is damaged or missing (`why`); the fix names what `prepare` needs removed to rewrite
  that shard's unit alone.
  """
  unit = os.path.basename(name).split("-")[-1].split(".")[0]
  remove = f"{units.SHARDS}/unit-{unit}.json and {prepare.MANIFEST} in {data_dir}"
  what = "is missing" if why == "missing" else f"is damaged ({why})"
  return UserError(
    f"the shard {name} {what}; delete {'' if why == 'missing' else 'it, '}{remove}, then run "
    f"`bert-jax prepare` with the same settings: it rewrites that unit alone"
  )


# A remote prepared dir's shards are copied this many at a time (one stream from the bucket
# each: one stream is far from a host's bandwidth).
FETCH_THREADS = 8


def fetch_shards(
  data_dir: str, shards: list[dict], cache_dir: str, log: Callable[[str], None], what: str
) -> None:
  """Copies the `shards` (manifest entries) of the remote `data_dir` that `cache_dir` does
  not hold yet, FETCH_THREADS at a time, with a progress bar in a terminal and a line before
  and after; first checks that the disk has room for them all.

  Raises:
    UserError: the disk of `cache_dir` has too little room (nothing copied), or a shard is
      damaged or missing (`_local_shard`).
  """
  sizes = {}
  for shard in shards:
    path = storage.join(data_dir, shard["file"])
    size = shard.get("bytes")
    size = storage.size(path) if size is None else size
    if not storage.has_checked_copy(
      path, cache_dir, expected_size=size, expected_sha256=shard.get("sha256")
    ):
      sizes[shard["file"]] = size
  if not sizes:
    return
  need, free = sum(sizes.values()), storage.free_bytes(cache_dir)
  needed = progress_lib.size(need)
  if need > free:
    raise UserError(
      f"config.data.cache_dir={cache_dir!r} has {progress_lib.size(free)} free, and this "
      f"process's {len(sizes)} shards of {data_dir} need {needed} there; free room, give a "
      f"cache_dir on a larger disk, or read on more hosts (each copies its own lanes' shards)"
    )
  shard_count = progress_lib.count(len(sizes), "shard")
  log(f"data: copying {what} {shard_count} ({needed}) of {data_dir} into {cache_dir}")
  start = time.time()
  # Each with its size (an old manifest has none: the bucket was asked above).
  missing = [{**s, "bytes": sizes[s["file"]]} for s in shards if s["file"] in sizes]
  pool = concurrent.futures.ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
  bar = progress_lib.Bar(need, "copy", "B")
  try:
    copies = {pool.submit(_local_shard, data_dir, s, cache_dir): s for s in missing}
    for done in concurrent.futures.as_completed(copies):
      done.result()  # a damaged shard's error, at once
      bar.update(sizes[copies[done]["file"]])
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
  took = time.time() - start
  log(f"data: copied {needed} in {took:.0f} s ({need / max(took, 1e-3) / 1e6:.0f} MB/s)")


def default_cache_dir(environ=os.environ) -> str:
  """Where the shards of a remote prepared dir are copied when config.data.cache_dir is
  None: $XDG_CACHE_HOME/bert_jax, else ~/.cache/bert_jax.
  """
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bert_jax")


def _local_shard(data_dir: str, shard: dict, cache_dir: str) -> str:
  """A local path of a shard of the manifest: in place, or a checked copy in `cache_dir`."""
  path = storage.join(data_dir, shard["file"])
  expected = shard.get("bytes")
  if not storage.is_remote(path):
    if not os.path.exists(path):
      raise _damaged(path, data_dir, "missing")
    size = os.path.getsize(path)
    if expected is not None and size != expected:
      raise _damaged(path, data_dir, f"{size} bytes where {prepare.MANIFEST} says {expected}")
    return path
  try:
    return storage.checked_copy(
      path,
      cache_dir,
      expected_size=storage.size(path) if expected is None else expected,
      expected_sha256=shard.get("sha256"),
    )
  except ValueError as e:  # changed in the bucket since the manifest, or cut short
    raise _damaged(path, data_dir, str(e).removeprefix(f"{path} ")) from None
  except FileNotFoundError:
    raise _damaged(path, data_dir, "missing") from None
  except OSError as e:
    raise UserError(
      f"cannot copy {path} into config.data.cache_dir={cache_dir!r} ({e.strerror or e}); "
      f"give a writable local folder with room for this process's shards"
    ) from None


class Stream:
  """The masked batches of one process, one split: `batch_at(step)`.

  The data is read in `lanes` independent streams, lane l owning non-empty shards
  l, l + lanes, ...; each step takes `batch_size / lanes` rows from every lane, and process
  i of n reads lanes [i * lanes / n, (i + 1) * lanes / n). So the global batch of a step is
  the same for every process count that divides `lanes`: a run resumes exactly on another
  number of hosts. A split with fewer non-empty shards than `lanes` is read in
  `lane_count(...)` lanes (`self.lane_count`; the train split says so through `log`).

  Args:
    data_dir: the prepared dir.
    manifest: its manifest.json.
    split: "train" or "eval".
    batch_size: the global batch.
    seed: the run's seed (epoch orders and masks).
    max_predictions: masked positions per row.
    mask_rate: share of a row's tokens predicted.
    mask_token_rate: share of the predicted tokens replaced by [MASK].
    random_token_rate: share of the predicted tokens replaced by a random token.
    whole_word_masking: mask all pieces of a word together.
    max_ngram: mask spans of up to this many words (`masking.mask_batch`).
    shuffle: a new row order every epoch (else the shards' order).
    process_index: this process.
    process_count: the processes reading the split.
    lanes: config.data.lanes; None: one per process.
    log: where the train split says that it reads fewer lanes.
    cache_dir: where the shards of a remote `data_dir` are copied (this process's only).

  Raises:
    UserError: lanes that the processes or the batch do not divide, or fewer non-empty
      shards than processes.
  """

  def __init__(
    self,
    data_dir: str,
    manifest: dict,
    split: str,
    *,
    batch_size: int,
    seed: int,
    max_predictions: int,
    mask_rate: float = 0.15,
    mask_token_rate: float = 0.8,
    random_token_rate: float = 0.1,
    whole_word_masking: bool = False,
    max_ngram: int = 1,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    lanes: int | None = None,
    log: Callable[[str], None] = print,
    cache_dir: str | None = None,
  ):
    lanes = lanes or process_count
    if lanes % process_count or batch_size % lanes:
      raise UserError(
        f"config.data.lanes={lanes} must be a multiple of the {process_count} "
        f"processes and divide the batch size {batch_size}; change the lanes"
      )
    numbered = [(i, s) for i, s in enumerate(manifest["splits"][split]["shards"]) if s["rows"]]
    count = lane_count(lanes, len(numbered), process_count, batch_size)
    if not count:
      more = " or a larger config.data.eval_fraction" if split == "eval" else ""
      raise UserError(
        f"the {split} split has {len(numbered)} non-empty shard(s), fewer than the "
        f"{process_count} processes reading it; prepare with a larger "
        f"config.data.num_shards (a multiple of config.data.lanes={lanes}){more}, or give "
        f"more text"
      )
    if count < lanes and split == "train":
      log(
        f"data: the train split has {len(numbered)} non-empty shard(s), fewer than "
        f"config.data.lanes={lanes}; reading it as {count} lanes (a resume then runs on at "
        f"most {count} hosts; a larger config.data.num_shards allows more)"
      )
    self.lane_count = count
    self.rows = batch_size // process_count
    self.lane_rows = batch_size // count
    per_process = count // process_count
    mine = range(process_index * per_process, (process_index + 1) * per_process)
    cache_dir = cache_dir or default_cache_dir()
    if storage.is_remote(data_dir):
      shards = [shard for lane in mine for _, shard in numbered[lane::count]]
      fetch_shards(data_dir, shards, cache_dir, log, f"the {split} split's")
    self.lanes = [_Lane(data_dir, numbered, lane, count, cache_dir) for lane in mine]
    self.seed, self.shuffle = seed, shuffle
    self.length = manifest["max_seq_length"]
    self.dtype = np.dtype(manifest["token_dtype"])
    self.packed = manifest["settings"]["packing"]
    tok = tokenizer_lib.load(storage.join(data_dir, manifest["tokenizer_file"]))
    self.pad_id = tok.pad_id
    self.masking = dict(
      special_table=tok.special_table(),
      word_start_table=tok.word_start_table() if whole_word_masking else None,
      max_predictions=max_predictions,
      mask_rate=mask_rate,
      mask_token_rate=mask_token_rate,
      random_token_rate=random_token_rate,
      max_ngram=max_ngram,
      mask_id=tok.mask_id,
    )
    self.identity = {
      "split": split,
      "lanes": count,
      "process_index": process_index,
      "process_count": process_count,
      "rows_per_process": self.rows,
      "seed": seed,
    }

  def position(self, step: int) -> dict:
    """The data position after `step` steps, as saved in checkpoints."""
    return dict(
      self.identity,
      step=int(step),
      epochs=[step * self.lane_rows // lane.size for lane in self.lanes],
    )

  def lane_indices(self, lane: "_Lane", step: int) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, record index in the lane) of the rows `lane` contributes at `step`."""
    q = int(step) * self.lane_rows + np.arange(self.lane_rows, dtype=np.int64)
    epoch, index = q // lane.size, q % lane.size
    if self.shuffle:
      for e in np.unique(epoch):
        hit = epoch == e
        index[hit] = masking.permute_index(
          index[hit], lane.size, (self.seed, _EPOCH_ORDER_SALT, int(lane.shard_numbers[0]), int(e))
        )
    return epoch, index

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The numpy batch (dict of BATCH_KEYS) of this process at `step`."""
    raw, row_ids, epochs = [], [], []
    for lane in self.lanes:
      epoch, index = self.lane_indices(lane, step)
      records_, ids = lane.read(index)
      raw += records_
      row_ids.append(ids)
      epochs.append(epoch)
    batch = records.decode_rows(
      raw, max_seq_length=self.length, dtype=self.dtype, packed=self.packed, pad_id=self.pad_id
    )
    keys = masking.row_keys(self.seed, np.concatenate(epochs), np.concatenate(row_ids))
    batch.update(masking.mask_batch(batch["input_ids"], keys, **self.masking))
    return batch


def batches(
  stream: Stream, start_step: int, end_step: int | None, *, use_tf: bool | None = None
) -> Iterator[dict[str, np.ndarray]]:
  """Iterates `stream.batch_at(s)` for s in [start_step, end_step), prefetched in parallel.

  Args:
    stream: a `Stream` (or anything with `batch_at(step) -> dict of numpy`).
    start_step: first step.
    end_step: stop before it; None: forever.
    use_tf: run under tf.data; None: if TensorFlow is installed.

  Yields:
    The batches, in step order.
  """
  if use_tf is None:
    try:
      import tensorflow  # noqa: F401

      use_tf = True
    except ImportError:
      use_tf = False
  end = end_step if end_step is not None else 2**62
  if use_tf:
    yield from _tf_batches(stream, start_step, end)
  else:
    yield from _threaded_batches(stream, start_step, end)


def _tf_batches(stream, start, end):
  try:
    import tensorflow as tf
  except ImportError:
    raise UserError(
      "config.data.loader='tf.data' needs TensorFlow (pip install tensorflow-cpu); "
      "or use --config.data.loader=threads"
    ) from None

  tf.config.set_visible_devices([], "GPU")  # host-side only: keep TF off the accelerators
  first = stream.batch_at(start)
  dtypes = [tf.as_dtype(first[k].dtype) for k in BATCH_KEYS]
  shapes = [first[k].shape for k in BATCH_KEYS]

  def load_numpy(step):
    batch = stream.batch_at(step)
    return [batch[k] for k in BATCH_KEYS]

  def load(step):
    values = tf.numpy_function(load_numpy, [step], dtypes, stateful=False)
    return {k: tf.ensure_shape(v, s) for k, v, s in zip(BATCH_KEYS, values, shapes)}

  ds = tf.data.Dataset.range(start, end).map(
    load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  options = tf.data.Options()
  options.deterministic = True
  yield from ds.with_options(options).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _threaded_batches(stream, start, end, workers=4):
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = [pool.submit(stream.batch_at, s) for s in range(start, min(end, start + workers))]
    step = start + len(pending)
    while pending:
      batch = pending.pop(0).result()
      if step < end:
        pending.append(pool.submit(stream.batch_at, step))
        step += 1
      yield batch
