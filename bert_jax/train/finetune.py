"""`bert-jax finetune`: a task head on a pretrained (or imported) BERT, trained with the same
loop as pretraining (`loop.train`): sharded state, exact resume, metrics, evals, checkpoints.

The encoder comes from `config.init_from` (a pretraining run, an `import-hf` workdir, or a
fine-tuned run); the head is new unless init_from is a fine-tuned run of the same task.
Task "embedding" has no head: the encoder's pooled, optionally normalised output
(`model.embedding`) is trained on (anchor, positive[, negative]) pairs with a contrastive
loss (`finetune.contrastive`) and evaluated by retrieval (`finetune.retrieval`). The
workdir gets the tokenizer (`tokenizer/`), the label map (in every checkpoint's meta), the
latest checkpoints (`checkpoints/`, to resume) and the best eval's parameters (`best/`,
which `evaluate`, `predict` and `export-hf` use).
"""

import collections
import functools

import jax

from bert_jax import config as config_lib
from bert_jax import lock as lock_lib
from bert_jax import multihost, sharding
from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax.errors import UserError
from bert_jax.finetune import batching as batching_lib
from bert_jax.finetune import contrastive, retrieval
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import evaluate as evaluate_lib
from bert_jax.finetune import labels as labels_lib
from bert_jax.finetune import objective as task_objective
from bert_jax.hf import convert as hf_convert
from bert_jax.model import embedding, tasks
from bert_jax.train import loop
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train.metrics import log

DEFAULT_RECIPE = config_lib.RECIPES / "finetune" / "classify_csv.py"
USAGE = {
  "finetune": """usage: bert-jax finetune [--config configs/finetune/TASK.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]

Fine-tunes config.init_from (a pretraining run, an import-hf workdir or a fine-tuned run)
on a task: classification, regression, tokens, qa or embedding (configs/finetune/embeddings.py).
Without --config: configs/finetune/classify_csv.py.
Keys, defaults and comments: bert_jax/config.py (finetune_base_config)."""
}


def validate(config) -> None:
  """Bad-input checks of a fine-tuning config, before anything is read or written.

  Raises:
    UserError: naming the key, its value and what would work.
  """
  if not config.init_from:  # first: the recipe's size='checkpoint' would be named instead
    raise UserError(
      "finetune needs --config.init_from=WORKDIR: the run to fine-tune (a pretraining "
      "workdir, or one made by bert-jax import-hf)"
    )
  config_lib.validate_common(config)
  config_lib.check_choice(config, "task", tasks.TASKS + (embedding.TASK,))
  check_data_and_schedule(config)
  if config.eval.batch_size is not None:
    config_lib.check_positive(config, "eval.batch_size")
  if config.head.reinit_layers < 0:
    raise UserError(
      f"config.head.reinit_layers={config.head.reinit_layers} must be 0 (none) or more"
    )
  if config.task == embedding.TASK:
    _validate_embedding(config)
  known = evaluate_lib.KNOWN_METRICS.get(config.task)
  unknown = [n for n in evaluate_lib.given_metrics(config) if known is not None and n not in known]
  if unknown:
    raise UserError(
      f"config.eval.metrics={config.eval.get('metrics')!r}: {', '.join(unknown)} is not a metric of "
      f"task {config.task!r}; choose from {', '.join(known)}"
    )
  if config.eval.metric and config.data.eval:
    if config.task == embedding.TASK:  # spearman where the pairs have scores
      names = (*retrieval.METRICS, "spearman")
    else:
      names = (*evaluate_lib.metric_names(config)[0], "loss")
    if config.eval.metric not in names:
      raise UserError(
        f"config.eval.metric={config.eval.metric!r} is not one of the eval metrics of this "
        f"task and data: {', '.join(names)}"
      )


def _check_reinit_layers(config, model_cfg) -> None:
  """Bad input: config.head.reinit_layers more than the model's layers, or for ALBERT."""
  k = config.head.reinit_layers
  if k and model_cfg.arch == "albert":
    raise UserError(
      "config.head.reinit_layers does not apply to ALBERT, whose layers are shared "
      "across depth; set it to 0"
    )
  if k > model_cfg.num_layers:
    raise UserError(
      f"config.head.reinit_layers={k} exceeds the model's {model_cfg.num_layers} layers"
    )


