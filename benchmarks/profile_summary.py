"""Where the device time of a `jax.profiler` trace goes: the busiest operations, per step.

`jax.profiler.trace(dir, create_perfetto_trace=True)` writes, beside its TensorBoard files,
`plugins/profile/<run>/perfetto_trace.json.gz`: Chrome trace events, one process per device
("/device:GPU:0", "/device:TPU:0") with a thread per stream, and one for the host. This
module adds up the complete events ("ph": "X") of the device processes by operation (the
`hlo_op` argument where the event has one, else its name: a kernel) and prints the largest,
in milliseconds per step and as a share of the device's busy time. Without device
processes (XLA:CPU runs its ops on host threads) it reads the host's threads other than the
Python one, leaving out the runtime's scopes around the ops (names with "::", e.g.
`ThunkExecutor::Execute`).

    python benchmarks/profile_summary.py /tmp/bert_prof/base-128-256 --steps 3

Kernels whose names say matrix multiply (cuBLAS / CUTLASS / "gemm", XLA "dot" or
"convolution") are also summed as "matmul", and cuDNN's fused attention ("fmha") as
"attention": a name heuristic, printed as such.
"""

import argparse
import collections
import glob
import gzip
import json
import os

MATMUL_WORDS = ("gemm", "cublas", "cutlass", "xmma", "dot", "convolution", "matmul")
ATTENTION_WORDS = ("fmha", "flash", "cudnn")


def trace_file(directory: str) -> str:
  """The newest perfetto_trace.json.gz under `directory`.

  Raises:
    FileNotFoundError: none there (a trace taken without create_perfetto_trace=True).
  """
  found = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
  if not found:
    raise FileNotFoundError(
      f"no perfetto_trace.json.gz under {directory}: take the trace with "
      "jax.profiler.trace(dir, create_perfetto_trace=True)"
    )
  return max(found, key=os.path.getmtime)


def load_events(path: str) -> list[dict]:
  """The trace events of a perfetto JSON file (gzip or plain)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def device_time(events: list[dict]) -> tuple[str, collections.Counter, collections.Counter, dict]:
  """(where, microseconds by operation, events by operation, the first kernel name of each
  operation) over the device processes, or over the host's non-Python threads when the
  trace has no device process.
  """
  processes, threads = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e["args"]["name"]
    if e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e.get("tid"))] = e["args"]["name"]
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
  if devices:
    where = ", ".join(sorted(processes[pid] for pid in devices))

    def counted(e):
      return e["pid"] in devices
  else:
    where = "host threads (no device process in the trace)"

    def counted(e):  # XLA's ops, not the runtime's C++ scopes around them (Class::Method)
      return threads.get((e["pid"], e.get("tid")), "python") != "python" and "::" not in e["name"]

  micros, calls, kernels = collections.Counter(), collections.Counter(), {}
  for e in events:
    if e.get("ph") == "X" and counted(e):
      name = (e.get("args") or {}).get("hlo_op") or e["name"]
      micros[name] += float(e.get("dur", 0.0))
      calls[name] += 1
      kernels.setdefault(name, e["name"])
  return where, micros, calls, kernels


def category(name: str) -> str:
  """The category of an operation by the words in its name: attention, matmul or other."""
  lower = name.lower()
  if any(w in lower for w in ATTENTION_WORDS):
    return "attention"
  if any(w in lower for w in MATMUL_WORDS):
    return "matmul"
  return "other"


def summary(directory: str, steps: int = 1, top: int = 20) -> str:
  """The report `main` prints for the trace under `directory` of `steps` steps."""
  where, micros, calls, kernels = device_time(load_events(trace_file(directory)))
  total = sum(micros.values())
  if not total:
    return f"{directory}: no timed operations on {where}"
  lines = [
    f"{directory}: {where}; busy {total / 1e3 / steps:.2f} ms per step over {steps} step(s), "
    f"{len(micros)} operations"
  ]
  by_category = collections.Counter()
  for name, us in micros.items():
    by_category[category(f"{name} {kernels[name]}")] += us
  lines.append(
    "  by name (heuristic): "
    + ", ".join(f"{c} {us / total:.0%}" for c, us in by_category.most_common())
  )
  lines.append(f"  {'ms/step':>9} {'share':>6} {'calls/step':>10}  operation (kernel)")
  for name, us in micros.most_common(top):
    label = name if kernels[name] == name else f"{name} ({kernels[name]})"
    lines.append(
      f"  {us / 1e3 / steps:9.3f} {us / total:6.1%} {calls[name] / steps:10.1f}  {label[:110]}"
    )
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("directory", help="the directory jax.profiler.trace wrote")
  p.add_argument("--steps", type=int, default=1, help="steps the trace holds")
  p.add_argument("--top", type=int, default=20)
  args = p.parse_args(argv)
  print(summary(args.directory, args.steps, args.top))


if __name__ == "__main__":
  main()
