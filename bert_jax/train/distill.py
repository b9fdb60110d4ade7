"""`bert-jax distill`: a small student classifier trained on a fine-tuned teacher's softened
probabilities and the data's labels (`finetune.distillation`), with the loop every job
shares: sharded state, exact resume, metrics, evals, checkpoints and the best eval in
`best/`.

The teacher (`config.teacher`) is a fine-tuned classification run (its best eval), or a
Hugging Face `*ForSequenceClassification` directory of a family import-hf reads (its head,
`id2label` and tokenizer). The student uses the teacher's tokenizer and label map, and is one of:
  - `config.model.size="teacher"`: the teacher's own layers `config.distill.student_layers`
    (e.g. "0,2,4"), with its embeddings, pooler and head (DistilBERT's initialisation);
  - a size preset (`tiny` ... `large`): a new model of the teacher's family
    (`config.model.arch` for another family), initialised from `config.seed`;
  - `"checkpoint"`: `config.init_from`'s architecture and encoder (a run of the teacher's
    tokenizer), with a new head.
The teacher labels every train row, and the texts of `config.distill.unlabeled`, once
before the first step (its logits travel with the batches, and are kept in the workdir:
`teacher_logits`), so a resumed run sees the same targets without labelling again. A
distilled run is a fine-tuned classification run: `evaluate`, `predict` and `export-hf`
work on it unchanged.
"""

import functools
import tempfile

import jax
import numpy as np

from bert_jax import config as config_lib
from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax import sharding, storage
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import distillation
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import evaluate as evaluate_lib
from bert_jax.finetune import labels as labels_lib
from bert_jax.hf import convert as hf_convert
from bert_jax.hf import files as hf_files
from bert_jax.hf import import_hf as hf_import
from bert_jax.hf import task_heads as hf_task_heads
from bert_jax.model import tasks
from bert_jax.train import finetune, loop, teacher_logits
from bert_jax.train.metrics import log

DEFAULT_RECIPE = config_lib.RECIPES / "distill.py"
USAGE = {
  "distill": """usage: bert-jax distill [--config configs/distill.py] --workdir DIR --config.teacher=RUN_DIR [--config.KEY=VALUE ...]

Distils config.teacher (a fine-tuned classification run, or a Hugging Face
*ForSequenceClassification directory) into a smaller student: a size
preset (config.model.size), or the teacher's own layers (--config.model.size=teacher
--config.distill.student_layers=0,2,4). Without --config: configs/distill.py.
Keys, defaults and comments: bert_jax/config.py (distill_base_config)."""
}
STUDENT_SIZES = ("teacher", "checkpoint") + tuple(config_lib.SIZES)


def validate(config) -> None:
  """Bad-input checks of a distillation config, before anything is read or written.

  Raises:
    UserError: naming the key, its value and what would work.
  """
  config_lib.check_choice(config, "model.size", STUDENT_SIZES)
  probe = config
  if config.model.size == "teacher":  # the shared checks know the presets and "checkpoint"
    probe = config.copy_and_resolve_references()
    with probe.unlocked():
      probe.model.size = "tiny"
  config_lib.validate_common(probe)
  if config.task != "classification":
    raise UserError(
      f"config.task={config.task!r}: distillation trains classifiers; set "
      f"--config.task=classification"
    )
  if not config.teacher:
    raise UserError(
      "config.teacher is required: a fine-tuned classification run to distil "
      "(--config.teacher=RUN_DIR, made by bert-jax finetune)"
    )
  finetune.check_data_and_schedule(
    config,
    None
    if config.distill.unlabeled
    else "config.data.train (labelled texts) or config.distill.unlabeled (texts the teacher "
    "labels, a .txt of one per line) is required",
  )
  d = config.distill
  if not d.temperature > 0:
    raise UserError(f"config.distill.temperature={d.temperature} must be above 0 (e.g. 2)")
  if not 0 <= d.alpha <= 1:
    raise UserError(f"config.distill.alpha={d.alpha} must be in [0, 1] (the soft-loss weight)")
  for key in ("hidden_weight", "attention_weight"):
    if d[key]:
      raise UserError(
        f"config.distill.{key}={d[key]}: intermediate-layer losses are not implemented; "
        f"set it to 0 (the soft and hard losses train the student)"
      )
  if config.model.size == "teacher":  # (other sizes leave distill.student_layers unread)
    student_layers(config)  # parses
  if config.init_from and config.model.size != "checkpoint":
    raise UserError(
      f"config.init_from gives the student's architecture and encoder: set "
      f"--config.model.size=checkpoint, or drop config.init_from for size "
      f"{config.model.size!r}"
    )


