"""Model FLOPs of a pretraining step, the devices' peak FLOP/s, and MFU.

Model FLOPs count the matmuls of one training sequence, forward and backward (the backward
pass is twice the forward: 6 FLOPs per multiply-add of a weight with a token), the MFU
convention: remat recomputation, embedding lookups, norms, activations, softmax, dropout and
the optimizer are not counted. For a row of length s with P masked predictions, L layers of
hidden h and MLP width i, a vocabulary of V rows (padded, as the model holds it):

    6 * s * L * (4 h^2 + 2 h i)     Q, K, V and output projections; the MLP's two matmuls
  + 6 * s * L * 2 s h               attention scores Q.K^T and probabilities.V
  + 6 * P * (h E + E V)             MLM head at the P gathered positions only (the transform
                                    to the word embeddings' width E, the tied decoder)
  + 6 * (h^2 + 2 h)                 pooler and sentence-pair head on [CLS]

and per family: BERT as written (E = h); RoBERTa, DistilBERT and ELECTRA
have no pooler nor sentence-pair head; ELECTRA and ALBERT embed at width E and project
E -> h (6 s E h; ELECTRA only when E != h), ALBERT applies its shared layers
`num_layers * inner_group_num` times; ModernBERT fuses Q, K, V (the same 4 h^2), its GeGLU
MLP maps h -> 2i then i -> h (3 h i), its head is a dense h -> h then the decoder, and it
has no pooler. Local (sliding-window) attention is counted in full: the model computes
every score and masks those outside the window. ELECTRA's replaced-token detection adds its
generator's FLOPs (its own width, the MLM head at the P positions) to the discriminator's,
whose head is a dense h -> h and h -> 1 at every token (6 * s * (h^2 + h)) instead of the
MLM head.

XLA's `cost_analysis()["flops"]` of the lowered step counts everything, so it is a little
above this figure (tests/test_flops.py holds every family to a band). Not the compiled
step's on a GPU: its matmuls and attention are cuBLAS and cuDNN calls there, which the
cost analysis does not count (0.05 of this figure for BERT-base on an H200).

Peaks: `PEAK_FLOPS` holds the dense bf16 peak of each accelerator; float32 runs at half of
it on GPUs (TF32 tensor cores) and at the full figure on TPUs (XLA's default precision
multiplies float32 in one bf16 pass). A CPU has no published peak: `measured_peak` times a
square jnp.matmul in the compute dtype instead. MFU = model FLOPs per second / the peak of
every device the step runs on.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.model import electra

# Dense bf16 peak FLOP/s by a lower-case substring of device_kind, the first match wins.
PEAK_FLOPS = (
  ("h100 pcie", 756e12),
  ("h200", 989e12),
  ("h100", 989e12),
  ("b200", 2250e12),
  ("a100", 312e12),
  ("l4", 121e12),
  ("v6 lite", 918e12),
  ("v5 lite", 197e12),
  ("v5", 459e12),  # v5p's device_kind is "TPU v5"
  ("v4", 275e12),
)
# The matmul of `measured_peak` on a CPU: big enough to keep its cores busy, timed for a
# fraction of a second once per run.
CPU_MATMUL_SIZE = 1024


# The families this module has a formula for; of them, those with a tanh pooler and a
# 2-class sentence-pair head on [CLS].
FAMILIES = ("bert", "roberta", "distilbert", "electra", "albert", "modernbert")
POOLED = ("bert", "albert")


def _macs(cfg):
  """Multiply-adds of one forward pass as (per token and layer, layer applications,
  per token outside the layers, per masked prediction, per row).

  Raises:
    ValueError: a family without a formula here.
  """
  arch, h, i, v = cfg.arch, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  if arch not in FAMILIES:
    raise ValueError(f"no FLOPs formula for the {arch!r} family; add it to {__name__}")
  width = getattr(cfg, "embedding_size", None) or h  # the word embeddings' (ELECTRA, ALBERT)
  layer = 4 * h * h + (3 if arch == "modernbert" else 2) * h * i  # GeGLU: h -> 2i, i -> h
  layers = cfg.num_layers * (cfg.inner_group_num if arch == "albert" else 1)
  projected = arch == "albert" or (arch == "electra" and width != h)
  projection = width * h if projected else 0
  head = h * width + width * v  # MLM transform (ModernBERT's dense h -> h) and decoder
  pooled = h * h + 2 * h if arch in POOLED else 0
  return layer, layers, projection, head, pooled


def flops_per_seq(model_cfg, length, predictions):
  """Model FLOPs of one training sequence (forward + backward; the module docstring).

  Args:
    model_cfg: the family's model config (`config.model_config`).
    length: tokens per row (`config.data.max_seq_length`).
    predictions: masked positions per row (`config.data.max_predictions_per_seq`).
  """
  if getattr(model_cfg, "generator_hidden_size", None):  # ELECTRA's replaced-token detection
    h = model_cfg.hidden_size
    generator = _macs_per_row(electra.generator_config(model_cfg), length, predictions)
    discriminator = _macs_per_row(model_cfg, length, 0) + length * (h * h + h)
    return 6 * (generator + discriminator)
  return 6 * _macs_per_row(model_cfg, length, predictions)


def _macs_per_row(model_cfg, length, predictions):
  """Multiply-adds of one row's forward pass with the MLM head at `predictions` positions."""
  layer, layers, projection, head, pooled = _macs(model_cfg)
  attention = 2 * length * model_cfg.hidden_size  # per token: scores and values
  return length * (layers * (layer + attention) + projection) + predictions * head + pooled


