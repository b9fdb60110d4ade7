"""RoBERTa (Liu et al., 2019) and XLM-R, as Hugging Face's `RobertaForMaskedLM`.

BERT's layers with three differences: position ids start after the padding id (fairseq's
`make_positions`: a real token at index i of its example takes row pad_token_id + 1 + i, so
the first pad_token_id + 1 rows are never read); no token types (RoBERTa's tokenizers return
none, so token-type row 0 is added everywhere and the ids given are ignored); and no pooler:
the sequence head reads <s> itself (`tasks.FirstTokenHead`). The LM head is BERT's with exact
GELU whatever `hidden_act`.

The pretraining model is MLM only: its sentence logits are zeros.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import attention, bert, families, pretraining, tasks


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
    # RoBERTa's tokenizers return no token types: the ids given are replaced by zeros.
    token_type_ids, attention_mask = bert.default_inputs(input_ids, None, attention_mask)
    x = self.embeddings(
      input_ids, token_type_ids, position_ids, deterministic, position_offset=c.pad_token_id + 1
    )
    hidden = self.encoder(
      x, attention.AttentionMask.of_rows(attention_mask, self.config), deterministic
    )
    return hidden, None


class RobertaForMaskedLM(pretraining.MaskedLM):
  """RoBERTa with its LM head, tied to the word embeddings (`RobertaForMaskedLM`)."""

  encoder = Roberta
  head_act = "gelu"  # Hugging Face's RobertaLMHead applies exact GELU, not hidden_act


def sequence_head(config: RobertaConfig, num_labels: int) -> tasks.FirstTokenHead:
  """Hugging Face's RobertaClassificationHead: <s> -> dropout -> dense -> tanh -> dropout ->
  out_proj (params `dense`, `out_proj`), the dropout `classifier_dropout` where it is set.
  """
  return tasks.FirstTokenHead(config, num_labels, jnp.tanh)


def token_head(config: RobertaConfig, num_labels: int) -> tasks.TokenHead:
  """BERT's token / QA head, with RoBERTa's `classifier_dropout` where it is set."""
  return tasks.token_head(config, num_labels, tasks.classifier_dropout(config))


FAMILY = families.Family(
  name="roberta",
  config=RobertaConfig,
  encoder=Roberta,
  pretraining=RobertaForMaskedLM,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
