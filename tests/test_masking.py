"""Tests of the numpy masked-LM corruption and the keyed shuffle."""

import numpy as np
import pytest

from bert_jax.data import masking

PAD, CLS, SEP, MASK = 0, 2, 3, 4
VOCAB = 1000
SPECIAL = np.zeros(VOCAB, bool)
SPECIAL[:5] = True


def _random_rows(n, length, seed):
  """Rows `[CLS] A [SEP] B [SEP] [PAD]...` of random lengths and ids."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, size=(n, length)).astype(np.int32)
  for row in ids:
    used = rng.integers(5, length + 1)
    row[0], row[rng.integers(2, used - 2)], row[used - 1] = CLS, SEP, SEP
    row[used:] = PAD
  return ids


def _mask(ids, keys, word_start_table=None, max_predictions=20):
  return masking.mask_batch(
    ids,
    keys,
    special_table=SPECIAL,
    word_start_table=word_start_table,
    max_predictions=max_predictions,
    mask_id=MASK,
  )


def _keys(n, seed=0, epoch=0):
  return masking.row_keys(seed, np.full(n, epoch), np.arange(n))


def _check_consistent(ids, out, max_predictions):
  """What every output must satisfy, whatever the random choices."""
  positions = out["masked_lm_positions"]
  valid = out["masked_lm_weights"] > 0
  counts = valid.sum(1)
  assert np.array_equal(valid, np.arange(max_predictions) < counts[:, None])
  for row in range(len(ids)):
    pos = positions[row, : counts[row]]
    assert np.all(np.diff(pos) > 0)
    assert not SPECIAL[ids[row, pos]].any()  # never [CLS], [SEP] or padding
    assert np.array_equal(out["masked_lm_ids"][row, : counts[row]], ids[row, pos])
    changed = np.flatnonzero(out["input_ids"][row] != ids[row])
    assert set(changed) <= set(pos)
  assert not positions[~valid].any() and not out["masked_lm_ids"][~valid].any()
  return valid


def test_masking_statistics():
  n, max_pred = 4000, 20
  ids = _random_rows(n, 128, seed=0)
  out = _mask(ids, _keys(n), max_predictions=max_pred)
  valid = _check_consistent(ids, out, max_pred)

  num_candidates = (~SPECIAL[ids]).sum(1)
  expected = np.minimum(max_pred, np.maximum(1, np.round(num_candidates * 0.15)))
  assert np.array_equal(valid.sum(1), expected)

  rows = np.nonzero(valid)[0]
  pos = out["masked_lm_positions"][valid]
  new, old = out["input_ids"][rows, pos], out["masked_lm_ids"][valid]
  is_mask, kept = new == MASK, new == old
  is_random = ~is_mask & ~kept
  # 80/10/10; a random id equals the original 1/995 of the time.
  assert abs(is_mask.mean() - 0.8) < 0.01
  assert abs(is_random.mean() - 0.1) < 0.01
  assert abs(kept.mean() - 0.1) < 0.01
  assert not SPECIAL[new[is_random]].any()
  assert len(np.unique(new[is_random])) > 900  # spread over the vocabulary

  # Uniform over the candidates: the chosen fraction of each position of the
  # full rows is the same (chi-square, 127 dof: mean 127, sd ~16).
  full = ids[:, 127] == SEP
  hits = np.bincount(pos[full[rows]], minlength=128)[1:127].astype(float)
  hits = np.delete(hits, np.flatnonzero(hits == 0))  # the inner [SEP] varies
  chi2 = ((hits - hits.mean()) ** 2 / hits.mean()).sum()
  assert chi2 < len(hits) + 6 * np.sqrt(2 * len(hits))


def _words(row, word_start_table):
  """Independent word split: runs of candidates cut before each word start."""
  words, current = [], []
  for i, t in enumerate(row):
    if SPECIAL[t] or word_start_table[t]:
      if current:
        words.append(current)
      current = [] if SPECIAL[t] else [i]
    else:
      current.append(i)
  return words + ([current] if current else [])


def test_whole_word_masking():
  n, max_pred = 1000, 20
  rng = np.random.default_rng(1)
  word_start = rng.random(VOCAB) < 0.4  # long words: the budget rule matters
  word_start[:5] = True
  ids = _random_rows(n, 128, seed=2)
  out = _mask(ids, _keys(n), word_start_table=word_start, max_predictions=max_pred)
  valid = _check_consistent(ids, out, max_pred)

  num_candidates = (~SPECIAL[ids]).sum(1)
  budget = np.minimum(max_pred, np.maximum(1, np.round(num_candidates * 0.15)))
  for row in range(n):
    chosen = set(out["masked_lm_positions"][row, valid[row]])
    words = _words(ids[row], word_start)
    assert sum(map(len, words)) == num_candidates[row]
    taken = [w for w in words if set(w) <= chosen]
    assert all(not set(w) & chosen for w in words if w not in taken)
    assert sum(map(len, taken)) == len(chosen) <= budget[row]
    # Original BERT skips (does not stop at) a word that overflows: at the end,
    # no word left out still fits.
    room = budget[row] - len(chosen)
    assert all(len(w) > room for w in words if w not in taken)
  assert valid.sum(1).mean() > 0.95 * budget.mean()


def test_ngram_lengths_follow_albert():
  counts = np.bincount(masking.ngram_lengths(np.linspace(0, 1, 110_000, endpoint=False), 3))
  np.testing.assert_allclose(counts[1:] / 110_000, [6 / 11, 3 / 11, 2 / 11], atol=1e-4)
  assert masking.ngram_lengths(np.array([0.0, 0.999]), 1).tolist() == [1, 1]


def _albert_ngrams(words, order_of_starts, lengths, budget, max_ngram):
  """ALBERT's `create_masked_lm_predictions` n-gram loop for one row, written plainly: from
  each word in the given order, the drawn number of words (at most those left), shortened
  until it fits the budget, skipped if it does not or overlaps what is taken.
  """
  taken, filled = set(), 0
  for w in order_of_starts:
    if filled >= budget:
      break
    n = min(lengths[w], len(words) - w)
    while n > 1 and filled + sum(map(len, words[w : w + n])) > budget:
      n -= 1
    span = [i for word in words[w : w + n] for i in word]
    if filled + len(span) > budget or taken & set(span):
      continue
    taken |= set(span)
    filled += len(span)
  return taken


@pytest.mark.parametrize("whole_words", [False, True])
def test_ngram_masking_is_albert_s(whole_words):
  n, max_pred, max_ngram = 600, 20, 3
  rng = np.random.default_rng(4)
  word_start = rng.random(VOCAB) < 0.5
  word_start[:5] = True
  table = word_start if whole_words else np.ones(VOCAB, bool)
  ids = _random_rows(n, 128, seed=5)
  keys = _keys(n)
  out = masking.mask_batch(
    ids,
    keys,
    special_table=SPECIAL,
    word_start_table=table if whole_words else None,
    max_predictions=max_pred,
    mask_id=MASK,
    max_ngram=max_ngram,
  )
  valid = _check_consistent(ids, out, max_pred)
  # The same random draws as mask_batch: the order of the word starts and a length at each.
  is_start = ~SPECIAL[ids] & (table[ids] | SPECIAL[np.pad(ids, ((0, 0), (1, 0)))[:, :-1]])
  order = masking._start_order(is_start, keys)[0]
  codes = masking._position_codes(masking._NGRAM_LENGTH, ids.shape[1])
  uniform = (masking._mix(keys[:, None] ^ codes[None]) >> np.uint64(11)) * 2.0**-53
  lengths = masking.ngram_lengths(uniform.astype(np.float64), max_ngram)
  budget = np.minimum(max_pred, np.maximum(1, np.round((~SPECIAL[ids]).sum(1) * 0.15)))
  spans = []
  for row in range(n):
    words = _words(ids[row], table)
    number = {word[0]: i for i, word in enumerate(words)}
    starts = [number[p] for p in order[row, : len(words)]]
    drawn = {number[p]: lengths[row, p] for p in number}
    expected = _albert_ngrams(words, starts, drawn, budget[row], max_ngram)
    chosen = set(out["masked_lm_positions"][row, valid[row]].tolist())
    assert chosen == expected, row
    runs = np.split(sorted(chosen), np.flatnonzero(np.diff(sorted(chosen)) > 1) + 1)
    spans += [sum(p in number for p in run) for run in runs if len(run)]
  # Spans of several words are common (not so with max_ngram=1 and single tokens).
  assert 0.2 < np.mean(np.array(spans) > 1) < 0.6
  assert valid.sum(1).mean() > 0.9 * budget.mean()


def test_max_ngram_1_is_the_word_masking():
  ids, keys = _random_rows(50, 64, seed=6), _keys(50)
  for table in (None, np.arange(VOCAB) % 3 != 0):
    default = _mask(ids, keys, table)
    one = masking.mask_batch(
      ids,
      keys,
      special_table=SPECIAL,
      word_start_table=table,
      max_predictions=20,
      mask_id=MASK,
      max_ngram=1,
    )
    for name, value in default.items():
      assert np.array_equal(value, one[name]), name


def test_masking_is_a_function_of_the_row_key():
  n = 64
  ids = _random_rows(n, 64, seed=3)
  keys = _keys(n)
  word_start = np.arange(VOCAB) % 3 != 0
  for table in (None, word_start):
    whole = _mask(ids, keys, table)
    subset = np.random.default_rng(0).permutation(n)[:17]
    part = _mask(ids[subset], keys[subset], table)
    for name, value in whole.items():
      assert np.array_equal(value[subset], part[name]), name
    other = _mask(ids, _keys(n, epoch=1), table)
    assert not np.array_equal(other["masked_lm_positions"], whole["masked_lm_positions"])


def test_masking_without_candidates():
  ids = np.array([[CLS, SEP, PAD, PAD], [CLS, 7, SEP, PAD]], np.int32)
  out = _mask(ids, _keys(2), max_predictions=3)
  assert out["masked_lm_weights"].tolist() == [[0, 0, 0], [1, 0, 0]]
  assert out["input_ids"][0].tolist() == ids[0].tolist()
  assert out["masked_lm_positions"][1, 0] == 1


def test_row_keys():
  epochs, ids = np.repeat(np.arange(50), 200), np.tile(np.arange(200), 50)
  keys = masking.row_keys(7, epochs, ids)
  assert keys.dtype == np.uint64 and len(np.unique(keys)) == len(keys)
  assert np.array_equal(keys, masking.row_keys(7, epochs, ids))
  assert not np.intersect1d(keys, masking.row_keys(8, epochs, ids)).size
  bits = np.unpackbits(keys.view(np.uint8)).mean()
  assert abs(bits - 0.5) < 0.01


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 2**20 + 3])
def test_permute_index_is_a_bijection(size):
  index = np.arange(size)
  perm = masking.permute_index(index, size, (0, 1))
  assert np.array_equal(np.sort(perm), index)
  # Per element: any slice of the order costs only its own length.
  assert np.array_equal(masking.permute_index(index[size // 2 :], size, (0, 1)), perm[size // 2 :])
  if size >= 1000:
    other = masking.permute_index(index, size, (0, 2))
    assert (perm == index).mean() < 0.01 and (perm == other).mean() < 0.01
    # Looks random: adjacent inputs land far apart.
    assert abs(np.corrcoef(index, perm)[0, 1]) < 0.1


def test_permute_index_rejects_out_of_range():
  with pytest.raises(ValueError):
    masking.permute_index(np.array([5]), 5, (0,))
