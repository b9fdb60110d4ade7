"""An encoder of any family with a fine-tuning head: classification, regression, token
tagging or QA spans.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert, families
from bert_jax.model.dropout import Dropout

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
    # BERT's heads take their dropout from here, the module `dropout` of ForTask, so their
    # dropout key (named by the module's path) is the one it was before the families.
    self.bert_head = isinstance(self.classifier, (PooledHead, TokenHead))
    if self.bert_head:
      self.dropout = Dropout(self.classifier.config.hidden_dropout)

  def __call__(
    self, input_ids, token_type_ids, attention_mask, position_ids=None, deterministic=True
  ):
    """float32 logits; see the class docstring for their shapes."""
    hidden, pooled = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    shared = {"dropout": self.dropout} if self.bert_head else {}
    if self.task in ("classification", "regression"):
      logits = self.classifier(hidden, pooled, attention_mask, deterministic, **shared)
    else:  # qa: Hugging Face's qa_outputs has no dropout
      logits = self.classifier(hidden, deterministic or self.task == "qa", **shared)
    return logits.astype(jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


class PooledHead(bert.Dense):
  """BERT's sequence head: dropout on the pooled [CLS] vector, then a linear layer."""

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic, dropout=None):
    """Logits (batch, labels); `dropout` (a Dropout module) replaces the head's own."""
    dropout = dropout or Dropout(self.config.hidden_dropout)
    return self.project(dropout(pooled, deterministic=deterministic))


class TokenHead(bert.Dense):
  """Dropout on every hidden state, then a linear layer (BERT's token and QA heads)."""

  @nn.compact
  def __call__(self, hidden, deterministic, dropout=None):
    """Logits (batch, length, labels); `dropout` (a Dropout module) replaces the head's own."""
    dropout = dropout or Dropout(self.config.hidden_dropout)
    return self.project(dropout(hidden, deterministic=deterministic))


class FirstTokenHead(nn.Module):
  """A sequence head on the first token: dropout, dense (`dense`), `activation`, dropout,
  linear (`out_proj`), as Hugging Face's `RobertaClassificationHead` (tanh) and
  `ElectraClassificationHead` (exact GELU); the dropout is `classifier_dropout(config)`.
  """

  config: bert.BertConfig
  num_labels: int
  activation: object  # a function of an array

  @nn.compact
  def __call__(self, hidden, pooled, attention_mask, deterministic):
    c = self.config
    dropout = Dropout(classifier_dropout(c))
    x = dropout(hidden[:, 0], deterministic=deterministic)  # (batch, embed)
    x = bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,), name="dense")(x)
    x = dropout(self.activation(x), deterministic=deterministic)
    return bert.dense(c, self.num_labels, (axes.EMBED_OUT,), (axes.CLASSES,), name="out_proj")(x)


def classifier_dropout(config) -> float:
  """The fine-tuning heads' dropout: the config's `classifier_dropout` where the family has
  one and it is set, else `hidden_dropout`.
  """
  rate = getattr(config, "classifier_dropout", None)
  return config.hidden_dropout if rate is None else rate


def _with_dropout(config, dropout):
  if dropout is None:
    return config
  return dataclasses.replace(config, hidden_dropout=dropout)


def pooled_head(config, num_labels, dropout=None):
  """BERT's sequence head (its dropout `hidden_dropout` unless `dropout` is given)."""
  return PooledHead(_with_dropout(config, dropout), (num_labels,), (axes.EMBED,), (axes.CLASSES,))


def token_head(config, num_labels, dropout=None):
  """BERT's token / QA head (its dropout `hidden_dropout` unless `dropout` is given)."""
  return TokenHead(_with_dropout(config, dropout), (num_labels,), (axes.EMBED,), (axes.CLASSES,))
