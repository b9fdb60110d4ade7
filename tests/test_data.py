"""Tests of the input pipeline: corpus, tokenizer, NSP, masking, tf.data."""

import gc
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bert_jax.data import corpus
from bert_jax.data import instances
from bert_jax.data import masking
from bert_jax.data import pretrain
from bert_jax.data import synthetic
from bert_jax.data import tokenizer
from bert_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = tokenizer.SPECIAL_IDS
BATCH_KEYS = {"input_ids", "token_type_ids", "attention_mask",
              "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
              "next_sentence_labels"}


def _random_rows(n, length, vocab_size, seed):
  """Rows `[CLS] A [SEP] B [SEP] [PAD]...` of random lengths and ids."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, size=(n, length)).astype(np.int32)
  for row in ids:
    used = rng.integers(5, length + 1)
    sep = rng.integers(2, used - 2)
    row[0], row[sep], row[used - 1] = (tokenizer.CLS_ID, tokenizer.SEP_ID,
                                       tokenizer.SEP_ID)
    row[used:] = tokenizer.PAD_ID
  return ids


def _mask_all(ids, seeds, vocab_size, max_predictions):
  fn = lambda x, s: masking.mask_sequence(
      x, s, vocab_size=vocab_size, mask_id=tokenizer.MASK_ID,
      special_ids=SPECIAL, max_predictions=max_predictions)
  ds = tf.data.Dataset.from_tensor_slices((ids, seeds)).map(fn)
  return next(ds.batch(len(ids)).as_numpy_iterator())


def test_masking_statistics():
  n, length, vocab_size, max_pred = 2000, 128, 1000, 20
  ids = _random_rows(n, length, vocab_size, seed=0)
  seeds = np.stack([np.arange(n), np.full(n, 7)], axis=1).astype(np.int64)
  out = _mask_all(ids, seeds, vocab_size, max_pred)

  candidates = ~np.isin(ids, SPECIAL)
  num_candidates = candidates.sum(1)
  expected = np.minimum(max_pred,
                        np.maximum(1, np.round(num_candidates * 0.15)))
  weights = out["masked_lm_weights"]
  assert np.array_equal(weights.sum(1), expected)
  # Short rows hit the minimum of 1, long ones the cap of 20; in between 15 %.
  uncapped = (num_candidates >= 20) & (num_candidates <= 120)
  rate = weights[uncapped].sum() / num_candidates[uncapped].sum()
  assert abs(rate - 0.15) < 0.005

  rows = np.arange(n)[:, None]
  pos = out["masked_lm_positions"]
  valid = weights > 0
  assert np.all(pos[~valid] == 0) and np.all(out["masked_lm_ids"][~valid] == 0)
  for p, v in zip(pos, valid):
    assert np.all(np.diff(p[v]) > 0)  # distinct and sorted
  # Chosen positions are candidates, and the labels are the original ids.
  assert np.all(candidates[rows, pos][valid])
  assert np.array_equal(out["masked_lm_ids"][valid], ids[rows, pos][valid])
  # Uniform over candidates: as many picks in the first as in the second half.
  rank = np.cumsum(candidates, 1)[rows, pos] - 1
  first_half = (rank < num_candidates[:, None] / 2)[valid].mean()
  assert abs(first_half - 0.5) < 0.03

  # Everything not chosen is untouched.
  touched = np.zeros_like(candidates)
  touched[np.nonzero(valid)[0], pos[valid]] = True
  assert np.array_equal(out["input_ids"][~touched], ids[~touched])

  new = out["input_ids"][rows, pos][valid]
  old = out["masked_lm_ids"][valid]
  is_mask = new == tokenizer.MASK_ID
  is_kept = new == old
  is_random = ~is_mask & ~is_kept
  assert abs(is_mask.mean() - 0.8) < 0.02
  assert abs(is_kept.mean() - 0.1) < 0.015
  assert abs(is_random.mean() - 0.1) < 0.015
  assert np.all((new[is_random] >= 5) & (new[is_random] < vocab_size))


def test_masking_is_a_function_of_the_seed():
  ids = _random_rows(50, 64, 500, seed=1)
  seeds = np.stack([np.arange(50), np.zeros(50)], axis=1).astype(np.int64)
  a = _mask_all(ids, seeds, 500, 10)
  b = _mask_all(ids, seeds, 500, 10)
  c = _mask_all(ids, seeds + [0, 1], 500, 10)
  for key in a:
    assert np.array_equal(a[key], b[key])
  differs = np.any(a["masked_lm_positions"] != c["masked_lm_positions"], axis=1)
  assert differs.mean() > 0.9


def test_masking_without_candidates():
  ids = np.array([[2, 3, 3, 0, 0, 0]], np.int32)
  out = _mask_all(ids, np.zeros((1, 2), np.int64), 100, 4)
  assert np.array_equal(out["input_ids"], ids)
  assert out["masked_lm_weights"].sum() == 0


def _unique_token_corpus(seed, num_docs=60):
  """Documents whose every token is unique; returns docs and token -> place."""
  rng = random.Random(seed)
  docs, where, next_id = [], {}, 5
  for d in range(num_docs):
    doc = []
    for s in range(rng.randint(1, 15)):
      sentence = list(range(next_id, next_id + rng.randint(2, 9)))
      for offset, t in enumerate(sentence):
        where[t] = (d, s, offset)
      next_id += len(sentence)
      doc.append(sentence)
    docs.append(doc)
  return docs, where


def test_nsp_instances():
  docs, where = _unique_token_corpus(0)
  length = 48
  out = instances.create_nsp_instances(
      docs, max_seq_length=length, short_seq_prob=0.1, seed=3,
      cls_id=tokenizer.CLS_ID, sep_id=tokenizer.SEP_ID, pad_id=tokenizer.PAD_ID)
  ids, types, labels = (out["input_ids"], out["token_type_ids"],
                        out["next_sentence_labels"])
  assert ids.dtype == types.dtype == labels.dtype == np.int32
  assert ids.shape == types.shape and ids.shape[1] == length
  assert 0.4 < labels.mean() < 0.6  # 1 = random next
  # Sequential position of every token in its document.
  order = {t: i for i, t in enumerate(sorted(where, key=where.get))}
  checked = 0
  for row, type_row, label in zip(ids, types, labels):
    assert row[0] == tokenizer.CLS_ID
    seps = np.flatnonzero(row == tokenizer.SEP_ID)
    assert len(seps) == 2 and seps[0] >= 2 and seps[1] > seps[0] + 1
    a, b = row[1:seps[0]], row[seps[0] + 1:seps[1]]
    assert np.all(row[seps[1] + 1:] == tokenizer.PAD_ID)
    assert np.all(type_row[:seps[0] + 1] == 0)
    assert np.all(type_row[seps[0] + 1:seps[1] + 1] == 1)
    assert np.all(type_row[seps[1] + 1:] == 0)
    a_doc = {where[t][0] for t in a}
    b_doc = {where[t][0] for t in b}
    assert len(a_doc) == 1 and len(b_doc) == 1
    # A and B are each contiguous runs of their document (truncation only
    # trims ends).
    for seg in (a, b):
      assert np.all(np.diff([order[t] for t in seg]) == 1)
    if label == 0:
      assert a_doc == b_doc and order[a[-1]] < order[b[0]]
      if len(a) + len(b) < length - 3:  # not truncated: B follows A exactly
        assert order[b[0]] == order[a[-1]] + 1
        assert where[a[0]][2] == 0 and where[b[0]][2] == 0
        checked += 1
    else:
      assert a_doc != b_doc
  assert checked > 10


def test_nsp_instances_deterministic():
  docs, _ = _unique_token_corpus(1)
  kwargs = dict(max_seq_length=32, seed=5, cls_id=2, sep_id=3, pad_id=0,
                dupe_factor=2)
  a = instances.create_nsp_instances(docs, **kwargs)
  b = instances.create_nsp_instances(docs, **kwargs)
  for key in a:
    assert np.array_equal(a[key], b[key])


def _toy_arrays(n=37, length=16, vocab_size=300):
  ids = _random_rows(n, length, vocab_size, seed=2)
  return {"input_ids": ids,
          "token_type_ids": (np.arange(length)[None] % 2 * (ids > 0)).astype(
              np.int32),
          "next_sentence_labels": (np.arange(n) % 2).astype(np.int32)}


def _batches(arrays, steps, **kwargs):
  kwargs = {"batch_size": 8, "seed": 1, "vocab_size": 300,
            "max_predictions": 4, **kwargs}
  ds = pretrain.make_dataset(arrays, num_steps=steps, **kwargs)
  return list(pretrain.numpy_batches(ds))


def _example_indices(arrays, batch):
  """Undoes the masking and finds each row's example index."""
  original = batch["input_ids"].copy()
  r, c = np.nonzero(batch["masked_lm_weights"])
  original[r, batch["masked_lm_positions"][r, c]] = batch["masked_lm_ids"][r, c]
  lookup = {row.tobytes(): i for i, row in enumerate(arrays["input_ids"])}
  return [lookup[row.tobytes()] for row in original]


