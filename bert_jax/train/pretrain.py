"""`bert-jax pretrain`: masked-LM (+ NSP / SOP) pretraining from prepared shards.

`validate` checks the config before anything is written; `pretrain` prepares the data when
it is missing, opens `config.init_from`, builds the pretraining `loop.Job` (batches from
the per-process lanes, the held-out eval with its most-frequent-token baseline) and runs
the shared loop.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import config as config_lib
from bert_jax import lock as lock_lib
from bert_jax import multihost, sharding, storage
from bert_jax import run as run_lib
from bert_jax.data import pipeline, prepare
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.model import families
from bert_jax.train import flops, loop, precompile, rtd
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib
from bert_jax.train.metrics import log

DEFAULT_RECIPE = config_lib.RECIPES / "demo.py"
USAGE = {
  "pretrain": """usage: bert-jax pretrain [--config configs/RECIPE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]

Pretrains (or resumes) an encoder as the recipe says (BERT, RoBERTa, DistilBERT, ELECTRA,
ALBERT or ModernBERT: config.model.arch); without --config, the embedded demo
(configs/demo.py). Prepares the data first (as `prepare` does) unless it is prepared.
Keys, defaults and comments: bert_jax/config.py (base_config).""",
  "prepare": """usage: bert-jax prepare [--config configs/RECIPE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]