def student_layers(config, teacher_layers: int | None = None) -> list[int]:
  """The teacher layers `config.distill.student_layers` keeps ("0,2,4" -> [0, 2, 4]).

  Raises:
    UserError: not a comma-separated list of increasing layer numbers, or (given
      `teacher_layers`) a number outside 0 .. teacher_layers - 1.
  """
  text = config.distill.student_layers
  if not text:
    raise UserError(
      "config.model.size='teacher' keeps some of the teacher's layers: name them, e.g. "
      "--config.distill.student_layers=0,2,4"
    )
  try:
    layers = [int(part) for part in str(text).split(",")]
  except ValueError:
    raise UserError(
      f"config.distill.student_layers={text!r} is not a comma-separated list of layer "
      f"numbers, e.g. 0,2,4"
    ) from None
  if any(b <= a for a, b in zip(layers, layers[1:])):
    raise UserError(
      f"config.distill.student_layers={text!r} must name each layer once, in increasing order"
    )
  if teacher_layers is not None and (layers[0] < 0 or layers[-1] >= teacher_layers):
    raise UserError(
      f"config.distill.student_layers={text!r} is out of range: the teacher has "
      f"{teacher_layers} layers, numbered 0 to {teacher_layers - 1}"
    )
  return layers


def load_teacher(path: str, scratch: str) -> run_lib.Run:
  """The teacher on one device: a run's best eval, or a Hugging Face
  `*ForSequenceClassification` directory (its tokenizer written into `scratch`).

  Raises:
    UserError: `path` is neither, or a run without a classification head.
  """
  workdir = run_lib.workdir_of(path)
  checkpoints = run_lib.path(workdir, run_lib.CHECKPOINTS)
  if not storage.isdir(checkpoints) and storage.isfile(storage.join(workdir, "config.json")):
    return _hf_teacher(path, scratch)
  if not storage.isdir(checkpoints):
    raise UserError(f"config.teacher={path} is not a run directory (it has no checkpoints/)")
  teacher = run_lib.load(workdir)
  task = teacher.meta.get("task")
  if task != "classification":
    what = (
      f"a run fine-tuned for {task!r}" if task else "not a fine-tuned run (it has no task head)"
    )
    raise UserError(
      f"config.teacher={path} is {what}; the teacher must be a fine-tuned classification "
      f"run: bert-jax finetune --config.init_from={path} --workdir TEACHER"
    )
  return teacher


def _hf_teacher(hf_dir: str, scratch: str) -> run_lib.Run:
  """A Hugging Face sequence classifier of any family import-hf reads, with its head and
  `id2label`, as a run on one device (read as import-hf reads it).
  """
  hf = hf_files.read_config(hf_dir)
  head = hf_task_heads.head_of(hf)
  if head is None or head.task != "classification":
    architectures = hf.get("architectures")
    names = ", ".join(map(str, architectures)) if isinstance(architectures, list) else ""
    what = f"{head.architecture} for {head.task}" if head else names or "model"
    raise UserError(
      f"config.teacher={hf_dir} is a Hugging Face {what}, not a *ForSequenceClassification "
      f"(single-label) classifier; give one, or import it and fine-tune it with bert_jax "
      f"first: bert-jax finetune --config.init_from=IMPORTED --workdir TEACHER"
    )
  checkpoint = hf_import.read_checkpoint(hf_dir, hf, log=log)
  tokenizer = hf_import.read_tokenizer(hf_dir, scratch, checkpoint, hf, log=log)
  meta = hf_import.run_meta(checkpoint, tokenizer)
  params = jax.device_put(checkpoint.params, jax.devices()[0])
  return run_lib.Run(checkpoint.model, params, tokenizer, meta, 0)


def _label_map(config, examples, teacher, resume_meta):
  """The teacher's labels; the data's must be among them (in the teacher's order)."""
  names = teacher.meta["labels"]
  if resume_meta and resume_meta.get("labels") and resume_meta["labels"] != names:
    raise UserError(
      f"the workdir was distilled with the labels {resume_meta['labels']}, the teacher has "
      f"{names}; use a new --workdir"
    )
  if examples is None:  # the teacher labels every text
    return labels_lib.LabelMap(names, teacher=config.teacher, unlabelled_id=distillation.UNLABELED)
  found = labels_lib.LabelMap.infer(examples, config)
  given = config.data.labels and found.names != names
  foreign = [n for n in found.names if n not in names]
  if given or foreign:
    shown = found.names if given else foreign
    raise UserError(
      f"the teacher {config.teacher} was trained with the labels {', '.join(names)} but "
      f"{'config.data.labels names' if given else config.data.train + ' has'} "
      f"{', '.join(shown)}; distil on data of the teacher's labels (or fine-tune a teacher "
      f"on these)"
    )
  return labels_lib.LabelMap(names, teacher=config.teacher, unlabelled_id=distillation.UNLABELED)