def _concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_dataset_shapes_and_determinism():
  arrays = _toy_arrays()
  a = _batches(arrays, 5)
  b = _batches(arrays, 5)
  assert len(a) == 5
  assert set(a[0]) == BATCH_KEYS
  for key, value in a[0].items():
    want = np.float32 if key == "masked_lm_weights" else np.int32
    assert value.dtype == want
    assert value.shape[0] == 8
  assert a[0]["input_ids"].shape == (8, 16)
  assert a[0]["masked_lm_positions"].shape == (8, 4)
  for x, y in zip(a, b):
    for key in x:
      assert np.array_equal(x[key], y[key])
  # Every row of a batch matches its example's other arrays.
  batch = a[0]
  idx = _example_indices(arrays, batch)
  assert np.array_equal(batch["token_type_ids"], arrays["token_type_ids"][idx])
  assert np.array_equal(batch["next_sentence_labels"],
                        arrays["next_sentence_labels"][idx])
  assert np.array_equal(batch["attention_mask"], arrays["input_ids"][idx] != 0)


def test_dataset_epoch_visits_every_example_once():
  arrays = _toy_arrays()
  rows = _concat(_batches(arrays, 10))  # 80 rows: epochs 0, 1 and part of 2
  idx = np.array(_example_indices(arrays, rows))
  assert sorted(idx[:37]) == list(range(37))
  assert sorted(idx[37:74]) == list(range(37))
  assert not np.array_equal(idx[:37], np.arange(37))  # shuffled
  assert not np.array_equal(idx[:37], idx[37:74])  # reshuffled per epoch
  # Same example, other epoch: another mask.
  first = {i: rows["masked_lm_positions"][j] for j, i in enumerate(idx[:37])}
  second = {i: rows["masked_lm_positions"][37 + j]
            for j, i in enumerate(idx[37:74])}
  assert sum(not np.array_equal(first[i], second[i]) for i in first) > 25
  # Eval order: no shuffle.
  unshuffled = _concat(_batches(arrays, 4, shuffle=False))
  assert _example_indices(arrays, unshuffled) == list(range(32))


