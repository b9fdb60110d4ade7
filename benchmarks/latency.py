"""Latency of a teacher classifier and its distilled student on CPU, in one run: single-text
(batch 1) and small-batch p50 / p95 milliseconds and throughput, through bert_jax's predict
path and through the exported models in Hugging Face's PyTorch `pipeline`.

    python benchmarks/latency.py --teacher runs/bbc --student runs/bbc-student \
      --input data/bbc/test.csv

  bert_jax   what `bert-jax predict` does for a list of texts, minus reading and writing
             files: tokenize and pad to the run's max_seq_length, the jitted forward
             pass (compiled and warmed up before timing), softmax, and one prediction
             dict per text.
  HF         `pipeline("text-classification", top_k=None)` of each run's `export-hf`
             (--teacher-hf / --student-hf, else exported into a temporary folder):
             tokenize with truncation at the same length, forward, softmax, label names.

Each (path, batch size) times --repeats calls of the teacher and of the student, taking
turns on the same texts, so a machine shared with other work slows both alike and the
speed-up (teacher p50 / student p50) stays meaningful. Prints a table and, last, one JSON
line with every number. This script only prints; the tests time nothing.
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time

import numpy as np

from bert_jax import cli
from bert_jax.finetune import commands
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import evaluate as evaluate_lib


def _texts(path, column, count):
  with open(path, newline="", encoding="utf-8") as f:
    texts = [row[column] for row in csv.DictReader(f) if row[column].strip()]
  if not texts:
    sys.exit(f"{path} has no texts in column {column!r}")
  return (texts * (-(-count // len(texts))))[:count]


class Ours:
  """bert_jax's predict path for a list of texts (one fine-tuned run, on one device)."""

  def __init__(self, workdir):
    self.run, self.config = commands.load(workdir)
    self.labels = self.run.meta["labels"]

  def __call__(self, texts):
    examples = data_lib.Examples([{"text": t, "text_pair": None, "label": None} for t in texts])
    arrays, _ = encoding_lib.encode(examples, self.run.tokenizer, self.config, None)
    logits = evaluate_lib.logits(self.run.model, self.run.params, arrays, len(texts))
    return evaluate_lib.predictions(self.config, logits, arrays, examples, self.labels)


class Theirs:
  """`pipeline("text-classification")` of an exported run."""

  def __init__(self, hf_dir):
    from transformers import pipeline

    self.classify = pipeline("text-classification", model=hf_dir, top_k=None, device="cpu")

  def __call__(self, texts):
    return self.classify(texts, batch_size=len(texts), truncation=True)


def _time(fn, texts):
  start = time.perf_counter()
  fn(texts)
  return time.perf_counter() - start


def measure(models, texts, batch, repeats, warmup):
  """{name: seconds per call} of `models` ({name: fn}), taking turns on the same batches."""
  batches = [texts[(i * batch) % len(texts) :][:batch] for i in range(repeats + warmup)]
  batches = [b if len(b) == batch else texts[:batch] for b in batches]
  times = {name: [] for name in models}
  for i, chunk in enumerate(batches):
    for name, fn in models.items():
      seconds = _time(fn, chunk)
      if i >= warmup:
        times[name].append(seconds)
  return times


def _export(workdir, out):
  from bert_jax.hf import export

  export.export_hf(workdir, out, log=lambda *_: None)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--teacher", required=True, help="the teacher's fine-tuned run")
  parser.add_argument("--student", required=True, help="the distilled run")
  parser.add_argument("--teacher-hf", help="the teacher's export-hf (default: export it)")
  parser.add_argument("--student-hf", help="the student's export-hf (default: export it)")
  parser.add_argument("--input", required=True, help="a .csv file of texts")
  parser.add_argument("--column", default="text", help="the text column of --input")
  parser.add_argument("--batch-sizes", default="1,8", help="comma-separated")
  parser.add_argument("--repeats", type=int, default=50, help="timed calls per model and size")
  parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
  parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
  args = parser.parse_args(argv)
  cli.cpu_alone_without_accelerators()  # as `bert-jax` does: no libtpu probe on a CPU host

  import jax
  import torch
  import transformers

  transformers.logging.set_verbosity_error()
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  if args.threads:
    torch.set_num_threads(args.threads)
  sizes = [int(s) for s in args.batch_sizes.split(",")]
  texts = _texts(args.input, args.column, max(sizes) * (args.repeats + args.warmup))
  with tempfile.TemporaryDirectory() as scratch:
    hf = {
      "teacher": args.teacher_hf or _export(args.teacher, os.path.join(scratch, "teacher")),
      "student": args.student_hf or _export(args.student, os.path.join(scratch, "student")),
    }
    paths = {
      "`bert-jax predict` path": {"teacher": Ours(args.teacher), "student": Ours(args.student)},
      "HF `pipeline`": {name: Theirs(hf[name]) for name in ("teacher", "student")},
    }
    results = []
    for path, models in paths.items():
      for batch in sizes:
        times = measure(models, texts, batch, args.repeats, args.warmup)
        row = {"path": path, "batch": batch}
        for name, seconds in times.items():
          ms = np.asarray(seconds) * 1000
          row[name] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "texts_per_s": batch * len(ms) / float(ms.sum() / 1000),
          }
        row["speedup_p50"] = row["teacher"]["p50_ms"] / row["student"]["p50_ms"]
        results.append(row)
  print(
    f"CPU: {os.cpu_count()} cores, jax {jax.__version__} ({jax.devices()[0].platform}), "
    f"torch {torch.__version__} ({torch.get_num_threads()} threads); {args.repeats} timed "
    f"calls per model and batch size, teacher and student taking turns"
  )
  header = (
    "| path | batch | teacher p50 / p95 ms | student p50 / p95 ms | teacher / student "
    "texts/s | speed-up (p50) |"
  )
  print(header + "\n|" + " --- |" * 6)
  for r in results:
    t, s = r["teacher"], r["student"]
    print(
      f"| {r['path']} | {r['batch']} | {t['p50_ms']:.1f} / {t['p95_ms']:.1f} | "
      f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f} | {t['texts_per_s']:.0f} / "
      f"{s['texts_per_s']:.0f} | {r['speedup_p50']:.2f}x |"
    )
  print(json.dumps(results))


if __name__ == "__main__":
  main()
