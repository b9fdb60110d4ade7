"""Evaluation metrics of fine-tuning tasks, in NumPy only (no scikit-learn or SciPy).

Classification: `accuracy`, `f1` (binary F1 of one class, as GLUE reports it for MRPC
and QQP), `macro_f1` and `matthews_corrcoef` (CoLA; binary and multiclass). Regression:
`pearson` and `spearman` (STS-B). Token tagging: `entity_f1`, the span-level micro F1
of conlleval and seqeval's default mode.

Each metric takes the gold labels first, then the predictions, and returns a Python
float. A value that is undefined (a constant input to a correlation, no true or
predicted positives) is 0.0, as in scikit-learn, so that best-checkpoint comparisons
stay ordered. `METRICS` names the metrics that `compute` can run on (labels,
predictions) pairs.
"""

import numpy as np

from bert_jax.errors import UserError


def _pair(labels, predictions):
  """The two inputs as 1-D arrays of one non-zero length."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  if labels.ndim != 1 or labels.shape != predictions.shape:
    raise ValueError(
      f"labels and predictions must be 1-D of one length, got "
      f"shapes {labels.shape} and {predictions.shape}"
    )
  if not labels.size:
    raise ValueError("no examples to score")
  return labels, predictions


def _safe_divide(numerator, denominator) -> float:
  """`numerator / denominator`, or 0.0 when the denominator is 0."""
  return float(numerator / denominator) if denominator else 0.0


def accuracy(labels, predictions) -> float:
  """The fraction of predictions equal to their label."""
  labels, predictions = _pair(labels, predictions)
  return float(np.mean(labels == predictions))


def _class_f1(labels, predictions, positive) -> float:
  """F1 of class `positive`: 2 tp / (2 tp + fp + fn)."""
  true_positives = np.sum((predictions == positive) & (labels == positive))
  false_positives = np.sum((predictions == positive) & (labels != positive))
  false_negatives = np.sum((predictions != positive) & (labels == positive))
  return _safe_divide(2 * true_positives, 2 * true_positives + false_positives + false_negatives)


def f1(labels, predictions, positive=1) -> float:
  """Binary F1 of the class `positive` (0.0 when it is neither true nor predicted)."""
  labels, predictions = _pair(labels, predictions)
  return _class_f1(labels, predictions, positive)


def macro_f1(labels, predictions) -> float:
  """The unweighted mean of the F1 of every class that is a label or a prediction."""
  labels, predictions = _pair(labels, predictions)
  classes = np.union1d(labels, predictions)
  return float(np.mean([_class_f1(labels, predictions, c) for c in classes]))


def _confusion_matrix(labels, predictions) -> np.ndarray:
  """Counts (float) of each (true class, predicted class) pair, rows the labels."""
  classes, indices = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  true_index, predicted_index = np.split(indices, 2)
  matrix = np.zeros((len(classes), len(classes)))
  np.add.at(matrix, (true_index, predicted_index), 1)
  return matrix


def matthews_corrcoef(labels, predictions) -> float:
  """Matthews correlation; multiclass is Gorodkin's R_K, which reduces to the binary MCC.

  R_K = (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)), where c is the number of correct
  predictions, s the number of examples, t the count of each true class and p of each
  predicted class. It is 0.0 when undefined (all labels or all predictions one class).
  """
  matrix = _confusion_matrix(*_pair(labels, predictions))
  true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
  correct, total = np.trace(matrix), matrix.sum()
  covariance = correct * total - true_counts @ predicted_counts
  variances = (total**2 - predicted_counts @ predicted_counts) * (
    total**2 - true_counts @ true_counts
  )
  return _safe_divide(covariance, np.sqrt(variances))


def pearson(x, y) -> float:
  """Pearson correlation of two samples; 0.0 when one is constant, NaN if one has NaN."""
  x, y = _pair(x, y)
  x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
  y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  if denominator == 0:
    return 0.0
  return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0))


def _average_ranks(values) -> np.ndarray:
  """Ranks from 1; tied values share the mean of the ranks they span."""
  _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
  first_rank = np.cumsum(counts) - counts + 1
  return (first_rank + (counts - 1) / 2)[group]


def spearman(x, y) -> float:
  """Spearman rank correlation: Pearson of the average ranks (NaN if an input has NaN)."""
  x, y = _pair(x, y)
  if np.isnan(x.astype(np.float64)).any() or np.isnan(y.astype(np.float64)).any():
    return float("nan")
  return pearson(_average_ranks(x), _average_ranks(y))


def _split_tag(tag: str) -> tuple[str, str]:
  """`"B-PER"` -> `("B", "PER")`; `"O"` -> `("O", "")`."""
  prefix, _, entity_type = tag.partition("-")
  return prefix, entity_type


def _ends_chunk(previous: str, previous_type: str, prefix: str, entity_type: str) -> bool:
  """Whether a chunk open at the previous tag ends before this one (conlleval)."""
  if previous in ("E", "S"):
    return True
  if previous in ("B", "I") and prefix in ("B", "S", "O"):
    return True
  return previous not in ("O", ".") and entity_type != previous_type


def _starts_chunk(previous: str, previous_type: str, prefix: str, entity_type: str) -> bool:
  """Whether this tag opens a chunk (conlleval): also an `I-` after `O` or a new type."""
  if prefix in ("B", "S"):
    return True
  if prefix in ("I", "E") and previous in ("E", "S", "O"):
    return True
  return prefix not in ("O", ".") and entity_type != previous_type


def entity_spans(tags: list[str]) -> set[tuple[int, int, str]]:
  """The entity chunks of one tagged sentence as `(start, end_exclusive, type)`.

  Reads IOB2, IOB1 (a chunk may start with `I-`) and IOBES by conlleval's rules: a
  chunk ends at `O`, at `B-`/`S-`, after `E-`/`S-`, or where the type changes.
  """
  spans = set()
  previous, previous_type, start = "O", "", None
  for position, tag in enumerate([*tags, "O"]):
    prefix, entity_type = _split_tag(tag)
    if start is not None and _ends_chunk(previous, previous_type, prefix, entity_type):
      spans.add((start, position, previous_type))
      start = None
    if _starts_chunk(previous, previous_type, prefix, entity_type):
      start = position
    previous, previous_type = prefix, entity_type
  return spans


def entity_f1(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
  """Micro precision, recall and F1 over entity spans; a span counts if start, end, type match.

  Args:
    true_tags: gold tags, one list of tag names per sentence, e.g. `["B-PER", "O"]`.
    pred_tags: predicted tags, the same number of sentences and tags.

  Returns:
    `{"precision", "recall", "f1"}` as floats, each 0.0 when its denominator is 0.
  """
  if len(true_tags) != len(pred_tags):
    raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
  gold, predicted = set(), set()
  for sentence, (true_sentence, pred_sentence) in enumerate(zip(true_tags, pred_tags)):
    if len(true_sentence) != len(pred_sentence):
      raise ValueError(
        f"sentence {sentence}: {len(true_sentence)} gold tags but {len(pred_sentence)} predicted"
      )
    gold.update((sentence, *span) for span in entity_spans(true_sentence))
    predicted.update((sentence, *span) for span in entity_spans(pred_sentence))
  correct = len(gold & predicted)
  return {
    "precision": _safe_divide(correct, len(predicted)),
    "recall": _safe_divide(correct, len(gold)),
    "f1": _safe_divide(2 * correct, len(predicted) + len(gold)),
  }


METRICS = {
  "accuracy": accuracy,
  "f1": f1,
  "macro_f1": macro_f1,
  "matthews": matthews_corrcoef,
  "pearson": pearson,
  "spearman": spearman,
}


def compute(names, labels, predictions) -> dict[str, float]:
  """`{name: METRICS[name](labels, predictions)}` for each of `names`."""
  unknown = [name for name in names if name not in METRICS]
  if unknown:
    raise UserError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
  return {name: METRICS[name](labels, predictions) for name in names}
