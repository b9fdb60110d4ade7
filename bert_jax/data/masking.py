"""Counter-based randomness for the input pipeline: masked-LM corruption and row order.

Everything here is a pure numpy function of integer keys, hashed with
splitmix64, so a batch is reproducible from (seed, epoch, row id) alone: a
resumed run sees the same masks and order, each epoch sees new ones (dynamic
masking, as in RoBERTa), and a row's masks do not depend on the batch it is in.
`permute_index` is the keyed permutation that orders an epoch's rows.

`mask_batch` follows `create_masked_lm_predictions` of google-research/bert
`create_pretraining_data.py`: whole words taken in random order while they fit
in the prediction budget, then 80 % [MASK], 10 % random id, 10 % unchanged per
predicted token. Two differences: the budget counts candidates (not [CLS] and
[SEP]), and random ids are never special. With `max_ngram` > 1 it masks n-grams
of words as ALBERT's (Lan et al. 2020, google-research/albert) does: from each
word in random order, n consecutive words, n drawn with p(n) proportional to 1/n.
"""

from collections.abc import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
# Streams keep the independent random choices of one row apart.
_WORD_ORDER, _REPLACE_KIND, _REPLACE_ID, _NGRAM_LENGTH = 1, 2, 3, 4
# Salts of the two hash families: row keys ("keys") and permutation round keys ("shuf").
_KEY_SALT, _PERMUTATION_SALT = 0x6B65797300000000, 0x7368756600000000
_FEISTEL_ROUNDS = 6


def _mix(x):
  """splitmix64's finalizer, a bijection on uint64 (elementwise)."""
  with np.errstate(over="ignore"):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _combine(h, values):
  """Hashes `values` into the running hash `h` (both broadcast, uint64)."""
  values = np.asarray(values).astype(np.int64).view(np.uint64)
  with np.errstate(over="ignore"):
    return _mix(h + _mix(values + _GOLDEN))


def _seed_hash(seed_words, salt):
  h = np.full((), salt, np.uint64)
  for word in seed_words:
    h = _combine(h, np.int64(word))
  return h


def row_keys(seed: int, epoch: np.ndarray | int, row_ids: np.ndarray) -> np.ndarray:
  """Per-row keys for `mask_batch`: a hash of (seed, epoch, row id).

  Args:
    seed: the run's seed.
    epoch: int64 (n,) (or scalar) epoch of each row.
    row_ids: int64 (n,) id of each row in the dataset (the pipeline's: shard << 32 | record).

  Returns:
    uint64 (n,) keys.
  """
  h = _combine(_seed_hash([seed], _KEY_SALT), epoch)
  return _combine(h, row_ids)


def _position_codes(stream: int, length: int) -> np.ndarray:
  """uint64 (length,): what a position contributes to a row's hash in `stream`."""
  return _mix((np.uint64(stream) << np.uint64(32)) + np.arange(length, dtype=np.uint64))


def _positions_from_mask(chosen, num_slots):
  """(n, L) bool -> (n, P) int32 ascending positions of the True entries, 0-padded."""
  rows, cols = np.nonzero(chosen)  # row-major: ascending columns in each row
  counts = chosen.sum(1)
  first = np.cumsum(counts) - counts
  slots = np.arange(len(rows)) - first[rows]
  positions = np.zeros((chosen.shape[0], num_slots), np.int32)
  positions[rows, slots] = cols
  return positions, counts


def _start_order(is_start, keys):
  """The word starts of each row in a random order of its key.

  Returns:
    `order` int64 (n, L), the start positions ranked (>= L past the last start), and
    `scores` / `ranked` uint64 (n, L), each position's sort key and the sorted keys
    (distinct; all ones at the non-starts).
  """
  length = is_start.shape[1]
  pos = np.arange(length, dtype=np.int32)
  pos_bits = np.uint64(length.bit_length())  # 2**pos_bits > length: room for a sentinel
  pos_mask = (np.uint64(1) << pos_bits) - np.uint64(1)
  # Random high bits, the position in the low bits (distinct sort keys); non-starts get
  # the all-ones sentinel and sort last.
  scores = _mix(keys[:, None] ^ _position_codes(_WORD_ORDER, length)[None])
  scores = (scores & ~pos_mask) | pos.astype(np.uint64)[None]
  scores = np.where(is_start, scores, _ALL_ONES)
  ranked = np.sort(scores, axis=1)
  return (ranked & pos_mask).astype(np.int64), scores, ranked


