"""BERT with a fine-tuning head: classification, regression, token tagging or QA spans."""

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import axes, bert

TASKS = ("classification", "regression", "tokens", "qa")


class BertForTask(nn.Module):
  """BERT with a fine-tuning head (Hugging Face's `BertFor{SequenceClassification,
  TokenClassification,QuestionAnswering}`), the parameters under `bert/` and `classifier/`.

  - classification / regression: pooled [CLS] -> dropout -> linear, (batch, num_labels)
    logits (regression: num_labels 1, the predicted value);
  - tokens: every last hidden state -> dropout -> linear, (batch, length, num_labels);
  - qa: every last hidden state -> linear, (batch, length, 2): start and end logits.
  """

  config: bert.BertConfig
  task: str
  num_labels: int

  def setup(self):
    c = self.config
    self.bert = bert.Bert(c)
    self.dropout = nn.Dropout(c.hidden_dropout)
    self.classifier = bert.dense(c, self.num_labels, (axes.EMBED,), (axes.CLASSES,))

  def __call__(
    self, input_ids, token_type_ids, attention_mask, position_ids=None, deterministic=True
  ):
    """float32 logits; see the class docstring for their shapes."""
    hidden, pooled = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    if self.task in ("classification", "regression"):
      features = self.dropout(pooled, deterministic=deterministic)  # (batch, embed)
    elif self.task == "tokens":
      features = self.dropout(hidden, deterministic=deterministic)  # (batch, length, embed)
    else:  # qa: Hugging Face's qa_outputs has no dropout
      features = hidden
    return self.classifier(features).astype(jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)