def _unlabeled_arrays(config, tokenizer):
  """(arrays, examples) of config.distill.unlabeled: a .txt file (a text per line) or a
  .csv / .tsv / .jsonl file with the text column(s); every row's label is UNLABELED.
  """
  spec = config.distill.unlabeled
  if spec.lower().endswith(".txt"):
    if not storage.isfile(spec):
      raise UserError(f"config.distill.unlabeled={spec} does not exist; give a file of texts")
    if config.data.text_pair_column:
      raise UserError(
        f"config.distill.unlabeled={spec}: pairs need their two columns; give a .csv or "
        f".jsonl file with {config.data.text_column!r} and {config.data.text_pair_column!r}"
      )
    lines = storage.read_text(spec).splitlines()
    rows = [{"text": t, "text_pair": None, "label": None} for t in lines if t.strip()]
    examples = data_lib.Examples(rows, len(lines) - len(rows), source=spec)
    if not rows:
      raise UserError(f"config.distill.unlabeled={spec} has no text; give a file of texts")
  else:
    examples = data_lib.read(spec, config, labelled=False)
  arrays, truncated = encoding_lib.encode_sequences(
    examples, tokenizer, config.data.max_seq_length, None
  )
  arrays["labels"] = np.full(len(examples.rows), distillation.UNLABELED, np.int32)
  finetune._log_data("unlabeled", spec, examples, len(examples.rows), truncated, config)
  return arrays


def _with(config, **model):
  """A copy of `config` whose config.model has the `model` values."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.update(model)
  return config


def _student_config(config, teacher, tokenizer, init_meta):
  """The student's frozen model config."""
  size = config.model.size
  if size == "teacher":
    arch = teacher.model.config
    if arch.arch == "albert":
      raise UserError(
        "config.model.size='teacher' keeps some of the teacher's layers, but ALBERT shares "
        "one layer across depth; distil into a size preset (--config.model.size=mini)"
      )
    layers = student_layers(config, arch.num_layers)
    shape = dict(teacher.meta["model"], num_layers=len(layers))
    return config_lib.model_config(
      _with(config, size="checkpoint", arch=None), tokenizer.vocab_size, shape
    )
  if size == "checkpoint":
    return config_lib.model_config(config, tokenizer.vocab_size, init_meta["model"])
  arch = config.model.arch or teacher.model.config.arch
  return config_lib.model_config(
    _with(config, arch=arch), tokenizer.vocab_size, pad_id=tokenizer.pad_id
  )


def _teacher_layers_init(teacher, layers, abstract, fresh):
  """The student's starting parameters: the teacher's embeddings, kept layers (renumbered
  0 .. k-1), pooler and head, placed in the student's sharding.
  """
  del fresh
  params = jax.tree_util.tree_map(np.asarray, teacher.params)
  encoder = hf_convert.unscan(params)["bert"]["encoder"]
  chosen = {f"layer_{j}": encoder[f"layer_{i}"] for j, i in enumerate(layers)}
  student_encoder = hf_convert.scan_like(chosen, abstract["bert"]["encoder"])
  student = dict(params, bert=dict(params["bert"], encoder=student_encoder))
  return jax.tree_util.tree_map(
    lambda target, value: jax.make_array_from_callback(
      target.shape, target.sharding, lambda index: value.astype(target.dtype)[index]
    ),
    abstract,
    student,
  )


def param_counts(params) -> tuple[int, int]:
  """(all parameters, those outside the embeddings) of a task model's params tree."""
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    size = int(np.prod(leaf.shape))
    total += size
    names = [getattr(k, "key", None) for k in path]
    embedding += size * (names[:2] == ["bert", "embeddings"])
  return total, total - embedding


def _counts_line(teacher_params, student_params) -> str:
  (t_all, t_body), (s_all, s_body) = param_counts(teacher_params), param_counts(student_params)
  return (
    f"parameters: teacher {t_all:,} ({t_body:,} non-embedding), student {s_all:,} "
    f"({s_body:,} non-embedding, {s_body / t_body:.1%} of the teacher's)"
  )


def _scores_line(values) -> str:
  return ", ".join(f"{k} {v:.4f}" for k, v in values.items())


