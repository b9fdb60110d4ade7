"""The ModernBERT encoder (Warner et al., 2024), exactly as Hugging Face's `ModernBertModel`.

Token embeddings, LayerNorm and dropout (no positions: RoPE rotates queries and keys), then
pre-norm layers (layer 0 has no attention norm: the embedding norm precedes it) with a fused
query/key/value projection and a GeGLU MLP, and a final LayerNorm. Every
`global_attn_every_n_layers`-th layer (0, n, 2n, ...) attends globally with RoPE theta
`global_rope_theta`; the others attend to a sliding window, |q - k| <= local_attention // 2,
with `local_rope_theta`. Biases (attention, MLP, norms) are off unless the config says so.

Packed rows (attention_mask holding 1-based example ids, position ids restarting at 0): the
masks keep attention inside an example and RoPE reads the per-example positions, so a packed
example equals that example alone. The window travels in the `attention.AttentionMask`:
the dense kernels get it inside their boolean mask (cuDNN's sliding window is left-only,
causal, and XLA's `local_window_size` builds this same mask, so a kernel window would gain
nothing); splash attention gets it as a `LocalMask` and skips the blocks outside it.

The layers differ by depth (layer 0's missing norm, global vs local), so unrolled they are
`layer_{i}`, and `scan_layers` scans what repeats: `layer_0`, then `groups`, the layers
1 .. G n in G groups of n = `global_attn_every_n_layers` (n - 1 local layers, then a global
one: `groups/layer_{j}` with a leading group axis), then the (num_layers - 1) mod n local
layers left, unrolled under their own numbers. `convert.unscan` turns that into `layer_{i}`.
"""

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import attention, axes, bert, dropout, lookup


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(bert.BertConfig):
  """BertConfig with ModernBERT's fields and defaults (ModernBERT-base's shape).

  BertConfig's fields keep their meaning: `layer_norm_eps` is Hugging Face's `norm_eps`,
  `hidden_act` its `hidden_activation`, `hidden_dropout` its embedding and MLP dropouts,
  `attention_dropout` its attention dropout (on the probabilities and after `Wo`);
  `type_vocab_size` is unused (ModernBERT has no token types).
  """

  arch: str = "modernbert"
  hidden_size: int = 768
  num_layers: int = 22
  num_heads: int = 12
  intermediate_size: int = 1152
  max_position_embeddings: int = 8192
  hidden_dropout: float = 0.0
  attention_dropout: float = 0.0
  layer_norm_eps: float = 1e-5
  global_attn_every_n_layers: int = 3  # layers 0, n, 2n, ... attend globally
  local_attention: int = 128  # sliding window width: |q - k| <= local_attention // 2
  global_rope_theta: float = 160_000.0
  local_rope_theta: float = 10_000.0
  norm_bias: bool = False  # LayerNorms have a bias
  attention_bias: bool = False  # Wqkv and attention Wo have biases
  mlp_bias: bool = False  # Wi and MLP Wo have biases
  classifier_bias: bool = False  # the prediction head's dense layer has a bias
  decoder_bias: bool = True  # the MLM decoder has an output bias
  classifier_activation: str = "gelu"  # the prediction head's activation (ACTIVATIONS)
  classifier_pooling: str = "cls"  # sequence head input: "cls" or "mean" (non-padding)
  classifier_dropout: float | None = None  # the fine-tuning heads' dropout; None: hidden_dropout
  initializer_cutoff_factor: float = 2.0  # truncated-normal init cut at this many stds

  def __post_init__(self):
    if self.classifier_pooling not in ("cls", "mean"):
      raise ValueError(f"classifier_pooling={self.classifier_pooling!r}: one of cls, mean")

  def is_global(self, layer: int) -> bool:
    """Whether layer `layer` (0-based) attends globally."""
    return layer % self.global_attn_every_n_layers == 0


