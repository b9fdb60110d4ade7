"""The on-disk record of one training row, and its decoding into padded batches.

A record (one ArrayRecord payload) is an int32 little-endian header
`[label, k, len_1, ..., len_k]` followed by the row's tokens as `token_dtype`:
2 bytes a token for vocabularies up to 65536 ids, else 4. The `k` lengths are
the row's segments: token types for unpacked rows, packed examples otherwise.
"""

import struct
from collections.abc import Sequence

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
  """The smallest little-endian dtype holding ids in [0, vocab_size)."""
  return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<i4")


def encode_row(
  tokens: Sequence[int], segment_lengths: Sequence[int], label: int, dtype: np.dtype | str
) -> bytes:
  """Serialises one row; `segment_lengths` must sum to `len(tokens)`."""
  if sum(segment_lengths) != len(tokens):
    raise ValueError(
      f"segment lengths {list(segment_lengths)} do not sum to the {len(tokens)} tokens"
    )
  header = np.array([label, len(segment_lengths), *segment_lengths], "<i4")
  return header.tobytes() + np.asarray(tokens, dtype).tobytes()


def decode_rows(
  records: Sequence[bytes], *, max_seq_length: int, dtype: np.dtype | str, packed: bool, pad_id: int
) -> dict[str, np.ndarray]:
  """Decodes records into padded model inputs.

  Args:
    records: list of `encode_row` outputs.
    max_seq_length: L, the padded length (rows must not be longer).
    dtype: the token dtype the records were written with.
    packed: whether segments are packed examples (else token-type segments).
    pad_id: id filling each row after its tokens.

  Returns:
    `input_ids` int32 (n, L); `token_type_ids` int32 (n, L), segment i of an
    unpacked row has type i, packed rows and padding 0; `attention_mask` int32
    (n, L), 0 on padding, else the 1-based packed example (1 when unpacked);
    `position_ids` int32 (n, L), restarting at 0 in each packed example, 0 on
    padding; `next_sentence_labels` int32 (n,).
  """
  dtype = np.dtype(dtype)
  n, length = len(records), max_seq_length
  labels = np.empty(n, np.int32)
  num_segments = np.empty(n, np.int64)
  segment_lengths, token_bytes = [], []
  # One pass of cheap Python per record; all the per-token work is vectorised.
  for row, record in enumerate(records):
    label, k = struct.unpack_from("<2i", record)
    labels[row], num_segments[row] = label, k
    segment_lengths.append(struct.unpack_from(f"<{k}i", record, 8))
    token_bytes.append(memoryview(record)[8 + 4 * k :])
  tokens = np.frombuffer(b"".join(token_bytes), dtype)  # (total,)
  seg_lengths = np.fromiter(
    (x for lengths in segment_lengths for x in lengths), np.int64, count=int(num_segments.sum())
  )  # (segments,)

  seg_row = np.repeat(np.arange(n), num_segments)
  row_lengths = np.bincount(seg_row, seg_lengths, minlength=n).astype(np.int64)
  byte_lengths = np.fromiter((len(b) for b in token_bytes), np.int64, count=n)
  if not np.array_equal(row_lengths * dtype.itemsize, byte_lengths):
    raise ValueError(
      f"a record's segment lengths do not match its tokens: wrong token dtype {dtype}?"
    )
  if n and row_lengths.max() > length:
    raise ValueError(f"a row has {row_lengths.max()} tokens, more than max_seq_length={length}")

  # Per-token segment index (within its row) and position (within its segment).
  seg_first = np.cumsum(num_segments) - num_segments  # (n,)
  seg_index = np.arange(len(seg_lengths)) - np.repeat(seg_first, num_segments)
  seg_start = np.cumsum(seg_lengths) - seg_lengths  # flat offset of each segment
  token_segment = np.repeat(seg_index, seg_lengths)  # (total,)
  offset = np.repeat(seg_start, seg_lengths)
  if not packed:  # positions run over the whole row
    row_start = np.cumsum(row_lengths) - row_lengths
    offset = np.repeat(row_start, row_lengths)
  token_position = np.arange(len(tokens)) - offset

  is_token = np.arange(length)[None] < row_lengths[:, None]  # (n, L)
  out = {
    "input_ids": np.full((n, length), pad_id, np.int32),
    "token_type_ids": np.zeros((n, length), np.int32),
    "attention_mask": is_token.astype(np.int32),
    "position_ids": np.zeros((n, length), np.int32),
    "next_sentence_labels": labels,
  }
  out["input_ids"][is_token] = tokens
  out["position_ids"][is_token] = token_position
  if packed:
    out["attention_mask"][is_token] = token_segment + 1
  else:
    out["token_type_ids"][is_token] = token_segment
  return out