def test_dataset_resume_and_processes():
  arrays = _toy_arrays()
  full = _batches(arrays, 7)
  resumed = _batches(arrays, 7, start_step=4)
  assert len(resumed) == 3
  for x, y in zip(full[4:], resumed):
    for key in x:
      assert np.array_equal(x[key], y[key])
  halves = [_batches(arrays, 7, process_index=p, process_count=2)
            for p in (0, 1)]
  for step, batch in enumerate(full):
    assert halves[0][step]["input_ids"].shape[0] == 4
    for key in batch:
      assert np.array_equal(
          np.concatenate([halves[0][step][key], halves[1][step][key]]),
          batch[key])
  # The stream does not depend on the batch size either.
  small = _concat(_batches(arrays, 14, batch_size=4))
  big = _concat(full)
  for key in big:
    assert np.array_equal(small[key], big[key])
  with pytest.raises(UserError, match="not divisible"):
    pretrain.make_dataset(arrays, batch_size=9, seed=0, vocab_size=300,
                          max_predictions=4, process_count=2)


def test_dataset_repeats_forever():
  arrays = _toy_arrays(n=5)
  ds = pretrain.make_dataset(arrays, batch_size=4, seed=0, vocab_size=300,
                             max_predictions=4)
  gc.collect()  # the dataset keeps its arrays alive
  assert len(list(ds.take(20).as_numpy_iterator())) == 20


def _write_corpus(path, num_docs=30, seed=0):
  """A made-up language: documents of sentences of random syllable words."""
  rng = random.Random(seed)
  syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
  words = ["".join(rng.choices(syllables, k=rng.randint(1, 3)))
           for _ in range(400)]
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(num_docs):
      for _ in range(rng.randint(2, 12)):
        f.write(" ".join(rng.choices(words, k=rng.randint(4, 14))) + ".\n")
      f.write("\n")


def _prepare(data_dir, input_glob, **kwargs):
  kwargs = {"vocab_size": 400, "max_seq_length": 32, "short_seq_prob": 0.1,
            "eval_fraction": 0.1, "seed": 0, "log": lambda _: None, **kwargs}
  return pretrain.prepare_pretraining_data(str(data_dir), input=input_glob,
                                           **kwargs)


