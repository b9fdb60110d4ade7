"""`model.recompute_activation`: the feed-forward block keeps only its first matmul's output
(and the activation's, which the second matmul's gradient reads) for the backward pass, and
recomputes the bias add and GELU there; the gradients are the same, bit for bit.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.model import bert

LAYERS, MLP = 2, 96


def _model(recompute, dtype):
  config = bert.BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_layers=LAYERS,
    num_heads=2,
    intermediate_size=MLP,
    dtype=dtype,
    recompute_activation=recompute,
  )
  return bert.Bert(config)


def _loss_and_params(recompute, dtype="bfloat16", init=jax.jit):
  """(loss of the parameters, the parameters made by `init` of the model's init)."""
  model = _model(recompute, dtype)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 100, (4, 16)))
  params = init(model.init)(jax.random.key(0), ids)

  def loss(p):
    hidden, _ = model.apply(p, ids, deterministic=False, rngs={"dropout": jax.random.key(1)})
    return jnp.sum(hidden.astype(jnp.float32) ** 2)

  return loss, params


def _kept_feed_forward_tensors(recompute):
  """{(shape, dtype): count} of the (batch, length, mlp) arrays the backward pass keeps."""
  loss, params = _loss_and_params(recompute, init=lambda f: lambda *a: jax.eval_shape(f, *a))
  backward = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)  # traced, not run
  kept = [x for x in jax.tree.leaves(backward) if getattr(x, "shape", ())[-1:] == (MLP,)]
  return collections.Counter((x.shape, str(x.dtype)) for x in kept if x.ndim == 3)


def test_the_backward_pass_keeps_two_feed_forward_tensors_a_layer():
  kept = _kept_feed_forward_tensors(True)
  assert kept == {((4, 16, MLP), "bfloat16"): 2 * LAYERS}  # the matmul's output, GELU's
  assert sum(_kept_feed_forward_tensors(False).values()) > 2 * LAYERS  # GELU's own too


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_same_gradients_bit_for_bit(dtype):
  grads = []
  for recompute in (False, True):
    loss, params = _loss_and_params(recompute, dtype)
    # XLA:CPU's default emitters, as a run compiles with (the suite's older ones, conftest's
    # FAST_COMPILE, round the recomputed float32 GELU differently in the last bits).
    emitters = {"xla_cpu_use_fusion_emitters": True}
    grads.append(jax.jit(jax.grad(loss), compiler_options=emitters)(params))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_config_key_reaches_the_model():
  c = config_lib.base_config()
  c.model.size, c.model.recompute_activation = "tiny", True
  assert config_lib.model_config(c, 128).recompute_activation is True
