"""Fine-tuning batches of token arrays (`encoding`): a training step's rows, a pure function
of (seed, step); every row once for evaluation; and, for inference, rows in batches of
similar length, each cut to its width.
"""

from collections.abc import Iterator

import numpy as np

# Outside training, batches are cut to a multiple of this many tokens (`length_batches`).
LENGTH_MULTIPLE = 32
# An inference batch holds its full count of rows up to this width; wider, fewer rows, so
# that rows x width^2 (the attention scores) stays that of a full batch this wide.
FULL_BATCH_WIDTH = 512


def train_batch(
  arrays: dict[str, np.ndarray],
  step: int,
  *,
  batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> dict[str, np.ndarray]:
  """This process's rows of global batch `step`: a pure function of (seed, step).

  Each epoch visits the examples in a fresh order (a permutation seeded by (seed, epoch));
  the rows that do not fill a last batch are left out of that epoch.
  """
  n = len(next(iter(arrays.values())))
  per_epoch = n // batch_size
  epoch, index = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  rows = order[index * batch_size : (index + 1) * batch_size]
  local = batch_size // process_count
  rows = rows[process_index * local : (process_index + 1) * local]
  return {k: v[rows] for k, v in arrays.items()}


def eval_batches(
  arrays: dict[str, np.ndarray], batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order, in batches padded with rows of weight 0 ("weight")."""
  n = len(next(iter(arrays.values())))
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    weight = (rows < n).astype(np.float32)
    rows = np.minimum(rows, n - 1)[process_index * local : (process_index + 1) * local]
    batch = {k: v[rows] for k, v in arrays.items()}
    batch["weight"] = weight[process_index * local : (process_index + 1) * local]
    yield batch


def rows_at(width: int, batch_size: int) -> int:
  """The rows of an inference batch `width` tokens wide: `batch_size` up to
  FULL_BATCH_WIDTH, then fewer (at least 1), with rows x width^2 at most `batch_size` x
  FULL_BATCH_WIDTH^2: a batch of 8,192-token texts holds the memory of one of 512 tokens.
  """
  if width <= FULL_BATCH_WIDTH:
    return batch_size
  return max(1, batch_size * FULL_BATCH_WIDTH**2 // width**2)


def length_batches(
  lengths: np.ndarray, batch_size: int, max_length: int
) -> Iterator[tuple[np.ndarray, int, int]]:
  """Rows in batches of similar length, for inference: (the rows' indices, the width to
  cut them to, the rows of the batch's shape), every row once.

  The rows go shortest first, and each batch's width is its longest row rounded up to a
  multiple of LENGTH_MULTIPLE (at most `max_length`): short texts do not pay for a long
  one's padding, and a few shapes are compiled, the rows being a function of the width
  (`rows_at`: fewer rows in batches wider than FULL_BATCH_WIDTH). A caller pads a batch of
  fewer indices up to its rows.
  """
  order = np.argsort(lengths, kind="stable")
  rounded = -(-np.maximum(lengths[order], 1) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
  widths = np.minimum(rounded, max_length)  # a batch ending at row i of `order`: this wide
  start = 0
  while start < len(order):
    # The most rows from `start` that the shape of their width holds (the order is by
    # length, so a batch of fewer rows is no wider and holds at least as many).
    count = min(batch_size, len(order) - start)
    while count > 1 and rows_at(int(widths[start + count - 1]), batch_size) < count:
      count -= 1
    width = int(widths[start + count - 1])
    yield order[start : start + count], width, rows_at(width, batch_size)
    start += count
