"""Input pipeline throughput: masked batches from prepared shards, against Hugging Face.

Prepares the built-in corpus once per sequence length (8192 pieces, 8 shards, cached in
--data_dir), then times, in one run and on the same records:

  ours, tf.data   `pipeline.batches` as training runs it (parallel map + prefetch)
  ours, threads   the same under the thread pool used where TensorFlow is not installed
  ours, 1 thread  `Stream.batch_at` in a plain loop: the cost of one core
  HF collator     `transformers.DataCollatorForLanguageModeling(return_tensors="np")` on
                  unpadded feature dicts, batch after batch, as a Trainer's DataLoader
                  with num_workers=0 calls it; "+stm" also gives it the special-tokens
                  masks that `run_mlm.py` precomputes at tokenization.

The HF side gets the records already decoded into Python lists, as a datasets.Dataset
hands them over (that decoding is not timed, in its favour), and pads to the full length
(`pad_to_multiple_of=L`), so both sides give fixed (batch, L) arrays that compile once
under jit. Ratios are against one collator process; "1 thread" / HF compares one core
with one core. Goal: >= 10,000 sequences/s at length 128 on 2 cores, so that a 16-core
host feeds 8 GPUs. This script only prints; the tests time nothing.

    pip install -e . transformers   # transformers is optional: the peer is skipped without it
    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --seq_lengths 128 --steps 400 --whole_word
"""

import argparse
import itertools
import math
import os
import tempfile
import time

import numpy as np

from bert_jax import config as config_lib
from bert_jax.data import pipeline, prepare, records
from bert_jax.data import tokenizer as tokenizer_lib

GOAL_128 = 10_000  # sequences/s at length 128 on 2 cores
MAX_PREDICTIONS = {128: 20, 512: 80}  # BERT's two phases; else ceil(0.15 * L)


def prepared(data_dir, length, objective):
  """The prepared dir and manifest for `length`: prepared on first use, then reused."""
  c = config_lib.base_config()
  c.tokenizer.vocab_size = 8192  # SentencePiece trains in seconds
  c.data.objective = objective
  c.data.num_shards = 8
  c.data.max_seq_length = length
  c.data.max_predictions_per_seq = max_predictions(length)
  path = os.path.join(data_dir, f"{objective}-{length}")
  return path, prepare.prepare(c, path, progress=False)


# The timed stretches of each path (the best counts), and the fewest batches in one.
CHUNKS, MIN_STRETCH = 5, 10


def max_predictions(length):
  return MAX_PREDICTIONS.get(length, math.ceil(0.15 * length))


