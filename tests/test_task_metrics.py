"""Tests of the fine-tuning metrics against values worked out by hand.

Each expected value is written as the arithmetic from a small confusion matrix or a
short sequence counted by hand; SciPy, scikit-learn and seqeval (all in the test extras:
a missing one fails its test, it does not skip) cross-check on random data.
"""

import math

import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.finetune import metrics as task_metrics

# Binary: rows are examples. Confusion matrix (positive = 1), counted by hand:
#   tp = 4 (positions 0, 1, 2, 9), fn = 1 (3), tn = 3 (4, 5, 6), fp = 2 (7, 8).
BINARY_LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
BINARY_PREDICTIONS = [1, 1, 1, 0, 0, 0, 0, 1, 1, 1]
TP, FN, TN, FP = 4, 1, 3, 2

# Three classes. Confusion matrix, rows true class, columns predicted class:
#   true 0: [2, 1, 1]   true 1: [0, 2, 0]   true 2: [2, 0, 1]
MULTI_LABELS = [0, 0, 0, 0, 1, 1, 2, 2, 2]
MULTI_PREDICTIONS = [0, 0, 1, 2, 1, 1, 2, 0, 0]


def test_accuracy():
  assert task_metrics.accuracy(BINARY_LABELS, BINARY_PREDICTIONS) == pytest.approx(
    (TP + TN) / (TP + TN + FP + FN)
  )
  assert task_metrics.accuracy(MULTI_LABELS, MULTI_PREDICTIONS) == pytest.approx((2 + 2 + 1) / 9)


def test_binary_f1_of_each_class():
  assert task_metrics.f1(BINARY_LABELS, BINARY_PREDICTIONS) == pytest.approx(
    2 * TP / (2 * TP + FP + FN)
  )  # 8/11
  # Class 0 as the positive class: its tp is TN, its fp is FN, its fn is FP.
  assert task_metrics.f1(BINARY_LABELS, BINARY_PREDICTIONS, positive=0) == (
    pytest.approx(2 * TN / (2 * TN + FN + FP))
  )  # 6/9


def test_f1_is_zero_without_positives():
  assert task_metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0


def test_macro_f1():
  binary = (2 * TP / (2 * TP + FP + FN) + 2 * TN / (2 * TN + FN + FP)) / 2
  assert task_metrics.macro_f1(BINARY_LABELS, BINARY_PREDICTIONS) == pytest.approx(binary)
  # Per class from the 3x3 matrix: (tp, fp, fn) = (2, 2, 2), (2, 1, 0), (1, 1, 2).
  class_f1 = [2 * 2 / (4 + 2 + 2), 2 * 2 / (4 + 1 + 0), 2 * 1 / (2 + 1 + 2)]
  assert task_metrics.macro_f1(MULTI_LABELS, MULTI_PREDICTIONS) == pytest.approx(
    sum(class_f1) / 3
  )  # 17/30


def test_matthews_binary():
  expected = (TP * TN - FP * FN) / math.sqrt(
    (TP + FP) * (TP + FN) * (TN + FP) * (TN + FN)
  )  # 10 / sqrt(600)
  assert task_metrics.matthews_corrcoef(BINARY_LABELS, BINARY_PREDICTIONS) == (
    pytest.approx(expected)
  )


def test_matthews_multiclass_is_gorodkin_rk():
  correct, total = 2 + 2 + 1, 9
  true_counts, predicted_counts = [4, 2, 3], [4, 3, 2]  # row and column sums
  t_dot_p = sum(t * p for t, p in zip(true_counts, predicted_counts))  # 28
  expected = (correct * total - t_dot_p) / math.sqrt(
    (total**2 - sum(p * p for p in predicted_counts)) * (total**2 - sum(t * t for t in true_counts))
  )  # 17/52
  assert task_metrics.matthews_corrcoef(MULTI_LABELS, MULTI_PREDICTIONS) == (
    pytest.approx(expected)
  )


def test_matthews_is_zero_when_undefined():
  assert task_metrics.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0
  assert task_metrics.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0
  assert task_metrics.matthews_corrcoef([2, 2], [2, 2]) == 0.0


