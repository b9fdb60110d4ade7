"""Scaled dot-product attention: one function, the kernel picked by configuration.

Encoders describe who may attend to whom with an `AttentionMask`: the (batch, length)
segment ids (0 = padding, else the 1-based packed example) and, for ModernBERT's local
layers, a sliding window. `attend` turns it into what its kernel wants:

- "xla" / "cudnn": `jax.nn.dot_product_attention`; "cudnn" is cuDNN's flash attention
  (GPUs, bf16/fp16 inputs). Rows of one example and padding (`packed=False`, set from
  `config.data.packing` through the model config's `packed_rows`) give it each row's
  length; packed rows and windows give it the dense boolean mask, which cuDNN takes as an
  additive bias;
- "splash": the Pallas TPU splash-attention kernel with the segment ids (and a `LocalMask`
  for the window) instead of a dense mask, under `shard_map` when a mesh is active. Off TPU
  it runs in Pallas interpret mode, which is slow and meant for tests;
- attention dropout (original BERT trains with 0.1) exists in no fused kernel, so dropout
  that is active takes an explicit einsum path (same math, softmax in float32).

`choose` picks the kernel: the default (None) is splash on TPU when the length fits its
blocks, cuDNN on GPU when the shapes fit it (`cudnn_fits`) and XLA elsewhere. (JAX's own
default, `implementation=None`, is XLA's on every platform, so it is never left to JAX.)
"""

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from bert_jax.errors import UserError
from bert_jax.model import axes
from bert_jax.model.dropout import apply as apply_dropout

IMPLEMENTATIONS = (None, "xla", "cudnn", "splash")
# Splash block sizes, largest first; the lengths must be multiples of one of them.
SPLASH_BLOCKS = (512, 256, 128)


@flax.struct.dataclass
class AttentionMask:
  """Who attends to whom: a pytree, so it crosses `nn.scan` and `nn.remat` as an argument.

  Key k is visible to query q when k is not padding, both are in the same packed example
  and (with a `window`) |q - k| <= window. Padding queries see every real key (as in
  Hugging Face's BERT; their outputs are unused), so no softmax row is empty.

  `packed=False` promises rows of one example followed by padding (segment ids 1...1 0...0):
  the kernels then take each row's length instead of a dense mask.
  """

  segment_ids: jax.Array  # (batch, length): 0 = padding, else the 1-based packed example
  window: int | None = flax.struct.field(pytree_node=False, default=None)
  packed: bool = flax.struct.field(pytree_node=False, default=True)

  @classmethod
  def of_rows(cls, segment_ids, config) -> "AttentionMask":
    """The mask of a model's input rows; `config.packed_rows` says whether they may pack."""
    return cls(segment_ids, packed=config.packed_rows)

  def lengths(self):
    """(batch,) int32: the real tokens of each row (rows of one example, `packed=False`)."""
    return jnp.sum(self.segment_ids > 0, axis=-1, dtype=jnp.int32)

  def local(self, window: int) -> "AttentionMask":
    """The same rows, limited to keys within `window` positions of the query."""
    return self.replace(window=window)

  def dense(self):
    """The boolean mask, (batch, 1, q_length, kv_length)."""
    q = self.segment_ids[:, None, :, None]  # (batch, 1, q_length, 1)
    k = self.segment_ids[:, None, None, :]  # (batch, 1, 1, kv_length)
    mask = (k != 0) & ((q == k) | (q == 0))
    if self.window is None:
      return mask
    index = jnp.arange(self.segment_ids.shape[-1])
    near = jnp.abs(index[:, None] - index[None, :]) <= self.window  # (q_length, kv_length)
    return mask & (near[None, None] | (q == 0))


def splash_block(length: int) -> int | None:
  """The splash block size for `length`: the largest of `SPLASH_BLOCKS` dividing it."""
  return next((block for block in SPLASH_BLOCKS if length % block == 0), None)


