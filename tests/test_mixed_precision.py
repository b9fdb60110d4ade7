"""bfloat16 compute with float32 parameters: gradients that sum over positions (biases, the
position table) accumulate in float32, as PyTorch's autocast does.

XLA keeps a bfloat16 reduction in bfloat16 on CPU and on Hopper GPUs (its GPU float support
calls bfloat16 `add` native there); a running bfloat16 sum stops growing once a term is
below half its spacing, so a bias gradient summed over 256 x 128 positions came out a
quarter of the truth.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from bert_jax.model import bert, families, pretraining, registry


def bfloat16_reductions(jaxpr) -> list[str]:
  """The input shapes of the reductions with a bfloat16 result in `jaxpr`, nested ones too."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name.startswith("reduce_") and any(
      v.aval.dtype == jnp.bfloat16 for v in eqn.outvars
    ):
      found.append(str(eqn.invars[0].aval))
    for sub in jax_core.jaxprs_in_params(eqn.params):
      found += bfloat16_reductions(sub)
  return found


def test_a_bias_gradient_over_32768_positions_is_exact():
  # Hand-computed truth: d(sum of y)/d(bias) = the number of positions, 256 x 128 = 32768,
  # exact in float32 (a bfloat16 accumulation gave 8192).
  config = bert.BertConfig(vocab_size=128, hidden_size=8, dtype=jnp.bfloat16)
  layer = bert.dense(config, 4, (None,), (None,))
  x = jax.random.normal(jax.random.key(0), (256, 128, 8), jnp.bfloat16)
  params = layer.init(jax.random.key(1), x)

  def total(p):
    return layer.apply(p, x).astype(jnp.float32).sum()

  bias = jax.jit(jax.grad(total))(params)["params"]["bias"].unbox()
  assert bias.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(bias), np.full(4, 32768.0))


@pytest.mark.parametrize("arch", families.ARCHES)
def test_no_bfloat16_reduction_in_a_family_gradient(arch):
  family = families.family(arch)
  config = family.config(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    dtype=jnp.bfloat16,
  )
  model = family.pretraining(config)
  inputs = registry.dummy_inputs(model, 16)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))  # traced, not run

  def total(p):
    leaves = jax.tree.leaves(model.apply(p, *inputs))
    return sum(jnp.sum(x.astype(jnp.float32)) for x in leaves if x.dtype.kind == "f")

  assert bfloat16_reductions(jax.make_jaxpr(jax.grad(total))(params).jaxpr) == []


@pytest.mark.slow  # ~9 CPU-s (compiles two models' gradients)
def test_bfloat16_bias_gradients_match_float32():
  # Truth: the same parameters and batch in float32. Kernel gradients (bf16 matmuls) are
  # within ~1 %; bias gradients were 2-18 % off (the value biases' most) before they
  # summed in float32, now within 1 %. The key biases' true gradient is zero (softmax
  # ignores a constant per row), so they have no relative error to speak of.
  batch, length, predictions = 32, 128, 20
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 512, (batch, length)).astype(np.int32)
  inputs = (ids, np.zeros_like(ids), np.ones_like(ids))
  positions = rng.integers(0, length, (batch, predictions)).astype(np.int32)
  labels = rng.integers(5, 512, (batch, predictions))

  def model(dtype):
    config = bert.BertConfig(
      vocab_size=512,
      hidden_size=64,
      num_layers=2,
      num_heads=2,
      intermediate_size=256,
      hidden_dropout=0.0,
      attention_dropout=0.0,
      dtype=dtype,
    )
    return pretraining.BertForPreTraining(config)

  def grads(dtype, params):
    m = model(dtype)

    def loss(p):
      logits, _ = m.apply({"params": p}, *inputs, positions)
      logp = jax.nn.log_softmax(logits)
      return -jnp.take_along_axis(logp, labels[..., None], -1).mean()

    return jax.jit(jax.grad(loss))(params)

  params = model(jnp.float32).init(jax.random.key(0), *inputs, positions)["params"]
  truth, got = grads(jnp.float32, params), grads(jnp.bfloat16, params)
  errors = {}
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(truth), jax.tree.leaves(got)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.any(a):  # (the NSP head has no gradient from this loss)
      errors[jax.tree_util.keystr(path)] = np.linalg.norm(a - b) / np.linalg.norm(a)
  biases = {p: e for p, e in errors.items() if "'bias'" in p and "'key'" not in p}
  assert len(biases) > 10
  worst = max(biases, key=biases.get)
  assert biases[worst] < 0.02, (worst, biases[worst])
  position = [e for p, e in errors.items() if "'position'" in p]
  assert position and position[0] < 0.02