def test_matthews_perfect_and_inverted():
  assert task_metrics.matthews_corrcoef([0, 1, 2, 1], [0, 1, 2, 1]) == (pytest.approx(1.0))
  assert task_metrics.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == (pytest.approx(-1.0))


# x = 1..5, y with ties. Centered: dx = [-2, -1, 0, 1, 2], dy = [-2, 0, 1, 0, 1].
X, Y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]


def test_pearson():
  sum_dx_dy, sum_dx2, sum_dy2 = 4 + 0 + 0 + 0 + 2, 10, 4 + 0 + 1 + 0 + 1
  assert task_metrics.pearson(X, Y) == pytest.approx(
    sum_dx_dy / math.sqrt(sum_dx2 * sum_dy2)
  )  # 6 / sqrt(60)


def test_spearman_gives_ties_their_mean_rank():
  # y ranks: 2 -> 1; the two 4s share (2 + 3) / 2; the two 5s share (4 + 5) / 2.
  y_ranks = [1, 2.5, 4.5, 2.5, 4.5]
  assert task_metrics._average_ranks(np.array(Y)).tolist() == y_ranks
  dry = [r - 3 for r in y_ranks]  # mean rank is 3
  sum_dx_dry = sum(dx * d for dx, d in zip([-2, -1, 0, 1, 2], dry))  # 7
  assert task_metrics.spearman(X, Y) == pytest.approx(
    sum_dx_dry / math.sqrt(10 * sum(d * d for d in dry))
  )  # 7 / sqrt(90)


def test_spearman_is_rank_based():
  assert task_metrics.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
  assert task_metrics.spearman([0.1, 0.2, 0.3], [30, 20, 10]) == pytest.approx(-1.0)
  assert task_metrics.pearson([1, 2, 3, 4], [1, 4, 9, 16]) < 1.0


def test_correlations_of_a_constant_are_zero_and_nan_propagates():
  assert task_metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
  assert task_metrics.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
  assert math.isnan(task_metrics.pearson([1.0, float("nan"), 3.0], [1, 2, 3]))
  assert math.isnan(task_metrics.spearman([1.0, 2.0, 3.0], [1, float("nan"), 3]))


def test_inputs_must_be_one_length_and_not_empty():
  with pytest.raises(ValueError, match="one length"):
    task_metrics.accuracy([0, 1], [0, 1, 1])
  with pytest.raises(ValueError, match="no examples"):
    task_metrics.pearson([], [])


def test_compute_runs_the_named_metrics():
  assert task_metrics.compute(("f1", "accuracy"), BINARY_LABELS, BINARY_PREDICTIONS) == {
    "f1": pytest.approx(8 / 11),
    "accuracy": pytest.approx(7 / 10),
  }
  assert set(task_metrics.METRICS) == {
    "accuracy",
    "f1",
    "macro_f1",
    "matthews",
    "pearson",
    "spearman",
  }
  with pytest.raises(UserError, match="unknown metric bleu; choose from accuracy"):
    task_metrics.compute(("accuracy", "bleu"), [1], [1])


# Entity spans. Gold: sentence 0 has PER [0, 2) and LOC [3, 4); sentence 1 has
# ORG [0, 3) and MISC [4, 5): 4 gold spans. Predicted: sentence 0 has PER [0, 2)
# (correct), ORG [3, 4) (wrong type) and PER [4, 5) (spurious); sentence 1 has
# ORG [0, 2) (wrong end) and MISC [4, 5) opened by "I-" (IOB1, correct): 5 spans.
GOLD_TAGS = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
PRED_TAGS = [["B-PER", "I-PER", "O", "B-ORG", "B-PER"], ["B-ORG", "I-ORG", "O", "O", "I-MISC"]]


def test_entity_f1_counts_exact_spans():
  correct, predicted, gold = 2, 5, 4
  result = task_metrics.entity_f1(GOLD_TAGS, PRED_TAGS)
  precision, recall = correct / predicted, correct / gold
  assert result == {
    "precision": pytest.approx(precision),
    "recall": pytest.approx(recall),
    "f1": pytest.approx(2 * precision * recall / (precision + recall)),
  }  # 4/9
  assert task_metrics.entity_f1(GOLD_TAGS, GOLD_TAGS)["f1"] == 1.0
  no_entities = [["O"] * 5, ["O"] * 5]
  assert task_metrics.entity_f1(GOLD_TAGS, no_entities) == {
    "precision": 0.0,
    "recall": 0.0,
    "f1": 0.0,
  }


