"""TensorFlow Datasets fine-tuning tasks: a registry and a reader of plain Python examples.

`TASKS` holds every GLUE task, IMDb reviews, SQuAD 1.1 and 2.0 and CoNLL-2003 NER,
each with its TFDS name, the columns to read, its kind, its metrics and its splits.
A task is named by its key (`"sst2"`, `"mnli_mismatched"`) or by its TFDS name
(`"glue/sst2"`; `"glue/mnli"` is the matched task).

A data spec is `tfds:NAME[:SPLIT]`, e.g. `tfds:glue/sst2:validation`; a split may be
sliced (`tfds:glue/sst2:train[:10%]`). Versions (`NAME:1.0.0`) are not part of it.

`read` returns examples as plain Python: `str` texts, `int` or `float` labels, lists
of words and tag names. It imports TensorFlow Datasets (and so TensorFlow) only when
called, so the model code imports without them.

Labels to know about: GLUE test splits have no public labels (label -1, kept by
`read`; do not train on them). `ax` is the GLUE diagnostic set: a test split only,
labels -1, scored by the GLUE server from predictions of an MNLI model.
"""

import dataclasses
import re

from bert_jax.errors import UserError

TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class TfdsTask:
  """A fine-tuning dataset in TFDS and how to read and score it.

  Attributes:
    name: TFDS name, e.g. "glue/sst2".
    task: a kind of `bert_jax.model.tasks.TASKS`: "classification", "regression",
      "tokens" (NER) or "qa" (SQuAD).
    text_column: the feature holding the text, e.g. "sentence", "tokens".
    text_pair_column: the second text of pair tasks; None for one text.
    label_column: the label feature: "label", "ner" (CoNLL-2003), "answers" (SQuAD).
    metrics: metric names to report. Classification and regression: keys of
      `task_metrics.METRICS`; tokens: the entity spans' "precision", "recall" and "f1"
      (`task_metrics.entity_f1`) and the words' "accuracy"; qa:
      SQuAD's "exact_match" and token "f1".
    main_metric: the one of `metrics` to keep the best checkpoint by.
    train_split: the split to train on; None for an evaluation-only set.
    eval_split: the split to evaluate on.
  """

  name: str
  task: str
  text_column: str
  text_pair_column: str | None
  label_column: str
  metrics: tuple[str, ...]
  main_metric: str
  train_split: str | None = "train"
  eval_split: str = "validation"


def _glue(
  config,
  text,
  pair=None,
  *,
  task="classification",
  metrics=("accuracy",),
  main="accuracy",
  **splits,
):
  """A GLUE task read from `glue/<config>`."""
  return TfdsTask(f"glue/{config}", task, text, pair, "label", metrics, main, **splits)


def _squad(version):
  """SQuAD `version`: the context is the text, the question its pair."""
  return TfdsTask(
    f"squad/{version}", "qa", "context", "question", "answers", ("exact_match", "f1"), "f1"
  )


TASKS: dict[str, TfdsTask] = {
  "cola": _glue("cola", "sentence", metrics=("matthews",), main="matthews"),
  "sst2": _glue("sst2", "sentence"),
  "mrpc": _glue("mrpc", "sentence1", "sentence2", metrics=("f1", "accuracy"), main="f1"),
  "qqp": _glue("qqp", "question1", "question2", metrics=("f1", "accuracy"), main="f1"),
  "stsb": _glue(
    "stsb",
    "sentence1",
    "sentence2",
    task="regression",
    metrics=("pearson", "spearman"),
    main="spearman",
  ),
  "mnli": _glue("mnli", "premise", "hypothesis", eval_split="validation_matched"),
  "mnli_mismatched": _glue("mnli", "premise", "hypothesis", eval_split="validation_mismatched"),
  "qnli": _glue("qnli", "question", "sentence"),
  "rte": _glue("rte", "sentence1", "sentence2"),
  "wnli": _glue("wnli", "sentence1", "sentence2"),
  # Diagnostic: test split only, no labels; the GLUE server scores it (R3 = MCC).
  "ax": _glue(
    "ax",
    "premise",
    "hypothesis",
    metrics=("matthews",),
    main="matthews",
    train_split=None,
    eval_split="test",
  ),
  "imdb_reviews": TfdsTask(
    "imdb_reviews",
    "classification",
    "text",
    None,
    "label",
    ("accuracy",),
    "accuracy",
    eval_split="test",
  ),
  "squad/v1.1": _squad("v1.1"),
  "squad/v2.0": _squad("v2.0"),
  "conll2003": TfdsTask(
    "conll2003",
    "tokens",
    "tokens",
    None,
    "ner",
    ("precision", "recall", "f1", "accuracy"),
    "f1",
    eval_split="dev",
  ),
}


def data_spec(name: str, split: str) -> str:
  """A TFDS split's data spec: `("glue/sst2", "validation")` -> `"tfds:glue/sst2:validation"`."""
  return f"{TFDS_PREFIX}{name}:{split}"


