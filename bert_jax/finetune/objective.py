"""The fine-tuning objective of `tasks.ForTask`: cross-entropy (classification, tokens,
QA start + end) or squared error (regression), as summed losses and counts like
`step.Pretraining`, so the shared train step and gradient accumulation apply unchanged.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import optax

from bert_jax.finetune.encoding import IGNORE


def logits_of(
  model: nn.Module, params, batch: dict, deterministic: bool = True, rng=None
) -> jnp.ndarray:
  """The task model's float32 logits for a batch (dropout from `rng` when training)."""
  rngs = None if rng is None else {"dropout": rng}
  return model.apply(
    {"params": params},
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    deterministic=deterministic,
    rngs=rngs,
  )


def task_sums(task: str, logits: jnp.ndarray, batch: dict) -> dict[str, jnp.ndarray]:
  """{"loss", "correct", "count"} summed over the batch's labelled rows (or tokens)."""
  if task == "tokens":
    labels = batch["labels"]  # (batch, length), IGNORE off the first sub-tokens
    weights = (labels != IGNORE).astype(jnp.float32)
    safe = jnp.maximum(labels, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    hit = (logits.argmax(-1) == safe).astype(jnp.float32)
    return {"loss": (ce * weights).sum(), "correct": (hit * weights).sum(), "count": weights.sum()}
  weights = batch.get("weight", jnp.ones(logits.shape[0], jnp.float32))  # (batch,)
  if task == "regression":
    error = (logits[:, 0] - batch["labels"]) ** 2
    return {"loss": (error * weights).sum(), "correct": jnp.float32(0), "count": weights.sum()}
  if task == "qa":  # logits (batch, length, 2): mean of the start and end cross-entropies
    start, end = logits[..., 0], logits[..., 1]
    ce = (
      optax.softmax_cross_entropy_with_integer_labels(start, batch["start_positions"])
      + optax.softmax_cross_entropy_with_integer_labels(end, batch["end_positions"])
    ) / 2
    hit = (
      (start.argmax(-1) == batch["start_positions"]) & (end.argmax(-1) == batch["end_positions"])
    ).astype(jnp.float32)
    return {"loss": (ce * weights).sum(), "correct": (hit * weights).sum(), "count": weights.sum()}
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
  hit = (logits.argmax(-1) == batch["labels"]).astype(jnp.float32)
  return {"loss": (ce * weights).sum(), "correct": (hit * weights).sum(), "count": weights.sum()}


@dataclasses.dataclass(frozen=True)
class FineTuning:
  """Mean loss over the labelled rows (tokens task: labelled tokens) of the batch."""

  model: nn.Module
  task: str
  sum_keys = ("loss", "correct", "count")

  def sums(self, params, batch, rng=None, deterministic=False):
    return task_sums(self.task, logits_of(self.model, params, batch, deterministic, rng), batch)

  def totals(self, batch):
    if self.task == "tokens":
      count = (batch["labels"] != IGNORE).sum().astype(jnp.float32)
    else:
      count = jnp.float32(batch["input_ids"].shape[0])
    return {"count": jnp.maximum(count, 1.0)}

  def loss(self, sums, totals):
    return sums["loss"] / totals["count"]

  def summarize(self, sums):
    count = jnp.maximum(sums["count"], 1.0)
    if self.task == "regression":
      return {"loss": sums["loss"] / count}
    return {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}