def distill(config, workdir: str) -> None:
  """Runs (or resumes) distillation as `config` says, writing everything under `workdir`.

  The teacher, the data and the student's starting point are read and checked before
  anything is written, so bad input leaves the workdir as it was.

  Raises:
    UserError: bad config, teacher or data, or a workdir that does not fit.
  """
  validate(config)
  if config.distributed:
    sharding.initialize_distributed()
  with tempfile.TemporaryDirectory(prefix="bert-jax-teacher.") as scratch:
    _distill(config, workdir, load_teacher(config.teacher, scratch))


def _distill(config, workdir, teacher):
  tokenizer = teacher.tokenizer
  init_meta = source = init_step = None
  if config.init_from:
    source, init_step = run_lib.open_checkpoints(config.init_from)
    init_meta = source.meta(init_step)
    if init_meta["tokenizer_fingerprint"] != tokenizer.fingerprint:
      raise UserError(
        f"config.init_from={config.init_from} uses another tokenizer than the teacher "
        f"{config.teacher}; the student must read the teacher's tokens: start from a run "
        f"of the teacher's tokenizer, or from the teacher's layers (--config.model.size="
        f"teacher --config.distill.student_layers=...)"
      )
  if config.data.max_seq_length > teacher.model.config.max_length:
    raise UserError(
      f"config.data.max_seq_length={config.data.max_seq_length} exceeds the teacher's "
      f"{teacher.model.config.max_length} positions"
    )
  resume_step, resume_meta = run_lib.latest_checkpoint(workdir)
  teacher_path = storage.absolute(run_lib.workdir_of(config.teacher))
  if resume_meta:  # the run's kind and teacher, before the teacher labels anything
    _check_resume(workdir, config, None, teacher_path, resume_meta)
    run_lib.check_same_init_from(config, workdir)

  train = None
  if config.data.train:  # a row with an empty label is the teacher's alone to label
    train = data_lib.read(config.data.train, config, partly_labelled=True)
  labels = _label_map(config, train, teacher, resume_meta)
  arrays = None
  if train is not None:
    arrays, truncated = encoding_lib.encode(train, tokenizer, config, labels, train=True)
    rows = len(arrays["labels"])
    finetune._log_data("train", config.data.train, train, rows, truncated, config)
    labelled_ids = arrays["labels"][arrays["labels"] != distillation.UNLABELED]
    if unlabelled := rows - len(labelled_ids):
      log(
        f"train: {progress_lib.count(unlabelled, 'row')} without a label: the teacher labels them"
      )
    given = set(labelled_ids.tolist())
    if len(given) == 1:
      log(
        f"note: every labelled train row is {labels.names[given.pop()]!r}: the student learns "
        f"the teacher's other {len(labels.names) - 1} labels from its probabilities alone"
      )
  if config.distill.unlabeled:
    extra = _unlabeled_arrays(config, tokenizer)
    arrays = (
      extra if arrays is None else {k: np.concatenate([v, extra[k]]) for k, v in arrays.items()}
    )
  labelled = bool((arrays["labels"] != distillation.UNLABELED).any())
  model_cfg = _student_config(config, teacher, tokenizer, init_meta)
  num_labels = len(labels.names)
  model = tasks.ForTask(model_cfg, "classification", num_labels)
  t = config.train
  rows = len(arrays["input_ids"])
  steps, per_epoch = finetune.train_steps(config, rows)
  tx, schedule = finetune._optimizer(config, steps)

  batch_size = config.eval.batch_size or t.batch_size
  evaluation, teacher_eval = {}, None
  if config.data.eval:  # read and checked before the teacher labels the train rows
    evaluation = finetune._evaluator(config, model, tokenizer, labels)
  student_abstract = run_lib.abstract_params(model)
  log(_counts_line(teacher.params, student_abstract))
  if param_counts(student_abstract)[1] >= param_counts(teacher.params)[1]:
    log(
      "note: the student is not smaller than the teacher; distillation pays with a smaller "
      "one (--config.model.size=mini, or some of the teacher's own layers: "
      "--config.model.size=teacher --config.distill.student_layers=0,2,4)"
    )
  keep_logits = None
  if resume_step is not None and resume_step >= steps:
    # Finished: the loop says "nothing to do", and no step would read the teacher's labels.
    arrays["teacher_logits"] = np.zeros((rows, num_labels), np.float32)
  else:
    logits_key = teacher_logits.key(teacher_path, teacher.step, teacher.params, arrays)
    kept = teacher_logits.read(workdir, logits_key)
    if kept is not None and kept.shape == (rows, num_labels):
      log(
        f"teacher logits of the {rows} train rows: {teacher_logits.FILE} in the workdir, "
        f"from an earlier start"
      )
      arrays["teacher_logits"] = kept
    else:
      log(f"teacher {config.teacher} (step {teacher.step}) labels {rows} train rows")
      arrays["teacher_logits"] = evaluate_lib.logits(
        teacher.model, teacher.params, arrays, batch_size, progress=True
      )
      keep_logits = functools.partial(
        teacher_logits.write, workdir, logits_key, arrays["teacher_logits"]
      )
  if config.data.eval:
    teacher_eval = _teacher_scores(config, teacher, labels, batch_size)
    own = teacher.meta.get("max_seq_length")
    at = config.data.max_seq_length
    where = (
      f" (at the student's {at} tokens; the teacher trained at {own})" if own and own != at else ""
    )
    log(f"teacher eval{where}: {_scores_line(teacher_eval)}")

  if config.model.size == "teacher":
    init_params = functools.partial(
      _teacher_layers_init, teacher, student_layers(config, teacher.model.config.num_layers)
    )
  elif config.model.size == "checkpoint":
    init_params = functools.partial(
      finetune._restore_init, source, init_step, init_meta, False, reinit_layers=0
    )
  else:
    init_params = None
  job = loop.Job(
    model=model,
    objective=distillation.Distillation(
      model, config.distill.temperature, config.distill.alpha, labelled=labelled
    ),
    tx=tx,
    schedule=schedule,
    steps=steps,
    batch_size=t.batch_size,
    batches=functools.partial(finetune._batches, arrays, config, steps),
    example_batch=functools.partial(finetune.first_batch, arrays, config),
    eval_every=config.eval.every_steps or per_epoch,
    meta={
      "model": config_lib.model_dict(model_cfg),
      "tokenizer_fingerprint": tokenizer.fingerprint,
      "task": "classification",
      "num_labels": num_labels,
      "labels": labels.names,
      "max_seq_length": config.data.max_seq_length,
      "init_from": config.init_from or teacher_path,
      "distilled_from": {"teacher": teacher_path, "step": int(teacher.step)},
      "batch_size": t.batch_size,
      "seed": config.seed,
    },
    check_resume=functools.partial(_check_resume, workdir, config, labels, teacher_path),
    init_params=init_params,
    progress_keys=("loss", "accuracy", "teacher_agreement", "seq_per_s")
    if labelled
    else ("loss", "teacher_agreement", "seq_per_s"),
    **evaluation,
  )
  finetune.train_standalone(config, workdir, job, tokenizer, before_training=keep_logits)
  _summary(workdir, teacher, teacher_eval, student_abstract)


