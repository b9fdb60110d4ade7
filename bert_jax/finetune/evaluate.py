"""Fine-tuned models at work: logits over a dataset, the task's metrics, and predictions.

Used by the fine-tuning loop (eval every N steps), `bert-jax evaluate` (metrics of a
workdir's best checkpoint, printed as one JSON object on the last line) and `bert-jax
predict` (labels with probabilities, regression values, word tags or answer spans, as JSON
Lines). An embedding run's "logits" are its sentence embeddings, scored by retrieval
(`embedding_scores`).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import progress as progress_lib
from bert_jax import sharding
from bert_jax.finetune import batching as batching_lib
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import metrics as task_metrics
from bert_jax.finetune import objective as task_objective
from bert_jax.finetune import retrieval, squad
from bert_jax.train import precompile

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
# Metrics of each task when config.eval.metrics is None (a TFDS recipe sets its registry's,
# the official GLUE ones, and keeps them on local files) and the eval data is no TFDS split.
# Tags always get the entity spans' precision, recall and F1 and the words' accuracy.
DEFAULT_METRICS = {
  "classification": ("accuracy", "macro_f1"),
  "regression": ("pearson", "spearman"),
  "tokens": ("precision", "recall", "f1", "accuracy"),
  "qa": ("exact_match", "f1"),
  "embedding": ("mrr@10", "recall@1", "recall@10"),  # `retrieval`; spearman with scores
}
# The metrics each task can report (config.eval.metrics picks from them).
KNOWN_METRICS = {
  "classification": tuple(task_metrics.METRICS),
  "regression": tuple(task_metrics.METRICS),
  "qa": ("exact_match", "f1"),
}
DEFAULT_MAIN = {
  "classification": "accuracy",
  "regression": "pearson",
  "tokens": "f1",
  "qa": "f1",
  "embedding": "mrr@10",
}


@functools.lru_cache(maxsize=8)
def _logits_fn(model):
  return jax.jit(functools.partial(task_objective.logits_of, model))


# One compiled program (eagerly, each of its ~15 operations compiles on its own: ~0.8 s).
_task_sums = jax.jit(task_objective.task_sums, static_argnums=0)


def _to_host(x):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def logits(
  model,
  params,
  arrays: dict,
  batch_size: int,
  mesh=None,
  progress: "bool | progress_lib.Bar" = False,
  padding_read: bool = True,
) -> np.ndarray:
  """(n, ...) float32 logits of every row of `arrays`, in order; the batches are sharded
  over `mesh` (training: one program, the arrays' length), or go to the parameters' one
  device when it is None (predict, evaluate, a teacher's logits: batches of similar
  length, each cut short, `_logits_by_length`). `progress`: True shows a "predict" bar of
  batches; a caller's `progress.Bar` of rows (over several calls) is advanced instead.
  `padding_read`: False when only the real tokens' logits are read (predict), so that qa's
  windows are cut short too (its loss spans the padding).
  """
  inputs = {k: arrays[k] for k in INPUT_KEYS}
  spans_padding = padding_read and getattr(model, "task", None) == "qa"
  if mesh is None and jax.process_count() == 1 and not spans_padding:
    return _logits_by_length(model, params, inputs, batch_size, progress)
  n = len(inputs["input_ids"])
  if mesh is None and jax.process_count() == 1:  # qa: its windows' length, fewer rows if wide
    batch_size = batching_lib.rows_at(inputs["input_ids"].shape[1], batch_size)
  fn, out = _logits_fn(model), []
  batches = batching_lib.eval_batches(inputs, batch_size, jax.process_index(), jax.process_count())
  for local in _progress(batches, -(-n // batch_size), progress, lambda b: int(b["weight"].sum())):
    local.pop("weight")
    batch = sharding.global_batch(local, mesh) if mesh is not None else local
    out.append(_to_host(fn(params, batch)))
  return np.concatenate(out)[:n]


def _logits_by_length(model, params, inputs: dict, batch_size: int, progress):
  """`logits` on one device, by length: batches of similar rows, each cut to its width.

  Exact, since the cut columns are padding every row masks (`batching.length_batches`). The
  tokens task's (n, length, tags) logits are zero past each batch's width, qa's (n, length,
  2) -inf: no answer starts or ends in the padding. (QA's loss spans every position, padding
  included, as Hugging Face's does, and original BERT's answer search ranks them all:
  `logits` cuts qa rows only for predict, whose search then ranks the real tokens only.)
  """
  mask = inputs["attention_mask"]
  n, full = mask.shape
  # A row's length: up to its last unmasked token (padding is at the end).
  lengths = np.where(mask.any(1), full - np.argmax(mask[:, ::-1] != 0, axis=1), 1)
  fn, out = _logits_fn(model), None
  batches = list(batching_lib.length_batches(lengths, batch_size, full))
  for index, width, count in _progress(batches, len(batches), progress, lambda b: len(b[0])):
    rows = np.concatenate([index, np.repeat(index[-1:], count - len(index))])  # one shape
    result = np.asarray(fn(params, {k: v[rows, :width] for k, v in inputs.items()}))
    if out is None:
      task = getattr(model, "task", None)
      shape = (n, full, *result.shape[2:]) if task in ("tokens", "qa") else (n, *result.shape[1:])
      out = np.full(shape, -np.inf if task == "qa" else 0, result.dtype)
    out[index, : result.shape[1]] = result[: len(index)]
  return out if out is not None else np.zeros((0,), np.float32)


def _progress(batches, total: int, progress, rows_of):
  """`batches` (`total` of them) under a "predict" bar of batches that goes when done (when
  `progress` is True), or advancing `progress`, a `progress.Bar` of rows, by `rows_of(batch)`.
  """
  if not isinstance(progress, progress_lib.Bar):
    yield from progress_lib.over(batches, total, "predict", "batch", shown=progress, leave=False)
    return
  for batch in batches:
    rows = rows_of(batch)  # before the caller takes the batch apart
    yield batch
    progress.update(rows)


def logits_program(model, abstract_params, arrays: dict, batch_size: int, mesh) -> tuple:
  """(jitted function, params, batch): the program `logits` runs on `arrays` in batches of
  `batch_size` over `mesh`, with its arguments' shapes, for `loop.Job.eval_programs`.
  """
  inputs = {k: arrays[k] for k in INPUT_KEYS}
  batch = precompile.batch_spec(inputs, batch_size, sharding.batch_sharding(mesh))
  return _logits_fn(model), abstract_params, batch


def embedding_inputs(examples, tokenizer, max_seq_length):
  """What `embedding_scores` needs of eval pairs: the encoded anchors and distinct
  positives (the corpus), each anchor's positive and the scores (or None).
  """
  corpus, relevant = retrieval.corpus_of([r["text_pair"] for r in examples.rows])
  anchors, _ = encoding_lib.encode_texts(
    [r["text"] for r in examples.rows], tokenizer, max_seq_length
  )
  documents, _ = encoding_lib.encode_texts(corpus, tokenizer, max_seq_length)
  scores = [r["score"] for r in examples.rows]
  return {
    "anchors": anchors,
    "documents": documents,
    "relevant": relevant,
    "scores": None if any(s is None for s in scores) else scores,
  }


def embedding_scores(model, params, inputs, batch_size, mesh=None) -> dict:
  """The retrieval metrics (`retrieval.evaluate`) of `embedding_inputs` under `params`."""
  anchors = logits(model, params, inputs["anchors"], batch_size, mesh)
  documents = logits(model, params, inputs["documents"], batch_size, mesh)
  return retrieval.evaluate(anchors, documents, inputs["relevant"], inputs["scores"])


def given_metrics(config) -> tuple[str, ...]:
  """The names config.eval.metrics lists (comma-separated; empty when None)."""
  return tuple(n.strip() for n in (config.eval.get("metrics") or "").split(",") if n.strip())


def metric_names(config) -> tuple[tuple[str, ...], str]:
  """(metrics, main metric) of config.task on config.data.eval: config.eval.metrics (comma-
  separated; a TFDS recipe's, kept on local files), else a TFDS split's registry's, else
  the task's `DEFAULT_METRICS`; tags always theirs. The main one is config.eval.metric, else
  the task's or the registry's (the first of config.eval.metrics without either).
  """
  if config.task == "tokens":
    return DEFAULT_METRICS["tokens"], config.eval.metric or DEFAULT_MAIN["tokens"]
  given = given_metrics(config)
  spec = config.data.eval or ""
  if data_lib.is_tfds(spec):
    from bert_jax.finetune import tfds_tasks

    task = tfds_tasks.task_of(tfds_tasks.parse(spec)[0])
    return given or task.metrics, config.eval.metric or task.main_metric
  if given:
    main = DEFAULT_MAIN[config.task] if DEFAULT_MAIN[config.task] in given else given[0]
    return given, config.eval.metric or main
  return DEFAULT_METRICS[config.task], config.eval.metric or DEFAULT_MAIN[config.task]


def loss(task: str, logits_: np.ndarray, arrays: dict) -> float:
  """The mean eval loss (the training loss without dropout)."""
  keys = {"labels", "start_positions", "end_positions"} & set(arrays)
  sums = _task_sums(task, jnp.asarray(logits_), {k: jnp.asarray(arrays[k]) for k in keys})
  return float(sums["loss"] / max(float(sums["count"]), 1.0))


def word_tags(logits_: np.ndarray, arrays: dict, label_names: list[str]) -> list[list[str]]:
  """Each row's predicted tag per word (its first sub-token's); words cut off get "O".

  Args:
    logits_: (rows, length, tags) token logits.
    arrays: "word_index" (rows, length), the word a first sub-token starts or -1, and
      "words_per_row", each row's number of words.
    label_names: the tag of each id.

  Returns:
    One list of tag names per row, one tag per word.
  """
  word_index = np.asarray(arrays["word_index"])
  words_per_row = list(arrays["words_per_row"])
  grid = np.full((len(word_index), max(words_per_row, default=0)), "O", dtype=object)
  rows, positions = np.nonzero(word_index >= 0)
  best = np.asarray(logits_)[rows, positions].argmax(-1)
  grid[rows, word_index[rows, positions]] = np.asarray(label_names, dtype=object)[best]
  return [grid[row, :words].tolist() for row, words in enumerate(words_per_row)]


def scores(
  config, logits_: np.ndarray, arrays: dict, examples, label_names: list[str] | None
) -> dict[str, float]:
  """The task's metrics (and "loss") of `logits_` against the labelled `examples`.

  Args:
    config: the fine-tuning config (task, eval data, qa settings).
    logits_: from `logits`, one row per row of `arrays`.
    arrays: the encoded `examples`, with their labels.
    examples: `data.Examples` (qa: the gold answers; tokens: the words and tags).
    label_names: the label (tag) of each id; None for regression and qa.

  Returns:
    {metric: value}: the task's metrics (`metric_names`), and "loss".
  """
  names, _ = metric_names(config)
  task = config.task
  values = {}
  if task == "qa":
    predictions, _ = answers(config, logits_, arrays, examples)
    values.update(squad.squad_metrics(predictions, examples.rows))
  elif task == "tokens":
    arrays = dict(arrays, words_per_row=[len(r["words"]) for r in examples.rows])
    predicted = word_tags(logits_, arrays, label_names)
    truth = [r["tags"] for r in examples.rows]
    values.update(task_metrics.entity_f1(truth, predicted))
    flat_true = [t for row in truth for t in row]
    flat_pred = [t for row in predicted for t in row]
    values["accuracy"] = task_metrics.accuracy(flat_true, flat_pred)
  else:
    labels = arrays["labels"]
    predicted = logits_[:, 0] if task == "regression" else logits_.argmax(-1)
    values.update(
      task_metrics.compute([n for n in names if n in task_metrics.METRICS], labels, predicted)
    )
  values["loss"] = loss(task, logits_, arrays)
  return values


def answers(config, logits_: np.ndarray, arrays: dict, examples) -> tuple[dict, dict]:
  """(predictions {id: text}, n-best lists) of QA logits (n, length, 2)."""
  q = config.qa
  return squad.postprocess(
    arrays,
    logits_[..., 0],
    logits_[..., 1],
    examples.rows,
    n_best=q.n_best,
    max_answer_length=q.max_answer_length,
    null_threshold=q.null_threshold,
    version_2=q.version_2,
  )


def predictions(
  config, logits_: np.ndarray, arrays: dict, examples, label_names: list[str] | None
) -> list[dict]:
  """One dict per example: label and probabilities / value / word tags / answer.

  Args:
    config: the fine-tuning config (task, qa settings).
    logits_: from `logits`, one row per row of `arrays`.
    arrays: the encoded `examples`.
    examples: `data.Examples`.
    label_names: the label (tag) of each id; None for regression and qa.

  Returns:
    classification: {"label", "probability", "probabilities": {label: p}};
    regression: {"value"}; tokens: {"words", "tags"}; qa: {"id", "answer",
    "probability", "start" (the answer's character offset in the context)}.
  """
  task = config.task
  if task == "qa":
    _, nbest = answers(config, logits_, arrays, examples)
    return [
      {
        "id": e.id,
        "answer": (nbest[e.id][0]["text"] if nbest[e.id] else ""),
        "probability": (nbest[e.id][0]["probability"] if nbest[e.id] else None),
        "start": (nbest[e.id][0]["start"] if nbest[e.id] else None),
      }
      for e in examples.rows
    ]
  if task == "tokens":
    arrays = dict(arrays, words_per_row=[len(r["words"]) for r in examples.rows])
    return [
      {"words": r["words"], "tags": t}
      for r, t in zip(examples.rows, word_tags(logits_, arrays, label_names))
    ]
  if task == "regression":
    return [{"value": float(v)} for v in logits_[:, 0]]
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits_), axis=-1))
  return [
    {
      "label": label_names[int(p.argmax())],
      "probability": float(p.max()),
      "probabilities": {n: float(x) for n, x in zip(label_names, p)},
    }
    for p in probs
  ]


def print_metrics(values: dict) -> None:
  """The metrics as one JSON object on the last line (scripts read it)."""
  print(json.dumps({k: round(float(v), 6) for k, v in values.items()}), flush=True)
