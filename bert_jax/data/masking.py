"""BERT's masked-LM corruption as a stateless TensorFlow function.

`mask_sequence` runs inside `tf.data` (static shapes, no Python state) and is a
pure function of `(input_ids, seed)`: the pipeline derives the seed from
(run seed, epoch, example index), so a resumed run sees the same masks and each
epoch sees new ones (dynamic masking, as in RoBERTa).
"""

import tensorflow as tf


def mask_sequence(input_ids, seed, *, vocab_size: int, mask_id: int,
                  special_ids, max_predictions: int, mask_rate: float = 0.15,
                  mask_token_rate: float = 0.8,
                  random_token_rate: float = 0.1) -> dict[str, tf.Tensor]:
  """Masks one example for masked-LM training.

  Candidates are the positions whose id is not special (so never [CLS], [SEP]
  or padding). `min(max_predictions, max(1, round(candidates * mask_rate)))`
  distinct candidates are picked uniformly; of those, `mask_token_rate` become
  [MASK], `random_token_rate` a random non-special id, the rest stay as they
  are.

  Args:
    input_ids: int32 [L] token ids.
    seed: int32/int64 [2] seed for the `tf.random.stateless_*` ops.
    vocab_size: random replacements are drawn from
      [max(special_ids) + 1, vocab_size).
    mask_id: id of [MASK].
    special_ids: ids that are never masked.
    max_predictions: P, the (static) number of prediction slots.
    mask_rate: fraction of candidates to predict.
    mask_token_rate: fraction of predictions replaced by [MASK].
    random_token_rate: fraction of predictions replaced by a random id.

  Returns:
    `input_ids` int32 [L], the corrupted ids; `masked_lm_positions` int32 [P],
    ascending, 0-padded; `masked_lm_ids` int32 [P], the original ids, 0-padded;
    `masked_lm_weights` float32 [P], 1.0 for real predictions, 0.0 for padding.
  """
  input_ids = tf.convert_to_tensor(input_ids, tf.int32)
  length = input_ids.shape[0]
  k = min(max_predictions, length)
  special = tf.constant(sorted(set(int(i) for i in special_ids)), tf.int32)
  min_random_id = int(max(special_ids)) + 1
  seeds = tf.random.experimental.stateless_split(seed, num=3)

  is_candidate = tf.reduce_all(input_ids[:, None] != special[None, :], axis=1)
  num_candidates = tf.reduce_sum(tf.cast(is_candidate, tf.int32))
  num_to_predict = tf.cast(
      tf.round(tf.cast(num_candidates, tf.float32) * mask_rate), tf.int32)
  num_to_predict = tf.minimum(max_predictions, tf.maximum(1, num_to_predict))
  num_to_predict = tf.minimum(num_to_predict, num_candidates)  # 0 if none

  # Random scores, -1 for non-candidates: the top `num_to_predict` scores are a
  # uniform sample of distinct candidates.
  scores = tf.random.stateless_uniform([length], seeds[0])
  scores = tf.where(is_candidate, scores, -1.0)
  _, top = tf.math.top_k(scores, k=k)  # [k]
  chosen = tf.range(k) < num_to_predict
  positions = tf.sort(tf.where(chosen, top, length))  # unused slots sort last
  valid = positions < length
  positions = tf.where(valid, positions, 0)
  original = tf.where(valid, tf.gather(input_ids, positions), 0)

  u = tf.random.stateless_uniform([k], seeds[1])
  random_ids = tf.random.stateless_uniform(
      [k], seeds[2], minval=min_random_id, maxval=vocab_size, dtype=tf.int32)
  replacement = tf.where(
      u < mask_token_rate, mask_id,
      tf.where(u < mask_token_rate + random_token_rate, random_ids, original))

  # Dense scatter through a [k, L] one-hot: static shapes, no duplicate-index
  # scatter (padding slots all point at position 0 but have weight 0).
  hits = tf.one_hot(positions, length, dtype=tf.int32) * tf.cast(
      valid, tf.int32)[:, None]
  is_masked = tf.reduce_max(hits, axis=0) > 0
  new_values = tf.reduce_sum(hits * replacement[:, None], axis=0)
  masked_ids = tf.where(is_masked, new_values, input_ids)

  pad = [[0, max_predictions - k]]
  return {
      "input_ids": masked_ids,
      "masked_lm_positions": tf.pad(positions, pad),
      "masked_lm_ids": tf.pad(original, pad),
      "masked_lm_weights": tf.pad(tf.cast(valid, tf.float32), pad),
  }
