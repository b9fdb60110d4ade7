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


def test_kernels_of_a_step_run_as_cuda_graphs_by_their_names(summarizer, monkeypatch):
  """XLA's command buffers: no "XLA Ops" line, kernels on a stream named as an H200 ran them
  (one step): cuBLAS's nvjet kernels are matmuls, cuDNN's sdpa kernels attention, XLA's
  loop_ / input_ fusions elementwise / reductions.
  """
  stats = [("hlo_op", "command_buffer_1"), ("kernel_details", "regs:31 grid:196608,1,1")]
  kernels = [
    ("nvjet_sm90_tst_192x192_64x3_1x2_h_bz_coopB_splitK_NTN", 400, stats),
    ("nvjet_sm90_tst_128x128_64x6_2x1_v_bz_TNT", 100, stats),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26", 150, stats),
    ("void cudnn::fusion::convert_dq_to_16bits<true>(void const*)", 50, stats),
    ("loop_convert_multiply_fusion_11", 120, stats),
    ("loop_convert_multiply_fusion_11", 80, stats),
    ("input_add_reduce_fusion_9", 60, stats),
    ("fusion_3648", 30, stats),
    ("wrapped_concatenate_23", 10, stats),
  ]
  gpu = _plane("/device:GPU:0", **{"Stream_#14(Compute,Memset)": kernels})
  monkeypatch.setattr(summarizer, "op_times", lambda directory: summarizer.times_of([gpu]))
  report = summarizer.summary("trace", steps=1, top=2)
  # 1000 ns in all: matmul 500, attention 200, elementwise 200, reduction 60, other 40.
  assert "busy 0.00 ms per step over 1 step(s), 8 operations" in report
  assert "matmul 50%, attention 20%, elementwise 20%, reduction 6%, other 4%" in report
  assert report.splitlines()[3].split() == [
    "0.000",
    "40.0%",
    "1.0",
    "nvjet_sm90_tst_192x192_64x3_1x2_h_bz_coopB_splitK_NTN",
  ]
  assert report.splitlines()[4].split()[1:3] == ["20.0%", "2.0"]


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