def test_prepare_pretraining_data(tmp_path, monkeypatch):
  _write_corpus(tmp_path / "a.txt", seed=0)
  _write_corpus(tmp_path / "b.txt", seed=1)
  pattern = str(tmp_path / "a.txt") + "," + str(tmp_path / "b*.txt")
  manifest = _prepare(tmp_path / "d1", pattern)
  names = sorted(os.listdir(tmp_path / "d1"))
  assert names == ["eval.npz", "manifest.json", "tokenizer.model", "train.npz"]
  counts = manifest["counts"]
  assert counts["train"]["documents"] + counts["eval"]["documents"] == 60
  assert counts["eval"]["documents"] == 6
  train = pretrain.load_split(str(tmp_path / "d1"), "train")
  assert len(train["input_ids"]) == counts["train"]["instances"] > 50
  assert train["input_ids"].shape[1] == 32
  ids = train["input_ids"]
  freq = np.bincount(ids[ids >= 5])
  assert manifest["most_frequent_token_id"] == np.argmax(freq)

  tok = tokenizer.Tokenizer(str(tmp_path / "d1" / "tokenizer.model"))
  assert tok.vocab_size == manifest["vocab_size"] == 400
  assert tok.fingerprint == manifest["tokenizer_fingerprint"]
  assert [tok.id_to_piece(i) for i in tokenizer.SPECIAL_IDS] == [
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  encoded = tok.encode("bada [MASK] kelo")
  assert encoded.count(tokenizer.MASK_ID) == 1
  # No lone word-start piece before [MASK]: it stands for a whole "▁word" piece.
  before = encoded[encoded.index(tokenizer.MASK_ID) - 1]
  assert tok.id_to_piece(before) != "\u2581"
  assert encoded[:encoded.index(tokenizer.MASK_ID)] == tok.encode("bada")
  assert tok.decode(tok.encode("bada kelo!")) == "bada kelo!"

  # Fast path: the corpus is not even read.
  def fail(_):
    raise AssertionError("corpus read again")
  monkeypatch.setattr(pretrain.corpus, "load_documents", fail)
  lines = []
  assert _prepare(tmp_path / "d1", pattern, log=lines.append) == manifest
  assert "reusing" in lines[0]
  monkeypatch.undo()

  _prepare(tmp_path / "d2", pattern)
  for name in ("train.npz", "eval.npz", "tokenizer.model"):
    assert (tmp_path / "d1" / name).read_bytes() == (
        tmp_path / "d2" / name).read_bytes()

  # Other settings: prepared again; an existing tokenizer can be reused.
  other = _prepare(tmp_path / "d1", pattern, max_seq_length=24,
                   tokenizer_path=str(tmp_path / "d2" / "tokenizer.model"))
  fingerprint = manifest["tokenizer_fingerprint"]
  assert other["tokenizer_fingerprint"] == fingerprint
  assert pretrain.load_split(str(tmp_path / "d1"), "eval")[
      "input_ids"].shape[1] == 24


def test_prepare_errors(tmp_path):
  cases = {}
  cases["missing"] = (str(tmp_path / "nope*.txt"), "matches no file")
  (tmp_path / "empty.txt").write_text("\n  \n")
  cases["empty"] = (str(tmp_path / "empty.txt"), "has no text")
  (tmp_path / "latin1.txt").write_bytes(
      "Ein Satz.\nSch\xf6n.\n".encode("latin1"))
  cases["latin1"] = (str(tmp_path / "latin1.txt"), "offset 13.*iconv")
  (tmp_path / "one.txt").write_text("Only one document.\nTwo lines.\n")
  cases["one_doc"] = (str(tmp_path / "one.txt"), "at least 2")
  _write_corpus(tmp_path / "small.txt", num_docs=4)
  for name, (pattern, message) in cases.items():
    with pytest.raises(UserError, match=message):
      _prepare(tmp_path / name, pattern)
    assert not (tmp_path / name / "manifest.json").exists()
  with pytest.raises(UserError, match="too large"):
    _prepare(tmp_path / "vocab", str(tmp_path / "small.txt"), vocab_size=5000)
  assert not (tmp_path / "vocab" / "manifest.json").exists()
  with pytest.raises(UserError, match="does not exist"):
    tokenizer.Tokenizer(str(tmp_path / "missing.model"))


def test_split_sentences():
  text = "First one. Second?  Yes!\n\nNew\n   paragraph e.g.here\n\n\n"
  assert corpus.split_sentences(text) == [
      "First one.", "Second?", "Yes!", "New paragraph e.g.here"]


def test_python_docs_corpus():
  docs = corpus.python_docs_documents()
  assert len(docs) > 1000
  assert all(docs) and all(s and s == s.strip() for d in docs[:500] for s in d)


def test_synthetic_matches_dataset_format():
  batch = next(synthetic.synthetic_batches(batch_size=6, max_seq_length=16,
                                           vocab_size=300, max_predictions=4))
  real = _batches(_toy_arrays(), 1, batch_size=6)[0]
  assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
      k: (v.dtype, v.shape) for k, v in real.items()}
  ids = batch["input_ids"]
  assert np.all(ids[:, 0] == tokenizer.CLS_ID)
  assert np.all((ids == tokenizer.SEP_ID).sum(1) == 2)
  valid = batch["masked_lm_weights"] > 0
  assert np.all(valid.sum(1) >= 1)
  for p, v in zip(batch["masked_lm_positions"], valid):
    assert np.all(np.diff(p[v]) > 0)

