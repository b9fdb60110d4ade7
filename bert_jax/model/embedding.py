"""A sentence-embedding model: any family's encoder, then pooling (mean, cls or max over the
non-padding tokens) and, optionally, unit length, as sentence-transformers' `Pooling` and
`Normalize` modules compute them. The parameters are the encoder's alone, under `bert/`,
as in every other model, so `init_from` of any run restores them.
"""

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import bert, families

TASK = "embedding"
POOLINGS = ("mean", "cls", "max")


def pool(hidden: jnp.ndarray, attention_mask: jnp.ndarray, pooling: str) -> jnp.ndarray:
  """(batch, length, embed) hidden states -> (batch, embed) float32, over the mask's tokens.

  mean: the mean over the non-padding tokens ([CLS] and [SEP] included), the count clamped
  at 1e-9; cls: the first token; max: the largest value of each feature over the
  non-padding tokens (sentence-transformers' modes of the same names).
  """
  hidden = hidden.astype(jnp.float32)
  if pooling == "cls":
    return hidden[:, 0]
  mask = attention_mask[..., None] > 0  # (batch, length, 1)
  if pooling == "max":
    return jnp.where(mask, hidden, jnp.finfo(jnp.float32).min).max(1)
  if pooling != "mean":
    raise ValueError(f"unknown pooling {pooling!r}; one of {', '.join(POOLINGS)}")
  weights = mask.astype(jnp.float32)
  return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)


def normalize(x: jnp.ndarray) -> jnp.ndarray:
  """Rows scaled to unit L2 norm (the norm clamped at 1e-12, as torch's F.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SentenceEmbedder(nn.Module):
  """The family's encoder (`bert/`) pooled into one vector per text.

  Called as `tasks.ForTask` is, with (input_ids, token_type_ids, attention_mask,
  position_ids, deterministic); returns (batch, embed) float32 embeddings, unit length when
  `normalize`.
  """

  config: bert.BertConfig
  pooling: str = "mean"
  normalize: bool = True

  def setup(self):
    self.bert = families.family(self.config.arch).encoder(self.config)

  def __call__(
    self, input_ids, token_type_ids, attention_mask, position_ids=None, deterministic=True
  ):
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    vectors = pool(hidden, attention_mask, self.pooling)
    return normalize(vectors) if self.normalize else vectors

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (as `ForTask.encode`)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


def from_meta(model_config, meta: dict) -> SentenceEmbedder:
  """The embedding model of a checkpoint's meta (its "embedding" settings)."""
  settings = meta.get(TASK) or {}
  return SentenceEmbedder(
    model_config, settings.get("pooling", "mean"), bool(settings.get("normalize", True))
  )
