"""Where an XLA:CPU train step spends its time: every compiled op's share, from a profile.

Builds bert_jax's fine-tuning step (classification, the all-MiniLM-L6-v2 shape by default)
or pretraining step on synthetic batches, runs it a few times under `jax.profiler` with
XLA:CPU's per-op trace events on (`--xla_cpu_enable_xprof_traceme`), and prints the time a
step of each group of ops (dense matmuls, attention, dropout, LayerNorm, the optimizer
update, ...), then the slowest ops with their shapes and JAX op names, and the minor page
faults a step (see `bert_jax/host_memory.py`). Op times are summed over XLA's threads, so
they add up to more than the step's wall time when ops overlap.

    python benchmarks/cpu_step_profile.py                       # MiniLM fine-tuning step
    python benchmarks/cpu_step_profile.py --objective pretrain --layers 2 --hidden 128
    BERT_JAX_HOST_MALLOC=default python benchmarks/cpu_step_profile.py   # glibc's malloc

The numbers of benchmarks/README.md ("finetune_vs_hf.py") come from this profile.
"""

import argparse
import collections
import dataclasses
import os
import re
import resource
import tempfile
import time

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import profile_summary  # noqa: E402  (beside this script, as train_throughput)
import train_throughput  # noqa: E402  (benchmarks/train_throughput.py, beside this script)

from bert_jax import config as config_lib  # noqa: E402
from bert_jax import host_memory, sharding  # noqa: E402
from bert_jax.data import synthetic  # noqa: E402
from bert_jax.finetune import objective as finetune_objective  # noqa: E402
from bert_jax.model import pretraining, tasks  # noqa: E402
from bert_jax.train import step as step_lib  # noqa: E402

VOCAB = train_throughput.VOCAB  # BERT's WordPiece vocabulary
# (group, pattern in the op's JAX name), first match wins.
GROUPS = (
  # Its bits (Flax's, JAX's random functions; bert_jax's `model.dropout`, whose threefry
  # XLA:CPU runs as a loop in the module's name) and masks.
  ("dropout", r"_bernoulli|_uniform|threefry|random_bits|/[Dd]ropout(_\d+)?/"),
  ("dense matmuls", r"\.project/|/dense/|/predictions/|/pooler/|/classifier/"),
  ("attention", r"/attention/"),
  ("layer norm", r"layer_norm"),
  ("feed-forward activation", r"/mlp/"),
  ("embeddings", r"/embeddings/"),
  ("optimizer update", r"^jit\(train_step\)/[^/]*$"),
)


def group_of(op_name):
  """The group of an op from its JAX name (`jit(train_step)/jvp(...)/bert/...`)."""
  for group, pattern in GROUPS:
    if re.search(pattern, op_name):
      return group
  return "other"


def build(args):
  """(jit-compiled step, initial state, mesh, rules, one host batch)."""
  c = config_lib.base_config()
  c.model.num_layers, c.model.hidden_size = args.layers, args.hidden
  c.model.intermediate_size = args.intermediate or 4 * args.hidden
  cfg = config_lib.model_config(c, VOCAB)
  cfg = dataclasses.replace(cfg, num_heads=args.heads)
  batches = synthetic.synthetic_batches(
    batch_size=args.batch, max_seq_length=args.seq, vocab_size=VOCAB, max_predictions=20, seed=0
  )
  batch = next(batches)
  if args.objective == "finetune":
    objective = finetune_objective.FineTuning(
      tasks.ForTask(cfg, "classification", 5), "classification"
    )
    keys = ("input_ids", "token_type_ids", "attention_mask")
    batch = {k: batch[k] for k in keys} | {"labels": np.arange(args.batch, dtype=np.int32) % 5}
  else:
    objective = step_lib.Pretraining(pretraining.BertForPreTraining(cfg))
  return (*train_throughput.one_device_step(c, objective), batch)


def op_lines(hlo_text):
  """{instruction name: (shape, JAX op name)} from the compiled HLO text."""
  lines = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+)", line)
    if match and match.group(1) not in lines:
      op = re.search(r'op_name="([^"]+)"', line)
      lines[match.group(1)] = (match.group(2), op.group(1) if op else "")
  return lines


def op_times(trace_dir):
  """{op name: total ns} over the XLA:CPU threads of the profile in `trace_dir`."""
  return profile_summary.op_times(trace_dir)[1]


def main(argv=None):
  """Builds, times and profiles the step, then prints its ops by group and the slowest."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--objective", choices=("finetune", "pretrain"), default="finetune")
  parser.add_argument("--layers", type=int, default=6)
  parser.add_argument("--hidden", type=int, default=384)
  parser.add_argument("--heads", type=int, default=12)
  parser.add_argument("--intermediate", type=int, default=None, help="default: 4 x hidden")
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=3, help="profiled steps")
  parser.add_argument("--top", type=int, default=20, help="slowest ops listed")
  args = parser.parse_args(argv)
  kept = argv is None and host_memory.keep_freed_memory()  # as `bert-jax` when a command
  step, state, mesh, rules, host_batch = build(args)
  rng = jax.random.key(1)
  with sharding.activate(mesh, rules):
    batch = sharding.global_batch(host_batch, mesh)
    compiled = step.lower(state, batch, rng).compile()
    for _ in range(6):  # warm-up: the kept heap settles over the first steps
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(state)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - start) / args.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        for _ in range(args.steps):
          state, metrics = compiled(state, batch, rng)
        jax.block_until_ready(state)
      totals = op_times(trace_dir)
  lines = op_lines(compiled.as_text())
  per_step = {name: ns / args.steps / 1e6 for name, ns in totals.items()}  # ms
  groups = collections.Counter()
  for name, ms in per_step.items():
    groups[group_of(lines.get(name, ("", ""))[1])] += ms
  print(
    f"{args.objective} step, L{args.layers} H{args.hidden} A{args.heads}, batch {args.batch} x "
    f"{args.seq}: {1000 * seconds:.0f} ms a step unprofiled, {faults:.0f} minor page faults "
    f"a step (host malloc {'kept' if kept else 'glibc default'})"
  )
  print(f"ops: {sum(per_step.values()):.1f} ms a step, summed over threads")
  for group, ms in groups.most_common():
    print(f"  {group:24s} {ms:8.1f} ms")
  print(f"slowest {args.top} ops (ms a step, shape, JAX op name):")
  for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[: args.top]:
    shape, op = lines.get(name, ("?", "?"))
    print(f"  {ms:7.2f}  {name:28s} {shape:24s} {op[-80:]}")


if __name__ == "__main__":
  main()
