"""The BERT encoder, exactly as Devlin et al. (2018) and Hugging Face's `BertModel`.

Word + learned position + token-type embeddings, LayerNorm (eps 1e-12), post-LN encoder
layers with exact (erf) GELU, and a tanh pooler on [CLS]. Every module takes `dtype`
(compute) and `param_dtype` (storage); softmax and LayerNorm statistics run in float32, and
so do the bias adds and the embeddings' sum, whose gradients are sums over positions.
Parameters and residual-stream activations carry logical axis names (`model.axes`).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import attention, axes, dropout, lookup

REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.checkpoint_dots,
  "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


# Hugging Face's `hidden_act` names.
ACTIVATIONS = {
  "gelu": lambda x: nn.gelu(x, approximate=False),
  "gelu_new": lambda x: nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
  "relu": nn.relu,
  "silu": nn.silu,
}


def activation(name: str):
  """The activation function Hugging Face calls `name` (`ACTIVATIONS`)."""
  return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Model hyper-parameters (Hugging Face `BertConfig` names where they exist)."""

  vocab_size: int
  arch: str = "bert"  # the family (`model.families`); each family's config subclasses this
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"
  param_dtype: str = "float32"  # storage dtype of the parameters
  scan_layers: bool = False  # stack layers with nn.scan (fast compiles for deep models)
  remat_policy: str = "none"  # one of REMAT_POLICIES
  attention_impl: str | None = None  # None (auto), "xla", "cudnn" or "splash"
  fused_qkv: bool = False  # the query, key and value projections as one matmul (same params)
  # The feed-forward block keeps only its first matmul's output for the backward pass and
  # recomputes the bias add and the activation there (`Dense.recompute`; same params).
  recompute_activation: bool = False
  # Whether input rows may pack several examples (attention_mask > 1); False: one example
  # then padding, so attention takes row lengths (`attention.AttentionMask`). A run setting
  # (`config.model_config`: config.data.packing), not part of the architecture.
  packed_rows: bool = True
  hidden_act: str = "gelu"  # one of ACTIVATIONS

  @property
  def head_dim(self):
    return self.hidden_size // self.num_heads

  @property
  def max_length(self):
    """The longest input row the model takes (RoBERTa: fewer than its position rows)."""
    return self.max_position_embeddings


def kernel_init(config, names, std=None, cutoff=2.0):
  """Truncated normal (std: `initializer_range` unless given; cut at `cutoff` stds)."""
  std = config.initializer_range if std is None else std
  init = nn.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)
  return nn.with_logical_partitioning(init, names)


def heads_of_64(hidden_size: int) -> int:
  """The attention heads of a new model this wide: one per 64, as BERT's sizes (one up to 64)."""
  return max(1, hidden_size // 64)


def add_bias(y, bias, dtype):
  """The sum of `y` and `bias`, added in float32 and rounded once to `dtype`.

  The bias's gradient is the sum of y's gradient over every other axis (batch x length
  positions). Added in bfloat16, that sum would be a bfloat16 reduction, which XLA keeps
  in bfloat16 on CPU and on Hopper GPUs: a running sum stops growing near 256 times its
  terms. In float32 it accumulates in float32, reading the same bfloat16 gradient.
  """
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


class Dense(nn.Module):
  """y = x . kernel + bias, contracting the last `len(in_names)` axes of x.

  Kernel shape is (*in_dims, *features), named `in_names + out_names`, initialised from a
  normal of `std` (None: `initializer_range`) cut at `cutoff` stds; no bias unless
  `use_bias`. `activation` (an `ACTIVATIONS` name) follows the bias add; with `recompute`
  the backward pass recomputes both from the matmul's output instead of keeping what they
  need (for GELU in bfloat16, two more tensors of the output's size). (flax's DenseGeneral
  creates multi-axis kernels flat and reshapes them, which breaks logical sharding
  constraints under an active mesh.)
  """

  config: BertConfig
  features: tuple[int, ...]
  in_names: tuple[str, ...]
  out_names: tuple[str, ...]
  use_bias: bool = True
  std: float | None = None
  cutoff: float = 2.0
  activation: str | None = None
  recompute: bool = False

  @nn.compact
  def __call__(self, x):
    return self.project(x)

  def project(self, x):
    """The layer's map (call it from a compact method: it creates the parameters)."""
    c = self.config
    n_in = len(self.in_names)
    kernel, bias = self.weights(x.shape[-n_in:])
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=c.dtype)
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    y = jax.lax.dot_general(x, kernel, (contract, ((), ())))

    def bias_and_activation(y, bias):
      y = y if bias is None else add_bias(y, bias, c.dtype)
      return y if self.activation is None else activation(self.activation)(y)

    if self.recompute:
      bias_and_activation = jax.checkpoint(bias_and_activation)
    return bias_and_activation(y, bias)

  def weights(self, in_dims):
    """(kernel, bias or None) for inputs whose last axes are `in_dims`, as stored (call it
    from a compact method: it creates them).
    """
    c = self.config
    kernel = self.param(
      "kernel",
      kernel_init(c, self.in_names + self.out_names, self.std, self.cutoff),
      tuple(in_dims) + self.features,
      c.param_dtype,
    )
    if not self.use_bias:
      return kernel, None
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, self.out_names),
      self.features,
      c.param_dtype,
    )
    return kernel, bias


