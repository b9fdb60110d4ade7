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

from bert_jax.model import attention, axes, bert, families, pretraining, tasks


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
    token_type_ids, attention_mask = bert.default_inputs(input_ids, token_type_ids, attention_mask)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    if self.config.embedding_size != self.config.hidden_size:
      x = bert.constrain(self.embeddings_project(x))  # (batch, length, embed)
    hidden = self.encoder(
      x, attention.AttentionMask.of_rows(attention_mask, self.config), deterministic
    )
    return hidden, None


class ElectraForMaskedLM(pretraining.MaskedLM):
  """ELECTRA with the generator's MLM head (`ElectraForMaskedLM`); no sentence head."""

  encoder = Electra
  head_act = "gelu"  # the generator's head always uses exact GELU, whatever hidden_act is


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


def sequence_head(config, num_labels):
  """ELECTRA's sequence head on the first token: dropout, dense, exact GELU, dropout,
  `out_proj` (Hugging Face's `ElectraClassificationHead`).
  """
  return tasks.FirstTokenHead(config, num_labels, bert.activation("gelu"))


def token_head(config, num_labels):
  """Dropout (the heads' rate) and a linear layer, for tokens and QA."""
  return tasks.token_head(config, num_labels, tasks.classifier_dropout(config))


FAMILY = families.Family(
  name="electra",
  config=ElectraConfig,
  encoder=Electra,
  pretraining=ElectraForMaskedLM,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
