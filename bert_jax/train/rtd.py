"""ELECTRA's replaced-token-detection objective (Clark et al. 2020), and the choice of a
pretraining module's objective.

The generator learns masked LM at the masked positions; its samples fill them, and the
discriminator learns, at every real token, whether it was replaced. The loss is the mean
generator MLM loss over the masked tokens plus `discriminator_weight` (the paper's lambda,
50) times the mean sigmoid cross-entropy over the tokens. The samples carry no gradient, so
the discriminator's loss reaches the generator only through the shared embeddings.
Randomness: dropout and the samples both derive from the step's key; an evaluation
samples with a fixed key, so its numbers compare across steps and runs.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.model import electra
from bert_jax.train import step as step_lib

SUM_KEYS = (
  "mlm_loss",
  "mlm_correct",
  "mlm_count",
  "rtd_loss",
  "rtd_correct",
  "rtd_count",
  "rtd_replaced",
  "rtd_replaced_correct",
)
EVAL_SAMPLE_SEED = 0  # the key an evaluation samples replacements with


def objective_for(model: nn.Module, vocab_size: int | None = None):
  """The step objective of a family's pretraining module: replaced-token detection for
  ELECTRA with a generator (sampling only the tokenizer's `vocab_size` pieces, when given),
  else masked LM (+ NSP / SOP) (`step.Pretraining`).
  """
  if isinstance(model, electra.ElectraForReplacedTokenDetection):
    return ReplacedTokenDetection(model, vocab_size)
  return step_lib.Pretraining(model)


def token_weights(batch):
  """(batch, length) float32: 1 at every real token (the discriminator's targets)."""
  return (batch["attention_mask"] > 0).astype(jnp.float32)


def rtd_sums(rtd_logits, replaced, weights):
  """The discriminator's summed loss and hits over the real tokens, their count, and the
  replaced tokens and those it found.
  """
  bce = optax.sigmoid_binary_cross_entropy(rtd_logits, replaced)
  said_replaced = (rtd_logits > 0).astype(jnp.float32)
  hit = (said_replaced == replaced).astype(jnp.float32)
  return {
    "rtd_loss": (bce * weights).sum(),
    "rtd_correct": (hit * weights).sum(),
    "rtd_count": weights.sum(),
    "rtd_replaced": (replaced * weights).sum(),
    "rtd_replaced_correct": (said_replaced * replaced * weights).sum(),
  }


@dataclasses.dataclass(frozen=True)
class ReplacedTokenDetection:
  """The objective of `electra.ElectraForReplacedTokenDetection` (the module docstring)."""

  model: nn.Module
  vocab_size: int | None = None  # the tokenizer's pieces; the generator samples no others
  sum_keys = SUM_KEYS

  @property
  def weight(self) -> float:
    return self.model.config.discriminator_weight

  def sums(self, params, batch, rng=None, deterministic=False):
    if rng is None:
      dropout_rng, sample_key = None, jax.random.key(EVAL_SAMPLE_SEED)
      # The same samples whichever threefry the caller draws with (a training loop on one
      # CPU uses the original): `bert-jax evaluate` repeats the run's eval lines.
      with jax.threefry_partitionable(True):
        return self._sums(params, batch, dropout_rng, sample_key, deterministic)
    dropout_rng, sample_key = jax.random.split(rng)
    return self._sums(params, batch, dropout_rng, sample_key, deterministic)

  def _sums(self, params, batch, dropout_rng, sample_key, deterministic):
    mlm_logits, rtd_logits, replaced = self.model.apply(
      {"params": params},
      batch["input_ids"],
      batch["token_type_ids"],
      batch["attention_mask"],
      batch["masked_lm_positions"],
      batch["masked_lm_ids"],
      batch["masked_lm_weights"],
      step_lib.position_ids(self.model, batch),
      deterministic=deterministic,
      sample_key=sample_key,
      vocab_size=self.vocab_size,
      rngs=None if dropout_rng is None else {"dropout": dropout_rng},
      method="replaced_token_detection",
    )
    return {
      **step_lib.mlm_sums(mlm_logits, batch),
      **rtd_sums(rtd_logits, replaced, token_weights(batch)),
    }

  def totals(self, batch):
    """The masked tokens and the real tokens of the whole batch."""
    return {
      "mlm": step_lib.mlm_total(batch),
      "rtd": jnp.maximum(token_weights(batch).sum(), 1.0),
    }

  def loss(self, sums, totals):
    return sums["mlm_loss"] / totals["mlm"] + self.weight * sums["rtd_loss"] / totals["rtd"]

  def summarize(self, sums):
    """Means: the loss as `loss` weighs it, the generator's MLM loss and accuracy, the
    discriminator's loss and accuracy over real tokens, its recall of the replaced ones,
    and the share of tokens replaced.
    """
    mlm = step_lib.mlm_means(sums)
    count = jnp.maximum(sums["rtd_count"], 1.0)
    rtd_loss = sums["rtd_loss"] / count
    return {
      "loss": mlm["mlm_loss"] + self.weight * rtd_loss,
      **mlm,
      "rtd_loss": rtd_loss,
      "rtd_accuracy": sums["rtd_correct"] / count,
      "rtd_recall": sums["rtd_replaced_correct"] / jnp.maximum(sums["rtd_replaced"], 1.0),
      "rtd_replaced": sums["rtd_replaced"] / count,
    }