def _teacher_scores(config, teacher, labels, batch_size) -> dict:
  """The teacher's metrics on config.data.eval (encoded at the student's length)."""
  examples = data_lib.read(config.data.eval, config)
  arrays, _ = encoding_lib.encode(examples, teacher.tokenizer, config, labels)
  logits = evaluate_lib.logits(teacher.model, teacher.params, arrays, batch_size)
  return evaluate_lib.scores(config, logits, arrays, examples, labels.names)


def _check_resume(workdir, config, labels, teacher_path, meta):
  """Refuses a checkpoint of another task, label set or teacher."""
  finetune._check_resume(workdir, config, labels, meta)
  saved = (meta.get("distilled_from") or {}).get("teacher")
  if saved is None:
    itself = " (the teacher itself)" if storage.absolute(workdir) == teacher_path else ""
    raise UserError(
      f"{workdir} holds a fine-tuned run{itself}, not a distillation run; distil into a new "
      f"--workdir"
    )
  if saved != teacher_path:
    raise UserError(
      f"{workdir} was distilled from {saved}, not config.teacher={config.teacher}; use a "
      f"new --workdir"
    )


def _summary(workdir, teacher, teacher_eval, student_abstract) -> None:
  """The last lines: teacher and student (best eval) metrics and parameter counts."""
  if teacher_eval and run_lib.has_best(workdir):
    checkpoints, step = run_lib.open_checkpoints(workdir, folder=run_lib.BEST)
    best = checkpoints.meta(step)["best"]
    metric, value = best["metric"], best["value"]
    kept = value / teacher_eval[metric] if teacher_eval.get(metric) else float("nan")
    log(
      f"teacher {metric} {teacher_eval[metric]:.4f}; student {metric} {value:.4f} "
      f"(best eval, step {step}): {kept:.1%} of the teacher's"
    )
  log(_counts_line(teacher.params, student_abstract))
