"""ELECTRA (Clark et al. 2020), as Hugging Face's `ElectraModel` and its heads.

BERT's embeddings at an `embedding_size` E that may be smaller than the hidden size H, a
projection E -> H when they differ (`embeddings_project`), then BERT's post-LN layers; no
pooler. The pretraining module is one of two:
- without `generator_hidden_size`, masked LM as ELECTRA's generator trains it
  (`ElectraForMaskedLM`: dense H -> E, exact GELU, LayerNorm(E), the decoder tied to the
  word embeddings);
- with it, `ElectraForReplacedTokenDetection`: ELECTRA's pretraining proper, a small
  generator (that hidden size, the same depth) and the discriminator sharing one set of
  embeddings. The generator fills the masked positions by sampling its MLM softmax; the
  discriminator (`ElectraForPreTraining`) tells, at every token, whether it was replaced.
`ElectraDiscriminator` is the discriminator alone, for import and export. The fine-tuning
heads: ELECTRA's classification head (dense, GELU, out_proj on the first token) and
dropout + linear for tokens and QA.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import attention, axes, bert, families, pretraining, tasks


@dataclasses.dataclass(frozen=True)
class ElectraConfig(bert.BertConfig):
  """BertConfig plus ELECTRA's fields (Hugging Face `ElectraConfig` names)."""

  arch: str = "electra"
  embedding_size: int | None = None  # E, the word-embedding width; None: the hidden size
  classifier_dropout: float | None = None  # the fine-tuning heads'; None: hidden_dropout
  # Replaced-token detection: the generator's hidden size (None: masked LM alone) and the
  # weight of the discriminator's loss against the generator's (the paper's lambda).
  generator_hidden_size: int | None = None
  discriminator_weight: float = 50.0

  def __post_init__(self):
    if self.embedding_size is None:
      object.__setattr__(self, "embedding_size", self.hidden_size)
    if self.embedding_size < 1:
      raise ValueError(f"ELECTRA's embedding_size must be positive, got {self.embedding_size}")
    g = self.generator_hidden_size
    if g is not None and not (0 < g <= self.hidden_size and (g <= 64 or g % 64 == 0)):
      raise ValueError(
        f"generator_hidden_size={g} must be positive, at most hidden_size="
        f"{self.hidden_size}, and above 64 a multiple of 64 (heads of 64)"
      )
    if not self.discriminator_weight > 0:
      raise ValueError(
        f"discriminator_weight={self.discriminator_weight} must be positive (the paper: 50)"
      )


def generator_config(config: ElectraConfig) -> ElectraConfig:
  """The generator's config: `generator_hidden_size` wide (heads of 64, an intermediate
  of 4x), the discriminator's depth, embeddings and settings; no generator of its own.
  """
  g = config.generator_hidden_size
  return dataclasses.replace(
    config,
    hidden_size=g,
    num_heads=bert.heads_of_64(g),
    intermediate_size=4 * g,
    generator_hidden_size=None,
  )


def embeddings(config, name=None):
  """BERT's embeddings (word, position, token type, LayerNorm, dropout) of width E."""
  narrow = {"hidden_size": config.embedding_size}
  if getattr(config, "generator_hidden_size", None):  # ALBERT's configs have none
    narrow["generator_hidden_size"] = None  # its check is against the hidden size
  return bert.Embeddings(dataclasses.replace(config, **narrow), name=name)


def embeddings_project(config, name=None):
  """The dense E -> H map between factorised embeddings and the encoder."""
  return bert.dense(config, config.hidden_size, (axes.EMBED_OUT,), (axes.EMBED,), name=name)


class ProjectedEncoder(nn.Module):
  """The layers after the embeddings: the projection from their width E (when it is not
  the hidden size) and the encoder, called on embedded inputs. The generator of
  replaced-token detection is one (its embeddings are the discriminator's).
  """

  config: ElectraConfig

  def setup(self):
    c = self.config
    if c.embedding_size != c.hidden_size:
      self.embeddings_project = embeddings_project(c)
    self.encoder = bert.Encoder(c)

  def __call__(self, x, attention_mask, deterministic=True):
    """(batch, length, E) embedded inputs -> (batch, length, hidden) last hidden states."""
    c = self.config
    if c.embedding_size != c.hidden_size:
      x = bert.constrain(self.embeddings_project(x))  # (batch, length, embed)
    return self.encoder(x, attention.AttentionMask.of_rows(attention_mask, c), deterministic)


class Electra(ProjectedEncoder):
  """The encoder: its embeddings, then `ProjectedEncoder`'s layers; returns the last hidden
  states, and None (ELECTRA has no pooler).
  """

  def setup(self):
    super().setup()
    self.embeddings = embeddings(self.config)

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
    return super().__call__(x, attention_mask, deterministic), None


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


