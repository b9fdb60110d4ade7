"""DistilBERT (Sanh et al., 2019), as Hugging Face's `DistilBertForMaskedLM`.

BERT's layers without token types, without a pooler and without dropout on the attention
output (DistilBERT's `out_lin` feeds the residual directly); word + learned position
embeddings. `sinusoidal_pos_embds` checkpoints store their fixed table, which is read as a
learned one (and trained, if training continues). The MLM head is BERT's
(`vocab_transform`, activation, `vocab_layer_norm`, the tied `vocab_projector`); the
sequence head is `pre_classifier` -> ReLU -> dropout -> `classifier` on the first token.

The pretraining model is MLM only: its sentence logits are zeros.
"""

import dataclasses
import functools

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, families, pretraining


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(bert.BertConfig):
  """BertConfig with DistilBERT's defaults and head dropouts (Hugging Face's names)."""

  arch: str = "distilbert"
  num_layers: int = 6
  type_vocab_size: int = 1  # unused: DistilBERT has no token types
  seq_classif_dropout: float = 0.2  # the sequence head's dropout
  qa_dropout: float = 0.1  # Hugging Face's QA dropout; here QA, as BERT's, has none


def _constrain(x):
  return nn.with_logical_constraint(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))


class Embeddings(nn.Module):
  """Word + position embeddings, LayerNorm, dropout (no token types)."""

  config: DistilBertConfig

  def setup(self):
    c = self.config
    embed = functools.partial(nn.Embed, dtype=c.dtype, param_dtype=c.param_dtype)
    init = nn.initializers.truncated_normal(c.initializer_range)
    self.word = embed(
      c.vocab_size,
      c.hidden_size,
      embedding_init=nn.with_logical_partitioning(init, (axes.VOCAB, axes.EMBED)),
    )
    self.position = embed(
      c.max_position_embeddings,
      c.hidden_size,
      embedding_init=nn.with_logical_partitioning(init, (axes.POSITION, axes.EMBED)),
    )
    self.layer_norm = bert.layer_norm(c)
    self.dropout = nn.Dropout(c.hidden_dropout)

  def __call__(self, input_ids, position_ids, deterministic):
    x = self.word(input_ids) + self.position(position_ids)
    x = self.dropout(self.layer_norm(x), deterministic=deterministic)
    return _constrain(x)  # (batch, length, embed)


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
    x = _constrain(bert.Mlp(c, self.deterministic, name="mlp")(x))
    return (x, None) if self.scanned else x


class DistilBert(nn.Module):
  """The encoder: last hidden states, and None for the pooled output (no pooler)."""

  config: DistilBertConfig

  def setup(self):
    self.embeddings = Embeddings(self.config)
    self.encoder = bert.Encoder(self.config, layer=EncoderLayer)

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch (the arguments as `bert.Bert`'s; `token_type_ids` is ignored).

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: None.
    """
    del token_type_ids  # DistilBERT has no token types
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, position_ids, deterministic)
    hidden = self.encoder(x, bert.attention_mask_4d(attention_mask), deterministic)
    return hidden, None


class DistilBertForMaskedLM(nn.Module):
  """DistilBERT with its MLM head, tied to the word embeddings (`DistilBertForMaskedLM`)."""

  config: DistilBertConfig

  def setup(self):
    self.bert = DistilBert(self.config)
    self.mlm = pretraining.MlmHead(self.config)

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
        (`token_type_ids` is ignored).
      masked_lm_positions: (batch, predictions) indices into length (0-padded).
      position_ids: (batch, length), restarting in each packed example; None: 0..length-1.
      deterministic: disables dropout when True.

    Returns:
      mlm_logits: (batch, predictions, vocab).
      sentence_logits: (batch, 2) zeros (DistilBERT has no sentence-pair head).
    """
    hidden, _ = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    # (batch, predictions, embed)
    gathered = jnp.take_along_axis(hidden, masked_lm_positions[..., None], axis=1)
    mlm_logits = self.mlm(gathered, self.bert.embeddings.word)
    return mlm_logits, jnp.zeros((input_ids.shape[0], 2), jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and None (no pooler), without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


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
    x = nn.Dropout(c.seq_classif_dropout)(nn.relu(x), deterministic=deterministic)
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