@pytest.mark.parametrize(
  "tags, spans",
  [
    (["B-PER", "I-PER", "O", "B-LOC"], {(0, 2, "PER"), (3, 4, "LOC")}),
    (["I-PER", "I-PER", "B-PER"], {(0, 2, "PER"), (2, 3, "PER")}),  # IOB1
    (["B-PER", "B-PER"], {(0, 1, "PER"), (1, 2, "PER")}),
    (["B-PER", "I-LOC", "I-LOC"], {(0, 1, "PER"), (1, 3, "LOC")}),  # type change
    (["O", "I-ORG", "O", "I-ORG"], {(1, 2, "ORG"), (3, 4, "ORG")}),
    (
      ["S-PER", "B-LOC", "E-LOC", "E-LOC"],  # IOBES
      {(0, 1, "PER"), (1, 3, "LOC"), (3, 4, "LOC")},
    ),
    (["O", "O"], set()),
  ],
)
def test_entity_spans(tags, spans):
  assert task_metrics.entity_spans(tags) == spans


def test_entity_f1_needs_aligned_sentences():
  with pytest.raises(ValueError, match="sentence 1: 5 gold tags but 4"):
    task_metrics.entity_f1(GOLD_TAGS, [GOLD_TAGS[0], GOLD_TAGS[1][:4]])
  with pytest.raises(ValueError, match="2 gold sentences but 1"):
    task_metrics.entity_f1(GOLD_TAGS, GOLD_TAGS[:1])


def test_correlations_match_scipy():
  from scipy import stats

  rng = np.random.default_rng(0)
  x = rng.integers(0, 6, size=200).astype(float)  # many ties
  y = x + rng.normal(size=200)
  assert task_metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
  assert task_metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
  assert task_metrics.spearman(x, np.round(y)) == pytest.approx(stats.spearmanr(x, np.round(y))[0])
  # The binary MCC is the phi coefficient: Pearson of the 0/1 labels and predictions.
  labels, predictions = (x > 2).astype(int), (y > 2).astype(int)
  assert task_metrics.matthews_corrcoef(labels, predictions) == pytest.approx(
    stats.pearsonr(labels, predictions)[0]
  )


def test_classification_metrics_match_sklearn():
  from sklearn import metrics

  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, size=300)
  predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 3, size=300))
  assert task_metrics.accuracy(labels, predictions) == pytest.approx(
    metrics.accuracy_score(labels, predictions)
  )
  assert task_metrics.macro_f1(labels, predictions) == pytest.approx(
    metrics.f1_score(labels, predictions, average="macro")
  )
  assert task_metrics.matthews_corrcoef(labels, predictions) == pytest.approx(
    metrics.matthews_corrcoef(labels, predictions)
  )
  binary_labels, binary_predictions = labels % 2, predictions % 2
  assert task_metrics.f1(binary_labels, binary_predictions) == pytest.approx(
    metrics.f1_score(binary_labels, binary_predictions)
  )
  assert task_metrics.matthews_corrcoef(binary_labels, binary_predictions) == (
    pytest.approx(metrics.matthews_corrcoef(binary_labels, binary_predictions))
  )


def test_entity_f1_matches_seqeval():
  from seqeval import metrics as seqeval

  rng = np.random.default_rng(2)
  tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
  gold = [list(rng.choice(tags, size=12)) for _ in range(30)]
  predicted = [list(rng.choice(tags, size=12)) for _ in range(30)]
  result = task_metrics.entity_f1(gold, predicted)
  assert result["precision"] == pytest.approx(seqeval.precision_score(gold, predicted))
  assert result["recall"] == pytest.approx(seqeval.recall_score(gold, predicted))
  assert result["f1"] == pytest.approx(seqeval.f1_score(gold, predicted))
