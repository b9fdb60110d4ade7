"""benchmarks/train_throughput.py on CPU at the tiny size: it runs both sides, prints a JSON
line, and its FLOPs formula (bert_jax.train.flops, tested in test_flops.py) agrees with XLA's
cost analysis of the lowered step.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from bert_jax import host_memory
from tests.conftest import ROOT, load_benchmark


@pytest.fixture(scope="module")
def bench():
  return load_benchmark("train_throughput")


def test_default_predictions(bench):
  assert bench.default_predictions(128) == 20 and bench.default_predictions(512) == 80
  assert bench.default_predictions(256) == round(0.15 * 256)


def test_xla_options_and_variants_from_the_command_line(bench):
  options = bench.parse_xla_options(["a_flag=true", "b_flag=False", "level=2", "name=text"])
  assert options == {"a_flag": True, "b_flag": False, "level": 2, "name": "text"}
  with pytest.raises(SystemExit, match="NAME=VALUE"):
    bench.parse_xla_options(["xla_gpu_enable_cublaslt"])
  assert bench.parse_args(["--variants", "all"], "cpu").variants == list(bench.VARIANTS)
  with pytest.raises(SystemExit):
    bench.parse_args(["--variants", "fused_qkv,no_such_variant"], "cpu")


@pytest.mark.slow
def test_tiny_run_on_cpu(bench, capsys):
  argv = "--size tiny --seq 32 --batch 4 --steps 2 --warmup 1 --matmul-size 256".split()
  argv += ["--variants", "recompute_activation,flax_dropout"]  # traced again
  records = bench.main(argv)
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  assert len(lines) == 1 and len(records) == 1
  r = json.loads(lines[0])
  assert r == json.loads(json.dumps(records[0]))
  assert (r["size"], r["seq"], r["batch"], r["dtype"]) == ("tiny", 32, 4, "float32")
  assert r["jax_seq_per_s"] > 0 and r["jax_tokens_per_s"] == pytest.approx(32 * r["jax_seq_per_s"])
  # XLA also counts LayerNorm, GELU, softmax, dropout bits and AdamW (about 4M parameters
  # over a batch of 4): 1.155x the formula here, 1.04x for BERT-mini at seq 128 / batch 16.
  # A formula off by 2x either way lands outside this band.
  ratio = r["xla_flops_per_seq"] / r["model_flops_per_seq"]
  assert 1.0 < ratio < 1.4, ratio
  assert 0 < r["mfu"] == r["mfu_measured_peak"]  # CPU: no table peak, the measured one
  assert r["hf_eager_seq_per_s"] > 0
  assert r["ratio_eager"] == pytest.approx(r["jax_seq_per_s"] / r["hf_eager_seq_per_s"])
  assert r["hf_compile_seq_per_s"] is None and r["ratio_compile"] is None  # off on CPU
  variants = {"recompute_activation", "flax_dropout", "base_again"}
  assert set(r["variants"]) - {"combined"} == variants  # combined: if both gained 1 %
  if "combined" in r["variants"]:
    changes = {"recompute_activation": True, "flax_dropout_bits": True}
    assert r["variants"]["combined"]["changes"] == changes
  assert all(v["seq_per_s"] > 0 for v in r["variants"].values())
  assert r["variants"]["recompute_activation"]["changes"] == {"recompute_activation": True}


@pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None or not host_memory.runs_on_cpu({}),
  reason="needs libtpu installed (the test extra) on a host without accelerators",
)
def test_the_command_on_a_cpu_host_starts_no_tpu_probe():
  """Run as a command on a CPU host with libtpu installed (the `aot` and `test` extras),
  the benchmark starts JAX's CPU backend alone, as `bert-jax` does: no screen of libtpu
  warnings.
  """
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  script = os.path.join(ROOT, "benchmarks", "train_throughput.py")
  result = subprocess.run(
    [sys.executable, script, "--help"], env=env, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
  assert "TPU" not in result.stderr, result.stderr
