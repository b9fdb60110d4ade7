"""Random pretraining batches for smoke tests and benchmarks; no TensorFlow.

Same keys, dtypes and shapes as `pipeline.Stream.batch_at`, drawn with numpy only,
so machines with JAX but no TensorFlow can run benchmarks.
"""

import numpy as np

from bert_jax.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_IDS

_FIRST_ID = max(SPECIAL_IDS) + 1


def _batch(rng: np.random.Generator, b: int, length: int, vocab_size: int,
           max_predictions: int) -> dict[str, np.ndarray]:
  """One batch of random `[CLS] A [SEP] B [SEP] [PAD]...` rows, masked."""
  positions = np.arange(length)[None, :]  # (1, L)
  seq_len = rng.integers(5, length + 1, size=(b, 1))  # tokens incl. specials
  sep_a = rng.integers(2, seq_len - 2)  # first [SEP]; A and B non-empty
  ids = rng.integers(_FIRST_ID, vocab_size, size=(b, length), dtype=np.int32)
  ids[:, 0] = CLS_ID
  ids[positions == sep_a] = SEP_ID
  ids[positions == seq_len - 1] = SEP_ID
  ids[positions >= seq_len] = PAD_ID
  token_type_ids = ((positions > sep_a) & (positions < seq_len)).astype(
      np.int32)

  # Pick round(15 %) of the non-special tokens: smallest random scores win.
  candidate = ~np.isin(ids, SPECIAL_IDS)
  num = np.rint(candidate.sum(1) * 0.15).astype(np.int64)
  num = np.minimum(np.minimum(max_predictions, np.maximum(1, num)),
                   candidate.sum(1))
  scores = np.where(candidate, rng.random((b, length)), 2.0)
  chosen = np.argsort(scores, axis=1, kind="stable")[:, :max_predictions]
  slots = np.arange(max_predictions)[None, :]
  valid = slots < num[:, None]
  mlm_positions = np.sort(np.where(valid, chosen, length), axis=1)
  valid = mlm_positions < length
  mlm_positions = np.where(valid, mlm_positions, 0).astype(np.int32)
  rows = np.arange(b)[:, None]
  mlm_ids = np.where(valid, ids[rows, mlm_positions], 0).astype(np.int32)

  u = rng.random((b, max_predictions))
  random_ids = rng.integers(_FIRST_ID, vocab_size, size=(b, max_predictions))
  replacement = np.where(u < 0.8, MASK_ID,
                         np.where(u < 0.9, random_ids, mlm_ids))
  masked = ids.copy()
  r, c = np.nonzero(valid)
  masked[r, mlm_positions[r, c]] = replacement[r, c]
  return {
      "input_ids": masked,
      "token_type_ids": token_type_ids,
      "attention_mask": (ids != PAD_ID).astype(np.int32),
      "position_ids": np.broadcast_to(positions, (b, length)).astype(np.int32),
      "masked_lm_positions": mlm_positions,
      "masked_lm_ids": mlm_ids,
      "masked_lm_weights": valid.astype(np.float32),
      "next_sentence_labels": rng.integers(0, 2, size=(b,), dtype=np.int32),
  }


def synthetic_batches(*, batch_size: int, max_seq_length: int, vocab_size: int,
                      max_predictions: int, seed: int = 0):
  """Yields random masked batches forever, deterministically for a seed.

  Args:
    batch_size: rows per batch.
    max_seq_length: L (>= 5).
    vocab_size: ids are drawn from [5, vocab_size).
    max_predictions: P, masked positions per row.
    seed: numpy seed.

  Yields:
    Dicts like `pipeline.Stream.batch_at`'s: `input_ids`, `token_type_ids`,
    `attention_mask`, `position_ids` int32 (b, L); `masked_lm_positions`,
    `masked_lm_ids` int32 (b, P); `masked_lm_weights` float32 (b, P);
    `next_sentence_labels` int32 (b,).
  """
  if max_seq_length < 5 or vocab_size <= _FIRST_ID:
    raise ValueError("need max_seq_length >= 5 and vocab_size > 5")
  rng = np.random.default_rng(seed)
  while True:
    yield _batch(rng, batch_size, max_seq_length, vocab_size, max_predictions)
