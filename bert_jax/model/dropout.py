"""Dropout whose random bits cost a quarter of a threefry block per element.

Flax's `nn.Dropout` draws a float32 uniform per element (`jax.random.bernoulli`). Under
JAX's partitionable threefry, which keeps the masks the same however a batch is sharded,
each 32-bit draw is a whole threefry2x32 block: 64 bits computed, 32 kept. `keep_mask`
draws the same partitionable blocks, one per four elements, and compares each element's
16 bits with the rate: a quarter of the blocks, still a pure function of the key and the
element's index (so still independent of the sharding). Its drop rate is the requested one
rounded to a multiple of 2**-16 (0.1 -> 0.1000061); the kept values are scaled by that
rounded rate's inverse, so the expectation is unchanged.

Keys of another implementation (rbg, `jax_default_prng_impl`), a last axis that is no
multiple of 4 and arrays of 2**34 elements or more take 16 bits per element from
`jax.random.bits`.
"""

import math

import flax.linen as nn
import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np

_BITS = 16
_PER_BLOCK = 64 // _BITS  # elements sharing one threefry2x32 block


def drop_threshold(rate: float) -> int:
  """The 16-bit threshold: an element is dropped when its bits are below it."""
  return min(round(rate * 2**_BITS), 2**_BITS)


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
  """Bool `shape`: True where an element is kept, with chance 1 - drop_threshold / 2**16."""
  threshold = drop_threshold(rate)
  if threshold == 2**_BITS:
    return jnp.zeros(shape, bool)
  return random_16_bits(key, shape) >= threshold


def random_16_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform 16-bit integers (as uint32) of `shape`.

  Under threefry, element (i..., j) takes 16 bits of the block numbered (i..., j // 4) in
  row-major order: the blocks are counted over the array's own index, as JAX's partitionable
  threefry counts them, so each shard computes its own.
  """
  blocks = (*shape[:-1], shape[-1] // _PER_BLOCK) if shape else ()
  if not shape or shape[-1] % _PER_BLOCK or math.prod(blocks) >= 2**32 or not _is_threefry(key):
    return jax.random.bits(key, shape, jnp.uint16).astype(jnp.uint32)
  counts = _row_major_index(blocks)  # uint32 (..., last / 4)
  k1, k2 = jax.random.key_data(key)
  high, low = jex_random.threefry2x32_p.bind(k1, k2, jnp.zeros_like(counts), counts)
  parts = [
    word >> np.uint32(shift) & np.uint32(0xFFFF) for word in (high, low) for shift in (0, 16)
  ]
  return jnp.stack(parts, axis=-1).reshape(shape)  # (..., last / 4, 4) -> (..., last)


def _is_threefry(key) -> bool:
  return str(jax.random.key_impl(key)) == jex_random.threefry_prng_impl.name


def _row_major_index(shape) -> jax.Array:
  """uint32 `shape`: each element's row-major position (below 2**32 elements)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  return index


def apply(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
  """`x` with elements dropped at `rate` (rounded as `drop_threshold`) and the rest scaled."""
  keep_probability = 1.0 - drop_threshold(rate) / 2**_BITS
  if keep_probability == 0.0:
    return jnp.zeros_like(x)
  kept = x / jnp.asarray(keep_probability, x.dtype)
  return jnp.where(keep_mask(key, x.shape, rate), kept, jnp.zeros_like(x))


class Dropout(nn.Module):
  """`nn.Dropout`'s interface (rate, `deterministic`, the "dropout" rng) over `apply`."""

  rate: float
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool | None = None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if deterministic or self.rate == 0.0:
      return x
    return apply(x, self.make_rng("dropout"), self.rate)
