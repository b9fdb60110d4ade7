"""Embedding tables whose gradient has no contended low-precision scatter-add.

`flax.linen.Embed` casts its table to the compute dtype and then gathers rows, so under
bfloat16 the gradient is a bfloat16 scatter-add into the table. XLA:GPU adds bfloat16 with
compare-and-swap loops, which collapse when many updates hit one row (openxla/xla#26371):
BERT's token-type table has 2 rows for all batch x length tokens, and the position table
gets every row's position 0, 1, 2, ... `Lookup` keeps `nn.Embed`'s parameter and `attend`
(checkpoints and the tied MLM decoder are unchanged) and looks up differently:

- a table of a few rows (`SELECT_ROWS`: token types) selects its rows with `where`: the
  gradient of each row is a masked sum, no scatter;
- `rows(start, length)` is the same table slice for every row (positions 0..length-1 of
  unpacked rows): its gradient is a sum over the batch, no scatter;
- any other lookup (words; the positions of packed rows) gathers from the table cast to
  the compute dtype, as `nn.Embed` does (a sharded table still moves in bfloat16), but its
  gradient scatter-adds in the parameter dtype (float32), so repeated tokens ([CLS],
  [MASK], [PAD]) also sum in float32.

Forward values equal `nn.Embed`'s exactly. An id outside a selected table reads row 0
(`nn.Embed` gives NaN).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import axes

# Tables with at most this many rows are looked up by selection (one `where` per row).
SELECT_ROWS = 8


class Lookup(nn.Embed):
  """`nn.Embed` with the lookups of the module docstring."""

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """(...) integer ids -> (..., features) rows in the compute dtype."""
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError("Input type must be an integer or unsigned integer.")
    table = self.embedding
    if self.num_embeddings <= SELECT_ROWS:
      rows = jnp.broadcast_to(table[0], inputs.shape + (self.features,))
      for row in range(1, self.num_embeddings):
        rows = jnp.where((inputs == row)[..., None], table[row], rows)
    else:  # the rows whole: gathering from rows cut over fsdp left them cut so (and XLA
      # then replicated the gathered activations to reshard them over the batch)
      table = nn.with_logical_constraint(table, (axes.VOCAB, None))
      rows = take_rows(table, inputs, jnp.dtype(self.dtype or table.dtype))
    return rows.astype(self.dtype or table.dtype)

  def rows(self, start: int, length: int) -> jax.Array:
    """Rows start..start+length-1: (length, features), in the compute dtype."""
    table = self.embedding
    return jax.lax.slice_in_dim(table, start, start + length).astype(self.dtype or table.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def take_rows(table: jax.Array, ids: jax.Array, dtype) -> jax.Array:
  """(rows, features) table, (...) ids -> (..., features) rows of the table cast to
  `dtype`; the table's gradient is a scatter-add in the table's own dtype.
  """
  return jnp.take(table.astype(dtype), ids, axis=0)


def _take_rows_forward(table, ids, dtype):
  return take_rows(table, ids, dtype), (table, ids)


def _take_rows_backward(dtype, residuals, cotangent):
  table, ids = residuals
  grad = jnp.zeros_like(table).at[ids].add(cotangent.astype(table.dtype))
  return grad, None


take_rows.defvjp(_take_rows_forward, _take_rows_backward)
