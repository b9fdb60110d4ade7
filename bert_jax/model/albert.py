"""ALBERT (Lan et al. 2019), as Hugging Face's `AlbertModel` and its heads.

Factorised embeddings of width `embedding_size` E (ELECTRA's), a dense E -> H map, then
`num_layers` applications of shared layers: `num_hidden_groups` groups of `inner_group_num`
BERT layers each, layer i running group int(i / (num_layers / num_hidden_groups)) (ALBERT
base / large / xlarge: one group of one layer). Each group's parameters are stored once,
under `bert/encoder/group_{g}/layer_{j}`, whether the depth is unrolled or scanned (`nn.scan`
with the parameters broadcast), so `scan_layers` changes the compiled graph but not the
checkpoint. A tanh pooler on [CLS]; the MLM head (dense H -> E, hidden_act, LayerNorm(E),
the tied decoder) and the sentence-order head on the pooled output.

The layers are BERT's, with dropout after the feed-forward output as Google's ALBERT has it
(Hugging Face's `AlbertLayer` omits it; the same at ALBERT v2's hidden dropout of 0).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import attention, axes, bert, electra, families, pretraining, tasks


@dataclasses.dataclass(frozen=True)
class AlbertConfig(bert.BertConfig):
  """BertConfig plus ALBERT's fields (Hugging Face `AlbertConfig` names and defaults)."""

  arch: str = "albert"
  hidden_dropout: float = 0.0
  attention_dropout: float = 0.0
  hidden_act: str = "gelu_new"
  embedding_size: int = 128  # E, the word-embedding width
  num_hidden_groups: int = 1  # groups of shared layers along the depth
  inner_group_num: int = 1  # layers in each group
  classifier_dropout: float = 0.1  # the SOP and sequence heads' dropout (classifier_dropout_prob)

  def __post_init__(self):
    if not 1 <= self.num_hidden_groups <= self.num_layers or self.inner_group_num < 1:
      raise ValueError(
        f"ALBERT needs 1 <= num_hidden_groups <= num_layers and inner_group_num >= 1, got "
        f"num_hidden_groups={self.num_hidden_groups}, num_layers={self.num_layers}, "
        f"inner_group_num={self.inner_group_num}"
      )


def group_of_layer(config, i):
  """The group layer `i` runs (Hugging Face's formula, float division included)."""
  return int(i / (config.num_layers / config.num_hidden_groups))


class LayerGroup(nn.Module):
  """`inner_group_num` BERT layers (`layer_{j}`). Under nn.scan it returns (carry, None)."""

  config: AlbertConfig
  deterministic: bool
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask):
    for j in range(self.config.inner_group_num):
      x = bert.EncoderLayer(self.config, self.deterministic, name=f"layer_{j}")(x, mask)
    return (x, None) if self.scanned else x


class Encoder(nn.Module):
  """The shared groups applied `num_layers` times, each group's run of consecutive layers
  unrolled or scanned (`scan_layers`) over the same parameters.
  """

  config: AlbertConfig

  @nn.compact
  def __call__(self, x, mask, deterministic):
    c = self.config
    group = bert.rematerialised(LayerGroup, c, scanned=c.scan_layers)
    runs = [group_of_layer(c, i) for i in range(c.num_layers)]
    for g in range(c.num_hidden_groups):
      depth = runs.count(g)  # every group runs at least once when groups <= layers
      if c.scan_layers:
        stack = nn.scan(
          group,
          variable_broadcast="params",
          split_rngs={"params": False, "dropout": True},
          in_axes=nn.broadcast,
          length=depth,
        )
        x, _ = stack(c, deterministic, scanned=True, name=f"group_{g}")(x, mask)
      else:
        shared = group(c, deterministic, name=f"group_{g}")
        for _ in range(depth):
          x = shared(x, mask)
    return x


class Albert(nn.Module):
  """The encoder: returns the last hidden states and the pooled [CLS] vector."""

  config: AlbertConfig

  def setup(self):
    c = self.config
    self.embeddings = electra.embeddings(c)
    self.embeddings_project = electra.embeddings_project(c)
    self.encoder = Encoder(c)
    self.pooler = bert.dense(c, c.hidden_size, (axes.EMBED,), (axes.EMBED_OUT,))

  def __call__(
    self, input_ids, token_type_ids=None, attention_mask=None, position_ids=None, deterministic=True
  ):
    """Encodes a batch; the arguments and results are `bert.Bert`'s."""
    token_type_ids, attention_mask = bert.default_inputs(input_ids, token_type_ids, attention_mask)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    x = bert.constrain(self.embeddings_project(x))  # (batch, length, embed)
    hidden = self.encoder(
      x, attention.AttentionMask.of_rows(attention_mask, self.config), deterministic
    )
    pooled = jnp.tanh(self.pooler(hidden[:, 0]))
    return hidden, pooled


class AlbertForPreTraining(nn.Module):
  """ALBERT with the MLM and sentence-order heads (`AlbertForPreTraining`)."""

  config: AlbertConfig

  def setup(self):
    c = self.config
    self.bert = Albert(c)
    self.mlm = pretraining.MlmHead(c)
    self.sop = tasks.pooled_head(c, 2, c.classifier_dropout)

  def __call__(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """MLM logits at the masked positions (batch, predictions, vocab) and SOP logits
    (batch, 2; class 0 = in order), both float32; the arguments are `BertForPreTraining`'s.
    """
    hidden, pooled = self.bert(
      input_ids, token_type_ids, attention_mask, position_ids, deterministic=deterministic
    )
    mlm_logits = self.mlm(
      pretraining.gather(hidden, masked_lm_positions), self.bert.embeddings.word
    )
    sop_logits = self.sop(hidden, pooled, attention_mask, deterministic)
    return mlm_logits, sop_logits.astype(jnp.float32)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """Last hidden states and pooled output, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)


def sequence_head(config, num_labels):
  """ALBERT's sequence head: the pooled output, dropout (classifier_dropout), linear."""
  return tasks.pooled_head(config, num_labels, config.classifier_dropout)


def token_head(config, num_labels):
  """Dropout (classifier_dropout) and a linear layer, for tokens and QA."""
  return tasks.token_head(config, num_labels, config.classifier_dropout)


FAMILY = families.Family(
  name="albert",
  config=AlbertConfig,
  encoder=Albert,
  pretraining=AlbertForPreTraining,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=("sop",),
)