Prepares the recipe's data: tokenizer, sharded records and manifest.json in
config.data.prepared_dir (default DIR/data). Streams in constant memory on every core;
run it again to finish an interrupted preparation. Keys: bert_jax/config.py (base_config).""",
}


def validate(config) -> None:
  """Bad-input checks of a pretraining config, before anything is read or written.

  Raises:
    UserError: naming the key, its value and what would work.
  """
  config_lib.validate_common(config)
  if config.train.warmup_steps < 0:
    raise UserError(f"config.train.warmup_steps={config.train.warmup_steps} must be 0 or more")
  for key in (
    "train.steps",
    "checkpoint.every_steps",
    "eval.every_steps",
    "eval.steps",
    "data.max_predictions_per_seq",
    "data.max_ngram",
    "data.num_shards",
    "data.documents_per_chunk",
    "data.lanes",
    "tokenizer.vocab_size",
  ):
    config_lib.check_positive(config, key)
  own_model = config.model.size != "checkpoint"  # else config.init_from's (checked later)
  if own_model and config.data.max_seq_length > config.model.max_position_embeddings:
    raise UserError(
      f"config.data.max_seq_length={config.data.max_seq_length} exceeds "
      f"config.model.max_position_embeddings={config.model.max_position_embeddings}; "
      f"raise that or lower the sequence length"
    )
  d = config.data
  if d.max_seq_length < 5:  # [CLS] A [SEP] B [SEP]: the shortest row any objective makes
    raise UserError(
      f"config.data.max_seq_length={d.max_seq_length} must be at least 5 tokens (BERT "
      f"trains at 128, then 512)"
    )
  if not 0 < d.eval_fraction < 1:
    raise UserError(
      f"config.data.eval_fraction={d.eval_fraction} must be in (0, 1): the share of "
      f"documents held out for eval (e.g. 0.01)"
    )
  for key, rate in (("data.mask_rate", d.mask_rate), ("eval.mask_rate", config.eval.mask_rate)):
    if rate is not None and not 0 < rate < 1:
      raise UserError(f"config.{key}={rate} must be in (0, 1)")
  if not (
    0 <= d.mask_token_rate
    and 0 <= d.random_token_rate
    and d.mask_token_rate + d.random_token_rate <= 1
  ):
    raise UserError(
      f"config.data.mask_token_rate={d.mask_token_rate} and random_token_rate="
      f"{d.random_token_rate} must be >= 0 and add up to at most 1 (BERT: 0.8, 0.1)"
    )
  if d.cache_dir:  # each host's copies of its lanes' shards of a bucket's prepared_dir
    storage.check_local(d.cache_dir, "config.data.cache_dir")
  config_lib.check_choice(config, "data.objective", config_lib.OBJECTIVES)
  if not config.tokenizer.path:  # a given tokenizer brings its own kind
    config_lib.check_choice(config, "tokenizer.model_type", tokenizer_lib.TRAINED_KINDS)
  if config.model.size != "checkpoint":
    _check_objective(config_lib.new_model_arch(config), d.objective)
  config_lib.check_choice(config, "data.input_format", config_lib.INPUT_FORMATS)
  config_lib.check_choice(config, "data.loader", config_lib.LOADERS)
  if d.packing and d.objective != "mlm":
    raise UserError(
      f"config.data.packing needs config.data.objective='mlm' (rows of sentence "
      f"pairs have one label each), not {d.objective!r}"
    )
  if config.train.batch_size % d.lanes:
    raise UserError(
      f"config.data.lanes={d.lanes} must divide config.train.batch_size="
      f"{config.train.batch_size} (each step takes as many rows from every lane); change "
      f"the lanes or the batch size"
    )


def max_predictions_note(data) -> str | None:
  """The line that says config.data.max_predictions_per_seq masks fewer tokens of a full
  row than config.data.mask_rate asks (a recipe's 20 of 128 kept at 512 tokens: 3.9 %;
  ALBERT's recipe caps so on purpose).
  """
  d = data
  # The masking's count for a row of max_seq_length - 2 tokens besides [CLS] and [SEP].
  asked = round((d.max_seq_length - 2) * d.mask_rate)
  if asked <= d.max_predictions_per_seq:
    return None
  return (
    f"note: config.data.max_predictions_per_seq={d.max_predictions_per_seq} caps the "
    f"masked tokens of a {d.max_seq_length}-token row at "
    f"{d.max_predictions_per_seq / (d.max_seq_length - 2):.1%}, below config.data.mask_rate="
    f"{d.mask_rate} ({asked} tokens); --config.data.max_predictions_per_seq={asked} masks at "
    f"the rate"
  )


def warmup_steps(train_config) -> int:
  """config.train.warmup_steps, clipped to a tenth of the run when it would not fit in it
  (a short smoke run of a long recipe); says so in one line.
  """
  steps, warmup = train_config.steps, train_config.warmup_steps
  if warmup <= steps:
    return warmup
  clipped = steps // 10
  instead = f"warming up over {clipped} (a tenth)" if clipped else "no warmup"
  log(
    f"config.train.warmup_steps={warmup} exceeds the {steps} steps of this run; {instead} instead"
  )
  return clipped


def _check_devices(config):
  """The mesh and the batch fit the devices and processes (before any data is prepared);
  returns the mesh.
  """
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_divides(config.train.batch_size, config.train.accum_steps, mesh)
  lanes, processes, batch = config.data.lanes, jax.process_count(), config.train.batch_size
  if lanes % processes:
    fits = [m for m in range(processes, max(lanes, processes) + 1, processes) if batch % m == 0]
    raise UserError(
      f"config.data.lanes={lanes} must be a multiple of the {processes} processes that "
      f"divides config.train.batch_size={batch}; e.g. --config.data.lanes="
      f"{max(fits, default=processes)} (a run resumes exactly on another host count that "
      f"divides the lanes)"
    )
  return mesh


def lanes_for_the_batch(config, say=log):
  """`config`, with config.data.lanes lowered to the largest count that divides both them
  and the batch when they do not divide it (a small batch on a laptop); `say` gets one line.
  """
  lanes, batch = config.data.lanes, config.train.batch_size
  if lanes < 1 or batch < 1 or batch % lanes == 0:
    return config  # validate names a count below 1
  count = math.gcd(lanes, batch)
  say(
    f"data: config.data.lanes={lanes} does not divide config.train.batch_size={batch}; "
    f"reading {count} lanes"
  )
  config = config.copy_and_resolve_references()
  config.data.lanes = count
  return config


def prepare_data(config, workdir) -> dict:
  """`bert-jax prepare`: the recipe's data (tokenizer, shards, manifest), made or finished."""
  validate(lanes_for_the_batch(config, say=lambda _: None))  # the lanes do not matter here
  config = run_lib.with_inherited_tokenizer(config)
  with lock_lib.held(workdir, keep_empty=False):  # a workdir only locked is not left behind
    return prepare.prepare(config, run_lib.data_dir(config, workdir))


def _prepare_data(config, workdir):
  """Prepared shards of `config.data.prepared_dir` (default WORKDIR/data), made if missing:
  process 0 first, then the others (which reuse them on a shared disk).
  """
  data_dir = run_lib.data_dir(config, workdir)
  run = functools.partial(
    prepare.prepare, config, data_dir, log=log, progress=jax.process_index() == 0
  )
  manifest = multihost.process_zero_first(run)
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


def _refuse_other_runs(config, workdir) -> dict | None:
  """A workdir to pretrain in holds nothing or a pretraining run (resumed with the
  init_from it started with): not an `import-hf` starting point (no optimizer state), nor
  a fine-tuned run. Returns the meta of the run's latest checkpoint (None: a new run).
  """
  meta = run_lib.latest_meta(workdir) or {}
  if meta and not meta.get("imported_from") and not meta.get("task"):  # resuming
    run_lib.check_same_init_from(config, workdir)
  if meta.get("imported_from"):
    raise UserError(
      f"{workdir} holds a checkpoint imported from {meta['imported_from']} (parameters "
      f"only); train from it with a new --workdir and --config.init_from={workdir}"
    )
  if meta.get("task"):
    raise UserError(
      f"{workdir} holds a run fine-tuned for {meta['task']!r}, not a pretraining run; "
      f"pretrain in a new --workdir"
    )
  return meta or None


def _open_init_from(config):
  """(checkpoints, step, meta) of config.init_from, or None."""
  if not config.init_from:
    return None
  source, step = run_lib.open_checkpoints(config.init_from)
  return source, step, source.meta(step)


def _check_init_tokenizer(config, init, manifest):
  """Refuses a config.init_from trained with another tokenizer than the shards'."""
  if init and init[2]["tokenizer_fingerprint"] != manifest["tokenizer_fingerprint"]:
    raise UserError(
      f"config.init_from={config.init_from!r} was trained with another tokenizer "
      f"than these shards; prepare them with its tokenizer (config.tokenizer.path, "
      f"or config.model.size='checkpoint', which uses it)"
    )


def _check_init_before_preparing(config, init, workdir):
  """What would refuse config.init_from once the data is prepared, said before: another
  architecture, or a tokenizer other than its own (given, or to be trained).
  """
  if not init:
    return
  source, _, meta = init
  where = f"config.init_from={source.directory!r}"
  if config.model.size != "checkpoint":
    model_cfg = config_lib.model_config(config, meta["model"]["vocab_size"])
    config_lib.check_same_model(
      meta["model"],
      config_lib.model_dict(model_cfg),
      where,
      fix="set config.model.size='checkpoint' to take its architecture",
      layout=False,
    )
  if config.tokenizer.path:
    other = tokenizer_lib.load(config.tokenizer.path).fingerprint != meta["tokenizer_fingerprint"]
  else:  # a tokenizer trained now, unless the data is prepared already (checked after)
    other = prepare.read_manifest(run_lib.data_dir(config, workdir)) is None
  if other:
    raise UserError(
      f"{where} was trained with its own tokenizer, and this run would "
      f"{'use another' if config.tokenizer.path else 'train a new one'}; leave "
      f"config.tokenizer.path empty and set config.model.size='checkpoint' (its architecture "
      f"and tokenizer, as configs/continue_pretraining.py does)"
    )


def _check_resume_before_preparing(config, workdir, meta):
  """A pretraining run to resume (`meta`: its latest checkpoint's, from `_refuse_other_runs`;
  None: a new run) whose data is to be prepared (again) must get the tokenizer its
  checkpoint was trained with: said before any data is made (the shards' tokenizer is
  checked against the checkpoint after, when they exist).
  """
  if meta is None:
    return
  if prepare.read_manifest(run_lib.data_dir(config, workdir)) is not None:
    return
  if config.tokenizer.path:
    fingerprint = tokenizer_lib.load(config.tokenizer.path).fingerprint
    same = fingerprint == meta["tokenizer_fingerprint"]
  else:  # a tokenizer trained now: the same only from the same settings
    saved = (run_lib.read_config(workdir) or {}).get("tokenizer")
    same = saved is None or saved == config.tokenizer.to_dict()
  if not same:
    would = f"use {config.tokenizer.path}" if config.tokenizer.path else "train a new one"
    raise UserError(
      f"{workdir} holds a run trained with another tokenizer, and this command would {would} "
      f"to prepare its data; resume it with the command it started with (its config.json "
      f"has the settings), or use a new --workdir"
    )


def _check_positions(config, init):
  """The rows fit the model's positions (RoBERTa's are fewer than its position rows),
  before any data is prepared.
  """
  model_cfg = config_lib.model_config(config, 0, init and init[2]["model"])
  if config.data.max_seq_length > model_cfg.max_length:
    raise UserError(
      f"config.data.max_seq_length={config.data.max_seq_length} exceeds the "
      f"{model_cfg.max_length} positions of the model; raise "
      f"config.model.max_position_embeddings or lower the sequence length"
    )


def _init_params_from(init, model_cfg, abstract_params, fresh=None):
  """Parameters of another run (e.g. phase 1 for phase 2, or an imported Hugging Face BERT),
  without its optimizer state.
  """
  source, step, meta = init
  config_lib.check_same_model(
    meta["model"],
    config_lib.model_dict(model_cfg),
    f"config.init_from={source.directory!r}",
    layout=False,  # a scanned run's layers restore unrolled, and the other way
  )
  if meta.get("task"):  # a fine-tuned run: its encoder, and new pretraining heads
    encoder = run_lib.restore_encoder(source, step, meta, abstract_params["bert"])
    params = dict(fresh(lambda p: {k: v for k, v in p.items() if k != "bert"}), bert=encoder)
    log(
      f"init_from: the encoder of {source.directory} step {step} (fine-tuned for "
      f"{meta['task']}); the pretraining heads are new"
    )
    return params
  params = run_lib.restore_as(source, step, meta, abstract_params)
  log(f"init_from: parameters of {source.directory} step {step}")
  return params


def size_note(model) -> str | None:
  """The line that says config.model.num_layers / hidden_size (a recipe's, or given) win
  over the size preset (`--config.model.size=tiny` on a recipe that sets them).
  """
  if model.size not in config_lib.SIZES:
    return None
  preset = dict(zip(("num_layers", "hidden_size"), config_lib.SIZES[model.size]))
  apart = {k: model[k] for k, v in preset.items() if model[k] is not None and model[k] != v}
  if not apart:
    return None
  one = len(apart) == 1
  return (
    f"model: {' and '.join(f'config.model.{k}={v}' for k, v in apart.items())} "
    f"override{'s' * one} size {model.size!r} (L{preset['num_layers']} "
    f"H{preset['hidden_size']}); {' '.join(f'--config.model.{k}=None' for k in apart)} takes "
    f"the size's"
  )


def mlm_alone_note(model_cfg, init) -> str | None:
  """The line an ELECTRA without a generator prints, new or an imported discriminator (its
  MLM head new): it trains masked LM alone, which users reaching for ELECTRA rarely mean.
  A continued generator (its MLM head imported) says nothing.
  """
  if model_cfg.arch != "electra" or model_cfg.generator_hidden_size is not None:
    return None
  if init is None:
    return (
      "ELECTRA without config.model.generator_hidden_size trains masked LM alone (as "
      "ELECTRA's generator); configs/electra.py, or the key (a quarter to a third of the "
      "hidden size), pretrains by replaced-token detection"
    )
  if "mlm" in init[2].get("initialized", ()):
    return (
      "config.init_from is an ELECTRA discriminator without its generator: this run trains "
      "masked LM on it, with a new MLM head; import the pair (import-hf --hf DISCRIMINATOR "
      "--generator GENERATOR) to go on with replaced-token detection"
    )
  return None


def _check_objective(arch, objective):
  """The family `arch`, checked to have the head `objective` trains.

  Raises:
    UserError: an objective with a sentence-pair head the family lacks.
  """
  family = families.family(arch)
  if objective != "mlm" and objective not in family.sentence_objectives:
    heads = " or ".join(family.sentence_objectives) or "no sentence-pair head"
    raise UserError(
      f"config.data.objective={objective!r} needs a sentence-pair head, and {arch} has "
      f"{heads}; use --config.data.objective=mlm"
    )
  return family


def pretrain(config, workdir):
  """Runs (or resumes) pretraining as `config` says, writing everything under `workdir`."""
  validate(lanes_for_the_batch(config, say=lambda _: None))
  if config.distributed:
    sharding.initialize_distributed()
  config = lanes_for_the_batch(config)  # its line: after the cluster is joined
  mesh = _check_devices(config)
  resumed = _refuse_other_runs(config, workdir)
  config = run_lib.with_inherited_tokenizer(config)
  init = _open_init_from(config)
  if init and config.model.size == "checkpoint":  # its family, before any data is prepared
    _check_objective(init[2]["model"].get("arch", "bert"), config.data.objective)
  _check_positions(config, init)
  _check_init_before_preparing(config, init, workdir)
  _check_resume_before_preparing(config, workdir, resumed)
  with lock_lib.held(workdir):  # from here on this run writes in the workdir
    _pretrain(config, workdir, mesh, init)


def _pretrain(config, workdir, mesh, init):
  if note := max_predictions_note(config.data):
    log(note)
  data_dir, manifest = _prepare_data(config, workdir)
  _check_init_tokenizer(config, init, manifest)
  model_cfg = config_lib.model_config(config, manifest["vocab_size"], init and init[2]["model"])
  family = _check_objective(model_cfg.arch, config.data.objective)
  config = config_lib.with_model_arch(config, model_cfg)
  model = family.pretraining(model_cfg)
  if note := mlm_alone_note(model_cfg, init):
    log(note)
  if note := size_note(config.model):
    log(note)
  t, d = config.train, config.data
  warmup = warmup_steps(t)
  tx, schedule = optimizer_lib.make_optimizer(t, warmup_steps=warmup)
  if warmup != t.warmup_steps:  # config.json records the warmup the run has
    config = config.copy_and_resolve_references()
    config.train.warmup_steps = warmup

  def check_resume(meta):
    if meta["tokenizer_fingerprint"] != manifest["tokenizer_fingerprint"]:
      raise UserError(
        f"{workdir} holds a checkpoint trained with another tokenizer; use a "
        f"new --workdir or the data settings of that run"
      )
    position = meta.get("data_position")
    if position and position.get("lanes") != train_stream.lane_count:
      log(
        f"data: the checkpoint read {position.get('lanes')} lanes, this run reads "
        f"{train_stream.lane_count}: the data order differs from an uninterrupted run from "
        f"here on"
      )

  stream = _streams(config, data_dir, manifest)
  use_tf = {"auto": None, "tf.data": True, "threads": False}[d.loader]
  eval_batches = _eval_batches(config, manifest, stream)
  train_stream = stream(split="train")
  objective = rtd.objective_for(model, manifest["vocab_size"])
  replaced_tokens = isinstance(objective, rtd.ReplacedTokenDetection)
  eval_step = jax.jit(functools.partial(step_lib.eval_step, objective=objective))
  baseline = _baseline(eval_batches, manifest)
  peak = _peak_flops(mesh, model_cfg.dtype)

  def evaluate(params, mesh):
    values = _evaluate(eval_step, objective, params, eval_batches, mesh)
    values["mlm_baseline_accuracy"] = baseline
    return values

  def eval_line(step, values):
    return _eval_line(step, values, d.objective, replaced_tokens)

  job = loop.Job(
    model=model,
    objective=objective,
    tx=tx,
    schedule=schedule,
    steps=t.steps,
    batch_size=t.batch_size,
    batches=lambda start: pipeline.batches(train_stream, start, t.steps, use_tf=use_tf),
    evaluate=evaluate,
    eval_line=eval_line,
    omit_metrics=("nsp_loss", "nsp_accuracy") if d.objective == "mlm" else (),  # none with rtd
    eval_every=config.eval.every_steps,
    meta={
      "model": config_lib.model_dict(model_cfg),
      "tokenizer_fingerprint": manifest["tokenizer_fingerprint"],
      "batch_size": t.batch_size,
      "seed": config.seed,
    },
    check_resume=check_resume,
    init_params=init and functools.partial(_init_params_from, init, model_cfg),
    progress_keys=("loss", "mlm_accuracy")
    + (("rtd_accuracy",) if replaced_tokens else ())
    + ("seq_per_s", "mfu"),
    data_position=train_stream.position,
    example_batch=lambda: train_stream.batch_at(0),
    eval_programs=lambda params, mesh: [
      (
        eval_step,
        params,
        precompile.batch_spec(eval_batches[0], t.batch_size, sharding.batch_sharding(mesh)),
      )
    ],
    flops_per_seq=flops.flops_per_seq(model_cfg, d.max_seq_length, d.max_predictions_per_seq),
    peak_flops=peak,
  )
  loop.train(config, workdir, job)


def _streams(config, data_dir, manifest):
  """`pipeline.Stream` with the run's data settings, for a split and any other keywords."""
  t, d = config.train, config.data
  return functools.partial(
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
    max_ngram=d.max_ngram,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    lanes=d.lanes,
    log=log,
    cache_dir=d.cache_dir,
  )


def _eval_line(step, values, objective, replaced_tokens):
  """The eval line under the progress bar (and of `bert-jax evaluate`)."""
  if replaced_tokens:
    second = (
      f", rtd_accuracy {values['rtd_accuracy']:.3f} (rtd_recall "
      f"{values['rtd_recall']:.3f} of the {values['rtd_replaced']:.3f} replaced)"
    )
  elif objective != "mlm":
    second = f", {objective}_accuracy {values['nsp_accuracy']:.3f}"
  else:
    second = ""
  return (
    f"eval step {step}: loss {values['loss']:.3f}, mlm_accuracy "
    f"{values['mlm_accuracy']:.3f} (most-frequent-token baseline "
    f"{values['mlm_baseline_accuracy']:.3f}){second}"
  )


def evaluate_run(workdir: str, step: int | None = None) -> dict:
  """`bert-jax evaluate` of a pretraining run: the held-out metrics of a checkpoint (the
  latest, or `step`), on the eval rows and masks the run evaluates with, on one device.

  Raises:
    UserError: no config.json or prepared data for the run, or no checkpoint at `step`.
  """
  saved = run_lib.read_config(workdir)
  if saved is None:
    raise UserError(f"{workdir} has no config.json: it is not a pretraining run of bert-jax")
  config = ml_collections.ConfigDict(saved)
  data_dir = run_lib.data_dir(config, workdir)
  manifest = prepare.read_manifest(data_dir)
  if manifest is None:
    raise UserError(
      f"the prepared data of {workdir} ({data_dir}) is gone; prepare it again with the "
      f"run's settings (bert-jax prepare --workdir {workdir} and its overrides)"
    )
  run = run_lib.load(workdir, step)
  stream = _streams(config, data_dir, manifest)
  batches = _eval_batches(config, manifest, stream)
  objective = rtd.objective_for(run.model, manifest["vocab_size"])
  eval_step = jax.jit(functools.partial(step_lib.eval_step, objective=objective))
  values = _evaluate(eval_step, objective, run.params, batches)
  if config.data.objective == "mlm":
    values = {k: v for k, v in values.items() if not k.startswith("nsp_")}  # as the run logs
  values["mlm_baseline_accuracy"] = _baseline(batches, manifest)
  replaced = isinstance(objective, rtd.ReplacedTokenDetection)
  log(_eval_line(run.step, values, config.data.objective, replaced))
  return values


def _peak_flops(mesh, dtype):
  """The peak FLOP/s of the mesh's devices for `mfu` (a CPU's measured), or None. One line
  says which: the figure and where it comes from, or that an accelerator's is unknown.
  """
  devices = list(mesh.devices.flat)
  peak = flops.peak_flops(devices, dtype)
  if peak is None:
    log(
      f"no peak FLOP/s known for {devices[0].device_kind!r}: metrics.jsonl has no "
      f"mfu (add the device to PEAK_FLOPS in bert_jax/train/flops.py)"
    )
  else:
    source = (
      f"a {flops.CPU_MATMUL_SIZE}^3 {dtype} matmul timed now; other work on the cores "
      f"lowers it and raises mfu"
      if devices[0].platform == "cpu"
      else f"{devices[0].device_kind} x {len(devices)}, {dtype}"
    )
    log(f"mfu is of a peak of {peak:.5g} FLOP/s ({source})")
  return peak


def _eval_batches(config, manifest, stream):
  """The held-out batches, masked once (deterministically, at config.eval.mask_rate or else
  the training rate) and kept in memory; `stream` makes a `pipeline.Stream` of a split.
  """
  rate = config.eval.mask_rate or config.data.mask_rate
  eval_stream = stream(split="eval", shuffle=False, mask_rate=rate)
  rows = manifest["splits"]["eval"]["rows"]
  steps = min(config.eval.steps, max(1, rows // config.train.batch_size))
  if rows < config.train.batch_size:
    log(
      f"eval: {rows} held-out rows, fewer than a batch of {config.train.batch_size}; "
      f"they repeat (raise config.data.eval_fraction for a better estimate)"
    )
  return list(pipeline.batches(eval_stream, 0, steps, use_tf=False))  # once: no need for tf.data


def _evaluate(eval_step, objective, params, batches, mesh=None):
  """The eval metrics summed over `batches`: global batches over `mesh`, or as they are on
  one device (mesh None).
  """
  totals = None
  for local_batch in batches:
    batch = local_batch if mesh is None else sharding.global_batch(local_batch, mesh)
    sums = eval_step(params, batch)
    totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
  return {k: float(v) for k, v in jax.device_get(objective.summarize(totals)).items()}


def _baseline(batches, manifest):
  """MLM accuracy of always predicting the most frequent training token, over the eval
  batches of every process.
  """
  counts = np.zeros(2)  # hits, masked positions
  for b in batches:
    weights = b["masked_lm_weights"]
    counts += [
      ((b["masked_lm_ids"] == manifest["most_frequent_token_id"]) * weights).sum(),
      weights.sum(),
    ]
  hits, total = multihost.summed(counts)
  return float(hits / max(total, 1.0))
