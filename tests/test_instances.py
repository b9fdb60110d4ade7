"""Tests of the training rows (nsp, sop, mlm) and their on-disk records."""

import random

import numpy as np
import pytest

from bert_jax.data import instances, records

CLS, SEP, PAD = 2, 3, 0
STRIDE = 10_000  # document d holds the ids STRIDE * (d + 1) + 0, 1, 2, ...


def _documents(num_documents, sentences, sentence_length, seed):
  """Documents of consecutive ids from disjoint ranges: an id names its document
  (`id // STRIDE - 1`) and its place in it.
  """
  rng = random.Random(seed)
  documents = []
  for d in range(num_documents):
    next_id, document = STRIDE * (d + 1), []
    for _ in range(rng.randint(*sentences)):
      length = rng.randint(*sentence_length)
      document.append(list(range(next_id, next_id + length)))
      next_id += length
    documents.append(document)
  return documents


def _rows(documents, objective, length=64, seed=0, **kwargs):
  kwargs.setdefault("short_seq_prob", 0.1)
  return instances.rows_from_documents(
    documents,
    objective=objective,
    max_seq_length=length,
    rng=random.Random(seed),
    cls_id=CLS,
    sep_id=SEP,
    **kwargs,
  )


def _split_pair(tokens, segment_lengths, length):
  a_len, b_len = segment_lengths
  assert a_len + b_len == len(tokens) <= length
  assert tokens[0] == CLS and tokens[a_len - 1] == SEP and tokens[-1] == SEP
  a, b = np.array(tokens[1 : a_len - 1]), np.array(tokens[a_len:-1])
  assert len(a) and len(b)
  assert np.all(np.diff(a) == 1)  # A: one contiguous stretch of one document
  return a, b


def test_nsp_pairs():
  documents = _documents(100, (5, 30), (3, 20), seed=0)
  rows = _rows(documents, "nsp")
  labels = np.array([label for _, _, label in rows])
  assert 0.4 < labels.mean() < 0.6
  for tokens, segment_lengths, label in rows:
    a, b = _split_pair(tokens, segment_lengths, 64)
    same_document = a[0] // STRIDE == b[0] // STRIDE
    if label == 0:  # B is A's continuation: same document, after A
      assert same_document and np.all(np.diff(b) == 1) and a[-1] < b[0]
    else:
      assert not same_document
  assert rows == _rows(documents, "nsp")  # a function of the rng


def test_sop_pairs():
  documents = _documents(100, (1, 30), (3, 20), seed=1)
  rows = _rows(documents, "sop")
  swapped = in_order = random_next = 0
  for tokens, segment_lengths, label in rows:
    a, b = _split_pair(tokens, segment_lengths, 64)
    same_document = a[0] // STRIDE == b[0] // STRIDE
    if label == 0:
      assert same_document and a[-1] < b[0]
      in_order += 1
    elif same_document:  # swapped: B comes before A in the document
      assert b[-1] < a[0]
      swapped += 1
    else:  # A was the document's only segment
      random_next += 1
  assert 0.4 < swapped / (swapped + in_order) < 0.6
  assert 0 < random_next < 0.2 * len(rows)


def _pieces(tokens, segment_lengths):
  """Splits packed examples at [CLS] ... [SEP], then at the inner [SEP]s."""
  pieces, start = [], 0
  for n in segment_lengths:
    example = tokens[start : start + n]
    assert example[0] == CLS and example[-1] == SEP
    piece = []
    for t in example[1:-1] + [SEP]:
      if t == SEP:
        assert piece  # never an empty document or a doubled [SEP]
        pieces.append(piece)
        piece = []
      else:
        piece.append(t)
    start += n
  assert start == len(tokens)
  return pieces


def _check_reassembles(documents, pieces):
  """The pieces are contiguous runs that tile every document exactly once."""
  for piece in pieces:
    assert np.all(np.diff(piece) == 1)
  stream = sorted(t for piece in pieces for t in piece)
  expected = sorted(t for document in documents for s in document for t in s)
  assert stream == expected


