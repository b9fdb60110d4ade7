"""ELECTRA (Clark et al. 2020), as Hugging Face's `ElectraModel` and its heads.

BERT's embeddings at an `embedding_size` E that may be smaller than the hidden size H, a
projection E -> H when they differ (`embeddings_project`), then BERT's post-LN layers; no
pooler. Our pretraining module trains masked LM as ELECTRA's generator does
(`ElectraForMaskedLM`: dense H -> E, exact GELU, LayerNorm(E), the decoder tied to the word
embeddings); `ElectraDiscriminator` is the replaced-token-detection model
(`ElectraForPreTraining`), for import and export. The fine-tuning heads: ELECTRA's
classification head (dense, GELU, out_proj on the first token) and dropout + linear for
tokens and QA.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, families, pretraining, tasks


@dataclasses.dataclass(frozen=True)
class ElectraConfig(bert.BertConfig):
  """BertConfig plus ELECTRA's fields (Hugging Face `ElectraConfig` names)."""

  arch: str = "electra"
  embedding_size: int | None = None  # E, the word-embedding width; None: the hidden size
  classifier_dropout: float | None = None  # the fine-tuning heads'; None: hidden_dropout

  def __post_init__(self):
    if self.embedding_size is None:
      object.__setattr__(self, "embedding_size", self.hidden_size)
    if self.embedding_size < 1:
      raise ValueError(f"ELECTRA's embedding_size must be positive, got {self.embedding_size}")

  @property
  def head_dropout(self):
    """The dropout rate of the fine-tuning heads."""
    return self.hidden_dropout if self.classifier_dropout is None else self.classifier_dropout


def embeddings(config, name=None):
  """BERT's embeddings (word, position, token type, LayerNorm, dropout) of width E."""
  return bert.Embeddings(dataclasses.replace(config, hidden_size=config.embedding_size), name=name)


def embeddings_project(config, name=None):
  """The dense E -> H map between factorised embeddings and the encoder."""
  return bert.dense(config, config.hidden_size, (axes.EMBED_OUT,), (axes.EMBED,), name=name)


class Electra(nn.Module):
  """The encoder: returns the last hidden states, and None (ELECTRA has no pooler)."""

  config: ElectraConfig

  def setup(self):
    c = self.config
    self.embeddings = embeddings(c)
    if c.embedding_size != c.hidden_size:
      self.embeddings_project = embeddings_project(c)
    self.encoder = bert.Encoder(c)

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch; the arguments are `bert.Bert`'s.

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: None.
    """
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    if self.config.embedding_size != self.config.hidden_size:
      x = self.embeddings_project(x)  # (batch, length, embed)
      x = nn.with_logical_constraint(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))
    hidden = self.encoder(x, bert.attention_mask_4d(attention_mask), deterministic)
    return hidden, None


class ElectraForMaskedLM(nn.Module):
  """ELECTRA with the generator's MLM head (`ElectraForMaskedLM`); no sentence head."""

  config: ElectraConfig

  def setup(self):
    c = self.config
    self.bert = Electra(c)
    # The generator's head always uses exact GELU, whatever hidden_act is.
    self.mlm = pretraining.MlmHead(dataclasses.replace(c, hidden_act="gelu"))

  def __call__(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """MLM logits at the masked positions (batch, predictions, vocab) and zeros (batch, 2),
    both float32; the arguments are `BertForPreTraining`'s.
    """
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    # (batch, predictions, embed)
    gathered = jnp.take_along_axis(hidden, masked_lm_positions[..., None], axis=1)
    mlm_logits = self.mlm(gathered, self.bert.embeddings.word)
    return mlm_logits, jnp.zeros((input_ids.shape[0], 2), jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and None, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


class DiscriminatorHead(nn.Module):
  """Replaced-token detection: dense H -> H, hidden_act, dense H -> 1, at every token."""

  config: ElectraConfig

  @nn.compact
  def __call__(self, hidden):
    c = self.config
    h = bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,), name="dense")(hidden)
    h = bert.activation(c.hidden_act)(h)
    logits = bert.dense(c, 1, (axes.EMBED_OUT,), (axes.CLASSES,), name="dense_prediction")(h)
    return logits[..., 0].astype(jnp.float32)  # (batch, length)


class ElectraDiscriminator(nn.Module):
  """ELECTRA's discriminator (`ElectraForPreTraining`): per token, the logit that it was
  replaced by the generator.
  """

  config: ElectraConfig

  def setup(self):
    self.bert = Electra(self.config)
    self.discriminator = DiscriminatorHead(self.config)

  def __call__(
    self, input_ids, token_type_ids, attention_mask, position_ids=None, deterministic=True
  ):
    """(batch, length) float32 logits; the arguments are `bert.Bert`'s."""
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    return self.discriminator(hidden)


class ClassificationHead(nn.Module):
  """ELECTRA's sequence head on the first token: dropout, dense, exact GELU, dropout,
  `out_proj` (Hugging Face's `ElectraClassificationHead`).
  """

  config: ElectraConfig
  num_labels: int

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    c = self.config
    dropout = nn.Dropout(c.head_dropout)
    x = dropout(hidden[:, 0], deterministic=deterministic)  # (batch, embed)
    x = bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,), name="dense")(x)
    x = dropout(bert.activation("gelu")(x), deterministic=deterministic)
    return bert.dense(c, self.num_labels, (axes.EMBED_OUT,), (axes.CLASSES,), name="out_proj")(x)


def sequence_head(config, num_labels):
  """ELECTRA's classification / regression head."""
  return ClassificationHead(config, num_labels)


def token_head(config, num_labels):
  """Dropout (the heads' rate) and a linear layer, for tokens and QA."""
  head_config = dataclasses.replace(config, hidden_dropout=config.head_dropout)
  return tasks.TokenHead(head_config, (num_labels,), (axes.EMBED,), (axes.CLASSES,))


FAMILY = families.Family(
  name="electra",
  config=ElectraConfig,
  encoder=Electra,
  pretraining=ElectraForMaskedLM,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
