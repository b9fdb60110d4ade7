"""The training loop that every job shares: sharded state, the jit step, metrics, evals and
checkpoints. A job (`train.pretrain`, `train.finetune`) builds a `Job` and calls `train`.

Load order for the train state: resume from the workdir's latest checkpoint > parameters
from `config.init_from` (the job's `init_params`) > a fresh initialisation from
`config.seed`. Resuming restores the data position (the step: batches are a pure function
of it) and the dropout RNG (folded from the seed and the step), so the rest of the run is
identical to an uninterrupted one. An unreadable latest checkpoint is set aside (one line)
and the one before is resumed.

Stops: SIGTERM (and Ctrl-C on one process) saves a checkpoint at the next step boundary,
waits for it to commit and raises `Preempted` (the CLI exits 75); under jax.distributed
every process stops at the step they agreed on. A NaN or inf loss or parameters raise
`NonFiniteLoss` before anything of them is saved. The workdir is locked for the run
(`bert_jax.lock`): a second run on it is refused. The train step, the finiteness check
and the job's eval programs compile on a background thread while the state is restored
(`precompile`).
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import lock as lock_lib
from bert_jax import multihost, sharding, storage
from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax.errors import NonFiniteLoss, Preempted, UserError
from bert_jax.train import metrics as metrics_lib
from bert_jax.train import precompile, xla_options
from bert_jax.train import step as step_lib
from bert_jax.train.metrics import log

# Steps dispatched ahead of the last finished one: enough to hide dispatch behind the device,
# few enough that the progress bar moves with the steps instead of jumping at each sync.
_STEPS_IN_FLIGHT = 2
# Test hooks. Seconds to sleep after each step, so a test can signal or kill a run mid-way:
_STEP_SLEEP = float(os.environ.get("BERT_JAX_DEBUG_STEP_SLEEP", "0"))
# The step whose parameters and loss become NaN, as if the run diverged there (0: none):
_NAN_AT_STEP = int(os.environ.get("BERT_JAX_DEBUG_NAN_AT_STEP", "0"))


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
    init_params: (abstract params, fresh) -> the starting params, or None. `fresh(select)`
      is `select(params)` of a fresh initialisation, and computes only that part.
    progress_keys: train metrics shown on the progress bar.
    data_position: step -> the data position saved with a checkpoint, or None.
    best_metric: keep the parameters of the best eval by this metric (higher is better)
      in WORKDIR/best/, or None.
    flops_per_seq, peak_flops: model FLOPs of one training row (`flops.flops_per_seq`) and
      the peak FLOP/s of the run's devices (`flops.peak_flops`); both set, the train
      records have `mfu`.
    omit_metrics: metrics left out of the records (an MLM-only run's `nsp_*`).
    example_batch: () -> one local batch like those of `batches` (numpy), or None. Its
      keys, dtypes and trailing shapes let the train step compile while the state is
      restored (`precompile`); without it the step compiles at its first call.
    eval_programs: (abstract params, mesh) -> [(jitted function, *abstract arguments)]:
      the programs `evaluate` runs, compiled ahead with the train step; or None.
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
  flops_per_seq: float | None = None
  peak_flops: float | None = None
  omit_metrics: tuple = ()
  example_batch: Callable[[], dict] | None = None
  eval_programs: Callable | None = None


def train(config, workdir, job):
  """The loop both jobs share: sharded state (resumed, or initialised), jit steps,
  metrics, evals, checkpoints, and the best parameters when `job.best_metric` is set.

  Raises:
    UserError: the workdir is in use by another run, or holds another model's checkpoint.
    NonFiniteLoss: the loss became NaN or inf (nothing after the last good checkpoint is
      saved).
    Preempted: SIGTERM (or Ctrl-C on one process) stopped the run after a checkpoint.
  """
  with lock_lib.held(workdir), _StopSignals(handle_sigterm=not config.get("distributed")) as stop:
    _train(config, workdir, job, stop)


def _train(config, workdir, job, stop):
  mesh = sharding.make_mesh(config.mesh)
  if mesh.size < jax.device_count():
    log(
      f"mesh: {dict(mesh.shape)} uses {mesh.size} of the {jax.device_count()} devices (set "
      f"one of config.mesh.data, fsdp, tensor to -1 to use them all)"
    )
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
  abstract = sharding.abstract_like(create, state_sh)  # restore targets, already sharded
  log(_model_line(job.model, abstract.params))
  programs = _Programs(
    train_step=compile_train_step(
      job.objective, job.tx, job.schedule, config.train.accum_steps, state_sh, mesh
    ),
    all_finite=jax.jit(
      _all_finite, out_shardings=sharding.replicated(mesh), compiler_options=_cheap_compile()
    ),
    dropout_rng=jax.random.fold_in(jax.random.key(config.seed), 1),
    mesh=mesh,
    rules=rules,
  )
  with _closing(checkpoints), precompile.Precompiler(programs.tracing) as ahead:
    latest = checkpoints.latest_step()
    first = []  # what the first step waits for: the train step
    if latest is None or latest < job.steps:  # else nothing to do: nothing to compile
      first = _compile_ahead(ahead, job, programs, abstract)
    resumed = _resume(checkpoints, abstract, job, workdir)
    if resumed:
      start, params, opt_state = resumed
      step0 = jax.device_put(jnp.int32(start), state_sh.step)
      state = step_lib.TrainState(step=step0, params=params, opt_state=opt_state)
      log(f"resumed from {checkpoints.directory}/{start}")
    else:
      start = 0
      state = _initial_state(create, state_sh, abstract, job)
    if start >= job.steps:  # config.json stays the one of the steps that were trained
      past = f", past the {job.steps} steps asked" if start > job.steps else f" of {job.steps}"
      log(
        f"nothing to do: the latest checkpoint is at step {start}{past}; raise "
        f"{length_key(config)} to train on, or give a new --workdir to train from the start "
        f"(on changed data, say)"
      )
      return
    if resumed:
      _log_changes(config, workdir)
    run_lib.write_config(config, workdir)
    best = _Best(workdir, job.best_metric) if job.best_metric else None
    ahead.wait(first)  # the others compile on during the first steps
    with _closing(best):
      step = _run_steps(
        config, workdir, job, stop, state, start, checkpoints, best, programs, ahead
      )
  log(f"done: {progress_lib.count(step, 'step')}; checkpoints in {checkpoints.directory}")
  if best and best.step is not None:
    log(
      f"best eval: {best.metric} {best.value:.4f} at step {best.step}, in "
      f"{storage.join(workdir, run_lib.BEST)} (what evaluate, predict and export-hf use)"
    )


def _log_changes(config, workdir):
  """One line naming the settings a resumed run changed since the run that wrote
  config.json (a longer run, another learning rate: the schedule continues from here).
  """
  old = run_lib.read_config(workdir)
  if jax.process_index() != 0 or old is None:
    return
  changes = run_lib.config_changes(old, json.loads(config.to_json_best_effort()))
  if changes:
    log(changes_line(changes))


def changes_line(changes: list[str]) -> str:
  """The line of a resumed run's changed settings: every one, the training's (learning
  rate, steps, accumulation) first.
  """
  ordered = sorted(changes, key=lambda change: not change.startswith("train."))  # stable
  return f"resuming with changed settings (config.json is rewritten): {'; '.join(ordered)}"


def _without(values, keys):
  return {k: v for k, v in values.items() if k not in keys}


def _initial_state(create, state_sh, abstract, job):
  """A fresh state; with `job.init_params`, the parameters come from it, and only the fresh
  ones it asks for are computed (a fine-tune skips initialising the encoder it restores).
  """
  if not job.init_params:
    return sharding.sharded_init(create, state_sh)

  def fresh(select):
    return sharding.sharded_init(create, state_sh, lambda state: select(state.params))

  params = job.init_params(abstract.params, fresh)
  opt_state = jax.jit(job.tx.init, out_shardings=state_sh.opt_state)(params)
  step = jax.device_put(jnp.int32(0), state_sh.step)
  return step_lib.TrainState(step=step, params=params, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class _Programs:
  """The loop's jitted programs, the dropout key the step takes, and the mesh and logical
  axis rules they run under.
  """

  train_step: Callable
  all_finite: Callable
  dropout_rng: jax.Array
  mesh: jax.sharding.Mesh
  rules: tuple

  def tracing(self):
    """The contexts the programs trace in: the mesh, the logical axis rules and the
    random bits' threefry flavour (JAX and Flax keep each per thread).
    """
    stack = contextlib.ExitStack()
    stack.enter_context(sharding.activate(self.mesh, self.rules))
    stack.enter_context(_cpu_threefry())
    return stack


def _compile_ahead(ahead, job, programs, abstract):
  """Queues the train step (when the job has an example batch), the finiteness check and
  the job's eval programs on `ahead`, a `precompile.Precompiler`; returns [the train
  step's future] (or []).
  """
  first = []
  if job.example_batch is not None:
    batch = precompile.batch_spec(
      job.example_batch(), job.batch_size, sharding.batch_sharding(programs.mesh)
    )
    first.append(ahead.submit(programs.train_step, abstract, batch, programs.dropout_rng))
  ahead.submit(programs.all_finite, abstract.params)
  for jitted, *args in (
    job.eval_programs(abstract.params, programs.mesh) if job.eval_programs else ()
  ):
    ahead.submit(jitted, *args)
  return first


def _run_steps(config, workdir, job, stop, state, start, checkpoints, best, programs, ahead):
  """Steps start+1 .. job.steps; returns the last step. Raises NonFiniteLoss, Preempted.
  The finiteness check and the evals first wait for `ahead` to finish compiling them.
  """
  train_step, all_finite, mesh = programs.train_step, programs.all_finite, programs.mesh
  writer = metrics_lib.MetricWriter(workdir, start)
  progress = metrics_lib.Progress(
    start, job.steps, job.batch_size, job.flops_per_seq, job.peak_flops
  )
  step = start
  losses = []  # (step, loss on device) not yet checked: fetched at log, eval and save steps

  def check_losses():
    values = jax.device_get([loss for _, loss in losses])
    for (s, _), value in zip(losses, values):
      if not math.isfinite(float(value)):
        raise _non_finite(f"the loss is {float(value)}", s, checkpoints, config)
    losses.clear()

  def evaluate(params):
    ahead.wait()
    values = _without(job.evaluate(params, mesh), job.omit_metrics)
    if best:
      best.update(step, params, values, job.meta)
      values[f"best_{job.best_metric}"] = best.value
    writer.write(step, "eval", values)
    progress.write(job.eval_line(step, values))

  every = config.checkpoint.get("every_steps") or job.eval_every or job.steps
  with programs.tracing(), _closing(writer), _closing(progress):
    if start == 0 and config.eval.at_start and job.evaluate:
      evaluate(state.params)
    for local_batch in job.batches(start):
      batch = sharding.global_batch(local_batch, mesh)
      state, step_metrics = train_step(state, batch, programs.dropout_rng)
      step += 1
      if step == start + 1:
        progress.start_timing(step)  # the first step warms up: time the steps after it
      if _STEP_SLEEP:
        time.sleep(_STEP_SLEEP)
      if step == _NAN_AT_STEP:
        state, step_metrics = _poison(state, step_metrics)
      losses.append((step, step_metrics["loss"]))
      if len(losses) > _STEPS_IN_FLIGHT:  # the bar and ETA follow the device, not dispatch
        losses[-1 - _STEPS_IN_FLIGHT][1].block_until_ready()
      last = step == job.steps
      # Every process calls this at every step: under jax.distributed they agree on it.
      preempted = (checkpoints.reached_preemption(step) or stop.signal is not None) and not last
      log_now = step % config.train.log_every_steps == 0
      periodic = step % every == 0 or last
      evaluating = job.evaluate and (last or job.eval_every and step % job.eval_every == 0)
      if log_now or periodic or evaluating or preempted:
        check_losses()
      if log_now or periodic:
        values = {
          k: float(v) for k, v in jax.device_get(_without(step_metrics, job.omit_metrics)).items()
        }
        values.update(progress.rates(step))  # seq_per_s, mfu (none at the first step)
        writer.write(step, "train", values)
        progress.update(step, {k: values[k] for k in job.progress_keys if k in values})
      else:
        progress.update(step)
      if evaluating or periodic or preempted:
        ahead.wait()  # the check's program, compiled in the background
        if not jax.device_get(all_finite(state.params)):
          raise _non_finite("the parameters are not finite", step, checkpoints, config)
      if periodic or preempted:  # first: an async save writes while the eval runs
        # `steps`: the run's plan, so that a command reading an unfinished run says so.
        meta = dict(job.meta, step=step, steps=job.steps, sequences_seen=step * job.batch_size)
        if job.data_position:
          meta["data_position"] = job.data_position(step)
        checkpoints.save(step, state, meta, preemption=not periodic)
      if evaluating:
        evaluate(state.params)
      if evaluating or periodic:
        progress.start_timing(step)  # the timing leaves out evals and saves
      if preempted:
        name = stop.signal or "SIGTERM"
        progress.write(f"{name}: saving the checkpoint of step {step}, then stopping")
        checkpoints.wait()
        raise Preempted(step, checkpoints.directory, name)
  return step


def _model_line(model, params) -> str:
  """`model: bert L12 H768 A12, 110M parameters` (the family and size trained)."""
  count = sum(x.size for x in jax.tree_util.tree_leaves(params))
  c = getattr(model, "config", None)
  shape = f"{c.arch} L{c.num_layers} H{c.hidden_size} A{c.num_heads}, " if c is not None else ""
  return f"model: {shape}{progress_lib.parameters(count)}"


def _resume(checkpoints, abstract, job, workdir):
  """(step, params, opt_state) of the latest readable checkpoint, or None when there is
  none. An unreadable step is set aside with one line and the one before is tried.
  """
  while (step := checkpoints.latest_step()) is not None:
    try:
      saved = checkpoints.meta(step)
      job.check_resume(saved)  # first: it names the kind of run (a task, a tokenizer)
      check_resume(saved, job.meta, workdir)
      params, opt_state = checkpoints.restore(step, abstract.params, abstract.opt_state)
      error = None
    except ckpt_lib.Unreadable as e:
      error = e
    reason = _first_error(error.reason if error else "")
    if not reason:
      return step, params, opt_state
    moved = checkpoints.set_aside(step)
    log(
      f"checkpoint {checkpoints.directory}/{step} is unreadable ({reason}); moved it to "
      f"{moved} and trying the one before"
    )
  return None


def _first_error(reason: str) -> str:
  """`reason` of this process, or the first one any process met (all must fall back
  together; a damaged file may be read by one process only).
  """
  if jax.process_count() == 1:
    return reason
  reasons = [r for r in multihost.gathered_text(reason) if r]
  return reasons[0] if reasons else ""


def _non_finite(what, step, checkpoints, config):
  """The error of a loss or parameters found not finite (never saved)."""
  warmup = "warmup_fraction" if "warmup_fraction" in config.train else "warmup_steps"
  latest = checkpoints.latest_step()
  kept = (
    f"the last good checkpoint, step {latest} in {checkpoints.directory}, is kept"
    if latest is not None
    else "no checkpoint was saved"
  )
  return NonFiniteLoss(
    f"{what} at step {step}: stopped without saving it; {kept}; lower "
    f"config.train.learning_rate or lengthen config.train.{warmup}, or check the data"
  )


def _cpu_threefry():
  """JAX's original threefry (not partitionable) on a lone CPU device: there XLA:CPU draws
  ELECTRA's generator samples (a uniform per vocabulary entry at each masked position)
  several times faster with it, two 32-bit words a block (6x, measured on Flax's dropout bits
  before `model.dropout`). Anywhere else the partitionable bits keep the
  samples independent of how a batch is sharded. Dropout masks take their bits from
  `model.dropout`, the same under either (but for scanned layers' keys, which JAX splits
  differently under each).
  """
  if jax.device_count() == 1 and jax.default_backend() == "cpu":
    return jax.threefry_partitionable(False)
  return contextlib.nullcontext()


def _cheap_compile():
  """Compiler options for a small program run now and then (the finiteness check): on CPU,
  LLVM's level 0 compiles it in half the time (~1 s less for MiniLM); elsewhere the default.
  """
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def _all_finite(tree):
  """Whether every floating-point leaf of `tree` is free of NaN and inf."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _poison(state, step_metrics):
  """The BERT_JAX_DEBUG_NAN_AT_STEP hook: NaN parameters and loss, as a diverged step."""
  params = jax.tree.map(lambda x: x * jnp.nan, state.params)
  return state.replace(params=params), dict(step_metrics, loss=step_metrics["loss"] * jnp.nan)


