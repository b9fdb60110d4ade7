"""`lookup.Lookup` against `flax.linen.Embed` (the same rows; a gradient summed in float32)
and a float64 numpy sum, and the bfloat16 train step it gives: no bfloat16 scatter-add,
none into the position or token-type tables.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax import sharding
from bert_jax.data import synthetic
from bert_jax.model import lookup, pretraining
from bert_jax.train import step as step_lib
from tests.conftest import load_benchmark


def _table_and_ids(rows, features=16, shape=(8, 64), seed=0):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(rows, features)).astype(np.float32)
  ids = rng.integers(0, rows, size=shape).astype(np.int32)
  ids[:, 0] = 0  # every row repeats id 0, as [CLS] and position 0 do
  return table, ids


@pytest.mark.parametrize("rows", [2, lookup.SELECT_ROWS + 1, 300])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lookup_gives_flax_embed_rows_and_a_float32_gradient(rows, dtype):
  table, ids = _table_and_ids(rows)
  cotangent = np.random.default_rng(1).normal(size=ids.shape + (16,)).astype(np.float32)
  params = {"params": {"embedding": jnp.asarray(table)}}

  def grad_of(module):
    def loss(p):
      out = module.apply(p, jnp.asarray(ids))
      return jnp.sum(out.astype(jnp.float32) * cotangent.astype(dtype).astype(jnp.float32))

    return module.apply(params, jnp.asarray(ids)), jax.grad(loss)(params)["params"]["embedding"]

  ours, grad = grad_of(lookup.Lookup(rows, 16, dtype=dtype))
  flax_out, flax_grad = grad_of(nn.Embed(rows, 16, dtype=dtype))
  assert ours.dtype == flax_out.dtype == dtype
  np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(flax_out, np.float32))

  # The gradient: the cotangent rows (as the compute dtype holds them) summed per id.
  expected = np.zeros((rows, 16))
  np.add.at(expected, ids, np.asarray(jnp.asarray(cotangent, dtype), np.float64))
  scale = np.abs(expected).max()
  ours_error = np.abs(np.asarray(grad, np.float64) - expected).max() / scale
  assert ours_error < 1e-6, ours_error
  if dtype == jnp.bfloat16:  # flax sums in bfloat16 (id 0 has 8 x 64 / rows+ updates)
    flax_error = np.abs(np.asarray(flax_grad, np.float64) - expected).max() / scale
    assert flax_error > 100 * ours_error, (flax_error, ours_error)


def test_rows_are_the_lookup_of_consecutive_positions():
  table, _ = _table_and_ids(40)
  module = lookup.Lookup(40, 16, dtype=jnp.bfloat16)
  params = {"params": {"embedding": jnp.asarray(table)}}
  sliced = module.apply(params, 3, 20, method=lookup.Lookup.rows)
  looked_up = module.apply(params, jnp.arange(3, 23))
  assert sliced.shape == (20, 16) and sliced.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(sliced, np.float32), np.asarray(looked_up, np.float32))


def _scatter_results(text):
  """The result types of the scatters in a lowered module's text, e.g. 'tensor<2x64xf32>'."""
  return re.findall(r'"stablehlo\.scatter".*?\}\) : \([^)]*\) -> (tensor<[^>]*>)', text, re.S)


def test_bfloat16_train_step_has_no_bfloat16_or_small_table_scatter():
  """A bfloat16 BERT's train step on rows of one example: the only scatter-adds left are
  the word table's (float32) and the loss's label picks (float32, one update each).
  """
  bench = load_benchmark("train_throughput")
  c = config_lib.base_config()
  c.model.size, c.model.dtype = "tiny", "bfloat16"
  cfg = config_lib.model_config(c, 1000)  # padded past the 512 positions
  assert not cfg.packed_rows
  step, state, mesh, rules = bench.one_device_step(
    c, step_lib.Pretraining(pretraining.BertForPreTraining(cfg))
  )
  batch = next(
    synthetic.synthetic_batches(
      batch_size=4, max_seq_length=32, vocab_size=1000, max_predictions=5, seed=0
    )
  )
  with sharding.activate(mesh, rules):
    text = step.lower(state, sharding.global_batch(batch, mesh), jax.random.key(0)).as_text()
  results = _scatter_results(text)
  hidden, positions = cfg.hidden_size, cfg.max_position_embeddings
  assert f"tensor<{cfg.vocab_size}x{hidden}xf32>" in results  # the word table's gradient
  assert not [r for r in results if r.endswith("bf16>")], results
  for small in (f"tensor<{positions}x{hidden}", f"tensor<{cfg.type_vocab_size}x{hidden}"):
    assert not [r for r in results if r.startswith(small)], (small, results)