def _choose(is_candidate, is_start, keys, num_to_predict):
  """Picks whole words in random order while they fit in `num_to_predict`.

  Args:
    is_candidate: bool (n, L).
    is_start: bool (n, L), True at the first position of each word (a subset of
      the candidates).
    keys: uint64 (n,) row keys.
    num_to_predict: int (n,) budget of each row.

  Returns:
    bool (n, L), the predicted positions.
  """
  n, length = is_candidate.shape
  pos = np.arange(length, dtype=np.int32)
  order, scores, ranked = _start_order(is_start, keys)  # (n, L) starts; >= L: none
  row_offset = np.arange(n)[:, None] * length

  if np.array_equal(is_start, is_candidate):  # single-piece words: first k of them
    take = np.arange(length)[None] < num_to_predict[:, None]
    chosen = np.zeros(n * length, bool)
    chosen[(row_offset + order)[take]] = True
    return chosen.reshape(n, length)

  # Each candidate's word start, and each word's length at its start.
  start_of = np.maximum.accumulate(np.where(is_start, pos, 0), axis=1)
  word_length = np.bincount((row_offset + start_of)[is_candidate], minlength=n * length)  # (n * L,)

  # Original BERT's rule: words in random order, a word that overflows the
  # budget is skipped (not a stop). The words before the first overflow all
  # fit (a prefix sum); after it, a loop over ranks for the rows left.
  sizes = np.where(order < length, word_length.take(row_offset + np.minimum(order, length - 1)), 0)
  fits = np.cumsum(sizes, axis=1) <= num_to_predict[:, None]  # (n, L), a prefix
  rank = fits.sum(1)  # the first overflowing word (L: none)
  bound = np.where(rank < length, ranked[np.arange(n), np.minimum(rank, length - 1)], _ALL_ONES)
  accepted = (scores < bound[:, None]).ravel()  # (n * L,) at the word starts
  filled = (sizes * fits).sum(1)
  num_words = is_start.sum(1)
  left = np.flatnonzero((filled < num_to_predict) & (rank + 1 < num_words))
  while left.size:
    rank[left] += 1
    size = sizes[left, rank[left]]
    take = filled[left] + size <= num_to_predict[left]
    filled[left] += np.where(take, size, 0)
    accepted[left[take] * length + order[left[take], rank[left[take]]]] = True
    left = left[(filled[left] < num_to_predict[left]) & (rank[left] + 1 < num_words[left])]
  return accepted.take(row_offset + start_of) & is_candidate


def ngram_lengths(uniform: np.ndarray, max_ngram: int) -> np.ndarray:
  """N-gram lengths in 1..max_ngram with p(n) proportional to 1/n, from uniforms in [0, 1).

  ALBERT's: for max_ngram 3, 6/11, 3/11 and 2/11.
  """
  weights = 1.0 / np.arange(1, max_ngram + 1)
  bounds = np.cumsum(weights) / weights.sum()
  return np.minimum(np.searchsorted(bounds, uniform, side="right"), max_ngram - 1) + 1