class DenseWeights(Dense):
  """A `Dense` layer's parameters without its map: called with the input's last axes,
  returns (kernel, bias or None), created under the same names (for fused projections).
  """

  @nn.compact
  def __call__(self, in_dims):
    return self.weights(in_dims)


def dense(config, features, in_names, out_names, name=None, **kwargs):
  """A `Dense` layer; `features` an int or a tuple (e.g. (heads, head_dim)); `kwargs`:
  `use_bias`, `std`, `cutoff`, `activation`, `recompute`.
  """
  features = (features,) if isinstance(features, int) else tuple(features)
  return Dense(config, features, tuple(in_names), tuple(out_names), name=name, **kwargs)


def layer_norm(config, name=None, use_bias=True):
  """LayerNorm with float32 statistics and the config's epsilon and dtypes."""
  # Two-pass variance, as PyTorch's LayerNorm: keeps parity with HF at 1e-12 eps.
  return nn.LayerNorm(
    epsilon=config.layer_norm_eps,
    use_bias=use_bias,
    dtype=config.dtype,
    param_dtype=config.param_dtype,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.EMBED,)),
    name=name,
  )


def constrain(x):
  """The residual stream's logical axes: (batch, length, embed)."""
  return nn.with_logical_constraint(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))


def default_inputs(input_ids, token_type_ids=None, attention_mask=None):
  """(token_type_ids, attention_mask) with the defaults of `Bert.__call__` where None:
  zeros, ones; position_ids stays None, 0..length-1, which `Embeddings` slices its table for.
  """
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  return token_type_ids, attention_mask


class Embeddings(nn.Module):
  """Sum of word, position and token-type embeddings, then LayerNorm and dropout.

  Without `token_types` (DistilBERT) there is no token-type table and the ids given are
  ignored.
  """

  config: BertConfig
  token_types: bool = True

  def setup(self):
    c = self.config
    embed = functools.partial(lookup.Lookup, dtype=c.dtype, param_dtype=c.param_dtype)
    self.word = embed(
      c.vocab_size, c.hidden_size, embedding_init=kernel_init(c, (axes.VOCAB, axes.EMBED))
    )
    self.position = embed(
      c.max_position_embeddings,
      c.hidden_size,
      embedding_init=kernel_init(c, (axes.POSITION, axes.EMBED)),
    )
    if self.token_types:
      self.token_type = embed(
        c.type_vocab_size,
        c.hidden_size,
        embedding_init=kernel_init(c, (axes.TOKEN_TYPE, axes.EMBED)),
      )
    self.layer_norm = layer_norm(c)
    self.dropout = dropout.Dropout(c.hidden_dropout)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic, position_offset=0):
    """(batch, length, embed); position_ids None: 0..length-1 in every row. Row p of the
    position table embeds position p - `position_offset` (RoBERTa's start after padding).
    """
    # Summed in float32 (LayerNorm computes in float32 next): the position table's gradient,
    # a sum over the batch, then accumulates in float32 (see `add_bias`).
    f32 = jnp.float32
    x = self.word(input_ids).astype(f32)
    if position_ids is None:  # + (length, embed)
      x = x + self.position.rows(position_offset, input_ids.shape[-1]).astype(f32)
    else:
      x = x + self.position(position_ids + position_offset).astype(f32)
    if self.token_types:
      if self.config.type_vocab_size == 1:  # RoBERTa: one type; a pair's second text too
        token_type_ids = jnp.zeros_like(token_type_ids)
      x = x + self.token_type(token_type_ids).astype(f32)
    x = self.dropout(self.layer_norm(x), deterministic=deterministic)
    return constrain(x)  # (batch, length, embed)


def attend(module: nn.Module, q, k, v, mask):
  """`attention.attend` as `module`'s config asks: its kernel, and its attention dropout
  with bits from the module's "dropout" stream when it is not deterministic.

  q, k, v: (batch, length, heads, head_dim); returns the same shape.
  """
  c = module.config
  dropout_rng = None
  if not module.deterministic and c.attention_dropout > 0:
    dropout_rng = module.make_rng("dropout")
  return attention.attend(
    q,
    k,
    v,
    mask,
    dropout_rate=c.attention_dropout,
    dropout_rng=dropout_rng,
    deterministic=module.deterministic,
    implementation=c.attention_impl,
  )


