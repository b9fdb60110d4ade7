"""A small BBC news split (`benchmarks/bbc_news`) for the families' end-to-end tests, and
the check that an exported classifier's `pipeline("text-classification")` gives `bert-jax
predict`'s probabilities.
"""

import collections
import csv
import json

import numpy as np

from benchmarks import bbc_news
from bert_jax import cli

TRAIN_ROWS, TEST_ROWS = 480, 160


def write_csv(path, rows):
  """`rows` ({"text", "label"}) as a CSV file at `path`; returns its name."""
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=("text", "label"))
    writer.writeheader()
    writer.writerows(rows)
  return str(path)


def write(root):
  """Train / test CSVs of a subset of the BBC news split under `root`, the train texts as
  JSON Lines, and the majority-class accuracy on the test rows.
  """
  train, test = bbc_news.split()
  # Every k-th row: the split lists the articles by category, so all five are in each.
  train = train[:: len(train) // TRAIN_ROWS][:TRAIN_ROWS]
  test = test[:: len(test) // TEST_ROWS][:TEST_ROWS]
  with open(root / "corpus.jsonl", "w") as f:
    for row in train:
      f.write(json.dumps({"text": row["text"]}) + "\n")
  return {
    "root": root,
    "train": write_csv(root / "train.csv", train),
    "test": write_csv(root / "test.csv", test),
    "corpus": str(root / "corpus.jsonl"),
    "texts": [r["text"] for r in train],
    "majority": collections.Counter(r["label"] for r in test).most_common(1)[0][1] / len(test),
  }


def best_eval_accuracy(run):
  """The best eval accuracy in the fine-tuned `run`'s metrics.jsonl (its best/ checkpoint's:
  `evaluate` prints the same, tests/test_finetune.py checks that).
  """
  with open(f"{run}/metrics.jsonl") as f:
    return max(r["accuracy"] for r in map(json.loads, f) if r["split"] == "eval")


def check_export_agrees_with_predict(news, run, architecture, rows=24):
  """Exports the fine-tuned `run`; `pipeline("text-classification")` on the first test rows
  gives the probabilities of `bert-jax predict` within 1e-4, with every weight loaded.
  """
  import transformers

  with open(news["test"], newline="") as f:
    sample_rows = list(csv.DictReader(f))[:rows]
  root = news["root"]
  sample = write_csv(root / f"sample-{architecture}.csv", sample_rows)
  out, hf_dir = str(root / f"predictions-{architecture}.jsonl"), str(root / f"hf-{architecture}")
  assert cli.main(["predict", "--workdir", run, "--input", sample, "--output", out]) == 0
  assert cli.main(["export-hf", "--workdir", run, "--out", hf_dir]) == 0
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
    hf_dir, output_loading_info=True
  )
  assert type(model).__name__ == architecture
  assert not any(info.values()), info
  with open(out) as f:
    ours = [json.loads(line) for line in f]
  classify = transformers.pipeline("text-classification", model=hf_dir, device="cpu")
  theirs = classify([r["text"] for r in sample_rows], truncation=True, top_k=None)
  for o, t in zip(ours, theirs, strict=True):
    np.testing.assert_allclose(
      [x["score"] for x in t], [o["probabilities"][x["label"]] for x in t], atol=1e-4
    )