class ElectraForReplacedTokenDetection(nn.Module):
  """ELECTRA's pretraining (Clark et al. 2020): the generator and the discriminator, sharing
  the embeddings (word, position, token type, LayerNorm).

  Parameters: the discriminator's encoder under `bert/` (what fine-tuning and `embed` take),
  its head under `discriminator/`, the generator's projection and layers under `generator/`
  and its MLM head under `mlm/`, the decoder tied to the shared word embeddings.

  Called as `pretraining.MaskedLM` is, it gives the generator's MLM logits (`fill-mask`);
  `replaced_token_detection` is the training forward pass.
  """

  config: ElectraConfig

  def setup(self):
    c = self.config
    self.bert = Electra(c)
    self.discriminator = DiscriminatorHead(c)
    g = generator_config(c)
    self.generator = ProjectedEncoder(g)
    self.mlm = pretraining.MlmHead(dataclasses.replace(g, hidden_act="gelu"))

  def generate(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """The generator's (batch, predictions, vocab) float32 MLM logits at the positions."""
    token_type_ids, attention_mask = bert.default_inputs(input_ids, token_type_ids, attention_mask)
    x = self.bert.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    hidden = self.generator(x, attention_mask, deterministic)
    return self.mlm(pretraining.gather(hidden, masked_lm_positions), self.bert.embeddings.word)

  def discriminate(self, input_ids, token_type_ids, attention_mask, position_ids, deterministic):
    """The discriminator's (batch, length) float32 logits that each token was replaced."""
    hidden, _ = self.bert(input_ids, token_type_ids, attention_mask, position_ids, deterministic)
    return self.discriminator(hidden)

  def __call__(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    position_ids=None,
    deterministic=True,
  ):
    """The generator's MLM logits and zero sentence logits, as `pretraining.MaskedLM`'s.

    Initialising also runs the discriminator, so that `init` makes every parameter.
    """
    mlm_logits = self.generate(
      input_ids, token_type_ids, attention_mask, masked_lm_positions, position_ids, deterministic
    )
    if self.is_initializing():
      self.discriminate(input_ids, token_type_ids, attention_mask, position_ids, deterministic)
    return mlm_logits, pretraining.no_sentence_logits(input_ids)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None):
    """The discriminator's last hidden states and None, without dropout (for embeddings)."""
    return self.bert(input_ids, token_type_ids, attention_mask, deterministic=True)

  def replaced_token_detection(
    self,
    input_ids,
    token_type_ids,
    attention_mask,
    masked_lm_positions,
    masked_lm_ids,
    masked_lm_weights,
    position_ids=None,
    deterministic=True,
    sample_key=None,
    vocab_size=None,
  ):
    """The training forward pass: generate, sample, replace, discriminate.

    Args:
      input_ids ... masked_lm_weights: a masked batch (`data.pipeline`): the masked rows,
        the positions, the original ids there and 1 for real predictions, 0 for padding.
      position_ids, deterministic: as `__call__`'s.
      sample_key: the PRNG key the replacements are sampled with; None: the generator's
        most likely token.
      vocab_size: the tokenizer's pieces: the padded rows after them are never sampled;
        None: any row.

    Returns:
      mlm_logits: (batch, predictions, vocab) float32, the generator's.
      rtd_logits: (batch, length) float32, the discriminator's.
      replaced: (batch, length) float32, 1 where the discriminator's input differs from
        the original text (a sample equal to the original token counts as original).
    """
    mlm_logits = self.generate(
      input_ids, token_type_ids, attention_mask, masked_lm_positions, position_ids, deterministic
    )
    samples = sample_tokens(mlm_logits, sample_key, vocab_size)
    corrupted, replaced = replace_masked(
      input_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights, samples
    )
    rtd_logits = self.discriminate(
      corrupted, token_type_ids, attention_mask, position_ids, deterministic
    )
    return mlm_logits, rtd_logits, replaced


def sample_tokens(logits, key=None, vocab_size=None):
  """(batch, predictions) ids drawn from softmax(logits) by the Gumbel-max trick, with no
  gradient to the generator (ELECTRA's sampling is not differentiated); the argmax when
  `key` is None. With `vocab_size`, only the first `vocab_size` rows (the tokenizer's; the
  rest pad the embedding matrix) can be drawn.
  """
  logits = jax.lax.stop_gradient(logits)
  if vocab_size is not None:
    real = jnp.arange(logits.shape[-1]) < vocab_size  # (vocab,)
    logits = jnp.where(real, logits, -jnp.inf)
  if key is not None:
    logits = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def replace_masked(input_ids, positions, original_ids, weights, samples):
  """The discriminator's input and its labels.

  Args:
    input_ids: (batch, length) masked rows.
    positions, original_ids, weights: (batch, predictions) the masked positions (padding
      predictions point at 0 with weight 0), the original ids there, real or padding.
    samples: (batch, predictions) the generator's tokens for the positions.

  Returns:
    corrupted: (batch, length) the rows with each real prediction's position holding its
      sample; every other token as in `input_ids`.
    replaced: (batch, length) float32, 1 where `corrupted` differs from the original text.
  """
  input_ids = jnp.asarray(input_ids)
  length = input_ids.shape[1]
  rows = jnp.arange(input_ids.shape[0])[:, None]
  # Padding predictions write out of bounds, where mode="drop" discards them.
  at = jnp.where(weights > 0, positions, length)
  original = input_ids.at[rows, at].set(original_ids, mode="drop")
  corrupted = input_ids.at[rows, at].set(samples, mode="drop")
  return corrupted, (corrupted != original).astype(jnp.float32)


def sequence_head(config, num_labels):
  """ELECTRA's sequence head on the first token: dropout, dense, exact GELU, dropout,
  `out_proj` (Hugging Face's `ElectraClassificationHead`).
  """
  return tasks.FirstTokenHead(config, num_labels, bert.activation("gelu"))


def token_head(config, num_labels):
  """Dropout (the heads' rate) and a linear layer, for tokens and QA."""
  return tasks.token_head(config, num_labels, tasks.classifier_dropout(config))


def pretraining_model(config: ElectraConfig) -> nn.Module:
  """The pretraining module: replaced-token detection when the config has a generator,
  else masked LM alone.
  """
  if config.generator_hidden_size is None:
    return ElectraForMaskedLM(config)
  return ElectraForReplacedTokenDetection(config)


FAMILY = families.Family(
  name="electra",
  config=ElectraConfig,
  encoder=Electra,
  pretraining=pretraining_model,
  sequence_head=sequence_head,
  token_head=token_head,
  sentence_objectives=(),
)