def parse(spec: str) -> tuple[str, str | None]:
  """`"tfds:glue/sst2:validation"` -> `("glue/sst2", "validation")`; no split -> None."""
  if not isinstance(spec, str) or not spec.startswith(TFDS_PREFIX):
    raise UserError(
      f"bad TFDS spec {spec!r}: write tfds:NAME[:SPLIT], e.g. tfds:glue/sst2:validation"
    )
  name, colon, split = spec[len(TFDS_PREFIX) :].partition(":")
  if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
    raise UserError(
      f"bad TFDS spec {spec!r}: the name must be NAME or NAME/CONFIG, "
      f"e.g. tfds:glue/sst2:validation"
    )
  if not colon:
    return name, None
  if not split or re.search(r"\s", split):
    raise UserError(
      f"bad TFDS spec {spec!r}: the split after ':' must be a split "
      f"name without spaces, e.g. tfds:{name}:validation"
    )
  if re.fullmatch(r"\d+(\.\d+)*", split):
    raise UserError(f"bad TFDS spec {spec!r}: versions are not supported; write tfds:{name}:SPLIT")
  return name, split


def task_of(name: str) -> TfdsTask:
  """The task of a `TASKS` key or of a TFDS name (the first task registered for it)."""
  if name in TASKS:
    return TASKS[name]
  for task in TASKS.values():
    if task.name == name:
      return task
  raise UserError(f"unknown fine-tuning task {name!r}; known tasks: {', '.join(TASKS)}")


# TensorFlow Datasets, imported only when used: it imports TensorFlow.


def _builder(name: str, data_dir: str | None):
  """The TFDS builder of `name`, downloaded and prepared if it is not yet."""
  from bert_jax.data import tfds_source

  return tfds_source.builder(name, data_dir)


def _check_split(builder, name: str, split: str) -> None:
  """A `UserError` naming the splits when `split` is not one (splits known once prepared)."""
  if not builder.info.splits:
    return
  try:
    builder.info.splits[split]  # pylint: disable=pointless-statement
  except (KeyError, ValueError):
    raise UserError(
      f"TFDS dataset {name!r} has no split {split!r}; choose from {', '.join(builder.info.splits)}"
    ) from None


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _label_names(task: TfdsTask, features) -> list[str] | None:
  """The ClassLabel names of the label; None for regression and QA."""
  if task.task == "classification":
    return list(features[task.label_column].names)
  if task.task == "tokens":
    return list(features[task.label_column].feature.names)
  return None


def _sentence_example(task: TfdsTask, example) -> dict:
  pair = task.text_pair_column
  label = example[task.label_column]
  return {
    "text": _text(example[task.text_column]),
    "text_pair": _text(example[pair]) if pair else None,
    "label": float(label) if task.task == "regression" else int(label),
  }


def _tokens_example(task: TfdsTask, example, names, where: str) -> dict:
  words = [_text(word) for word in example[task.text_column]]
  tags = [names[int(tag)] for tag in example[task.label_column]]
  if len(words) != len(tags):
    raise UserError(
      f"{where}: {len(words)} words but {len(tags)} tags; the prepared "
      f"data is inconsistent, rebuild it (tfds build)"
    )
  return {"words": words, "tags": tags}


def _qa_example(task: TfdsTask, example, where: str) -> dict:
  """SQuAD example; answers are `(char_start, text)`, none for v2.0 no-answer questions."""
  answers = example[task.label_column]
  starts, texts = answers["answer_start"], answers["text"]
  if len(starts) != len(texts):
    raise UserError(
      f"{where}: {len(starts)} answer starts but {len(texts)} answer "
      f"texts; the prepared data is inconsistent, rebuild it (tfds build)"
    )
  if example.get("is_impossible", False):
    starts, texts = [], []
  return {
    "id": _text(example["id"]),
    "question": _text(example[task.text_pair_column]),
    "context": _text(example[task.text_column]),
    "answers": [(int(start), _text(text)) for start, text in zip(starts, texts)],
  }


def _example(task: TfdsTask, example, names, where: str) -> dict:
  if task.task == "tokens":
    return _tokens_example(task, example, names, where)
  if task.task == "qa":
    return _qa_example(task, example, where)
  return _sentence_example(task, example)


def read(
  name: str, split: str, *, data_dir: str | None = None, limit: int | None = None
) -> tuple[list[dict], list[str] | None]:
  """Reads a split of a registered task as plain Python examples.

  The dataset is downloaded and prepared first if it is not yet (in `data_dir`).

  Args:
    name: a `TASKS` key or a TFDS name, e.g. "sst2" or "glue/sst2".
    split: TFDS split, e.g. "validation" or "train[:10%]".
    data_dir: TFDS data directory; None for the TFDS default.
    limit: read at most this many examples; None for all.

  Returns:
    `(examples, label_names)`. Examples are, by task kind:
    classification and regression: `{"text", "text_pair" (None for one text),
    "label" (int, -1 on GLUE test splits; float for regression)}`;
    tokens: `{"words": [str], "tags": [tag name]}`;
    qa: `{"id", "question", "context", "answers": [(char_start, text)]}`, answers
    empty for SQuAD 2.0 questions without an answer.
    `label_names` are the ClassLabel names; None for regression and QA.
  """
  task = task_of(name)
  builder = _builder(task.name, data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  _check_split(builder, task.name, split)
  names = _label_names(task, builder.info.features)
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  if limit is not None:
    dataset = dataset.take(limit)
  examples = [
    _example(task, example, names, f"{data_spec(task.name, split)} example {i}")
    for i, example in enumerate(tfds.as_numpy(dataset))
  ]
  return examples, names