class SelfAttention(nn.Module):
  """Multi-head self-attention, output projection, dropout, residual, LayerNorm."""

  config: BertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x, mask):
    c = self.config
    qkv_names = ((axes.EMBED,), (axes.HEADS, axes.KV))
    features = (c.num_heads, c.head_dim)
    names = ("query", "key", "value")
    if c.fused_qkv:
      # One matmul for the three: their kernels stacked, (embed, 3, heads, head_dim); the
      # parameters stay the three (Hugging Face's) tensors.
      kernels, biases = zip(
        *(DenseWeights(c, features, *qkv_names, name=n)(x.shape[-1:]) for n in names)
      )
      x_, kernel = nn.dtypes.promote_dtype(x, jnp.stack(kernels, axis=1), dtype=c.dtype)
      qkv = jnp.einsum("ble,etnh->bltnh", x_, kernel)  # (batch, length, 3, heads, head_dim)
      qkv = add_bias(qkv, jnp.stack(biases), c.dtype)
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    else:  # each (batch, length, heads, head_dim)
      q, k, v = (dense(c, features, *qkv_names, name=n)(x) for n in names)
    y = attend(self, q, k, v, mask)
    y = nn.with_logical_constraint(y, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    y = dense(c, c.hidden_size, (axes.HEADS, axes.KV), (axes.EMBED,), name="output")(
      y
    )  # (batch, length, embed)
    y = dropout.Dropout(c.hidden_dropout)(y, deterministic=self.deterministic)
    return layer_norm(c, name="layer_norm")(x + y)


class Mlp(nn.Module):
  """Feed-forward block: dense, exact GELU, dense, dropout, residual, LayerNorm."""

  config: BertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x):
    c = self.config
    h = dense(
      c,
      c.intermediate_size,
      (axes.EMBED,),
      (axes.MLP,),
      name="intermediate",
      activation=c.hidden_act,
      recompute=c.recompute_activation,
    )(x)  # (batch, length, mlp)
    h = nn.with_logical_constraint(h, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
    h = dense(c, c.hidden_size, (axes.MLP,), (axes.EMBED,), name="output")(h)
    h = dropout.Dropout(c.hidden_dropout)(h, deterministic=self.deterministic)
    return layer_norm(c, name="layer_norm")(x + h)


class EncoderLayer(nn.Module):
  """One post-LN transformer layer. Under nn.scan it returns (carry, None)."""

  config: BertConfig
  deterministic: bool
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask):
    x = SelfAttention(self.config, self.deterministic, name="attention")(x, mask)
    x = constrain(Mlp(self.config, self.deterministic, name="mlp")(x))
    return (x, None) if self.scanned else x


def rematerialised(module: type, config, scanned: bool = False) -> type:
  """`module` (a layer, or a group of layers) recomputed in the backward pass as
  `config.remat_policy` says; `module` itself for "none". `scanned`: it runs as a loop
  body of nn.scan, which keeps the recomputation apart without CSE barriers.
  """
  if config.remat_policy == "none":
    return module
  return nn.remat(module, policy=REMAT_POLICIES[config.remat_policy], prevent_cse=not scanned)


def scanned_stack(module: type, length: int) -> type:
  """`module` under nn.scan, `length` times with parameters of their own (a leading
  `axes.LAYERS` axis), a dropout key each, the other inputs broadcast.
  """
  return nn.scan(
    module,
    variable_axes={"params": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=nn.broadcast,
    length=length,
    metadata_params={nn.PARTITION_NAME: axes.LAYERS},
  )


class Encoder(nn.Module):
  """`num_layers` encoder layers, unrolled (`layer_{i}`) or scanned (`layers`).

  `layer` is the layer module: `layer(config, deterministic, scanned=..., name=...)(x, mask)`
  (BERT's `EncoderLayer` by default; other families pass their own).
  """

  config: BertConfig
  layer: type = EncoderLayer

  @nn.compact
  def __call__(self, x, mask, deterministic):
    c = self.config
    layer = rematerialised(self.layer, c, scanned=c.scan_layers)
    if c.scan_layers:
      stack = scanned_stack(layer, c.num_layers)
      x, _ = stack(c, deterministic, scanned=True, name="layers")(x, mask)
      return x
    for i in range(c.num_layers):
      x = layer(c, deterministic, name=f"layer_{i}")(x, mask)
    return x


class Bert(nn.Module):
  """The encoder: returns the last hidden states and the pooled [CLS] vector."""

  config: BertConfig

  def setup(self):
    c = self.config
    self.embeddings = Embeddings(c)
    self.encoder = Encoder(c)
    self.pooler = dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,))

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch.

    Args:
      input_ids: (batch, length) int token ids.
      token_type_ids: (batch, length) segment ids (0 / 1); zeros if None.
      attention_mask: (batch, length), 0 for padding, else the 1-based index of the
        packed example a token belongs to (1 everywhere for a row of one example, as in
        Hugging Face): tokens attend only within their example; all ones if None.
      position_ids: (batch, length), restarting at 0 in each packed example;
        0..length-1 if None.
      deterministic: disables dropout when True.

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: (batch, embed) tanh(dense(hidden[:, 0])).
    """
    token_type_ids, attention_mask = default_inputs(input_ids, token_type_ids, attention_mask)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    hidden = self.encoder(
      x, attention.AttentionMask.of_rows(attention_mask, self.config), deterministic
    )
    pooled = jnp.tanh(self.pooler(hidden[:, 0]))
    return hidden, pooled