def flops_per_step(model_cfg, batch, length, predictions):
  """Model FLOPs of one optimizer step on a global batch of `batch` rows."""
  return batch * flops_per_seq(model_cfg, length, predictions)


def device_peak(kind, dtype):
  """The table's dense peak FLOP/s of one device of `kind` in `dtype`, or None."""
  for key, peak in PEAK_FLOPS:
    if key in kind.lower():
      half = dtype == "float32" and not kind.lower().startswith("tpu")
      return peak / 2 if half else peak
  return None


def measured_peak(dtype, n, seconds=0.3, repeats=3, device=None):
  """FLOP/s of an n x n x n jnp.matmul in `dtype` on `device` (the first one if None):
  the best of `repeats` stretches of about `seconds` each.
  """
  # Random operands made by numpy: jax.random would first compile a program (~0.4 s on CPU).
  rng = np.random.default_rng(0)
  device = device or jax.devices()[0]
  a, b = (jax.device_put(rng.random((n, n), np.float32).astype(dtype), device) for _ in "ab")
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()  # compiles
  t = time.perf_counter()
  matmul(a, b).block_until_ready()
  reps = int(min(400, max(1, seconds / max(time.perf_counter() - t, 1e-6))))
  best = math.inf
  for _ in range(repeats):
    t = time.perf_counter()
    for start in range(0, reps, 8):  # a few results at a time bounds the memory in flight
      jax.block_until_ready([matmul(a, b) for _ in range(min(8, reps - start))])
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 * reps / best


def peak_flops(devices, dtype):
  """The peak FLOP/s of all of `devices` together in `dtype`, or None where unknown.

  An accelerator in `PEAK_FLOPS`: its figure per device. CPU devices: a measured matmul
  (`CPU_MATMUL_SIZE`, about 0.15 s) per process, since a host's devices share its cores.
  Another accelerator: None (no MFU).
  """
  devices = list(devices)
  table = device_peak(devices[0].device_kind, dtype)
  if table:
    return table * len(devices)
  if devices[0].platform == "cpu":
    hosts = len({d.process_index for d in devices})
    peak = measured_peak(dtype, CPU_MATMUL_SIZE, seconds=0.02, repeats=3, device=devices[0])
    return peak * hosts
  return None


def mfu(flops_per_step, seconds_per_step, peak):
  """Model FLOPs utilisation: the FLOP/s achieved over `peak` (of all the devices)."""
  return flops_per_step / seconds_per_step / peak