def sequences_per_second(batches, steps, warmup, batch_size, chunks=CHUNKS):
  """Rows per second of the iterator over `steps` batches, timed in `chunks` stretches.

  Returns the best stretch's rate: other work on the machine only ever slows a
  stretch down, so the best is the closest to the speed of an otherwise idle host.
  """
  batches = iter(batches)
  for _ in itertools.islice(batches, warmup):
    pass
  best = 0.0
  for _ in range(chunks):
    start = time.perf_counter()
    count = sum(1 for _ in itertools.islice(batches, max(1, steps // chunks)))
    best = max(best, count * batch_size / (time.perf_counter() - start))
  return best


def hf_features(path, manifest):
  """The train records as a datasets.Dataset holds them: unpadded lists, one dict a row."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  raw = []
  for shard in manifest["splits"]["train"]["shards"]:
    if shard["rows"]:
      reader = array_record_module.ArrayRecordReader(os.path.join(path, shard["file"]))
      raw += reader.read_all()
      reader.close()
  batch = records.decode_rows(
    raw,
    max_seq_length=manifest["max_seq_length"],
    dtype=manifest["token_dtype"],
    packed=manifest["settings"]["packing"],
    pad_id=manifest["special_ids"]["pad"],
  )
  lengths = batch["attention_mask"].sum(1)
  special = np.isin(batch["input_ids"], list(manifest["special_ids"].values()))
  order = np.random.default_rng(0).permutation(len(raw))  # a shuffled epoch, as a sampler
  plain = [
    {
      "input_ids": batch["input_ids"][i, : lengths[i]].tolist(),
      "token_type_ids": batch["token_type_ids"][i, : lengths[i]].tolist(),
    }
    for i in order
  ]
  with_mask = [
    dict(f, special_tokens_mask=special[i, : lengths[i]].astype(int).tolist())
    for f, i in zip(plain, order)
  ]
  return plain, with_mask


def hf_tokenizer(path, manifest):
  """A fast tokenizer whose ids are the prepared SentencePiece ids, with BERT's specials."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.load(os.path.join(path, manifest["tokenizer_file"]))
  vocab = {tok.id_to_piece(i): i for i in range(tok.vocab_size)}
  word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=word_level,
    pad_token="[PAD]",
    unk_token="[UNK]",
    cls_token="[CLS]",
    sep_token="[SEP]",
    mask_token="[MASK]",
  )


def hf_batches(collator, features, batch_size):
  """Collated batches over `features`, endlessly, in order."""
  for step in itertools.count():
    start = step * batch_size % len(features)
    rows = features[start : start + batch_size]
    yield collator(rows + features[: batch_size - len(rows)])


def _has_tensorflow():
  try:
    import tensorflow  # noqa: F401

    return True
  except ImportError:
    return False


def benchmark(args, length):
  """Rows (path, sequences/s) for one sequence length."""
  path, manifest = prepared(args.data_dir, length, args.objective)
  density = manifest["splits"]["train"]["density"]
  print(
    f"seq {length}: {manifest['splits']['train']['rows']} train rows, "
    f"{density:.0%} of positions are tokens"
  )
  results = []

  def run(name, batches):
    rate = sequences_per_second(batches, args.steps, args.warmup, args.batch_size)
    results.append((name, rate))
    print(f"  {name:<26} {rate:>10,.0f} seq/s")

  def stream(whole_word):
    return pipeline.Stream(
      path,
      manifest,
      "train",
      batch_size=args.batch_size,
      seed=0,
      max_predictions=max_predictions(length),
      whole_word_masking=whole_word,
    )

  end = args.warmup + args.steps
  for whole_word in sorted({False, args.whole_word}):
    suffix = ", whole-word" if whole_word else ""
    if _has_tensorflow():
      run(f"ours, tf.data{suffix}", pipeline.batches(stream(whole_word), 0, end, use_tf=True))
    run(f"ours, threads{suffix}", pipeline.batches(stream(whole_word), 0, end, use_tf=False))
  s = stream(False)
  run("ours, 1 thread", map(s.batch_at, range(end)))

  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("  HF collator: skipped; `pip install transformers` to compare")
    return results
  tokenizer = hf_tokenizer(path, manifest)
  plain, with_mask = hf_features(path, manifest)
  for name, features in (("HF collator", plain), ("HF collator +stm", with_mask)):
    collator = transformers.DataCollatorForLanguageModeling(
      tokenizer, mlm_probability=0.15, pad_to_multiple_of=length, return_tensors="np"
    )
    run(name, hf_batches(collator, features, args.batch_size))
  return results


def report(args, results):
  """Prints the table, the ratios ours / HF and whether the goal at 128 is met."""
  print(f"\n{'path':<28} {'seq':>4} {'batch':>6} {'seq/s':>10}  ours/HF  ours/HF+stm")
  for length, rows in results.items():
    rates = dict(rows)
    hf, hf_stm = rates.get("HF collator"), rates.get("HF collator +stm")
    for name, rate in rows:
      ratios = ""
      if name.startswith("ours") and hf:
        ratios = f"{rate / hf:>7.1f}x  {rate / hf_stm:>10.1f}x"
      print(f"{name:<28} {length:>4} {args.batch_size:>6} {rate:>10,.0f}  {ratios}")
  if 128 in results:
    checks = [
      f"{name}: {rate:,.0f} {'met' if rate >= GOAL_128 else 'NOT met'}"
      for name, rate in results[128]
      if name.startswith("ours")
    ]
    print(
      f"\ngoal >= {GOAL_128:,} seq/s at 128 on {os.cpu_count()} cores:\n  " + "\n  ".join(checks)
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--steps", type=int, default=200, help="timed batches per path (5 stretches, the best counts)"
  )
  parser.add_argument("--warmup", type=int, default=10, help="untimed batches first")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--seq_lengths", default="128,512", help="comma-separated")
  parser.add_argument("--objective", default="nsp", choices=("nsp", "sop", "mlm"))
  parser.add_argument(
    "--data_dir",
    default=os.path.join(tempfile.gettempdir(), "bert_jax_bench"),
    help="prepared shards, reused across runs",
  )
  parser.add_argument("--whole_word", action="store_true", help="also time whole-word masking")
  args = parser.parse_args()
  # Fewer batches time the ones the loaders had already made ahead: 20 million seq/s for
  # stretches of one batch after one untimed.
  if args.steps < CHUNKS * MIN_STRETCH:
    parser.error(
      f"--steps {args.steps} is too few to time: each of the {CHUNKS} stretches needs "
      f"{MIN_STRETCH} batches; give --steps {CHUNKS * MIN_STRETCH} or more"
    )
  if args.warmup < MIN_STRETCH:
    parser.error(
      f"--warmup {args.warmup} is too few: the loaders' batches made ahead must be used up "
      f"before the timing starts; give --warmup {MIN_STRETCH} or more"
    )
  results = {length: benchmark(args, length) for length in map(int, args.seq_lengths.split(","))}
  report(args, results)


if __name__ == "__main__":
  main()