def cudnn_fits(dtype, head_dim: int, length: int) -> bool:
  """Whether cuDNN flash attention takes these inputs on any GPU: bf16 or fp16, a head size
  that is a multiple of 8 up to 128 (Hopper takes up to 256; not used here), an even
  length (its training kernels with a bias need one).
  """
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return half and head_dim % 8 == 0 and head_dim <= 128 and length % 2 == 0


def choose(implementation, platform: str, length: int, dropout: bool, dtype=None, head_dim=None):
  """The kernel `attend` runs: "einsum", "splash", "xla" or "cudnn".

  Args:
    implementation: `config.model.attention_impl`: None (auto), "xla", "cudnn" or "splash".
    platform: where the code runs, `target_platform()` ("cpu", "gpu", "tpu").
    length: the sequence length (queries and keys).
    dropout: whether attention dropout is active (training with `attention_dropout > 0`).
    dtype, head_dim: the queries' dtype and head size (None: unknown, so not cuDNN's).

  Raises:
    UserError: an unknown implementation, "splash" for a length its blocks do not fit, or
      "cudnn" for inputs it does not take.
  """
  if implementation not in IMPLEMENTATIONS:
    raise UserError(
      f"config.model.attention_impl={implementation!r} is not one of "
      f"{', '.join(map(str, IMPLEMENTATIONS))}; pick one of those"
    )
  fits_splash = splash_block(length) is not None
  if implementation == "splash" and not fits_splash:
    raise UserError(
      f"config.model.attention_impl='splash' needs a sequence length that is a multiple of "
      f"{min(SPLASH_BLOCKS)} (got {length}); set config.data.max_seq_length to one, or "
      "config.model.attention_impl=None"
    )
  fits_cudnn = dtype is not None and cudnn_fits(dtype, head_dim, length)
  if implementation == "cudnn" and dtype is not None and not fits_cudnn:
    raise UserError(
      f"config.model.attention_impl='cudnn' takes bfloat16 or float16 with a head size that "
      f"is a multiple of 8 up to 128 and an even length (got {jnp.dtype(dtype).name}, head "
      f"size {head_dim}, length {length}); set config.model.dtype='bfloat16', or "
      "config.model.attention_impl=None"
    )
  if dropout:
    return "einsum"
  if implementation is not None:
    return implementation
  if platform == "tpu":
    return "splash" if fits_splash else "xla"
  if platform == "gpu" and fits_cudnn:
    return "cudnn"
  return "xla"