def _validate_embedding(config) -> None:
  """The checks of task "embedding": columns, pooling, loss and its batch. Raises UserError."""
  d, e, t = config.data, config.embedding, config.train
  config_lib.check_choice(config, "embedding.pooling", embedding.POOLINGS)
  config_lib.check_choice(config, "embedding.loss", contrastive.LOSSES)
  if not d.text_pair_column:
    raise UserError(data_lib._NO_PAIR_COLUMN)
  for spec in (d.train, d.eval):
    if spec and data_lib.is_tfds(spec):
      raise UserError(
        f"config.data: {spec} is a TFDS dataset; embedding pairs come from a .csv, .tsv "
        f"or .jsonl file"
      )
  if e.loss == "triplet" and not d.negative_column:
    raise UserError(
      "config.embedding.loss='triplet' needs a negative for each pair: set "
      "config.data.negative_column, or use loss 'mnrl' (in-batch negatives)"
    )
  if e.loss == "mnrl" and not e.scale > 0:
    raise UserError(f"config.embedding.scale={e.scale} must be positive (1 / temperature)")
  micro = t.batch_size // t.accum_steps
  if e.loss == "mnrl" and micro < 2:
    raise UserError(
      f"config.train.batch_size={t.batch_size} (accum_steps={t.accum_steps}) gives "
      f"{micro} pair per (micro-)batch; in-batch negatives (config.embedding.loss='mnrl') "
      f"need at least 2: raise the batch size"
    )
  if config.head.freeze_encoder:
    raise UserError(
      "config.head.freeze_encoder=True would train nothing: an embedding model is its "
      "encoder; leave it False"
    )


def check_data_and_schedule(config, train: str = "config.data.train is required") -> None:
  """Bad input a task run shares (fine-tuning, distillation): no train data (`train` says
  what is required), a length below 1, no steps or epochs, a warmup fraction outside [0, 1].

  Raises:
    UserError: naming the key and what would work.
  """
  if not config.data.train and train:
    raise UserError(f"{train}: a .csv / .tsv / .jsonl file or tfds:NAME:SPLIT")
  if config.data.max_seq_length < encoding_lib.MIN_SEQ_LENGTH:
    raise UserError(
      f"config.data.max_seq_length={config.data.max_seq_length} leaves no room for text "
      f"beside the special tokens; give at least {encoding_lib.MIN_SEQ_LENGTH}"
    )
  t = config.train
  if t.steps is not None and t.steps < 1:
    raise UserError(
      f"config.train.steps={t.steps}: give a positive number of steps, or leave steps unset "
      f"to train for config.train.epochs"
    )
  if t.steps is None and not t.epochs > 0:
    raise UserError(f"config.train.epochs={t.epochs}: give a positive number of epochs")
  if not 0 <= config.train.warmup_fraction <= 1:
    raise UserError(
      f"config.train.warmup_fraction={config.train.warmup_fraction} must be in [0, 1]"
    )


def _label_map(workdir, config, examples, resume_meta, init_meta):
  """The run's labels: a resumed run's (the data's labels must be among them); else
  init_from's when it is a fine-tuned run of this task whose head is kept (likewise); else
  the data's. A new map needs two labels at least: with one, the loss is 0 from the start.
  """
  if config.task in ("regression", "qa", embedding.TASK):
    return None
  found = labels_lib.LabelMap.infer(examples, config)
  if resume_meta and resume_meta.get("labels"):
    trained = resume_meta["labels"]
    if config.data.labels and found.names != trained or not set(found.names) <= set(trained):
      raise UserError(
        f"{workdir} was trained with the labels {', '.join(trained)}, and this data has "
        f"{', '.join(found.names)}; fine-tune on it in a new --workdir"
      )
    return labels_lib.LabelMap(trained)
  if init_meta.get("task") != config.task or config.head.reinit:
    _check_two_labels(config, found)
    return found
  kept = init_meta["labels"]
  if config.data.labels and found.names != kept or not set(found.names) <= set(kept):
    raise UserError(
      f"config.init_from has a {config.task} head for the labels "
      f"{', '.join(kept)} but the data has {', '.join(found.names)}; start a new "
      f"head with --config.head.reinit=True"
    )
  return labels_lib.LabelMap(kept)


