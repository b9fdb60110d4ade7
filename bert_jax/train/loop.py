"""The pretraining loop: data, sharded state, jit step, metrics, eval and checkpoints.

Load order for the train state: resume from the workdir's latest checkpoint > parameters
from `config.init_from` > a fresh initialisation from `config.seed`. Resuming restores the
data position (the step: batches are a pure function of it) and the dropout RNG (folded
from the seed and the step), so the rest of the run is identical to an uninterrupted one.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp

from bert_jax import checkpoint as ckpt_lib
from bert_jax import config as config_lib
from bert_jax import sharding
from bert_jax.errors import UserError
from bert_jax.model import heads
from bert_jax.train import metrics as metrics_lib
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib

# Test hook: seconds to sleep after each step, so a test can SIGKILL a run mid-way.
_STEP_SLEEP = float(os.environ.get("BERT_JAX_DEBUG_STEP_SLEEP", "0"))


def _log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def _prepare_data(config, workdir):
  """Makes (or reuses) the tokenizer and instances; process 0 first, then the others."""
  from bert_jax.data import pretrain as data_lib  # TensorFlow: only where data is made
  data_dir = config.data.prepared_dir or os.path.join(workdir, "data")
  prepare = functools.partial(
      data_lib.prepare_pretraining_data, data_dir, input=config.data.input,
      vocab_size=config.tokenizer.vocab_size, max_seq_length=config.data.max_seq_length,
      short_seq_prob=config.data.short_seq_prob, eval_fraction=config.data.eval_fraction,
      seed=config.seed, dupe_factor=config.data.dupe_factor,
      tokenizer_path=config.tokenizer.path, log=_log)
  if jax.process_index() == 0:
    manifest = prepare()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("prepare_data")
  if jax.process_index() != 0:
    manifest = prepare()  # reuses process 0's files on a shared disk, else rebuilds them
  return data_lib, data_dir, manifest


def _initialize_distributed():
  """jax.distributed.initialize(): cluster auto-detection (Cloud TPU, SLURM, MPI, k8s),
  or explicit JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (e.g. two
  processes on one machine)."""
  env = os.environ
  if "JAX_NUM_PROCESSES" in env:
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()


def _write_run_config(config, workdir):
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, "config.json"))


def _init_params_from(path, model_cfg, abstract_params):
  """Parameters of another run (e.g. phase 1 for phase 2), without its optimizer state."""
  source, step = ckpt_lib.open_run(path)
  ckpt_lib.check_same_model(source.meta(step)["model"], config_lib.model_dict(model_cfg),
                            f"config.init_from={path!r}")
  params, _ = source.restore(step, abstract_params)
  _log(f"init_from: parameters of {source.directory} step {step}")
  return params


def pretrain(config, workdir):
  """Runs (or resumes) pretraining as `config` says, writing everything under `workdir`."""
  config_lib.validate(config)
  if config.distributed:
    _initialize_distributed()
  os.makedirs(workdir, exist_ok=True)
  data_lib, data_dir, manifest = _prepare_data(config, workdir)
  model_cfg = config_lib.model_config(config, manifest["vocab_size"])
  model = heads.BertForPreTraining(model_cfg)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.mesh)
  t = config.train
  sharding.check_batch_divides(t.batch_size, t.accum_steps, mesh)
  tx, schedule = optimizer_lib.make_optimizer(t)
  shapes = step_lib.batch_shapes(t.batch_size, config.data.max_seq_length,
                                 config.data.max_predictions_per_seq)
  create = functools.partial(step_lib.create_state, model, tx,
                             jax.random.fold_in(jax.random.key(config.seed), 0), shapes)
  state_sh = sharding.shardings_of(create, mesh, rules)

  checkpoints = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"),
                                     keep=config.checkpoint.keep,
                                     async_save=config.checkpoint.async_save)
  start = checkpoints.latest_step()
  abstract = sharding.abstract_like(create, state_sh)  # restore targets, already sharded
  if start is not None:
    meta = checkpoints.meta(start)
    ckpt_lib.check_same_model(meta["model"], config_lib.model_dict(model_cfg), workdir)
    if meta["tokenizer_fingerprint"] != manifest["tokenizer_fingerprint"]:
      raise UserError(f"{workdir} holds a checkpoint trained with another tokenizer; use a "
                      f"new --workdir or the data settings of that run")
    params, opt_state = checkpoints.restore(start, abstract.params, abstract.opt_state)
    step0 = jax.device_put(jnp.int32(start), state_sh.step)
    state = step_lib.TrainState(step=step0, params=params, opt_state=opt_state)
    _log(f"resumed from {checkpoints.directory}/{start}")
  else:
    start = 0
    state = sharding.sharded_init(create, state_sh)
    if config.init_from:
      state = state.replace(params=_init_params_from(config.init_from, model_cfg, abstract.params))
  _write_run_config(config, workdir)
  if start >= t.steps:
    _log(f"nothing to do: the latest checkpoint is at step {start} of {t.steps}")
    checkpoints.close()
    return

  train_step, eval_step = compile_steps(model, tx, schedule, t.accum_steps, state_sh, mesh)
  dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)

  masking = dict(vocab_size=manifest["vocab_size"],
                 max_predictions=config.data.max_predictions_per_seq,
                 mask_rate=config.data.mask_rate, process_index=jax.process_index(),
                 process_count=jax.process_count())
  eval_batches = _eval_batches(config, data_lib, data_dir, masking)
  train_data = data_lib.make_dataset(
      data_lib.load_split(data_dir, "train"), batch_size=t.batch_size, seed=config.seed,
      start_step=start, num_steps=t.steps, **masking)

  writer = metrics_lib.MetricWriter(workdir, start)
  progress = metrics_lib.Progress(start, t.steps, t.batch_size)
  meta = {"model": config_lib.model_dict(model_cfg),
          "tokenizer_fingerprint": manifest["tokenizer_fingerprint"],
          "batch_size": t.batch_size, "seed": config.seed}
  step = start
  with sharding.activate(mesh, rules):
    for local_batch in data_lib.numpy_batches(train_data):
      state, step_metrics = train_step(state, sharding.global_batch(local_batch, mesh),
                                       dropout_rng)
      step += 1
      if _STEP_SLEEP:
        time.sleep(_STEP_SLEEP)
      last = step == t.steps
      saving = step % config.checkpoint.every_steps == 0 or last
      if step % t.log_every_steps == 0 or saving:
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        values["seq_per_s"] = progress.throughput(step)
        writer.write(step, "train", values)
        progress.update(step, {k: values[k] for k in ("loss", "mlm_accuracy", "seq_per_s")})
      else:
        progress.update(step)
      if step % config.eval.every_steps == 0 or last:
        values = _evaluate(eval_step, state.params, eval_batches, mesh)
        values["mlm_baseline_accuracy"] = _baseline(eval_batches, manifest)
        writer.write(step, "eval", values)
        progress.write(f"eval step {step}: loss {values['loss']:.3f}, mlm_accuracy "
                       f"{values['mlm_accuracy']:.3f} (most-frequent-token baseline "
                       f"{values['mlm_baseline_accuracy']:.3f}), nsp_accuracy "
                       f"{values['nsp_accuracy']:.3f}")
      if saving:
        checkpoints.save(step, state, dict(meta, step=step, sequences_seen=step * t.batch_size))
  progress.close()
  writer.close()
  checkpoints.close()
  _log(f"done: {step} steps; checkpoints in {checkpoints.directory}")


def compile_steps(model, tx, schedule, accum_steps, state_sh, mesh):
  """jit-compiled (train_step, eval_step) with in/out shardings; the state is donated."""
  batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  train_step = jax.jit(
      functools.partial(step_lib.train_step, model=model, tx=tx, schedule=schedule,
                        accum_steps=accum_steps),
      in_shardings=(state_sh, batch_sh, repl), out_shardings=(state_sh, repl),
      donate_argnums=0)
  eval_step = jax.jit(functools.partial(step_lib.eval_step, model=model),
                      in_shardings=(state_sh.params, batch_sh), out_shardings=repl)
  return train_step, eval_step


def _eval_batches(config, data_lib, data_dir, masking):
  """The held-out batches, masked once (deterministically) and kept in memory."""
  arrays = data_lib.load_split(data_dir, "eval")
  available = len(arrays["input_ids"]) // config.train.batch_size
  if available == 0:
    raise UserError(f"the eval split has {len(arrays['input_ids'])} sequences, fewer than one "
                    f"batch of config.train.batch_size={config.train.batch_size}; raise "
                    f"config.data.eval_fraction")
  steps = min(config.eval.steps, available)
  data = data_lib.make_dataset(arrays, batch_size=config.train.batch_size, seed=config.seed,
                               shuffle=False, num_steps=steps, **masking)
  return list(data_lib.numpy_batches(data))


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
    hits += float(((b["masked_lm_ids"] == manifest["most_frequent_token_id"])
                   * b["masked_lm_weights"]).sum())
    total += float(b["masked_lm_weights"].sum())
  return hits / max(total, 1.0)
