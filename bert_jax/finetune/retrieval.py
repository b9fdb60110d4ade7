"""Retrieval metrics of a sentence-embedding model on eval pairs, in NumPy.

Each anchor is a query; the corpus is every distinct positive of the eval set, and an
anchor's one relevant document is its own positive. A query's rank is 1 + the number of
documents scored strictly higher (cosine similarity) than its positive:
MRR@10 = mean(1 / rank, 0 past rank 10), recall@k = share of queries with rank <= k.
When the pairs carry a score (`config.data.score_column`), "spearman" is the Spearman
correlation of the anchor-positive cosine similarities with it.
"""

import numpy as np

from bert_jax.finetune import metrics as task_metrics

METRICS = ("mrr@10", "recall@1", "recall@10")
MAIN = "mrr@10"


def ranks(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """(queries,) 1-based rank of each query's relevant document.

  Args:
    similarity: (queries, documents) scores.
    relevant: (queries,) the index of each query's relevant document.
  """
  similarity = np.asarray(similarity, np.float64)
  own = similarity[np.arange(len(relevant)), relevant][:, None]
  return 1 + (similarity > own).sum(1)


def scores_of_ranks(rank: np.ndarray) -> dict[str, float]:
  """{"mrr@10", "recall@1", "recall@10"} of 1-based ranks."""
  rank = np.asarray(rank)
  return {
    "mrr@10": float(np.mean(np.where(rank <= 10, 1.0 / rank, 0.0))),
    "recall@1": float(np.mean(rank <= 1)),
    "recall@10": float(np.mean(rank <= 10)),
  }


def corpus_of(positives: list[str]) -> tuple[list[str], np.ndarray]:
  """(the distinct positives in first-seen order, each pair's index among them)."""
  index, corpus = {}, []
  for text in positives:
    if text not in index:
      index[text] = len(corpus)
      corpus.append(text)
  return corpus, np.array([index[t] for t in positives], np.int64)


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def evaluate(anchors: np.ndarray, documents: np.ndarray, relevant, scores=None) -> dict:
  """The retrieval metrics (and "spearman" when `scores` are given).

  Args:
    anchors: (pairs, embed) embeddings of the queries.
    documents: (documents, embed) embeddings of the corpus.
    relevant: (pairs,) each query's document index.
    scores: (pairs,) gold similarity scores, or None.

  Returns:
    {metric: value} of `METRICS` (and "spearman").
  """
  a, d = _unit(anchors), _unit(documents)
  relevant = np.asarray(relevant)
  values = scores_of_ranks(ranks(a @ d.T, relevant))
  if scores is not None:
    cosine = (a * d[relevant]).sum(-1)
    values["spearman"] = task_metrics.spearman(np.asarray(scores, np.float64), cosine)
  return values
