"""benchmarks/profile_summary.py against hand-made profile planes (device time added up by
hand) and a real `jax.profiler` trace of a jitted function on this CPU.
"""

import types

import jax
import jax.numpy as jnp
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def summarizer():
  return load_benchmark("profile_summary")


def _plane(name, **lines):
  """A plane as ProfileData gives it: lines of events (name, ns[, stats])."""
  return types.SimpleNamespace(
    name=name,
    lines=[
      types.SimpleNamespace(
        name=line.replace("_", " "),
        events=[
          types.SimpleNamespace(name=e[0], duration_ns=e[1], stats=e[2] if e[2:] else [])
          for e in events
        ],
      )
      for line, events in lines.items()
    ],
  )


def test_a_gpu_plane_counts_its_xla_ops_line_once(summarizer):
  """Not the "XLA Modules" line spanning the step, nor the streams timing the same ops."""
  gemm = [("long_name", "custom-call.4 = __cublas$gemm(...)")]
  ops = [("custom-call.4", 300, gemm), ("custom-call.4", 100, gemm), ("fusion.2", 350)]
  host = _plane("/host:CPU", python=[("PjitFunction(step)", 9000)])
  gpu = _plane(
    "/device:GPU:0",
    XLA_Modules=[("jit_train_step", 2000)],
    XLA_Ops=ops + [("custom-call.9", 250, [("long_name", "__cudnn$fmhaSoftmax")])],
    **{"Stream_#13(Compute)": [("sm90_xmma_gemm_bf16", 390)]},
  )
  where, ops = summarizer._events([host, gpu])
  assert where == "/device:GPU:0"
  assert sorted((name, ns) for name, ns, _, _ in ops) == [
    ("custom-call.4", 100),
    ("custom-call.4", 300),
    ("custom-call.9", 250),
    ("fusion.2", 350),
  ]
  assert summarizer.category(f"custom-call.4 {ops[0][2]}") == "matmul"
  # Without an "XLA Ops" line: its streams' kernels.
  bare = _plane("/device:GPU:0", XLA_Modules=[("jit_train_step", 2000)], Stream_1=[("k", 7)])
  assert summarizer._events([bare])[1] == [("k", 7, "", 1)]


def test_a_cpu_plane_counts_xla_threads_without_the_runtime_scopes(summarizer):
  cpu = _plane(
    "/host:CPU",
    python=[("PjitFunction(f)", 500)],
    tf_XLAEigen_1=[("ThunkExecutor::Execute", 400), ("dot.1", 60), ("end: all-reduce", 5)],
    tf_XLAPjRtCpuClient_2=[("SlinkyThreadPool::Await", 80), ("fusion", 30)],
  )
  where, ops = summarizer._events([cpu])
  assert where.startswith("XLA:CPU threads")
  assert sorted(ops) == [("all-reduce", 5, "", 0), ("dot.1", 60, "", 1), ("fusion", 30, "", 1)]


def test_a_folder_without_a_profile_is_one_clear_error(summarizer, tmp_path):
  with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb under"):
    summarizer.summary(str(tmp_path))


def test_a_cpu_trace_per_step(summarizer, tmp_path):
  """A real trace of 2 calls: the busiest op is one of XLA's, timed once per call."""
  f = jax.jit(lambda a: jnp.tanh(a @ a))
  a = jnp.ones((256, 256))
  f(a).block_until_ready()
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(2):
      f(a).block_until_ready()
  report = summarizer.summary(str(tmp_path), steps=2).splitlines()
  assert "XLA:CPU threads" in report[0] and "over 2 step(s)" in report[0]
  busiest = report[3].split()
  assert float(busiest[2]) == 1.0  # calls per step
  assert "PjitFunction" not in "\n".join(report) and "::" not in "\n".join(report)