def _choose_ngrams(is_candidate, is_start, keys, num_to_predict, max_ngram):
  """Picks n-grams of whole words, ALBERT's way, while they fit in `num_to_predict`.

  From each word in a random order: n consecutive words (n from `ngram_lengths`, at most
  the words left in the row); the longest of n, n - 1, ..., 1 words that fits the budget
  left, skipped when none fits or a word of it is already taken. Stops when the budget is
  spent or the words are. `_choose`'s arguments; returns bool (n, L), the predicted positions.
  """
  n, length = is_candidate.shape
  order, _, _ = _start_order(is_start, keys)  # (n, L) starts; >= L: none
  word = np.cumsum(is_start, axis=1) - 1  # (n, L) word number of each candidate
  num_words = is_start.sum(1)
  # words_before[r, w]: candidates in the words before word w of row r (w <= num_words).
  sizes = np.zeros((n, length + 1), np.int64)
  rows, cols = np.nonzero(is_candidate)
  np.add.at(sizes, (rows, word[rows, cols] + 1), 1)
  words_before = np.cumsum(sizes, axis=1)
  uniform = _mix(keys[:, None] ^ _position_codes(_NGRAM_LENGTH, length)[None])
  drawn = ngram_lengths((uniform >> np.uint64(11)).astype(np.float64) * 2.0**-53, max_ngram)

  taken = np.zeros((n, length + max_ngram), bool)  # by word number
  filled = np.zeros(n, np.int64)
  left = np.flatnonzero((num_to_predict > 0) & (num_words > 0))
  for rank in range(length):
    if not left.size:
      break
    start = order[left, rank]
    first = word[left, start]
    wanted = np.minimum(drawn[left, start], num_words[left] - first)
    span = np.zeros(len(left), np.int64)  # the longest that fits; 0: none
    for k in range(max_ngram, 0, -1):
      last = np.minimum(first + k, num_words[left])
      size = words_before[left, last] - words_before[left, first]
      fits = (span == 0) & (k <= wanted) & (filled[left] + size <= num_to_predict[left])
      span = np.where(fits, k, span)
    covered = np.zeros(len(left), bool)
    for k in range(max_ngram):
      covered |= (k < span) & taken[left, first + k]
    ok = (span > 0) & ~covered
    for k in range(max_ngram):
      hit = ok & (k < span)
      taken[left[hit], first[hit] + k] = True
    end = np.minimum(first + span, num_words[left])
    filled[left] += np.where(ok, words_before[left, end] - words_before[left, first], 0)
    left = left[(filled[left] < num_to_predict[left]) & (rank + 1 < num_words[left])]
  chosen = np.take_along_axis(taken, np.maximum(word, 0), axis=1)
  return chosen & is_candidate


