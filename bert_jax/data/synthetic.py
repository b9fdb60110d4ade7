"""Random pretraining batches for smoke tests and benchmarks; no TensorFlow.

Same keys, dtypes and shapes as `pipeline.Stream.batch_at`, drawn with numpy only,
so machines with JAX but no TensorFlow can run benchmarks.
"""

from collections.abc import Iterator

import numpy as np

from bert_jax.data import masking
from bert_jax.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_IDS

_FIRST_ID = max(SPECIAL_IDS) + 1


def _batch(
  rng: np.random.Generator, b: int, length: int, vocab_size: int, max_predictions: int
) -> dict[str, np.ndarray]:
  """One batch of random `[CLS] A [SEP] B [SEP] [PAD]...` rows, masked as the pipeline masks."""
  positions = np.arange(length)[None, :]  # (1, L)
  seq_len = rng.integers(5, length + 1, size=(b, 1))  # tokens incl. specials
  sep_a = rng.integers(2, seq_len - 2)  # first [SEP]; A and B non-empty
  ids = rng.integers(_FIRST_ID, vocab_size, size=(b, length), dtype=np.int32)
  ids[:, 0] = CLS_ID
  ids[positions == sep_a] = SEP_ID
  ids[positions == seq_len - 1] = SEP_ID
  ids[positions >= seq_len] = PAD_ID
  token_type_ids = ((positions > sep_a) & (positions < seq_len)).astype(np.int32)

  special = np.zeros(vocab_size, dtype=bool)
  special[list(SPECIAL_IDS)] = True
  keys = rng.integers(0, 2**63, size=b, dtype=np.uint64)
  masked = masking.mask_batch(
    ids,
    keys,
    special_table=special,
    word_start_table=None,
    max_predictions=max_predictions,
    mask_id=MASK_ID,
  )
  return {
    **masked,
    "token_type_ids": token_type_ids,
    "attention_mask": (ids != PAD_ID).astype(np.int32),
    "position_ids": np.broadcast_to(positions, (b, length)).astype(np.int32),
    "next_sentence_labels": rng.integers(0, 2, size=(b,), dtype=np.int32),
  }


def synthetic_batches(
  *, batch_size: int, max_seq_length: int, vocab_size: int, max_predictions: int, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
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