@contextlib.contextmanager
def _closing(thing):
  """Closes `thing` (a checkpoint manager, a writer, a bar; None: nothing) at the end,
  except after a second Ctrl-C: that stops at once, without waiting for a save; nor after
  the connection to the workdir's bucket was lost, where each close would first wait out
  its own retries (a minute or more) only to fail the same way.
  """
  try:
    yield thing
  except KeyboardInterrupt:
    raise
  except BaseException as e:
    if thing is not None and not storage.connection_lost(e):
      thing.close()
    raise
  if thing is not None:
    thing.close()


class _StopSignals:
  """SIGTERM and Ctrl-C (SIGINT) on one process: the first sets `signal`, and the loop
  saves a checkpoint at the next step boundary and stops; a second Ctrl-C stops at once.

  Under jax.distributed SIGTERM is left to JAX's preemption notifier, which makes every
  process agree on the step (`Checkpoints.reached_preemption`); SIGINT then stops at once.
  """

  def __init__(self, handle_sigterm: bool):
    self.signal = None
    self._signals = [signal.SIGTERM, signal.SIGINT] if handle_sigterm else []
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # only there can Python
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      # Stopped (SIGTERM or Ctrl-C), the command is ending: another SIGTERM (spot shutdowns,
      # SLURM and `run --force` send more than one) has nothing to add, and the command's
      # handler (`cli`'s, which raises) would land it anywhere in the unwinding: a
      # traceback after the one line. Any other handler is restored as it was.
      stopping = s == signal.SIGTERM and self.signal and getattr(handler, "raises", False)
      signal.signal(s, signal.SIG_IGN if stopping else handler)

  def _handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      # The second Ctrl-C: do not wait for the save. The process ends by the signal itself,
      # as a terminal expects (status 130); an exception raised here could land in a
      # garbage-collection callback, which swallows it. An unfinished save is never resumed.
      sys.stderr.write(f"\n{SECOND_CTRL_C}\n")
      sys.stderr.flush()
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
    self.signal = self.signal or signal.Signals(signum).name