def test_mlm_full_sentences():
  documents = _documents(200, (1, 12), (2, 25), seed=2)
  start = STRIDE * 6  # document 5 becomes 10, 200 (longer than a row), 10 ids
  documents[5] = [list(range(start + a, start + b)) for a, b in ((0, 10), (10, 210), (210, 220))]
  documents[6].append([])  # empty sentences and documents are dropped
  documents.append([])
  rows = _rows(documents, "mlm", length=64)
  pieces = []
  for tokens, segment_lengths, label in rows:
    assert label == -1 and segment_lengths == [len(tokens)] and len(tokens) <= 64
    row_pieces = _pieces(tokens, segment_lengths)
    for left, right in zip(row_pieces, row_pieces[1:]):  # [SEP] between documents
      assert left[-1] // STRIDE != right[0] // STRIDE
    pieces += row_pieces
  _check_reassembles(documents, pieces)

  # Rows break between sentences, except inside the too-long one.
  long = set(range(start + 10, start + 210))
  starts = {s[0] for d in documents for s in d if s}
  assert all(p[0] in starts for p in pieces if p[0] not in long)
  in_rows = sorted(len(long & set(t)) for t, _, _ in rows if long & set(t))
  assert in_rows == [14, 62, 62, 62]
  fill = sum(len(t) for t, _, _ in rows) / (64 * len(rows))
  assert fill > 0.75


def test_mlm_packing():
  documents = _documents(500, (1, 4), (2, 20), seed=3)
  documents += _documents(3, (40, 40), (10, 10), seed=4)  # longer than a row
  rows = _rows(documents, "mlm", length=128, packing=True)
  pieces = []
  for tokens, segment_lengths, label in rows:
    assert label == -1 and len(tokens) <= 128
    row_pieces = _pieces(tokens, segment_lengths)
    assert len(row_pieces) == len(segment_lengths)  # one piece per example
    pieces += row_pieces
  _check_reassembles(documents, pieces)
  density = sum(len(t) for t, _, _ in rows) / (128 * len(rows))
  print(f"packing density {density:.3f} over {len(rows)} rows")
  assert density > 0.97
  assert rows == _rows(documents, "mlm", length=128, packing=True)


def test_dupe_factor_and_errors():
  documents = _documents(30, (2, 10), (3, 10), seed=5)
  for objective in ("nsp", "mlm"):
    once = _rows(documents, objective)
    twice = _rows(documents, objective, dupe_factor=2)
    assert 1.7 < len(twice) / len(once) < 2.3
  with pytest.raises(ValueError, match="objective"):
    _rows(documents, "clm")
  with pytest.raises(ValueError, match="max_seq_length"):
    _rows(documents, "nsp", length=4)


@pytest.mark.parametrize("objective,packing", [("nsp", False), ("mlm", True), ("mlm", False)])
def test_records_round_trip(objective, packing):
  documents = _documents(80, (1, 10), (2, 15), seed=6)
  rows = _rows(documents, objective, length=48, packing=packing)
  dtype = records.token_dtype(STRIDE * 81)  # ids above 65535: int32
  assert dtype.itemsize == 4 and records.token_dtype(65536).itemsize == 2
  batch = records.decode_rows(
    [records.encode_row(*row, dtype) for row in rows],
    max_seq_length=48,
    dtype=dtype,
    packed=packing,
    pad_id=PAD,
  )
  for i, (tokens, segment_lengths, label) in enumerate(rows):
    n = len(tokens)
    assert batch["input_ids"][i].tolist() == tokens + [PAD] * (48 - n)
    assert batch["next_sentence_labels"][i] == label
    segment = np.repeat(np.arange(len(segment_lengths)), segment_lengths)
    position = np.concatenate([np.arange(k) for k in segment_lengths])
    if not packing:
      position = np.arange(n)
    assert batch["position_ids"][i].tolist() == position.tolist() + [0] * (48 - n)
    expected_types = 0 * segment if packing else segment
    assert batch["token_type_ids"][i].tolist() == expected_types.tolist() + [0] * (48 - n)
    expected_mask = segment + 1 if packing else 1 + 0 * segment
    assert batch["attention_mask"][i].tolist() == expected_mask.tolist() + [0] * (48 - n)
  for value in batch.values():
    assert value.dtype == np.int32


def test_records_errors():
  dtype = records.token_dtype(1000)
  record = records.encode_row([2, 7, 8, 3], [4], -1, dtype)
  with pytest.raises(ValueError, match="token dtype"):
    records.decode_rows([record], max_seq_length=8, dtype=np.int32, packed=False, pad_id=PAD)
  with pytest.raises(ValueError, match="max_seq_length"):
    records.decode_rows([record], max_seq_length=3, dtype=dtype, packed=False, pad_id=PAD)
  with pytest.raises(ValueError, match="sum"):
    records.encode_row([2, 3], [3], -1, dtype)
