"""The training loop, one for pretraining and fine-tuning: sharded state, jit step,
metrics, evals and checkpoints (`train`), and the pretraining job that feeds it (`pretrain`;
fine-tuning's is `finetune.finetune`).

Load order for the train state: resume from the workdir's latest checkpoint > parameters
from `config.init_from` > a fresh initialisation from `config.seed`. Resuming restores the
data position (the step: batches are a pure function of it) and the dropout RNG (folded
from the seed and the step), so the rest of the run is identical to an uninterrupted one.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import inference, sharding
from bert_jax.data import pipeline, prepare
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.model import heads
from bert_jax.train import metrics as metrics_lib
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib

# Test hook: seconds to sleep after each step, so a test can SIGKILL a run mid-way.
_STEP_SLEEP = float(os.environ.get("BERT_JAX_DEBUG_STEP_SLEEP", "0"))


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def _prepare_data(config, workdir):
  """Prepared shards of `config.data.prepared_dir` (default WORKDIR/data), made if missing:
  process 0 first, then the others (which reuse them on a shared disk).
  """
  data_dir = prepare.data_dir_of(config, workdir)
  run = functools.partial(
    prepare.prepare, config, data_dir, log=log, progress=jax.process_index() == 0
  )
  if jax.process_index() == 0:
    manifest = run()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("prepare_data")
  if jax.process_index() != 0:
    manifest = run()
  _check_tokenizer(config, manifest, data_dir)
  return data_dir, manifest


def _check_tokenizer(config, manifest, data_dir):
  """Refuses shards made with another tokenizer than config.tokenizer.path."""
  if config.tokenizer.path:
    wanted = tokenizer_lib.load(config.tokenizer.path).fingerprint
    if wanted != manifest["tokenizer_fingerprint"]:
      raise UserError(
        f"the shards in {data_dir} were made with another tokenizer than "
        f"config.tokenizer.path={config.tokenizer.path!r}; prepare them again "
        f"with it (another config.data.prepared_dir) or fix the path"
      )


def initialize_distributed():
  """jax.distributed.initialize(): cluster auto-detection (Cloud TPU, SLURM, MPI, k8s),
  or explicit JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (e.g. two
  processes on one machine).
  """
  env = os.environ
  if "JAX_NUM_PROCESSES" in env:
    jax.distributed.initialize(
      coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(env["JAX_NUM_PROCESSES"]),
      process_id=int(env["JAX_PROCESS_ID"]),
    )
  else:
    jax.distributed.initialize()


def _write_run_config(config, workdir):
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, "config.json"))


def _refuse_imported(workdir):
  """An `import-hf` workdir is a starting point (no optimizer state), not a run to resume."""
  meta = ckpt_lib.latest_meta(workdir)
  source = meta and meta.get("imported_from")
  if source:
    raise UserError(
      f"{workdir} holds a checkpoint imported from {source} (parameters only); "
      f"train from it with a new --workdir and --config.init_from={workdir}"
    )


def _open_init_from(config, manifest):
  """(checkpoints, step, meta) of config.init_from, or None; refuses another tokenizer's."""
  if not config.init_from:
    return None
  source, step = ckpt_lib.open_run(config.init_from)
  meta = source.meta(step)
  if meta["tokenizer_fingerprint"] != manifest["tokenizer_fingerprint"]:
    raise UserError(
      f"config.init_from={config.init_from!r} was trained with another tokenizer "
      f"than these shards; prepare them with its tokenizer (config.tokenizer.path, "
      f"or config.model.size='checkpoint', which uses it)"
    )
  return source, step, meta


def _init_params_from(init, model_cfg, abstract_params, fresh_params=None):
  """Parameters of another run (e.g. phase 1 for phase 2, or an imported Hugging Face BERT),
  without its optimizer state.
  """
  source, step, meta = init
  ckpt_lib.check_same_model(
    meta["model"], config_lib.model_dict(model_cfg), f"config.init_from={source.directory!r}"
  )
  params, _ = source.restore(step, abstract_params)
  log(f"init_from: parameters of {source.directory} step {step}")
  return params


