"""bert_jax's dropout: its bits are JAX's partitionable threefry blocks, a quarter as many;
its rate and scaling; the same masks however the input is sharded.
"""

import re

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax.model import dropout
from tests.conftest import needs_devices

SHAPE = (8, 16, 64)
COLLECTIVES = re.compile(r"all-gather|all-reduce|all-to-all|collective-permute")


def test_the_bits_are_partitionable_threefry_blocks_split_in_four():
  # JAX's partitionable threefry draws element i of a uint32 array from block i as the XOR of
  # the block's two words; the 16-bit draws of block i, XORed the same way, must be it.
  key = jax.random.key(7)
  bits = np.asarray(dropout.random_16_bits(key, SHAPE)).astype(np.uint32)
  with jax.threefry_partitionable(True):
    blocks = np.asarray(jax.random.bits(key, (*SHAPE[:-1], SHAPE[-1] // 4), jnp.uint32))
  parts = bits.reshape(*SHAPE[:-1], SHAPE[-1] // 4, 4)
  assert bits.max() < 2**16
  np.testing.assert_array_equal(
    (parts[..., 0] ^ parts[..., 2]) | (parts[..., 1] ^ parts[..., 3]) << 16, blocks
  )


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_drop_rate_and_the_kept_values_scale(rate):
  x = jax.random.normal(jax.random.key(0), (64, 128, 256))
  y = np.asarray(dropout.apply(x, jax.random.key(1), rate))
  dropped = y == 0
  expected = dropout.drop_threshold(rate) / 2**16
  assert abs(expected - rate) < 2**-16
  n = dropped.size
  assert abs(dropped.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / n)
  np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / (1 - expected), rtol=1e-6)


def test_each_16_bit_value_is_as_likely():
  # 4M draws over 16 bins of their top 4 bits: a chi-square test against the uniform.
  bits = np.asarray(dropout.random_16_bits(jax.random.key(2), (64, 256, 256)))
  counts = np.bincount(bits.ravel() >> 12, minlength=16)
  expected = bits.size / 16
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 37.7  # the 0.001 tail of chi-square with 15 degrees of freedom


def test_rates_zero_and_one_and_the_deterministic_module():
  x = jnp.ones(SHAPE)
  key = jax.random.key(3)
  np.testing.assert_array_equal(dropout.apply(x, key, 1.0), 0.0)
  np.testing.assert_array_equal(dropout.apply(x, key, 0.0), x)
  module = dropout.Dropout(0.3)
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  y = module.apply({}, x, deterministic=False, rngs={"dropout": key})
  keep = 1 - dropout.drop_threshold(0.3) / 2**16
  assert set(np.unique(np.asarray(y))) == {0.0, np.float32(1 / keep)}
  np.testing.assert_array_equal(y, module.apply({}, x, deterministic=False, rngs={"dropout": key}))
  with pytest.raises(flax.errors.InvalidRngError):
    module.apply({}, x, deterministic=False)


def test_other_key_implementations_and_odd_widths_draw_16_bits_per_element():
  for key, shape in ((jax.random.key(4, impl="rbg"), SHAPE), (jax.random.key(4), (8, 6))):
    bits = np.asarray(dropout.random_16_bits(key, shape))
    assert bits.shape == shape and bits.max() < 2**16 and len(np.unique(bits)) > bits.size // 2


@needs_devices(8)
def test_each_shard_draws_its_own_bits_and_the_masks_do_not_depend_on_the_sharding():
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  x = jax.random.normal(jax.random.key(5), SHAPE)
  key = jax.random.key(6)
  whole = jax.jit(dropout.apply, static_argnums=2)(x, key, 0.1)
  for spec in (PartitionSpec("data", None, "model"), PartitionSpec(None, "model", "data")):
    sharding = NamedSharding(mesh, spec)
    sharded = jax.jit(
      dropout.apply, static_argnums=2, in_shardings=(sharding, None), out_shardings=sharding
    )
    hlo = sharded.lower(x, key, 0.1).compile().as_text()
    assert not COLLECTIVES.findall(hlo)  # no bits drawn whole and then sliced or gathered
    np.testing.assert_array_equal(sharded(jax.device_put(x, sharding), key, 0.1), whole)


def test_the_masks_do_not_depend_on_the_threefry_flavour():
  # A lone CPU device traces the step under JAX's original threefry (`loop._cpu_threefry`),
  # several devices under the partitionable one: a run resumed on another device count
  # keeps its masks. Flax's dropout draws other masks under each.
  x = jnp.ones(SHAPE)
  rngs = {"dropout": jax.random.fold_in(jax.random.key(8), 3)}  # as the step derives its key
  ours, flax_masks = [], []
  for partitionable in (False, True):
    with jax.threefry_partitionable(partitionable):
      ours.append(jax.jit(lambda x: dropout.Dropout(0.1).apply({}, x, False, rngs=rngs))(x))
      flax_masks.append(flax.linen.Dropout(0.1).apply({}, x, False, rngs=rngs))
  np.testing.assert_array_equal(ours[0], ours[1])
  assert (flax_masks[0] != flax_masks[1]).any()
