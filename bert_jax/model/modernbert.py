"""ModernBERT (Warner et al., 2024) with its heads, as Hugging Face's `ModernBertForMaskedLM`,
`ModernBertForSequenceClassification`, `...ForTokenClassification` and
`...ForQuestionAnswering`.

The encoder is in `modernbert_layers`. Every head starts with the same prediction head
(`head`: dense, `classifier_activation`, LayerNorm); the MLM model follows it with the
decoder tied to the token embeddings plus an output bias (`decoder_bias`), the fine-tuning
heads with dropout (`classifier_dropout`) and a linear classifier. The sequence head reads
the first token or the mean of the non-padding tokens (`classifier_pooling`).

The pretraining model is MLM only: its sentence logits are zeros.
"""

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, dropout, families, pretraining, tasks
from bert_jax.model.modernbert_layers import (
  ModernBert,
  ModernBertConfig,
  init_std,
  layer_norm,
  linear,
)

__all__ = ["FAMILY", "ModernBert", "ModernBertConfig", "ModernBertForMaskedLM"]


class PredictionHead(nn.Module):
  """Hugging Face's ModernBertPredictionHead: dense, activation, LayerNorm."""

  config: ModernBertConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    x = linear(
      c,
      c.hidden_size,
      (axes.EMBED,),
      (axes.EMBED_OUT,),
      use_bias=c.classifier_bias,
      std=init_std(c, "out"),
      name="dense",
    )(x)
    return layer_norm(c, name="norm")(bert.activation(c.classifier_activation)(x))


class Decoder(nn.Module):
  """The MLM decoder: the token embeddings, transposed, plus a bias if `decoder_bias`."""

  config: ModernBertConfig

  @nn.compact
  def __call__(self, h, word_embeddings: nn.Embed):
    c = self.config
    logits = word_embeddings.attend(h).astype(jnp.float32)  # (batch, predictions, vocab)
    if not c.decoder_bias:
      return logits
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, (axes.VOCAB,)),
      (c.vocab_size,),
      c.param_dtype,
    )
    return logits + bias.astype(jnp.float32)


class ModernBertForMaskedLM(nn.Module):
  """ModernBERT with its MLM head (`bert/`, `head/`, `decoder/`)."""

  config: ModernBertConfig

  def setup(self):
    c = self.config
    self.bert = ModernBert(c)
    self.head = PredictionHead(c)
    self.decoder = Decoder(c)

  def __call__(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """MLM logits at the masked positions, and zero sentence logits; both float32.

    Args:
      input_ids, token_type_ids, attention_mask: (batch, length); see `bert.Bert`
        (token types are ignored).
      masked_lm_positions: (batch, predictions) indices into length (0-padded).
      position_ids: (batch, length), restarting in each packed example; None: 0..length-1.
      deterministic: disables dropout when True.

    Returns:
      mlm_logits: (batch, predictions, vocab).
      sentence_logits: (batch, 2) zeros (ModernBERT has no sentence-pair head).
    """
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    gathered = pretraining.gather(hidden, masked_lm_positions)  # (batch, predictions, embed)
    mlm_logits = self.decoder(self.head(gathered), self.bert.embeddings.word)
    return mlm_logits, pretraining.no_sentence_logits(input_ids)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and None (no pooler), without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


def _classify(config, x, num_labels, deterministic):
  """The fine-tuning heads' common end: prediction head, dropout, linear classifier."""
  x = PredictionHead(config, name="head")(x)
  x = dropout.Dropout(tasks.classifier_dropout(config))(x, deterministic=deterministic)
  return linear(
    config,
    num_labels,
    (axes.EMBED_OUT,),
    (axes.CLASSES,),
    use_bias=True,
    std=init_std(config, "final_out"),
    name="out",
  )(x)


class SequenceHead(nn.Module):
  """The classification / regression head: [CLS] or mean pooling, then `_classify`
  (params `head/`, `out/`).
  """

  config: ModernBertConfig
  num_labels: int

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    if self.config.classifier_pooling == "cls":
      x = hidden[:, 0]
    else:  # mean over the non-padding tokens
      weights = (attention_mask != 0).astype(jnp.float32)[..., None]  # (batch, length, 1)
      x = (hidden.astype(jnp.float32) * weights).sum(1) / weights.sum(1)
      x = x.astype(hidden.dtype)
    return _classify(self.config, x, self.num_labels, deterministic)  # (batch, labels)


class TokenHead(nn.Module):
  """The token-tagging and QA head: `_classify` at every token (params `head/`, `out/`)."""

  config: ModernBertConfig
  num_labels: int

  @nn.compact
  def __call__(self, hidden, deterministic):
    return _classify(self.config, hidden, self.num_labels, deterministic)


def sequence_head(config: ModernBertConfig, num_labels: int) -> SequenceHead:
  """The classification / regression head."""
  return SequenceHead(config, num_labels)


def token_head(config: ModernBertConfig, num_labels: int) -> TokenHead:
  """The token / QA head."""
  return TokenHead(config, num_labels)


FAMILY = families.Family(
  name="modernbert",
  config=ModernBertConfig,
  encoder=ModernBert,
  pretraining=ModernBertForMaskedLM,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