def _check_two_labels(config, labels):
  """A UserError when a new head would have fewer than two labels to tell apart."""
  if len(labels.names) >= 2:
    return
  what = "tag" if config.task == "tokens" else "label"
  found = f"only one {what} {labels.names[0]!r}" if labels.names else f"no {what}s"
  if config.data.labels:
    where = f"config.data.labels={config.data.labels!r} names {found}"
  else:
    where = f"the train data {config.data.train} has {found} (column {config.data.label_column!r})"
  raise UserError(
    f"{where}; {config.task} needs at least two: add examples of the other {what}s, or "
    f"name them all in config.data.labels (e.g. --config.data.labels=negative,positive)"
  )


def _num_labels(config, labels):
  if config.task == embedding.TASK:
    return 0
  return {"regression": 1, "qa": 2}.get(config.task) or len(labels.names)


def _restore_init(source, step, init_meta, same_head, abstract, fresh, reinit_layers):
  """The starting parameters: init_from's encoder (and head, when it is the same task's),
  the rest fresh; the top `reinit_layers` layers and the pooler fresh when asked.
  `fresh(select)` initialises the part `select` picks (`loop.Job.init_params`).
  """
  head = None
  if same_head:
    params = run_lib.restore_as(source, step, init_meta, abstract)
  else:
    encoder = run_lib.restore_encoder(source, step, init_meta, abstract["bert"])
    head = fresh(lambda params: {name: p for name, p in params.items() if name != "bert"})
    params = dict(head, bert=encoder)
  if reinit_layers:
    params = _reinit_top_layers(params, fresh(lambda params: params["bert"]), reinit_layers)
  kept = "encoder and head" if same_head else "encoder (a new head)" if head else "encoder"
  log(f"init_from: the {kept} of {source.directory} step {step}")
  return params


def _reinit_top_layers(params, fresh_encoder, k):
  """Fresh values (from `fresh_encoder`, a fresh `bert` tree) for the top k encoder layers
  and the pooler (Zhang et al. 2021). `k` is checked first (`_check_reinit_layers`).
  """
  scanned = params["bert"]["encoder"]
  encoder = hf_convert.unscan(params)["bert"]["encoder"]  # layer_{i}, whatever the layout
  new = hf_convert.unscan({"bert": fresh_encoder})["bert"]["encoder"]
  count = len(encoder)
  for i in range(count - k, count):
    encoder[f"layer_{i}"] = new[f"layer_{i}"]
  bert = dict(params["bert"], encoder=hf_convert.scan_like(encoder, scanned))
  if "pooler" in fresh_encoder:  # families without a pooler re-initialise their head only
    bert["pooler"] = fresh_encoder["pooler"]
  return dict(params, bert=bert)


def _optimizer(config, steps):
  t = config.train
  tx, schedule = optimizer_lib.make_optimizer(
    t, steps=steps, warmup_steps=int(t.warmup_fraction * steps)
  )
  if config.head.freeze_encoder:
    tx = optimizer_lib.freeze(tx, ("bert",))
  return tx, schedule


