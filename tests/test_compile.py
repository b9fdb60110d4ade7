"""`bert-jax compile`: a recipe's train step compiled for a TPU slice on this CPU (libtpu).

Each case runs the CLI in a subprocess (libtpu is loaded there, not in the test process)
and checks the report's JSON line against numbers worked out here from the config.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("libtpu")

# BERT-tiny, short rows and a small vocabulary: compiles in seconds.
SMALL = (
  "--config.data.max_seq_length=32",
  "--config.data.max_predictions_per_seq=4",
  "--config.tokenizer.vocab_size=500",  # the model pads it to 512
  "--config.train.batch_size=16",
)


def compile_cli(*args, env=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **(env or {})}
  return subprocess.run(
    [sys.executable, "-m", "bert_jax", "compile", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def report(proc):
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # end to end: the CLI compiles in a subprocess
def test_small_step_fits_with_our_flops(tmp_path):
  # bert-jax's own compilation cache (the suite's off): the TPU program is not stored, as
  # this host cannot load it (before: the next compile warned "Error reading persistent
  # compilation cache entry").
  cache = {"JAX_COMPILATION_CACHE_DIR": "", "BERT_JAX_COMPILE_CACHE": str(tmp_path / "xla")}
  proc = compile_cli("--topology", "v5e:2x2", *SMALL, env=cache)
  assert proc.returncode == 0, proc.stderr
  stored = os.listdir(tmp_path / "xla") if (tmp_path / "xla").exists() else []
  assert not [name for name in stored if "train_step" in name], stored
  r = report(proc)
  # BERT-tiny: 2 layers, hidden 128, MLP 512; 16 rows of 32 tokens, 4 predictions each.
  b, s, p, layers, h, i, v = 16, 32, 4, 2, 128, 512, 512
  per_token = layers * (3 * h * h + h * h + 2 * h * i)  # Q, K, V, output; MLP in and out
  attention = 2 * 2 * s * h * layers  # scores and values, per token, forward
  heads = p * (h * h + h * v) + h * h + 2 * h  # per row: MLM transform and decoder; pooler, NSP
  expected = 3 * (2 * per_token * b * s + attention * b * s + 2 * heads * b)
  assert r["model_flops_per_step"] == expected
  assert r["topology"] == "v5e:2x2" and r["chips"] == 4
  assert r["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  assert r["hbm_per_chip_bytes"] == 16 * 2**30
  assert 0 < r["peak_bytes_per_chip"] <= r["hbm_usable_per_chip_bytes"] < r["hbm_per_chip_bytes"]
  assert r["fits"] is True
  # XLA also counts softmax, layer norms, the optimizer ...: more, but the same order.
  assert 0.9 < r["xla_flops_per_step"] / expected < 3
  # Data parallel: the gradients are summed over the 4 chips, nothing is gathered.
  assert r["collectives"]["all-reduce"]["count"] >= 1
  assert r["collectives"]["all-gather"]["count"] == 0
  assert proc.stdout.splitlines()[-2].startswith("fits: peak ")


@pytest.mark.slow  # end to end: the CLI compiles in a subprocess
def test_too_big_a_batch_does_not_fit():
  proc = compile_cli(
    "--topology", "v5e:2x2", "--config.train.batch_size=16384", "--config.model.scan_layers=True"
  )
  assert proc.returncode == 1, proc.stderr
  r = report(proc)
  assert r["fits"] is False and r["peak_bytes_per_chip"] > r["hbm_usable_per_chip_bytes"]
  verdict = proc.stdout.splitlines()[-2]
  assert verdict.startswith("does not fit: ")
  for advice in ("remat_policy=full", "mesh.fsdp=-1", "accum_steps=2"):
    assert advice in verdict


@pytest.mark.slow  # end to end: the CLI compiles in a subprocess
def test_scanned_modernbert_compiles_for_tpu_under_fsdp():
  """ModernBERT's scanned groups (7 layers: layer 0, two groups of local, local, global),
  its local windows in the TPU kernel, remat, and the stacked group parameters sharded over
  fsdp: the parameters are gathered for the step, and it fits.
  """
  proc = compile_cli(
    "--config",
    "configs/demo.py:modernbert",
    "--topology",
    "v5e:2x2",
    "--config.model.num_layers=7",
    "--config.model.scan_layers=True",
    "--config.model.remat_policy=dots_no_batch",
    "--config.model.dtype=bfloat16",
    "--config.mesh.data=1",
    "--config.mesh.fsdp=4",
  )
  assert proc.returncode == 0, proc.stderr
  r = report(proc)
  assert r["fits"] is True and r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert r["model"]["scan_layers"] is True and r["model"]["remat_policy"] == "dots_no_batch"
  gathered = sum(r["collectives"][k]["count"] for k in ("all-gather", "collective-permute"))
  assert gathered > 0


@pytest.mark.parametrize(
  "args, message",
  [
    (("--topology", "v7x:2x2"), "--topology 'v7x:2x2' is not a TPU slice; use v4:XxYxZ"),
    (("--topology", "v5e:4x4x4"), "is not a TPU slice"),
    (("--topology", "v5e:100x100"), "has 10000 chips; a v5e slice has at most 256"),
    (("--topology", "v5e:3x3"), "each side of a slice is a power of two, e.g. v5e:2x2"),
    ((), "--topology is required"),
    (
      ("--topology", "v5e:2x2", "--config.train.batch_size=30", "--config.data.lanes=2"),
      "does not divide over the 4",
    ),
    (  # lanes are lowered to divide the batch, as pretrain does
      ("--topology", "v5e:2x2", "--config.train.batch_size=30", "--config.data.lanes=256"),
      "does not divide over the 4",
    ),
    (("--topology", "v5e:2x2", "--config.mesh.data=3"), "uses 3 of the 4 chips of v5e:2x2"),
    (("--topology", "v5e:2x2", "--config.mesh.data=0"), "config.mesh.data=0: a mesh axis"),
  ],
)
def test_bad_input_is_one_line(args, message):
  proc = compile_cli(*args)
  assert proc.returncode == 2
  assert proc.stdout == ""
  assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
  assert message in proc.stderr


@pytest.mark.parametrize(
  "accelerator, topology",
  # Google's Cloud TPU docs: v4 and v5p count TensorCores (two a chip), v5e and v6e chips.
  [
    ("v5litepod-1", "v5e:1x1"),
    ("v5litepod-4", "v5e:2x2"),
    ("v5litepod-8", "v5e:2x4"),
    ("v5litepod-16", "v5e:4x4"),
    ("v5litepod-256", "v5e:16x16"),
    ("v6e-64", "v6e:8x8"),
    ("v4-8", "v4:2x2x1"),
    ("v4-16", "v4:2x2x2"),
    ("v4-32", "v4:2x2x4"),
    ("v4-64", "v4:2x4x4"),
    ("v4-128", "v4:4x4x4"),
    ("v5p-16", "v5p:2x2x2"),
    ("v5litepod-3", None),
    ("v4-3", None),
    ("v5e:2x2", None),
  ],
)
def test_gcloud_accelerator_types_name_their_topology(accelerator, topology):
  from bert_jax import aot

  assert aot.topology_of_accelerator_type(accelerator) == topology
  if topology:
    assert aot.parse_topology(accelerator) == aot.parse_topology(topology)
