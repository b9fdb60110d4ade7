"""The distillation objective: a student classifier learns a teacher's softened
probabilities (Hinton et al. 2015) and, where a row has one, its hard label.

For a row with teacher logits `t`, student logits `s`, temperature `T` and weight `alpha`:

    soft = T^2 * KL(softmax(t / T) || softmax(s / T))
    hard = cross-entropy(s, label)
    loss = alpha * soft + (1 - alpha) * hard       (a labelled row)
    loss = soft                                    (a row without a label: label -1)

The T^2 keeps the soft gradients' scale independent of T. The batch loss is the mean over
its rows. The teacher's logits come with the batch ("teacher_logits", computed ahead of
time by `train.distill`), so the shared train step, gradient accumulation and exact resume
apply unchanged, as for `objective.FineTuning`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.finetune import objective as task_objective

UNLABELED = -1  # the label of a row the teacher alone labels


def soft_loss(student_logits, teacher_logits, temperature: float) -> jnp.ndarray:
  """(rows,) T^2 * KL(teacher_T || student_T) of (rows, labels) logits, in float32."""
  t = jnp.float32(temperature)
  teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
  student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  return (jnp.exp(teacher) * (teacher - student)).sum(-1) * t * t


def row_losses(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
  """(loss, soft, hard, labelled): per-row (rows,) float32 arrays of the module docstring's
  loss; `labels` (rows,) ints, `UNLABELED` where a row has none (its hard loss is 0).
  """
  soft = soft_loss(student_logits, teacher_logits, temperature)
  labelled = (labels != UNLABELED).astype(jnp.float32)
  hard = optax.softmax_cross_entropy_with_integer_labels(
    student_logits.astype(jnp.float32), jnp.maximum(labels, 0)
  )
  hard = hard * labelled
  loss = jnp.where(labelled > 0, alpha * soft + (1 - alpha) * hard, soft)
  return loss, soft, hard, labelled


@dataclasses.dataclass(frozen=True)
class Distillation:
  """The objective of a student `tasks.ForTask` classifier against a batch's teacher logits.

  Sums (for gradient accumulation and metrics): the loss, its soft and hard parts, the
  labelled rows and how many of them the student gets right, and how often its top label
  is the teacher's. Without labelled rows (`labelled` False: the teacher labels every
  row) there is no accuracy or hard loss to report.
  """

  model: nn.Module
  temperature: float
  alpha: float
  labelled: bool = True
  sum_keys = ("loss", "soft", "hard", "correct", "labelled", "agree", "count")

  def sums(self, params, batch, rng=None, deterministic=False):
    logits = task_objective.logits_of(self.model, params, batch, deterministic, rng)
    teacher = batch["teacher_logits"]
    weights = batch.get("weight", jnp.ones(logits.shape[0], jnp.float32))
    loss, soft, hard, labelled = row_losses(
      logits, teacher, batch["labels"], temperature=self.temperature, alpha=self.alpha
    )
    predicted = logits.argmax(-1)
    hit = (predicted == batch["labels"]).astype(jnp.float32) * labelled
    agree = (predicted == teacher.argmax(-1)).astype(jnp.float32)
    return {
      "loss": (loss * weights).sum(),
      "soft": (soft * weights).sum(),
      "hard": (hard * weights).sum(),
      "correct": (hit * weights).sum(),
      "labelled": (labelled * weights).sum(),
      "agree": (agree * weights).sum(),
      "count": weights.sum(),
    }

  def totals(self, batch):
    return {"count": jnp.float32(batch["input_ids"].shape[0])}

  def loss(self, sums, totals):
    return sums["loss"] / totals["count"]

  def summarize(self, sums):
    count = jnp.maximum(sums["count"], 1.0)
    labelled = jnp.maximum(sums["labelled"], 1.0)
    metrics = {
      "loss": sums["loss"] / count,
      "soft_loss": sums["soft"] / count,
      "teacher_agreement": sums["agree"] / count,
    }
    if self.labelled:
      metrics["hard_loss"] = sums["hard"] / labelled
      metrics["accuracy"] = sums["correct"] / labelled
    return metrics