def attend(
  query,
  key,
  value,
  mask,
  *,
  dropout_rate=0.0,
  dropout_rng=None,
  deterministic=True,
  implementation=None,
):
  """Attention over `key`/`value` for every `query` position.

  Args:
    query: (batch, q_length, heads, head_dim).
    key: (batch, kv_length, heads, head_dim).
    value: (batch, kv_length, heads, head_dim).
    mask: an `AttentionMask` over (batch, length).
    dropout_rate: dropout on the attention probabilities (BERT: 0.1).
    dropout_rng: PRNG key for that dropout; needed when it is active.
    deterministic: no dropout when True.
    implementation: None (auto), "xla", "cudnn" or "splash" (see `choose`).

  Returns:
    (batch, q_length, heads, head_dim), in the query's dtype. With "splash", the rows of
    padding queries differ from the other kernels' (they attend to padding; unused).
  """
  dropout = not deterministic and dropout_rate > 0.0
  platform = target_platform()
  _, length, _, head_dim = query.shape
  kernel = choose(implementation, platform, length, dropout, query.dtype, head_dim)
  if kernel == "splash":
    return splash(query, key, value, mask, interpret=platform != "tpu")
  if kernel != "einsum" and not mask.packed and mask.window is None:
    # Keys past each row's length are masked; every query attends (padding ones too, as
    # with the dense mask), so cuDNN reads no (batch, 1, L, L) bias.
    return jax.nn.dot_product_attention(
      query, key, value, key_value_seq_lengths=mask.lengths(), implementation=kernel
    )
  if kernel != "einsum":
    return jax.nn.dot_product_attention(query, key, value, mask=mask.dense(), implementation=kernel)
  # (batch, heads, q_length, kv_length)
  logits = jnp.einsum("btnh,bsnh->bnts", query, key).astype(jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(head_dim))
  logits = jnp.where(mask.dense(), logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout:
    probs = apply_dropout(probs, dropout_rng, dropout_rate)
  probs = probs.astype(value.dtype)
  # (batch, q_length, heads, head_dim)
  return jnp.einsum("bnts,bsnh->btnh", probs, value)


def target_platform() -> str:
  """The platform the code being traced will run on: that of the active mesh's devices (a
  TPU slice that `bert-jax compile` compiles for on a CPU host: "tpu"), else the default
  backend's.
  """
  device = jax.sharding.get_abstract_mesh().abstract_device  # None without a mesh
  return jax.default_backend() if device is None else device.platform


def splash(query, key, value, mask, *, interpret=False):
  """`attend` through the Pallas splash-attention kernel (shapes as `attend`'s).

  Under an active mesh (`jax.set_mesh`) each device runs the kernel on its own batch and
  head shards (`shard_map` over the activation rules' batch and heads axes); a Pallas
  kernel is opaque to XLA's partitioner. `interpret`: Pallas interpret mode, for CPUs.
  """
  run = functools.partial(_splash_local, window=mask.window, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return run(query, key, value, mask.segment_ids)
  batch, heads = nn.logical_to_mesh_axes((axes.ACT_BATCH, axes.ACT_HEADS)) or (None, None)
  qkv = PartitionSpec(batch, None, heads, None)
  ids = PartitionSpec(batch, None)
  sharded = jax.shard_map(
    run, mesh=mesh, in_specs=(qkv, qkv, qkv, ids), out_specs=qkv, check_vma=False
  )
  return sharded(query, key, value, mask.segment_ids)


def _splash_local(query, key, value, segment_ids, *, window, interpret):
  """Splash attention on one device's arrays (shapes as `attend`'s)."""
  from jax.experimental.pallas.ops.tpu import splash_attention  # Pallas: only when used

  _, length, heads, head_dim = query.shape
  kernel = _splash_kernel(heads, length, window, interpret)
  # The kernel does not scale the logits; scaling the query in float32 is exact for
  # power-of-two head sizes and otherwise rounds once, as the fused kernels do.
  query = (query.astype(jnp.float32) / jnp.sqrt(jnp.float32(head_dim))).astype(query.dtype)
  # Each (batch, heads, length, head_dim): the kernel's layout, batch mapped by vmap.
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
  segment_ids = segment_ids.astype(jnp.int32)
  ids = splash_attention.SegmentIds(q=segment_ids, kv=segment_ids)
  out = jax.vmap(kernel)(q, k, v, ids)  # (batch, heads, length, head_dim)
  return jnp.swapaxes(out, 1, 2)


def _splash_kernel(heads: int, length: int, window: int | None, interpret: bool):
  """The splash kernel (forward and backward blocks) for one head count, length and window.

  Built afresh in each trace: its mask arrays become constants of that trace (computing
  them eagerly would place them on the mesh's devices, which `bert-jax compile`'s TPU
  devices on a CPU host cannot hold).
  """
  from jax.experimental.pallas.ops.tpu import splash_attention

  shape = (length, length)
  if window is None:
    head_mask = splash_attention.FullMask(shape)
  else:
    head_mask = splash_attention.LocalMask(shape, window_size=(window, window), offset=0)
  block = splash_block(length)
  sizes = splash_attention.BlockSizes(
    block_q=block,
    block_kv=block,
    block_kv_compute=block,
    block_q_dkv=block,
    block_kv_dkv=block,
    block_kv_dkv_compute=block,
    block_q_dq=block,
    block_kv_dq=block,
  )
  return splash_attention.make_splash_mha_single_device(
    splash_attention.MultiHeadMask([head_mask] * heads), block_sizes=sizes, interpret=interpret
  )