# What the second Ctrl-C says: the save the first one began is dropped, so the run goes on
# from an earlier checkpoint, or starts over where there is none.
SECOND_CTRL_C = (
  "interrupted before the save finished; run the same command again to resume from the "
  "last checkpoint (or to start over, if none was saved yet)"
)


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


def length_key(config) -> str:
  """The setting that says how long a run trains: config.train.steps, or for a fine-tuning
  run without them, config.train.epochs.
  """
  train = config.get("train", {})
  return (
    "config.train.steps" if train.get("steps") or "epochs" not in train else "config.train.epochs"
  )


class _Best:
  """The parameters of the best eval so far, in WORKDIR/best/ (params and meta only): the
  highest metric (the lowest for a loss), a tie going to the lower eval loss (a step-0 eval
  of the untrained model ties a trained one on accuracy more often than on loss).
  """

  def __init__(self, workdir, metric):
    self.metric = metric
    self._checkpoints = ckpt_lib.Checkpoints(
      storage.join(workdir, run_lib.BEST), keep=1, async_save=False
    )
    latest, best, reason = self._checkpoints.latest_step(), None, ""
    if latest is not None:
      try:
        best = self._checkpoints.meta(latest)["best"]
      except ckpt_lib.Unreadable as e:
        reason = e.reason
    if reason := _first_error(reason):  # its place is for the next best: set it aside
      moved = self._checkpoints.set_aside(latest)
      log(
        f"the best eval's checkpoint {self._checkpoints.directory}/{latest} is unreadable "
        f"({reason}); moved it to {moved}: the next eval starts {run_lib.BEST}/ again"
      )
      latest, best = None, None
    self.step = latest
    self.value = None if best is None else best["value"]
    self.loss = math.inf if best is None else best["metrics"].get("loss", math.inf)

  def update(self, step, params, values, meta):
    if self.metric not in values:
      raise UserError(
        f"config.eval.metric={self.metric!r} is not one of the eval metrics {', '.join(values)}"
      )
    value, loss = values[self.metric], values.get("loss", math.inf)
    sign = -1 if self.metric == "loss" or self.metric.endswith("_loss") else 1
    better = self.value is None or sign * value > sign * self.value
    if better or (value == self.value and loss < self.loss):
      self.value, self.loss, self.step = value, loss, step
      best = {"metric": self.metric, "value": value, "metrics": values}
      self._checkpoints.save_params(step, params, dict(meta, step=step, best=best))

  def close(self):
    self._checkpoints.close()


def compile_train_step(objective, tx, schedule, accum_steps, state_sh, mesh):
  """The jit-compiled train step with in/out shardings and the platform's XLA options
  (`xla_options`); the state is donated.
  """
  batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  platform = mesh.devices.flat[0].platform
  return jax.jit(
    functools.partial(
      step_lib.train_step, objective=objective, tx=tx, schedule=schedule, accum_steps=accum_steps
    ),
    in_shardings=(state_sh, batch_sh, repl),
    out_shardings=(state_sh, repl),
    donate_argnums=0,
    compiler_options=xla_options.step_options(platform),
  )