def mask_batch(
  input_ids: np.ndarray,
  keys: np.ndarray,
  *,
  special_table: np.ndarray,
  word_start_table: np.ndarray | None,
  max_predictions: int,
  mask_id: int,
  mask_rate: float = 0.15,
  mask_token_rate: float = 0.8,
  random_token_rate: float = 0.1,
  max_ngram: int = 1,
) -> dict[str, np.ndarray]:
  """Masks a batch for masked-LM training, each row a pure function of its key.

  Candidates are the non-special positions (so never [CLS], [SEP] or padding).
  A row predicts `min(P, max(1, round(candidates * mask_rate)))` candidates (0
  without candidates). With `word_start_table`, a word is a word-start
  candidate and the non-word-start candidates after it; words are taken in
  random order, each only if the total stays within the budget, and all its
  pieces are predicted. Without it, the candidates are drawn uniformly. With
  `max_ngram` > 1, spans of up to that many words (tokens without
  `word_start_table`) are taken instead (`_choose_ngrams`). Each
  predicted token becomes [MASK] (`mask_token_rate`), a random non-special id
  (`random_token_rate`) or stays unchanged.

  Args:
    input_ids: int32 (n, L) token ids.
    keys: uint64 (n,) one key per row, e.g. from `row_keys`.
    special_table: bool (V,), True for ids never masked (padding included).
    word_start_table: bool (V,), True for ids that start a word; None masks
      single tokens.
    max_predictions: P, the number of prediction slots.
    mask_id: id of [MASK].
    mask_rate: fraction of candidates to predict.
    mask_token_rate: fraction of predictions replaced by [MASK].
    random_token_rate: fraction of predictions replaced by a random id.
    max_ngram: the longest span of words masked together (ALBERT: 3); 1: single words.

  Returns:
    `input_ids` int32 (n, L), the corrupted ids; `masked_lm_positions` int32
    (n, P), ascending, 0-padded; `masked_lm_ids` int32 (n, P), the original ids,
    0-padded; `masked_lm_weights` float32 (n, P), 1.0 for real predictions.
  """
  input_ids = np.asarray(input_ids, np.int32)
  keys = np.asarray(keys, np.uint64)
  n, length = input_ids.shape
  is_candidate = ~np.asarray(special_table, bool)[input_ids]  # (n, L)
  num_candidates = is_candidate.sum(1)
  num_to_predict = np.minimum(max_predictions, np.maximum(1, np.rint(num_candidates * mask_rate)))
  num_to_predict = np.where(num_candidates > 0, num_to_predict, 0).astype(np.int64)

  if word_start_table is None:
    is_start = is_candidate
  else:
    after_candidate = np.zeros_like(is_candidate)
    after_candidate[:, 1:] = is_candidate[:, :-1]
    # A piece after a special token or padding starts a word whatever it is.
    is_start = is_candidate & (np.asarray(word_start_table, bool)[input_ids] | ~after_candidate)
  if max_ngram > 1:
    chosen = _choose_ngrams(is_candidate, is_start, keys, num_to_predict, max_ngram)
  else:
    chosen = _choose(is_candidate, is_start, keys, num_to_predict)
  positions, counts = _positions_from_mask(chosen, max_predictions)  # (n, P)
  valid = np.arange(max_predictions)[None] < counts[:, None]
  original = np.where(valid, np.take_along_axis(input_ids, positions, 1), 0)

  # 80/10/10 per predicted token, from the row key and the position.
  kind = _mix(keys[:, None] ^ _position_codes(_REPLACE_KIND, length)[positions])
  uniform = (kind >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
  normal_ids = np.flatnonzero(~np.asarray(special_table, bool)).astype(np.int32)
  pick = _mix(keys[:, None] ^ _position_codes(_REPLACE_ID, length)[positions])
  random_ids = normal_ids[pick % np.uint64(len(normal_ids))]
  replacement = np.where(
    uniform < mask_token_rate,
    mask_id,
    np.where(uniform < mask_token_rate + random_token_rate, random_ids, original),
  )

  corrupted = input_ids.copy()
  rows, slots = np.nonzero(valid)
  corrupted[rows, positions[rows, slots]] = replacement[rows, slots]
  return {
    "input_ids": corrupted,
    "masked_lm_positions": positions,
    "masked_lm_ids": original.astype(np.int32),
    "masked_lm_weights": valid.astype(np.float32),
  }


def permute_index(index: np.ndarray, size: int, seed_words: Sequence[int]) -> np.ndarray:
  """A keyed pseudo-random permutation of [0, size), applied to `index`.

  A Feistel network on the smallest even number of bits covering `size`, with
  cycle walking to stay inside [0, size): a bijection for any size, computed
  per element, so a shard of the order costs only its own length.

  Args:
    index: int64 (n,) values in [0, size).
    size: the size of the permuted range (>= 1).
    seed_words: ints that choose the permutation, e.g. (seed, epoch).

  Returns:
    int64 (n,) the permuted values.
  """
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size}")
  index = np.asarray(index, np.int64)
  if index.size and (index.min() < 0 or index.max() >= size):
    raise ValueError(f"index values must lie in [0, {size})")
  half_bits = max(1, ((size - 1).bit_length() + 1) // 2)
  half_mask = np.uint64((1 << half_bits) - 1)
  base = _seed_hash(seed_words, _PERMUTATION_SALT)
  round_keys = [_combine(base, r) for r in range(_FEISTEL_ROUNDS)]

  def feistel(x):
    left, right = x >> np.uint64(half_bits), x & half_mask
    for key in round_keys:
      left, right = right, left ^ (_mix(right ^ key) & half_mask)
    return (left << np.uint64(half_bits)) | right

  x = feistel(index.astype(np.uint64))
  outside = x >= np.uint64(size)
  while outside.any():  # each cycle through [0, size) comes back inside
    x[outside] = feistel(x[outside])
    outside = x >= np.uint64(size)
  return x.astype(np.int64)
