"""Optimizers (optax) and learning-rate schedules; the defaults are the original BERT's.

`config.train.optimizer`: AdamW (default; b1 0.9, b2 0.999, eps 1e-6) or LAMB (ALBERT's),
with weight decay 0.01 on every weight matrix and embedding but none on LayerNorm
parameters or biases; global-norm clipping at 1.0 (`config.train.clip_norm`, 0: none).
`config.train.decay`: linear warmup, then linear decay to zero (default), cosine, constant,
or warmup-stable-decay (`wsd`). (optax's Adam applies bias correction; the original TF1
optimizer did not, which only matters for the first few hundred warmup steps.)
"""

import jax
import jax.numpy as jnp
import optax

from bert_jax.errors import UserError

NO_DECAY = ("bias", "scale")  # flax names: Dense/LayerNorm biases, LayerNorm scales


def decay_mask(params):
  """True for parameters that take weight decay: kernels and embedding tables."""

  def keep(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return names[-1] not in NO_DECAY

  return jax.tree_util.tree_map_with_path(keep, params)


def learning_rate_schedule(train, steps: int, warmup: int):
  """Linear warmup to `train.learning_rate` over `warmup` steps, then `train.decay` over the
  rest of the `steps`.
  """
  peak = train.learning_rate
  if warmup > steps:
    raise UserError(f"config.train.warmup_steps={warmup} exceeds config.train.steps={steps}")
  rest = max(steps - warmup, 1)
  if train.decay == "linear":
    after = optax.linear_schedule(peak, 0.0, rest)
  elif train.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, rest)
  elif train.decay == "constant":
    after = optax.constant_schedule(peak)
  elif train.decay == "wsd":
    after = _stable_then_sqrt_decay(peak, rest, train.decay_fraction)
  else:
    raise UserError(
      f"config.train.decay={train.decay!r} is not one of linear, cosine, constant, wsd"
    )
  warm = optax.linear_schedule(0.0, peak, warmup)
  return optax.join_schedules([warm, after], [warmup])


def _stable_then_sqrt_decay(peak, steps, fraction):
  """Warmup-stable-decay's tail (ModernBERT's trapezoid): `peak` for the first steps, then
  1 - sqrt decay to zero over the last `fraction` of `steps`.
  """
  if not 0 < fraction <= 1:
    raise UserError(f"config.train.decay_fraction={fraction} must be in (0, 1]")
  decay = max(int(round(fraction * steps)), 1)

  def tail(step):
    return peak * (1.0 - jnp.sqrt(jnp.minimum(step, decay) / decay))

  return optax.join_schedules([optax.constant_schedule(peak), tail], [steps - decay])


def make_optimizer(train, *, steps: int | None = None, warmup_steps: int | None = None):
  """Clipping + AdamW (or LAMB) with the schedule and the weight-decay mask.

  Args:
    train: the config.train section.
    steps, warmup_steps: the run's steps and warmup; None: train.steps, train.warmup_steps.

  Returns:
    (optax transformation, learning-rate schedule).
  """
  schedule = learning_rate_schedule(
    train,
    train.steps if steps is None else steps,
    train.warmup_steps if warmup_steps is None else warmup_steps,
  )
  optimizers = {"adamw": optax.adamw, "lamb": optax.lamb}
  if train.optimizer not in optimizers:
    raise UserError(f"config.train.optimizer={train.optimizer!r} is not one of adamw, lamb")
  opt = optimizers[train.optimizer](
    schedule,
    b1=train.b1,
    b2=train.b2,
    eps=train.eps,
    weight_decay=train.weight_decay,
    mask=decay_mask,
  )
  clip = optax.clip_by_global_norm(train.clip_norm) if train.clip_norm else optax.identity()
  return optax.chain(clip, opt), schedule


def freeze(tx, frozen):
  """`tx` for every parameter except the top-level subtrees named in `frozen` (e.g. "bert":
  train only the head), whose updates are zero.
  """

  def labels(params):
    return {k: "frozen" if k in frozen else "trained" for k in params}

  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
