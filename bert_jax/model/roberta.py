"""RoBERTa (Liu et al., 2019) and XLM-R, as Hugging Face's `RobertaForMaskedLM`.

BERT's layers with three differences: position ids start after the padding id (fairseq's
`make_positions`: a real token at index i of its example takes row pad_token_id + 1 + i, so
the first pad_token_id + 1 rows are never read); no token types (RoBERTa's tokenizers return
none, so token-type row 0 is added everywhere and the ids given are ignored); and no pooler:
the sequence head reads <s> itself (`ClassificationHead`). The LM head is BERT's with exact
GELU whatever `hidden_act`.

The pretraining model is MLM only: its sentence logits are zeros.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, families, pretraining, tasks


@dataclasses.dataclass(frozen=True)
class RobertaConfig(bert.BertConfig):
  """BertConfig with RoBERTa's defaults and its padding id (Hugging Face's names)."""

  arch: str = "roberta"
  type_vocab_size: int = 1
  layer_norm_eps: float = 1e-5
  pad_token_id: int = 1  # the tokenizer's <pad>: position rows start after it
  classifier_dropout: float | None = None  # the fine-tuning heads' dropout; None: hidden_dropout

  @property
  def max_length(self):
    """Position rows 0..pad_token_id are never used, so the longest row is shorter."""
    return self.max_position_embeddings - self.pad_token_id - 1


def _head_config(config: RobertaConfig) -> RobertaConfig:
  """`config` whose hidden_dropout is the fine-tuning heads' dropout."""
  if config.classifier_dropout is None:
    return config
  return dataclasses.replace(config, hidden_dropout=config.classifier_dropout)


class Roberta(nn.Module):
  """The encoder: last hidden states, and None for the pooled output (no pooler)."""

  config: RobertaConfig

  def setup(self):
    self.embeddings = bert.Embeddings(self.config)
    self.encoder = bert.Encoder(self.config)

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch (the arguments as `bert.Bert`'s; `token_type_ids` is ignored).

    Returns:
      hidden: (batch, length, embed) last hidden states, in the compute dtype.
      pooled: None.
    """
    c = self.config
    token_type_ids = jnp.zeros_like(input_ids)  # RoBERTa's tokenizers return no token types
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, token_type_ids, position_ids + c.pad_token_id + 1, deterministic)
    hidden = self.encoder(x, bert.attention_mask_4d(attention_mask), deterministic)
    return hidden, None


class RobertaForMaskedLM(nn.Module):
  """RoBERTa with its LM head, tied to the word embeddings (`RobertaForMaskedLM`)."""

  config: RobertaConfig

  def setup(self):
    c = self.config
    self.bert = Roberta(c)
    # Hugging Face's RobertaLMHead applies exact GELU, not config.hidden_act.
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
    """MLM logits at the masked positions, and zero sentence logits; both float32.

    Args:
      input_ids, token_type_ids, attention_mask: (batch, length); see `bert.Bert`.
      masked_lm_positions: (batch, predictions) indices into length (0-padded).
      position_ids: (batch, length), restarting in each packed example; None: 0..length-1.
      deterministic: disables dropout when True.

    Returns:
      mlm_logits: (batch, predictions, vocab).
      sentence_logits: (batch, 2) zeros (RoBERTa has no sentence-pair head).
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
  """Hugging Face's RobertaClassificationHead: <s> -> dropout -> dense -> tanh -> dropout ->
  out_proj (params `dense`, `out_proj`).
  """

  config: RobertaConfig
  num_labels: int

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    c = _head_config(self.config)
    dropout = nn.Dropout(c.hidden_dropout)
    x = dropout(hidden[:, 0], deterministic=deterministic)  # (batch, embed)
    x = jnp.tanh(bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,), name="dense")(x))
    x = dropout(x, deterministic=deterministic)
    return bert.dense(c, self.num_labels, (axes.EMBED_OUT,), (axes.CLASSES,), name="out_proj")(x)


def sequence_head(config: RobertaConfig, num_labels: int) -> ClassificationHead:
  """The classification / regression head."""
  return ClassificationHead(config, num_labels)


def token_head(config: RobertaConfig, num_labels: int) -> tasks.TokenHead:
  """BERT's token / QA head, with RoBERTa's `classifier_dropout` where it is set."""
  return tasks.token_head(_head_config(config), num_labels)


FAMILY = families.Family(
  name="roberta",
  config=RobertaConfig,
  encoder=Roberta,
  pretraining=RobertaForMaskedLM,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
