"""Train state and the pure step functions, for any objective.

`train_step(state, batch, rng, *, objective, tx, schedule, accum_steps)` is pure; the loop
binds the keyword arguments with functools.partial and compiles it with jax.jit in/out
shardings and a donated state. Dropout randomness is `fold_in(rng, state.step)`, so a
resumed run draws exactly what an uninterrupted one would.

An objective (`Pretraining` here, `bert_jax.finetune.objective.FineTuning` for the task heads) says
how a batch turns into summed losses and counts (`sums`), which whole-batch counts divide
them (`totals`, so gradient accumulation gives the full-batch gradient exactly), the loss
to differentiate, and the metrics reported from the sums (`summarize`).
"""

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from bert_jax.model import axes, registry

SUM_KEYS = ("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct", "nsp_count")


@flax.struct.dataclass
class TrainState:
  """What a train step updates: the step, the parameters and the optimizer state."""

  step: jax.Array
  params: dict
  opt_state: optax.OptState


def create_state(model, tx, rng):
  """A fresh state (boxed params: run it under `sharding.sharded_init`)."""
  params = model.init({"params": rng}, *registry.dummy_inputs(model))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def mlm_sums(mlm_logits, batch):
  """The masked-LM loss and hits summed over the real predictions, and their count."""
  weights = batch["masked_lm_weights"]
  mlm_ce = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, batch["masked_lm_ids"])
  mlm_hit = (mlm_logits.argmax(-1) == batch["masked_lm_ids"]).astype(jnp.float32)
  return {
    "mlm_loss": (mlm_ce * weights).sum(),
    "mlm_correct": (mlm_hit * weights).sum(),
    "mlm_count": weights.sum(),
  }


def loss_sums(mlm_logits, nsp_logits, batch):
  """Summed (not averaged) losses and hit counts, so micro-batches add up exactly."""
  # Label -1: no sentence-pair task for this row (objective "mlm").
  nsp_weights = (batch["next_sentence_labels"] >= 0).astype(jnp.float32)
  labels = jnp.maximum(batch["next_sentence_labels"], 0)
  nsp_ce = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, labels)
  nsp_hit = (nsp_logits.argmax(-1) == labels).astype(jnp.float32)
  return {
    **mlm_sums(mlm_logits, batch),
    "nsp_loss": (nsp_ce * nsp_weights).sum(),
    "nsp_correct": (nsp_hit * nsp_weights).sum(),
    "nsp_count": nsp_weights.sum(),
  }


def mlm_means(sums):
  """The mean masked-LM loss and accuracy over the predictions of `sums`."""
  count = jnp.maximum(sums["mlm_count"], 1.0)
  return {"mlm_loss": sums["mlm_loss"] / count, "mlm_accuracy": sums["mlm_correct"] / count}


def summarize(sums):
  """Means from sums: loss = mean MLM loss over masked tokens + mean NSP (or SOP) loss
  over the rows that have a sentence-pair label (none with objective "mlm").
  """
  mlm = mlm_means(sums)
  nsp_count = jnp.maximum(sums["nsp_count"], 1.0)
  nsp_loss = sums["nsp_loss"] / nsp_count
  return {
    "loss": mlm["mlm_loss"] + nsp_loss,
    **mlm,
    "nsp_loss": nsp_loss,
    "nsp_accuracy": sums["nsp_correct"] / nsp_count,
  }


def mlm_total(batch):
  """The masked tokens of the whole batch (at least 1), which divide the MLM loss sum."""
  return jnp.maximum(batch["masked_lm_weights"].sum(), 1.0)


def position_ids(model, batch):
  """The batch's position ids when the model packs rows, else None."""
  # Rows of one example (no data.packing) hold positions 0..n-1 then padding, which attends
  # to nothing that counts: the model's 0..length-1 default (a slice of the position table,
  # `lookup.Lookup.rows`) gives the same loss without a lookup.
  return batch.get("position_ids") if model.config.packed_rows else None


def _forward(model, params, batch, deterministic, rng=None):
  return model.apply(
    {"params": params},
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    batch["masked_lm_positions"],
    position_ids(model, batch),
    deterministic=deterministic,
    rngs=None if rng is None else {"dropout": rng},
  )


@dataclasses.dataclass(frozen=True)
class Pretraining:
  """The MLM + NSP (or SOP) objective of `pretraining.BertForPreTraining`."""

  model: nn.Module
  sum_keys = SUM_KEYS

  def sums(self, params, batch, rng=None, deterministic=False):
    return loss_sums(*_forward(self.model, params, batch, deterministic, rng), batch)

  def totals(self, batch):
    """The masked tokens and the rows with a sentence-pair label of the whole batch."""
    return {
      "mlm": mlm_total(batch),
      "nsp": jnp.maximum((batch["next_sentence_labels"] >= 0).sum().astype(jnp.float32), 1.0),
    }

  def loss(self, sums, totals):
    return sums["mlm_loss"] / totals["mlm"] + sums["nsp_loss"] / totals["nsp"]

  def summarize(self, sums):
    return summarize(sums)


def _split_micro(batch, accum_steps):
  """(batch, ...) -> (accum, batch / accum, ...), micro-batch i = rows i, i+accum, ...

  Row r of a micro-batch comes from contiguous rows of the global batch, so each device
  keeps its shard of the batch axis and the reshape moves no data.
  """

  def split(x):
    x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree_util.tree_map(split, batch)


def gradients(params, batch, rng, *, objective, accum_steps=1, deterministic=False):
  """Gradient of the full-batch loss, accumulated over `accum_steps` micro-batches.

  Each micro-batch's summed loss is divided by the *whole* batch's count (e.g. masked tokens,
  `objective.totals`), so the sum over micro-batches is exactly the full-batch gradient even
  when micro-batches hold different numbers of masks or labelled rows.
  """
  totals = objective.totals(batch)

  def loss_fn(p, micro, micro_rng):
    sums = objective.sums(p, micro, micro_rng, deterministic)
    return objective.loss(sums, totals), sums

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if accum_steps == 1:
    return grad_fn(params, batch, rng)

  def body(carry, xs):
    grads, sums = carry
    micro, i = xs
    micro = jax.tree_util.tree_map(
      lambda x: nn.with_logical_constraint(x, (axes.ACT_BATCH,) + (None,) * (x.ndim - 1)), micro
    )
    g, s = grad_fn(params, micro, jax.random.fold_in(rng, i))
    return (
      jax.tree_util.tree_map(jnp.add, grads, g),
      jax.tree_util.tree_map(jnp.add, sums, s),
    ), None

  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  zero_sums = {k: jnp.float32(0) for k in objective.sum_keys}
  (grads, sums), _ = jax.lax.scan(
    body, (zeros, zero_sums), (_split_micro(batch, accum_steps), jnp.arange(accum_steps))
  )
  return grads, sums


def train_step(state, batch, rng, *, objective, tx, schedule, accum_steps=1):
  """One optimizer step. Returns (new state, metrics of this step)."""
  dropout_rng = jax.random.fold_in(rng, state.step)
  grads, sums = gradients(
    state.params, batch, dropout_rng, objective=objective, accum_steps=accum_steps
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = objective.summarize(sums)
  metrics["learning_rate"] = schedule(state.step)
  metrics["grad_norm"] = optax.tree.norm(grads)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, objective):
  """Loss sums on a batch without dropout (the loop adds them over the eval set)."""
  return objective.sums(params, batch, deterministic=True)
