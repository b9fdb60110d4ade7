"""The training loop that every job shares: sharded state, the jit step, metrics, evals and
checkpoints. A job (`train.pretrain`, `train.finetune`) builds a `Job` and calls `train`.

Load order for the train state: resume from the workdir's latest checkpoint > parameters
from `config.init_from` (the job's `init_params`) > a fresh initialisation from
`config.seed`. Resuming restores the data position (the step: batches are a pure function
of it) and the dropout RNG (folded from the seed and the step), so the rest of the run is
identical to an uninterrupted one.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax import sharding, storage
from bert_jax.errors import UserError
from bert_jax.train import metrics as metrics_lib
from bert_jax.train import step as step_lib
from bert_jax.train.metrics import log

# Test hook: seconds to sleep after each step, so a test can SIGKILL a run mid-way.
_STEP_SLEEP = float(os.environ.get("BERT_JAX_DEBUG_STEP_SLEEP", "0"))


@dataclasses.dataclass
class Job:
  """What differs between jobs (pretraining, fine-tuning); `train` runs any of them.

  Attributes:
    model, objective: the module and its `step` objective.
    tx, schedule: the optimizer and its learning-rate schedule.
    steps, batch_size: optimizer steps and the global batch.
    batches: start step -> this process's batches for steps start+1 .. steps.
    meta: saved in every checkpoint (with the step).
    check_resume: vets the meta of the checkpoint a run resumes from (raises UserError),
      beyond the model and batch size that `train` checks itself.
    evaluate: (params, mesh) -> eval metrics (floats), or None: no evaluation.
    eval_line: (step, metrics) -> the line printed under the progress bar.
    eval_every: evaluate every this many steps (and at the last step).
    init_params: (abstract params, fresh params) -> the starting params, or None.
    progress_keys: train metrics shown on the progress bar.
    data_position: step -> the data position saved with a checkpoint, or None.
    best_metric: keep the parameters of the best eval by this metric (higher is better)
      in WORKDIR/best/, or None.
  """

  model: nn.Module
  objective: object
  tx: optax.GradientTransformation
  schedule: Callable
  steps: int
  batch_size: int
  batches: Callable[[int], Iterator[dict]]
  meta: dict
  check_resume: Callable[[dict], None]
  evaluate: Callable | None = None
  eval_line: Callable[[int, dict], str] = lambda step, values: f"eval step {step}: {values}"
  eval_every: int = 0
  init_params: Callable | None = None
  progress_keys: tuple = ("loss",)
  data_position: Callable | None = None
  best_metric: str | None = None


def train(config, workdir, job):
  """The loop both jobs share: sharded state (resumed, or initialised), jit steps,
  metrics, evals, checkpoints, and the best parameters when `job.best_metric` is set.
  """
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.mesh)
  sharding.check_batch_divides(job.batch_size, config.train.accum_steps, mesh)
  create = functools.partial(
    step_lib.create_state, job.model, job.tx, jax.random.fold_in(jax.random.key(config.seed), 0)
  )
  state_sh = sharding.shardings_of(create, mesh, rules)

  checkpoints = ckpt_lib.Checkpoints(
    storage.join(workdir, run_lib.CHECKPOINTS),
    keep=config.checkpoint.keep,
    async_save=config.checkpoint.async_save,
  )
  best = _Best(workdir, job.best_metric) if job.best_metric else None
  start = checkpoints.latest_step()
  abstract = sharding.abstract_like(create, state_sh)  # restore targets, already sharded
  if start is not None:
    saved = checkpoints.meta(start)
    check_resume(saved, job.meta, workdir)
    job.check_resume(saved)
    params, opt_state = checkpoints.restore(start, abstract.params, abstract.opt_state)
    step0 = jax.device_put(jnp.int32(start), state_sh.step)
    state = step_lib.TrainState(step=step0, params=params, opt_state=opt_state)
    log(f"resumed from {checkpoints.directory}/{start}")
  else:
    start = 0
    state = sharding.sharded_init(create, state_sh)
    if job.init_params:
      state = state.replace(params=job.init_params(abstract.params, state.params))
  run_lib.write_config(config, workdir)
  if start >= job.steps:
    log(f"nothing to do: the latest checkpoint is at step {start} of {job.steps}")
    checkpoints.close()
    return

  train_step = compile_train_step(
    job.objective, job.tx, job.schedule, config.train.accum_steps, state_sh, mesh
  )
  dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  writer = metrics_lib.MetricWriter(workdir, start)
  progress = metrics_lib.Progress(start, job.steps, job.batch_size)
  step = start

  def evaluate(params):
    values = job.evaluate(params, mesh)
    if best:
      best.update(step, params, values, job.meta)
      values[f"best_{job.best_metric}"] = best.value
    writer.write(step, "eval", values)
    progress.write(job.eval_line(step, values))

  every = config.checkpoint.get("every_steps") or job.eval_every or job.steps
  with sharding.activate(mesh, rules):
    if start == 0 and config.eval.at_start and job.evaluate:
      evaluate(state.params)
    for local_batch in job.batches(start):
      state, step_metrics = train_step(state, sharding.global_batch(local_batch, mesh), dropout_rng)
      step += 1
      if _STEP_SLEEP:
        time.sleep(_STEP_SLEEP)
      last = step == job.steps
      saving = step % every == 0 or last
      if step % config.train.log_every_steps == 0 or saving:
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        values["seq_per_s"] = progress.throughput(step)
        writer.write(step, "train", values)
        progress.update(step, {k: values[k] for k in job.progress_keys})
      else:
        progress.update(step)
      if job.evaluate and (last or job.eval_every and step % job.eval_every == 0):
        evaluate(state.params)
      if saving:
        meta = dict(job.meta, step=step, sequences_seen=step * job.batch_size)
        if job.data_position:
          meta["data_position"] = job.data_position(step)
        checkpoints.save(step, state, meta)
  progress.close()
  writer.close()
  checkpoints.close()
  if best:
    best.close()
  log(f"done: {step} steps; checkpoints in {checkpoints.directory}")


def check_resume(saved: dict, meta: dict, workdir: str) -> None:
  """Refuses to resume a checkpoint of another model, or at another global batch size.

  Args:
    saved: the meta of the checkpoint in the workdir.
    meta: the meta this run would save (`Job.meta`: its model dict and batch size).
    workdir: named in the error.
  """
  config_lib.check_same_model(saved["model"], meta["model"], workdir)
  batch = meta["batch_size"]
  if saved.get("batch_size", batch) != batch:
    raise UserError(
      f"{workdir} holds a checkpoint trained with config.train.batch_size="
      f"{saved['batch_size']}, this run asks for {batch}; resume with "
      f"--config.train.batch_size={saved['batch_size']} or use a new --workdir"
    )


class _Best:
  """The parameters of the best eval so far, in WORKDIR/best/ (params and meta only)."""

  def __init__(self, workdir, metric):
    self.metric = metric
    self._checkpoints = ckpt_lib.Checkpoints(
      storage.join(workdir, run_lib.BEST), keep=1, async_save=False
    )
    latest = self._checkpoints.latest_step()
    self.value = None if latest is None else self._checkpoints.meta(latest)["best"]["value"]

  def update(self, step, params, values, meta):
    if self.metric not in values:
      raise UserError(
        f"config.eval.metric={self.metric!r} is not one of the eval metrics {', '.join(values)}"
      )
    value = values[self.metric]
    if self.value is None or value > self.value:
      self.value = value
      best = {"metric": self.metric, "value": value, "metrics": values}
      self._checkpoints.save_params(step, params, dict(meta, step=step, best=best))

  def close(self):
    self._checkpoints.close()


def compile_train_step(objective, tx, schedule, accum_steps, state_sh, mesh):
  """The jit-compiled train step with in/out shardings; the state is donated."""
  batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  return jax.jit(
    functools.partial(
      step_lib.train_step, objective=objective, tx=tx, schedule=schedule, accum_steps=accum_steps
    ),
    in_shardings=(state_sh, batch_sh, repl),
    out_shardings=(state_sh, repl),
    donate_argnums=0,
  )
