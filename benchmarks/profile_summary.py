"""Where the device time of a `jax.profiler` trace goes: the busiest operations, per step.

Reads the `*.xplane.pb` that `jax.profiler.trace(dir)` writes, with
`jax.profiler.ProfileData`. A device plane ("/device:GPU:0", "/device:TPU:0") holds one
line per stream plus the "XLA Modules" and "XLA Ops" lines, which span the same time again:
only its "XLA Ops" line is summed (its streams when it has none), one event per executed
HLO op. Without device planes (XLA:CPU runs its ops on host threads) the host's XLA threads
are summed, without the runtime's scopes around the ops (`ThunkExecutor`, `Await`), and an
async op's "end: NAME" event counts as NAME's time. `benchmarks/cpu_step_profile.py` reads
its CPU profile the same way (`op_times`).

    python benchmarks/profile_summary.py /tmp/bert_prof/base-s128-b256-bfloat16 --steps 3

Operations are also summed by what their names say (a heuristic, printed as such): matrix
multiplies ("matmul": cuBLAS's kernels, "nvjet_sm90_*" on Hopper, CUTLASS, XLA's "gemm",
"dot" or "convolution"), cuDNN's fused attention ("attention": "fmha", "sdpa", any "cudnn"
kernel), and XLA:GPU's own kernels by the kind of fusion their names begin with:
"elementwise" ("loop_*") and "reduction" ("input_*"), the rest "other" (XLA's Triton
fusions "fusion_N", concatenations, copies). A step run as CUDA graphs (XLA's command
buffers) has no "XLA Ops" line: its kernels are read off the streams, by kernel name.
"""

import argparse
import collections
import glob
import os

import jax

MATMUL_WORDS = ("gemm", "cublas", "cutlass", "xmma", "nvjet", "dot", "convolution", "matmul")
ATTENTION_WORDS = ("fmha", "sdpa", "flash", "cudnn")
FUSION_KINDS = (("loop_", "elementwise"), ("input_", "reduction"))  # XLA:GPU kernel names
CPU_THREADS = ("XLAEigen", "PjRtCpuClient")  # XLA:CPU's op threads in the host plane
CPU_SCOPES = ("ThunkExecutor", "Await")  # the runtime around the ops, not ops


def trace_file(directory: str) -> str:
  """The newest *.xplane.pb under `directory`.

  Raises:
    FileNotFoundError: none there.
  """
  found = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
  if not found:
    raise FileNotFoundError(f"no *.xplane.pb under {directory}: take it with jax.profiler.trace")
  return max(found, key=os.path.getmtime)


def _events(planes):
  """(where, [(op name, nanoseconds, details, calls)]) of the ops the module docstring
  sums (calls 0 for an async op's "end:" event, which adds time to its op, not a call);
  `planes` as `ProfileData.planes` (objects with `.name` and `.lines`, whose events have
  `.name`, `.duration_ns` and `.stats`).
  """
  planes = list(planes)  # ProfileData gives an iterator
  devices = [plane for plane in planes if plane.name.startswith("/device:")]
  ops = []
  if devices:
    for plane in devices:
      lines = list(plane.lines)
      chosen = [line for line in lines if line.name == "XLA Ops"] or [
        line for line in lines if line.name.startswith("Stream")
      ]
      for line in chosen:
        for e in line.events:
          details = " ".join(str(value) for _, value in e.stats)
          ops.append((e.name, e.duration_ns, details, 1))
    return ", ".join(plane.name for plane in devices), ops
  for plane in planes:
    for line in plane.lines:
      if not any(thread in line.name for thread in CPU_THREADS):
        continue
      for e in line.events:
        if not any(scope in e.name for scope in CPU_SCOPES) and "::" not in e.name:
          name = e.name.removeprefix("end: ")
          ops.append((name, e.duration_ns, "", int(name == e.name)))
  return "XLA:CPU threads (no device plane in the trace)", ops


def op_times(directory: str):
  """(where, {op: total ns}, {op: events}, {op: details}) of the trace under `directory`."""
  return times_of(jax.profiler.ProfileData.from_file(trace_file(directory)).planes)


def times_of(planes):
  """`op_times` of profile planes (`_events`'s)."""
  where, ops = _events(planes)
  nanos, calls, details = collections.Counter(), collections.Counter(), {}
  for name, ns, text, count in ops:
    nanos[name] += ns
    calls[name] += count
    details.setdefault(name, text)
  return where, nanos, calls, details


def category(text: str) -> str:
  """The category of an operation by the words in its name and details (the module
  docstring's): attention, matmul, elementwise, reduction or other.
  """
  lower = text.lower()
  if any(w in lower for w in ATTENTION_WORDS):
    return "attention"
  if any(w in lower for w in MATMUL_WORDS):
    return "matmul"
  for prefix, kind in FUSION_KINDS:
    if lower.startswith(prefix):
      return kind
  return "other"


def summary(directory: str, steps: int = 1, top: int = 20) -> str:
  """The report `main` prints for the trace under `directory` of `steps` steps."""
  where, nanos, calls, details = op_times(directory)
  total = sum(nanos.values())
  if not total:
    return f"{directory}: no timed operations on {where}"
  lines = [
    f"{directory}: {where}; busy {total / 1e6 / steps:.2f} ms per step over {steps} step(s), "
    f"{len(nanos)} operations"
  ]
  by_category = collections.Counter()
  for name, ns in nanos.items():
    by_category[category(f"{name} {details[name]}")] += ns
  lines.append(
    "  by name (heuristic): "
    + ", ".join(f"{c} {ns / total:.0%}" for c, ns in by_category.most_common())
  )
  lines.append(f"  {'ms/step':>9} {'share':>6} {'calls/step':>10}  operation")
  for name, ns in nanos.most_common(top):
    lines.append(
      f"  {ns / 1e6 / steps:9.3f} {ns / total:6.1%} {calls[name] / steps:10.1f}  {name[:110]}"
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
