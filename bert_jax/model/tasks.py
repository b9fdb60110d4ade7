"""An encoder of any family with a fine-tuning head: classification, regression, token
tagging or QA spans.
"""

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, families

TASKS = ("classification", "regression", "tokens", "qa")


class ForTask(nn.Module):
  """An encoder with a fine-tuning head (Hugging Face's `{Family}For{SequenceClassification,
  TokenClassification,QuestionAnswering}`), the parameters under `bert/` and `classifier/`.

  - classification / regression: the family's sequence head (BERT: pooled [CLS] -> dropout
    -> linear), (batch, num_labels) logits (regression: num_labels 1, the predicted value);
  - tokens: every last hidden state -> the family's token head (BERT: dropout -> linear),
    (batch, length, num_labels);
  - qa: the same head without dropout, (batch, length, 2): start and end logits.
  """

  config: bert.BertConfig
  task: str
  num_labels: int

  def setup(self):
    c = self.config
    family = families.family(c.arch)
    self.bert = family.encoder(c)
    if self.task in ("classification", "regression"):
      self.classifier = family.sequence_head(c, self.num_labels)
    elif family.token_head is not None:
      self.classifier = family.token_head(c, self.num_labels)
    else:
      self.classifier = token_head(c, self.num_labels)

  def __call__(
    self, input_ids, token_type_ids, attention_mask, position_ids=None, deterministic=True
  ):
    """float32 logits; see the class docstring for their shapes."""
    hidden, pooled = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    if self.task in ("classification", "regression"):
      logits = self.classifier(hidden, pooled, attention_mask, deterministic)
    else:  # qa: Hugging Face's qa_outputs has no dropout
      logits = self.classifier(hidden, deterministic or self.task == "qa")
    return logits.astype(jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


class PooledHead(bert.Dense):
  """BERT's sequence head: dropout on the pooled [CLS] vector, then a linear layer."""

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    dropout = nn.Dropout(self.config.hidden_dropout)
    return self.project(dropout(pooled, deterministic=deterministic))  # (batch, labels)


class TokenHead(bert.Dense):
  """Dropout on every hidden state, then a linear layer (BERT's token and QA heads)."""

  @nn.compact
  def __call__(self, hidden, deterministic):
    dropout = nn.Dropout(self.config.hidden_dropout)
    return self.project(dropout(hidden, deterministic=deterministic))


def pooled_head(config, num_labels):
  """BERT's sequence head."""
  return PooledHead(config, (num_labels,), (axes.EMBED,), (axes.CLASSES,))


def token_head(config, num_labels):
  """BERT's token / QA head."""
  return TokenHead(config, (num_labels,), (axes.EMBED,), (axes.CLASSES,))