def init_std(config: ModernBertConfig, kind: str) -> float:
  """Hugging Face's init standard deviations: "in" (Wqkv, Wi, embeddings), "out" (the
  projections back to the residual stream, the head's dense) and "final_out" (classifiers).
  """
  return {
    "in": config.initializer_range,
    "out": config.initializer_range / math.sqrt(2.0 * config.num_layers),
    "final_out": config.hidden_size**-0.5,
  }[kind]


def linear(config, features, in_names, out_names, *, use_bias, std, name=None):
  """`bert.Dense` with an optional bias and Hugging Face's ModernBERT init (a normal of
  `std`, cut at `initializer_cutoff_factor` stds); `features` an int or a tuple (e.g.
  (3, heads, head_dim)).
  """
  return bert.dense(
    config,
    features,
    in_names,
    out_names,
    name=name,
    use_bias=use_bias,
    std=std,
    cutoff=config.initializer_cutoff_factor,
  )


def layer_norm(config, name=None):
  """`bert.layer_norm`, with a bias only if `norm_bias`."""
  return bert.layer_norm(config, name, use_bias=config.norm_bias)


def rope_tables(position_ids, head_dim: int, theta: float):
  """(cos, sin), each float32 (batch, length, head_dim), of Hugging Face's default RoPE."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = position_ids[..., None].astype(jnp.float32) * inv_freq  # (batch, length, head_dim/2)
  angles = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, rope):
  """Rotates x (batch, length, heads, head_dim) by `rope` in float32: Hugging Face's
  rotate-half convention (the first half of head_dim pairs with the second).
  """
  cos, sin = (t[:, :, None, :] for t in rope)  # (batch, length, 1, head_dim)
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


class Attention(nn.Module):
  """Fused Wqkv, RoPE on queries and keys, attention, Wo and dropout (no residual)."""

  config: ModernBertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x, mask, rope):
    c = self.config
    qkv = linear(
      c,
      (3, c.num_heads, c.head_dim),
      (axes.EMBED,),
      (None, axes.HEADS, axes.KV),
      use_bias=c.attention_bias,
      std=init_std(c, "in"),
      name="qkv",
    )(x)  # (batch, length, 3, heads, head_dim), Hugging Face's Wqkv order
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = apply_rope(q, rope), apply_rope(k, rope)
    y = bert.attend(self, q, k, v, mask)  # (batch, length, heads, head_dim)
    y = nn.with_logical_constraint(y, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
    y = linear(
      c,
      c.hidden_size,
      (axes.HEADS, axes.KV),
      (axes.EMBED,),
      use_bias=c.attention_bias,
      std=init_std(c, "out"),
      name="output",
    )(y)  # (batch, length, embed)
    return dropout.Dropout(c.attention_dropout)(y, deterministic=self.deterministic)


class Mlp(nn.Module):
  """GeGLU: Wi to (input, gate), act(input) * gate, dropout, Wo (no residual)."""

  config: ModernBertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x):
    c = self.config
    h = linear(
      c,
      (2, c.intermediate_size),
      (axes.EMBED,),
      (None, axes.MLP),
      use_bias=c.mlp_bias,
      std=init_std(c, "in"),
      name="wi",
    )(x)  # (batch, length, 2, mlp): Hugging Face's Wi chunks, input then gate
    h = bert.activation(c.hidden_act)(h[..., 0, :]) * h[..., 1, :]
    h = nn.with_logical_constraint(h, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
    h = dropout.Dropout(c.hidden_dropout)(h, deterministic=self.deterministic)
    return linear(
      c,
      c.hidden_size,
      (axes.MLP,),
      (axes.EMBED,),
      use_bias=c.mlp_bias,
      std=init_std(c, "out"),
      name="wo",
    )(h)


class EncoderLayer(nn.Module):
  """One pre-norm layer; layer 0 has no attention norm (the embedding norm is before it)."""

  config: ModernBertConfig
  deterministic: bool
  index: int

  @nn.compact
  def __call__(self, x, masks, ropes):
    """x: (batch, length, embed); masks, ropes: (global, local) pairs; picks its own."""
    c = self.config
    kind = 0 if c.is_global(self.index) else 1
    h = x if self.index == 0 else layer_norm(c, name="attn_norm")(x)
    x = x + Attention(c, self.deterministic, name="attn")(h, masks[kind], ropes[kind])
    x = x + Mlp(c, self.deterministic, name="mlp")(layer_norm(c, name="mlp_norm")(x))
    return bert.constrain(x)


class Embeddings(nn.Module):
  """Token embeddings (`word`, as BERT's, for the tied decoder), LayerNorm, dropout."""

  config: ModernBertConfig

  def setup(self):
    c = self.config
    self.word = lookup.Lookup(
      c.vocab_size,
      c.hidden_size,
      dtype=c.dtype,
      param_dtype=c.param_dtype,
      embedding_init=bert.kernel_init(
        c, (axes.VOCAB, axes.EMBED), init_std(c, "in"), c.initializer_cutoff_factor
      ),
    )
    self.norm = layer_norm(c)
    self.dropout = dropout.Dropout(c.hidden_dropout)

  def __call__(self, input_ids, deterministic):
    x = self.dropout(self.norm(self.word(input_ids)), deterministic=deterministic)
    return bert.constrain(x)  # (batch, length, embed)


class LayerGroup(nn.Module):
  """n = `global_attn_every_n_layers` layers that repeat along the depth after layer 0:
  `layer_{j}` is local for j < n - 1 and global for j = n - 1. Under nn.scan it returns
  (carry, None).
  """

  config: ModernBertConfig
  deterministic: bool

  @nn.compact
  def __call__(self, x, masks, ropes):
    c = self.config
    layer = bert.rematerialised(EncoderLayer, c, scanned=True)
    for j in range(c.global_attn_every_n_layers):  # index j + 1: layer 0's norm, the pattern
      x = layer(c, self.deterministic, j + 1, name=f"layer_{j}")(x, masks, ropes)
    return x, None


def scanned_groups(config) -> tuple[int, int]:
  """(G, rest): with `scan_layers`, the groups scanned after layer 0 and the layers left."""
  return divmod(config.num_layers - 1, config.global_attn_every_n_layers)


class Encoder(nn.Module):
  """The layers, each given the (global, local) masks and RoPE tables: `layer_{i}`, or with
  `scan_layers` `layer_0`, `groups` and the rest (see the module docstring).
  """

  config: ModernBertConfig

  @nn.compact
  def __call__(self, x, masks, ropes, deterministic):
    c = self.config
    layer = bert.rematerialised(EncoderLayer, c)
    groups, rest = scanned_groups(c) if c.scan_layers else (0, c.num_layers - 1)
    x = layer(c, deterministic, 0, name="layer_0")(x, masks, ropes)
    if groups:
      stack = bert.scanned_stack(LayerGroup, groups)
      x, _ = stack(c, deterministic, name="groups")(x, masks, ropes)
    for i in range(c.num_layers - rest, c.num_layers):
      x = layer(c, deterministic, i, name=f"layer_{i}")(x, masks, ropes)
    return x


class ModernBert(nn.Module):
  """The encoder: returns the final-norm hidden states and None (no pooler)."""

  config: ModernBertConfig

  def setup(self):
    c = self.config
    self.embeddings = Embeddings(c)
    self.encoder = Encoder(c)
    self.final_norm = layer_norm(c)

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch (the arguments as `bert.Bert`'s; token types are ignored).

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: None.
    """
    c = self.config
    _, attention_mask = bert.default_inputs(input_ids, None, attention_mask)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, deterministic)
    full = attention.AttentionMask.of_rows(attention_mask, c)
    masks = (full, full.local(c.local_attention // 2))
    ropes = tuple(
      rope_tables(position_ids, c.head_dim, theta)
      for theta in (c.global_rope_theta, c.local_rope_theta)
    )
    hidden = self.encoder(x, masks, ropes, deterministic)
    return bert.constrain(self.final_norm(hidden)), None