@dataclasses.dataclass
class Job:
  """What differs between pretraining and fine-tuning; `train` runs either.

  Attributes:
    model, objective: the module and its `step` objective.
    tx, schedule: the optimizer and its learning-rate schedule.
    steps, batch_size: optimizer steps and the global batch.
    batches: start step -> this process's batches for steps start+1 .. steps.
    evaluate: (params, mesh) -> eval metrics (floats).
    eval_line: (step, metrics) -> the line printed under the progress bar.
    eval_every: evaluate every this many steps (and at the last step).
    meta: saved in every checkpoint (with the step); `check_resume` vets a saved one.
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
  batches: Callable
  evaluate: Callable
  eval_line: Callable
  eval_every: int
  meta: dict
  check_resume: Callable
  init_params: Callable | None = None
  progress_keys: tuple = ("loss",)
  data_position: Callable | None = None
  best_metric: str | None = None


def pretrain(config, workdir):
  """Runs (or resumes) pretraining as `config` says, writing everything under `workdir`."""
  config_lib.validate(config)
  if config.distributed:
    initialize_distributed()
  os.makedirs(workdir, exist_ok=True)
  _refuse_imported(workdir)
  inference.inherit_tokenizer(config)
  data_dir, manifest = _prepare_data(config, workdir)
  init = _open_init_from(config, manifest)
  model_cfg = config_lib.model_config(config, manifest["vocab_size"], init and init[2]["model"])
  model = heads.BertForPreTraining(model_cfg)
  t, d = config.train, config.data
  tx, schedule = optimizer_lib.make_optimizer(t)

  def check_resume(meta):
    ckpt_lib.check_same_model(meta["model"], config_lib.model_dict(model_cfg), workdir)
    if meta["tokenizer_fingerprint"] != manifest["tokenizer_fingerprint"]:
      raise UserError(
        f"{workdir} holds a checkpoint trained with another tokenizer; use a "
        f"new --workdir or the data settings of that run"
      )
    position = meta.get("data_position")
    if position and position.get("lanes") != d.lanes:
      log(
        f"data: the checkpoint read {position.get('lanes')} lanes, this run reads "
        f"{d.lanes}: the data order differs from an uninterrupted run from here on"
      )

  stream = functools.partial(
    pipeline.Stream,
    data_dir,
    manifest,
    batch_size=t.batch_size,
    seed=config.seed,
    max_predictions=d.max_predictions_per_seq,
    mask_rate=d.mask_rate,
    mask_token_rate=d.mask_token_rate,
    random_token_rate=d.random_token_rate,
    whole_word_masking=d.whole_word_masking,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    lanes=d.lanes,
  )
  eval_batches = _eval_batches(config, manifest, stream(split="eval", shuffle=False))
  train_stream = stream(split="train")
  objective = step_lib.Pretraining(model)
  eval_step = jax.jit(functools.partial(step_lib.eval_step, objective=objective))
  baseline = _baseline(eval_batches, manifest)

  def evaluate(params, mesh):
    values = _evaluate(eval_step, params, eval_batches, mesh)
    values["mlm_baseline_accuracy"] = baseline
    return values

  def eval_line(step, values):
    pair_task = (
      "" if d.objective == "mlm" else (f", {d.objective}_accuracy {values['nsp_accuracy']:.3f}")
    )
    return (
      f"eval step {step}: loss {values['loss']:.3f}, mlm_accuracy "
      f"{values['mlm_accuracy']:.3f} (most-frequent-token baseline "
      f"{values['mlm_baseline_accuracy']:.3f}){pair_task}"
    )

  job = Job(
    model=model,
    objective=objective,
    tx=tx,
    schedule=schedule,
    steps=t.steps,
    batch_size=t.batch_size,
    batches=lambda start: pipeline.batches(train_stream, start, t.steps),
    evaluate=evaluate,
    eval_line=eval_line,
    eval_every=config.eval.every_steps,
    meta={
      "model": config_lib.model_dict(model_cfg),
      "tokenizer_fingerprint": manifest["tokenizer_fingerprint"],
      "batch_size": t.batch_size,
      "seed": config.seed,
    },
    check_resume=check_resume,
    init_params=init and functools.partial(_init_params_from, init, model_cfg),
    progress_keys=("loss", "mlm_accuracy", "seq_per_s"),
    data_position=train_stream.position,
  )
  train(config, workdir, job)


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
    os.path.join(workdir, "checkpoints"),
    keep=config.checkpoint.keep,
    async_save=config.checkpoint.async_save,
  )
  best = _Best(workdir, job.best_metric) if job.best_metric else None
  start = checkpoints.latest_step()
  abstract = sharding.abstract_like(create, state_sh)  # restore targets, already sharded
  if start is not None:
    job.check_resume(checkpoints.meta(start))
    params, opt_state = checkpoints.restore(start, abstract.params, abstract.opt_state)
    step0 = jax.device_put(jnp.int32(start), state_sh.step)
    state = step_lib.TrainState(step=step0, params=params, opt_state=opt_state)
    log(f"resumed from {checkpoints.directory}/{start}")
  else:
    start = 0
    state = sharding.sharded_init(create, state_sh)
    if job.init_params:
      state = state.replace(params=job.init_params(abstract.params, state.params))
  _write_run_config(config, workdir)
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

  every = config.checkpoint.get("every_steps") or job.eval_every
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
      if job.evaluate and (step % job.eval_every == 0 or last):
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


class _Best:
  """The parameters of the best eval so far, in WORKDIR/best/ (params and meta only)."""

  def __init__(self, workdir, metric):
    self.metric = metric
    self._checkpoints = ckpt_lib.Checkpoints(
      os.path.join(workdir, "best"), keep=1, async_save=False
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


def _eval_batches(config, manifest, eval_stream):
  """The held-out batches, masked once (deterministically) and kept in memory."""
  rows = manifest["splits"]["eval"]["rows"]
  steps = min(config.eval.steps, max(1, rows // config.train.batch_size))
  if rows < config.train.batch_size:
    log(
      f"eval: {rows} held-out rows, fewer than a batch of {config.train.batch_size}; "
      f"they repeat (raise config.data.eval_fraction for a better estimate)"
    )
  return list(pipeline.batches(eval_stream, 0, steps))


def _evaluate(eval_step, params, batches, mesh):
  totals = None
  for local_batch in batches:
    sums = eval_step(params, sharding.global_batch(local_batch, mesh))
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
  return {k: float(v) for k, v in jax.device_get(step_lib.summarize(totals)).items()}


def _baseline(batches, manifest):
  """MLM accuracy of always predicting the most frequent training token."""
  hits = total = 0.0
  for b in batches:
    hits += float(
      ((b["masked_lm_ids"] == manifest["most_frequent_token_id"]) * b["masked_lm_weights"]).sum()
    )
    total += float(b["masked_lm_weights"].sum())
  return hits / max(total, 1.0)