def train_steps(config, rows: int) -> tuple[int, int]:
  """(the run's steps, steps per epoch) for `rows` training rows: config.train.steps, else
  epochs x the full batches in an epoch; UserError when they make no batch at all.
  """
  t = config.train
  per_epoch = rows // t.batch_size
  if per_epoch < 1:
    smaller = 1 << max(rows // 2, 1).bit_length() - 1  # two batches an epoch at least
    source = config.data.train or config.get("distill", {}).get("unlabeled")  # distill's texts
    raise UserError(
      f"{source} gives {rows} training rows, fewer than one batch of config.train.batch_size="
      f"{t.batch_size}; lower the batch size, e.g. --config.train.batch_size={smaller}"
    )
  return t.steps or max(1, int(round(t.epochs * per_epoch))), per_epoch


def finetune(config, workdir: str) -> None:
  """Runs (or resumes) fine-tuning as `config` says, writing everything under `workdir`.

  The data is read, checked and encoded before anything is written, so bad input (no
  rows, a label outside the map, one class) leaves the workdir as it was.

  Raises:
    UserError: bad config or data, or a workdir / init_from that does not fit.
  """
  validate(config)
  if config.distributed:
    sharding.initialize_distributed()
  source, init_step = run_lib.open_checkpoints(config.init_from)
  init_meta = source.meta(init_step)
  tokenizer = run_lib.tokenizer(run_lib.workdir_of(config.init_from))
  if tokenizer.fingerprint != init_meta["tokenizer_fingerprint"]:
    raise UserError(
      f"the tokenizer of {config.init_from} is not the one its checkpoint was "
      f"trained with; restore that run's tokenizer"
    )
  resume_meta = run_lib.latest_meta(workdir)
  if resume_meta:  # the run's kind and task, before any data is read (labels: later)
    _check_resume(workdir, config, None, resume_meta)
    run_lib.check_same_init_from(config, workdir)

  train = data_lib.read(config.data.train, config)
  if config.task == embedding.TASK:
    _check_negatives(config, train)
  labels = _label_map(workdir, config, train, resume_meta, init_meta)
  train_arrays, truncated = encoding_lib.encode(train, tokenizer, config, labels, train=True)
  num_labels = _num_labels(config, labels)
  model_cfg = config_lib.model_config(config, tokenizer.vocab_size, init_meta["model"])
  config_lib.check_same_model(
    init_meta["model"],
    config_lib.model_dict(model_cfg),
    f"config.init_from={config.init_from!r}",
    fix="fine-tune it as it is: config.model.size='checkpoint' (the default)",
    layout=False,  # a scanned run's layers restore unrolled, and the other way
  )
  config = config_lib.with_model_arch(config, model_cfg)
  _check_reinit_layers(config, model_cfg)
  meta_extra = {}
  if config.task == embedding.TASK:
    meta_extra[embedding.TASK] = {
      "pooling": config.embedding.pooling,
      "normalize": bool(config.embedding.normalize),
    }
    model = embedding.from_meta(model_cfg, meta_extra)
    objective = contrastive.objective(model, config)
  else:
    model = tasks.ForTask(model_cfg, config.task, num_labels)
    objective = task_objective.FineTuning(model, config.task)
  t = config.train
  rows = len(next(iter(train_arrays.values())))
  steps, per_epoch = train_steps(config, rows)
  tx, schedule = _optimizer(config, steps)
  _log_data("train", config.data.train, train, rows, truncated, config)
  if labels:
    for line in _label_lines(config, labels, train):
      log(line)
  if config.task == embedding.TASK and (note := _repeats_note(train)):
    log(note)

  evaluation = {}  # no eval data: the Job's defaults (no evaluation)
  if config.data.eval:
    evaluation = _evaluator(config, model, tokenizer, labels)
  same_head = init_meta.get("task") == config.task and not config.head.reinit
  job = loop.Job(
    model=model,
    objective=objective,
    tx=tx,
    schedule=schedule,
    steps=steps,
    batch_size=t.batch_size,
    batches=functools.partial(_batches, train_arrays, config, steps),
    example_batch=functools.partial(first_batch, train_arrays, config),
    eval_every=config.eval.every_steps or per_epoch,
    meta={
      "model": config_lib.model_dict(model_cfg),
      "tokenizer_fingerprint": tokenizer.fingerprint,
      "task": config.task,
      "num_labels": num_labels,
      "labels": labels.names if labels else None,
      "max_seq_length": config.data.max_seq_length,
      "init_from": config.init_from,
      "batch_size": t.batch_size,
      "seed": config.seed,
      **meta_extra,
    },
    check_resume=functools.partial(_check_resume, workdir, config, labels),
    init_params=functools.partial(
      _restore_init,
      source,
      init_step,
      init_meta,
      same_head,
      reinit_layers=config.head.reinit_layers,
    ),
    progress_keys=("loss", "seq_per_s")
    if config.task == "regression"
    else ("loss", "accuracy", "seq_per_s"),
    **evaluation,
  )
  train_standalone(config, workdir, job, tokenizer)


def train_standalone(config, workdir, job, tokenizer, before_training=None):
  """Trains `job` in a run that stands alone (its tokenizer copied in): the batch against
  the devices, and a checkpoint already in `workdir` against the job, are checked before
  anything is written there. `before_training()`, if given, runs on process 0 once the
  workdir is this run's (distill keeps its teacher's logits there).
  """
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_divides(job.batch_size, config.train.accum_steps, mesh)
  resume_meta = run_lib.latest_meta(workdir)
  if resume_meta:
    job.check_resume(resume_meta)
    loop.check_resume(resume_meta, job.meta, workdir)
  with lock_lib.held(workdir):
    multihost.on_process_zero(lambda: run_lib.save_tokenizer(tokenizer, workdir))
    if before_training:
      multihost.on_process_zero(before_training)
    loop.train(config, workdir, job)


def _check_resume(workdir, config, labels, meta):
  """Refuses a checkpoint of another task or label set (the loop checks model and batch)."""
  if meta.get("imported_from") or not meta.get("task"):
    raise UserError(
      f"{workdir} holds {'an imported' if meta.get('imported_from') else 'a pretraining'} "
      f"checkpoint, not a fine-tuned run; fine-tune from it with --config.init_from="
      f"{workdir} and a new --workdir"
    )
  if meta.get("task") != config.task:
    raise UserError(
      f"{workdir} holds a checkpoint of task {meta.get('task')!r}, not "
      f"{config.task!r}; use a new --workdir"
    )
  if labels and meta.get("labels") != labels.names:
    raise UserError(
      f"{workdir} was trained with the labels {meta.get('labels')}, the data now "
      f"gives {labels.names}; use a new --workdir"
    )
  if config.task == embedding.TASK:
    saved = meta.get(embedding.TASK) or {}
    for key in ("pooling", "normalize"):
      if saved.get(key) != config.embedding[key]:
        raise UserError(
          f"{workdir} was trained with config.embedding.{key}={saved.get(key)!r}, this run "
          f"asks for {config.embedding[key]!r}; resume with the same setting or use a new "
          f"--workdir"
        )


def _repeats_note(examples) -> str | None:
  """A note on positives that come more than once: two rows of one batch with the same
  positive make each the other's in-batch negative (sentence-transformers' no-duplicates
  loader keeps them apart; here, drop the repeats).
  """
  positives = collections.Counter(r["text_pair"] for r in examples.rows)
  repeats = sum(n - 1 for n in positives.values() if n > 1)
  if not repeats:
    return None
  return (
    f"note: {progress_lib.count(repeats, 'row')} repeat a positive of another row: two in one "
    f"batch are each other's negative, which MNRL trains against; drop the repeats"
  )


def _check_negatives(config, examples):
  """A UserError when config.data.negative_column is set but the train data lacks it."""
  column = config.data.negative_column
  if column and examples.rows[0].get("negative") is None:
    raise UserError(
      f"{config.data.train} has no column {column!r} (config.data.negative_column); "
      f"add the hard negatives, or unset it for in-batch negatives only"
    )


def first_batch(arrays, config):
  """This process's rows of the first training batch (`loop.Job.example_batch`)."""
  return next(_batches(arrays, config, 1, 0))


def _batches(arrays, config, steps, start):
  t = config.train
  for step in range(start, steps):
    yield batching_lib.train_batch(
      arrays,
      step,
      batch_size=t.batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )


def _label_lines(config, labels, examples) -> list[str]:
  """What the train data's labels are: `labels: 3 (neg 40, neu 12, pos 48)` (tags: their
  names), and a note for labels that differ only in case or spaces, for a label without
  train rows, and for many labels that are all numbers (a score, for regression).
  """
  tokens = config.task == "tokens"
  counts = collections.Counter(
    labels_lib.label_name(v)
    for r in examples.rows
    for v in (r["tags"] if tokens else [r["label"]])
    if v is not None
  )
  shown = [n if tokens else f"{n} {counts[n]}" for n in labels.names[:20]]
  more = f", and {len(labels.names) - 20} more" if len(labels.names) > 20 else ""
  lines = [f"{'tags' if tokens else 'labels'}: {len(labels.names)} ({', '.join(shown)}{more})"]
  alike = collections.defaultdict(list)
  for name in labels.names:
    alike[" ".join(name.split()).casefold()].append(name)
  for names in alike.values():
    if len(names) > 1:
      lines.append(
        f"note: the labels {', '.join(map(repr, names))} differ only in case or spaces; fix "
        f"the data if they are one"
      )
  unseen = [n for n in labels.names if not counts[n]]
  if unseen and not tokens:
    lines.append(f"note: no train rows of {', '.join(map(repr, unseen[:5]))}")
  if (
    not tokens
    and len(labels.names) > max(10, len(examples.rows) // 4)
    and all(_is_number(n) for n in labels.names)
  ):
    lines.append(
      f"note: {len(labels.names)} labels in {len(examples.rows)} rows, all numbers: for a "
      f"score, fine-tune with --config.task=regression"
    )
  return lines


def _is_number(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def _log_data(split, spec, examples, rows, truncated, config):
  notes = []
  if examples.skipped_empty:
    notes.append(f"{progress_lib.count(examples.skipped_empty, 'empty row')} skipped")
  if truncated:
    notes.append(f"{truncated} truncated to {config.data.max_seq_length} tokens")
  if split == "eval" and config.task == "classification" and examples.rows:
    # The accuracy of always answering the most frequent label: the one to beat.
    name, n = collections.Counter(
      labels_lib.label_name(r["label"]) for r in examples.rows
    ).most_common(1)[0]
    notes.append(f"most frequent label {name!r}: accuracy {n / len(examples.rows):.4f}")
  log(
    f"{split}: {len(examples.rows)} examples, {rows} rows from {spec}"
    + (f" ({', '.join(notes)})" if notes else "")
  )


def _evaluator(config, model, tokenizer, labels):
  """The `loop.Job` fields of evaluating on config.data.eval: evaluate(params, mesh),
  eval_line and best_metric.
  """
  examples = data_lib.read(config.data.eval, config)
  arrays, truncated = encoding_lib.encode(examples, tokenizer, config, labels)
  rows = len(next(iter(arrays.values())))
  _log_data("eval", config.data.eval, examples, rows, truncated, config)
  batch_size = config.eval.batch_size or config.train.batch_size
  if config.task == embedding.TASK:
    return _embedding_evaluator(config, model, tokenizer, examples, batch_size)
  names = labels.names if labels else None
  _, main = evaluate_lib.metric_names(config)

  def evaluate(params, mesh):
    logits = evaluate_lib.logits(model, params, arrays, batch_size, mesh)
    return evaluate_lib.scores(config, logits, arrays, examples, names)

  def programs(params, mesh):
    return [evaluate_lib.logits_program(model, params, arrays, batch_size, mesh)]

  return {
    "evaluate": evaluate,
    "eval_line": _eval_line,
    "best_metric": main,
    "eval_programs": programs,
  }


def _eval_line(step, values):
  shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if not k.startswith("best_"))
  return f"eval step {step}: {shown}"


def _embedding_evaluator(config, model, tokenizer, examples, batch_size):
  """The `loop.Job` fields of retrieval on the eval pairs: every distinct eval positive is
  the corpus (`retrieval`); the best checkpoint is kept by config.eval.metric or MRR@10.
  """
  inputs = evaluate_lib.embedding_inputs(examples, tokenizer, config.data.max_seq_length)

  def evaluate(params, mesh):
    return evaluate_lib.embedding_scores(model, params, inputs, batch_size, mesh)

  def programs(params, mesh):  # anchors and documents share a length: one program
    return [evaluate_lib.logits_program(model, params, inputs["anchors"], batch_size, mesh)]

  return {
    "evaluate": evaluate,
    "eval_line": _eval_line,
    "best_metric": config.eval.metric or retrieval.MAIN,
    "eval_programs": programs,
  }
