"""DistilBERT (Sanh et al., 2019), as Hugging Face's `DistilBertForMaskedLM`.

BERT's layers without token types, without a pooler and without dropout on the attention
output (DistilBERT's `out_lin` feeds the residual directly); word + learned position
embeddings (BERT's, without the token-type table). `sinusoidal_pos_embds` checkpoints store their fixed table, which is read as a
learned one (and trained, if training continues). The MLM head is BERT's
(`vocab_transform`, activation, `vocab_layer_norm`, the tied `vocab_projector`); the
sequence head is `pre_classifier` -> ReLU -> dropout -> `classifier` on the first token.

The pretraining model is MLM only: its sentence logits are zeros.
"""

import dataclasses

import flax.linen as nn

from bert_jax.model import attention, axes, bert, dropout, families, pretraining


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(bert.BertConfig):
  """BertConfig with DistilBERT's defaults and head dropouts (Hugging Face's names)."""

  arch: str = "distilbert"
  num_layers: int = 6
  type_vocab_size: int = 1  # unused: DistilBERT has no token types
  seq_classif_dropout: float = 0.2  # the sequence head's dropout
  qa_dropout: float = 0.1  # Hugging Face's QA dropout; here QA, as BERT's, has none


class EncoderLayer(nn.Module):
  """BERT's post-LN layer, less the dropout on the attention output."""

  config: DistilBertConfig
  deterministic: bool
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask):
    c = self.config
    attention_config = dataclasses.replace(c, hidden_dropout=0.0)
    x = bert.SelfAttention(attention_config, self.deterministic, name="attention")(x, mask)
    x = bert.constrain(bert.Mlp(c, self.deterministic, name="mlp")(x))
    return (x, None) if self.scanned else x


class DistilBert(nn.Module):
  """The encoder: last hidden states, and None for the pooled output (no pooler)."""

  config: DistilBertConfig

  def setup(self):
    self.embeddings = bert.Embeddings(self.config, token_types=False)
    self.encoder = bert.Encoder(self.config, layer=EncoderLayer)

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch (the arguments as `bert.Bert`'s; `token_type_ids` is ignored).

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: None.
    """
    # DistilBERT has no token types: the embeddings ignore the ids.
    token_type_ids, attention_mask = bert.default_inputs(input_ids, token_type_ids, attention_mask)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    hidden = self.encoder(
      x, attention.AttentionMask.of_rows(attention_mask, self.config), deterministic
    )
    return hidden, None


class DistilBertForMaskedLM(pretraining.MaskedLM):
  """DistilBERT with its MLM head, tied to the word embeddings (`DistilBertForMaskedLM`)."""

  encoder = DistilBert


class ClassificationHead(nn.Module):
  """First token -> `pre_classifier` -> ReLU -> dropout (`seq_classif_dropout`) ->
  `classifier`, as `DistilBertForSequenceClassification`.
  """

  config: DistilBertConfig
  num_labels: int

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    c = self.config
    x = bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,), name="pre_classifier")(
      hidden[:, 0]
    )  # (batch, embed)
    x = dropout.Dropout(c.seq_classif_dropout)(nn.relu(x), deterministic=deterministic)
    return bert.dense(c, self.num_labels, (axes.EMBED_OUT,), (axes.CLASSES,), name="classifier")(x)


def sequence_head(config: DistilBertConfig, num_labels: int) -> ClassificationHead:
  """The classification / regression head."""
  return ClassificationHead(config, num_labels)


FAMILY = families.Family(
  name="distilbert",
  config=DistilBertConfig,
  encoder=DistilBert,
  pretraining=DistilBertForMaskedLM,
  sequence_head=sequence_head,
  sentence_objectives=(),
)
