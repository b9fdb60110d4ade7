"""BERT for pretraining: the encoder with the masked-LM head (tied to the word embeddings)
and the next-sentence (or sentence-order) head, as Hugging Face's `BertForPreTraining`.

The MLM head runs only at the `max_predictions_per_seq` gathered masked positions, as the
original BERT does, instead of at every token: the (embed x vocab) decoder is the largest
matmul of a small BERT, so this saves about a fifth of the FLOPs.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import axes, bert, families, tasks


class MlmHead(nn.Module):
  """Dense + activation + LayerNorm, then the tied decoder plus an output bias.

  The dense layer maps to the word embeddings' width: the hidden size, or a smaller
  `embedding_size` (ALBERT, ELECTRA's generator).
  """

  config: bert.BertConfig

  @nn.compact
  def __call__(self, hidden, word_embeddings: nn.Embed):
    c = self.config
    h = bert.dense(c, word_embeddings.features, (axes.EMBED,), (axes.EMBED_OUT,), name="transform")(
      hidden
    )
    h = bert.activation(c.hidden_act)(h)
    h = bert.layer_norm(c, name="layer_norm")(h)
    logits = word_embeddings.attend(h)  # (batch, predictions, vocab)
    bias = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros, (axes.VOCAB,)),
      (c.vocab_size,),
      c.param_dtype,
    )
    return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class BertForPreTraining(nn.Module):
  """BERT with the MLM and NSP heads (Hugging Face's `BertForPreTraining`)."""

  config: bert.BertConfig

  def setup(self):
    c = self.config
    self.bert = bert.Bert(c)
    self.mlm = MlmHead(c)
    self.nsp = bert.dense(c, 2, (axes.EMBED,), (axes.CLASSES,))

  def __call__(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """MLM logits at the masked positions and NSP logits, both float32.

    Args:
      input_ids, token_type_ids, attention_mask: (batch, length); see `bert.Bert`.
      masked_lm_positions: (batch, predictions) indices into length (0-padded).
      position_ids: (batch, length), restarting in each packed example; None: 0..length-1.
      deterministic: disables dropout when True.

    Returns:
      mlm_logits: (batch, predictions, vocab).
      nsp_logits: (batch, 2); class 0 = "B follows A".
    """
    hidden, pooled = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    mlm_logits = self.mlm(gather(hidden, masked_lm_positions), self.bert.embeddings.word)
    nsp_logits = self.nsp(pooled).astype(jnp.float32)
    return mlm_logits, nsp_logits

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


def gather(hidden, masked_lm_positions):
  """(batch, length, embed) hidden states -> (batch, predictions, embed) at the positions.

  A one-hot matmul, exact at the highest precision: its gradient is another matmul, where
  a take's is a scatter-add in the compute dtype (bfloat16 compare-and-swap loops on GPU,
  `lookup`'s docstring), and padded predictions all point at position 0.
  """
  select = jax.nn.one_hot(masked_lm_positions, hidden.shape[1], dtype=hidden.dtype)
  # (batch, predictions, length) x (batch, length, embed) -> (batch, predictions, embed)
  return jnp.einsum("bpl,ble->bpe", select, hidden, precision=jax.lax.Precision.HIGHEST)


def no_sentence_logits(input_ids):
  """(batch, 2) float32 zeros: the sentence logits of a family without a sentence-pair head."""
  return jnp.zeros((input_ids.shape[0], 2), jnp.float32)


class MaskedLM(nn.Module):
  """An MLM-only family's pretraining model: its encoder (`bert/`) and `MlmHead` (`mlm/`),
  and zero sentence logits (`no_sentence_logits`).

  A family subclasses it naming its encoder class (`encoder`) and, where the head's
  activation is not `hidden_act`, the head's (`head_act`).
  """

  config: bert.BertConfig
  encoder = None  # the family's encoder module class
  head_act = None  # the MLM head's activation; None: config.hidden_act

  def setup(self):
    c = self.config
    self.bert = self.encoder(c)
    self.mlm = MlmHead(
      c if self.head_act is None else dataclasses.replace(c, hidden_act=self.head_act)
    )

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
      input_ids, token_type_ids, attention_mask: (batch, length); see `bert.Bert` (families
        without token types ignore them).
      masked_lm_positions: (batch, predictions) indices into length (0-padded).
      position_ids: (batch, length), restarting in each packed example; None: 0..length-1.
      deterministic: disables dropout when True.

    Returns:
      mlm_logits: (batch, predictions, vocab).
      sentence_logits: (batch, 2) zeros (no sentence-pair head).
    """
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    mlm_logits = self.mlm(gather(hidden, masked_lm_positions), self.bert.embeddings.word)
    return mlm_logits, no_sentence_logits(input_ids)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and None (no pooler), without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


FAMILY = families.Family(
  name="bert",
  config=bert.BertConfig,
  encoder=bert.Bert,
  pretraining=BertForPreTraining,
  sequence_head=tasks.pooled_head,
  sentence_objectives=("nsp", "sop"),
)
