"""Shared test setup: 8 fake CPU devices (set before JAX is imported) and small helpers."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", "cpu")


def random_batch(rng, batch_size, length=32, predictions=5, vocab_size=512):
  """A pretraining batch with varied padding and a varying number of masked positions."""
  lengths = rng.integers(length // 2, length + 1, size=batch_size)
  input_ids = rng.integers(5, vocab_size, size=(batch_size, length)).astype(np.int32)
  attention_mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  input_ids *= attention_mask
  input_ids[:, 0] = 2
  token_type_ids = (np.arange(length)[None] >= lengths[:, None] // 2) * attention_mask
  positions = np.zeros((batch_size, predictions), np.int32)
  weights = np.zeros((batch_size, predictions), np.float32)
  for i, n in enumerate(lengths):
    k = rng.integers(1, predictions + 1)
    positions[i, :k] = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
    weights[i, :k] = 1.0
  return {
    "input_ids": input_ids,
    "token_type_ids": token_type_ids.astype(np.int32),
    "attention_mask": attention_mask,
    "masked_lm_positions": positions,
    "masked_lm_ids": np.take_along_axis(input_ids, positions, 1) * (weights > 0),
    "masked_lm_weights": weights,
    "next_sentence_labels": rng.integers(0, 2, size=batch_size).astype(np.int32),
  }


def needs_devices(n):
  return pytest.mark.skipif(
    jax.device_count() < n, reason=f"needs {n} devices (XLA_FLAGS host device count)"
  )
