"""XLA options for the train step's compile, per platform, chosen by measurement.

On GPUs the step's matmuls go to cuBLAS, not to XLA's Triton GEMM fusions
(`xla_gpu_enable_triton_gemm=false`). Measured on one H200 on 2026-11-30
(`benchmarks/train_throughput.py --variants`, the same state and batches in one
process; benchmarks/README.md): BERT-base seq 128 batch 256 +6.4 %, seq 512 batch 64
+5.5 %, BERT-large seq 128 batch 128 +5.2 %. The other options tried there (cuBLASLt,
Triton for any GEMM, cuDNN GEMM fusions) gained nothing, and cuDNN's LayerNorm nothing on
top of this one.

An option that XLA_FLAGS names is left to XLA_FLAGS: the user's choice stands.
"""

import os
import re

# {platform: {XLA option: value}} for the train step (the fields XLA_FLAGS sets).
STEP_OPTIONS = {
  "gpu": {"xla_gpu_enable_triton_gemm": False},
}


def step_options(platform: str, xla_flags: str | None = None) -> dict | None:
  """The options for a train step compiled for `platform` ("cpu", "gpu", "tpu"), without
  those that `xla_flags` (default: the XLA_FLAGS variable) sets; None when none are left.
  """
  xla_flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
  named = set(re.findall(r"--([A-Za-z0-9_]+)", xla_flags))
  options = {k: v for k, v in STEP_OPTIONS.get(platform, {}).items() if k not in named}
  return options or None
