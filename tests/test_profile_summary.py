"""benchmarks/profile_summary.py against a hand-made trace (device time added up by hand)
and a real `jax.profiler` trace of a jitted function on this CPU.
"""

import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def summarizer():
  return load_benchmark("profile_summary")


def _meta(pid, tid, kind, name):
  return {"ph": "M", "pid": pid, "tid": tid, "name": kind, "args": {"name": name}}


def _event(pid, tid, name, dur, hlo_op=None):
  args = {"hlo_op": hlo_op} if hlo_op else {}
  return {"ph": "X", "pid": pid, "tid": tid, "name": name, "dur": dur, "ts": 0, "args": args}


def _write_trace(directory, events):
  run = directory / "plugins" / "profile" / "2026_11_29"
  run.mkdir(parents=True)
  with gzip.open(run / "perfetto_trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)


def test_device_time_per_operation_of_a_two_step_gpu_trace(summarizer, tmp_path):
  events = [
    _meta(1, None, "process_name", "/host:CPU"),
    _meta(1, 10, "thread_name", "python"),
    _meta(2, None, "process_name", "/device:GPU:0"),
    _meta(2, 20, "thread_name", "Stream #13(Compute)"),
    _event(1, 10, "PjitFunction(step)", 9000.0),  # host time: not counted
  ]
  for _ in range(2):  # two steps
    events += [
      _event(2, 20, "sm90_xmma_gemm_bf16", 300.0, hlo_op="custom-call.4"),
      _event(2, 20, "sm90_xmma_gemm_bf16", 100.0, hlo_op="custom-call.4"),
      _event(2, 20, "cudnn_fmha_fwd", 250.0, hlo_op="custom-call.9"),
      _event(2, 20, "loop_add_fusion", 350.0),
    ]
  _write_trace(tmp_path, events)
  report = summarizer.summary(str(tmp_path), steps=2).splitlines()
  # Per step: 400 + 250 + 350 = 1,000 us of device time.
  assert "/device:GPU:0; busy 1.00 ms per step over 2 step(s), 3 operations" in report[0]
  assert report[1] == "  by name (heuristic): matmul 40%, other 35%, attention 25%"
  rows = [line.split() for line in report[3:]]
  assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
    ("0.400", "40.0%", "2.0", "custom-call.4"),
    ("0.350", "35.0%", "1.0", "loop_add_fusion"),
    ("0.250", "25.0%", "1.0", "custom-call.9"),
  ]


def test_a_trace_taken_without_perfetto_is_one_clear_error(summarizer, tmp_path):
  with pytest.raises(FileNotFoundError, match="create_perfetto_trace=True"):
    summarizer.summary(str(tmp_path))


def test_a_cpu_trace_counts_the_xla_threads(summarizer, tmp_path):
  """No device process on CPU: the ops on XLA's host threads, not the Python thread's."""
  f = jax.jit(lambda a: jnp.tanh(a @ a))
  a = jnp.ones((256, 256))
  f(a).block_until_ready()
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    f(a).block_until_ready()
  report = summarizer.summary(str(tmp_path))
  assert "host threads (no device process in the trace)" in report
  assert "PjitFunction" not in report  # the Python thread's dispatch is host time
  assert "::" not in report  # nor the runtime's scopes around the ops (ThunkExecutor::Execute)
