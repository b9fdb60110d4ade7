"""Scaled dot-product attention: one function, the kernel picked by configuration.

Without attention dropout (inference, or training with `attention_dropout=0`) this is
`jax.nn.dot_product_attention`, which uses cuDNN flash attention on GPUs for bf16/fp16
inputs and XLA elsewhere. Original BERT trains with dropout on the attention
probabilities, which no fused kernel offers, so that case takes an explicit einsum path
(same math, softmax in float32).
"""

import jax
import jax.numpy as jnp


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
    mask: bool, broadcastable to (batch, heads, q_length, kv_length); False = ignore.
    dropout_rate: dropout on the attention probabilities (BERT: 0.1).
    dropout_rng: PRNG key for that dropout; needed when it is active.
    deterministic: no dropout when True.
    implementation: None (let JAX choose), "xla" or "cudnn".

  Returns:
    (batch, q_length, heads, head_dim), in the query's dtype.
  """
  if deterministic or dropout_rate == 0.0:
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)
  head_dim = query.shape[-1]
  # (batch, heads, q_length, kv_length)
  logits = jnp.einsum("btnh,bsnh->bnts", query, key).astype(jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(head_dim))
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
  probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(value.dtype)
  # (batch, q_length, heads, head_dim)
  return jnp.einsum("bnts,bsnh->btnh", probs, value)
