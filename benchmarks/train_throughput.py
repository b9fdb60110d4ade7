"""Pretraining throughput: bert_jax's train step against Hugging Face's PyTorch
`BertForPreTraining`, in one run, on one device, with synthetic batches.

No TensorFlow and no prepared data: batches come from `bert_jax.data.synthetic` (numpy),
so a GPU image with JAX, flax, optax, orbax, torch and transformers runs it as is.

    pip install -e . torch transformers
    python benchmarks/train_throughput.py                       # CPU: BERT-mini, seq 128, batch 16
    python benchmarks/train_throughput.py --configs goals --profile /tmp/bert_prof   # GPU

`--configs goals` runs, in bf16 with MLM + NSP: BERT-base seq 128 batch 256, BERT-base
seq 512 batch 64 and BERT-large seq 128 batch 128. For each configuration, bert_jax runs
first (`loop.compile_train_step` on a one-device mesh, the AdamW + clipping optimizer of
`train.optimizer`, the state donated), `--warmup` untimed steps, then `--steps` timed ones
(time.perf_counter around the loop, block_until_ready on its outputs; 2 batches on the
device alternate, so data generation is not timed). Then HF: `BertForPreTraining` of the
same sizes, random init, `attn_implementation="sdpa"`, torch.optim.AdamW (fused on CUDA)
with gradient clipping at 1.0, loss = MLM cross-entropy (labels -100 except at the masked
positions; HF's head runs on every position, as its model does) + NSP; bf16 by
torch.autocast; eager, then torch.compile of the loss function (--hf-compile, on by default
on GPU). A failing HF side (e.g. out of memory) prints its error and the JAX numbers stand.
No HF on TPU. The synthetic rows are padded to --seq (random lengths); neither side skips
padding. Dropout 0.1 (BERT's) keeps bert_jax on its einsum attention (no fused kernel has
dropout); `--attention-dropout 0` lets it use cuDNN. `--scan-layers` and `--remat` set
config.model.scan_layers / remat_policy (scan: faster compiles, as the paper recipes);
`--fused-qkv` config.model.fused_qkv (one matmul for Q, K and V) and `--param-dtype`
config.model.param_dtype (bfloat16: the parameters and AdamW's moments in bf16). Each JSON
line also records these settings, the PRNG (`JAX_DEFAULT_PRNG_IMPL`) and `XLA_FLAGS`.

Model FLOPs per training sequence (forward + backward = 3x the forward's) are
`bert_jax.train.flops.flops_per_seq`, the formula of bert_jax/train/flops.py, which also
holds the peak table: the matmuls of the layers, attention scores and values, the MLM head
at the P gathered positions only (as bert_jax computes it) and the pooler + NSP head;
bert_jax's vocabulary padded to a multiple of 128. Embedding lookups, LayerNorm, GELU,
softmax, dropout and the optimizer are not counted.
XLA's `cost_analysis()["flops"]` of the lowered step (before XLA's optimizations: the
compiled GPU program's matmuls and attention are cuBLAS and cuDNN calls, which its cost
analysis does not count; on an H200 it gave 0.05 of the formula) counts them too (and
dropout's random bits), so the XLA/formula ratio printed is a little above 1: 1.01-1.05
from BERT-mini up on CPU, 1.16 for the tiny test model (AdamW's per-parameter work weighs
more there). With --scan-layers XLA counts the scanned layer once, not L times, so its
figure is far lower. `--hlo DIR` writes the compiled step's HLO, which names the kernels of
a GPU profile (XLA's fusions).

The step is `bert-jax pretrain`'s, XLA options included (`bert_jax/train/xla_options.py`:
on GPUs, cuBLAS for the matmuls); `--xla-option NAME=VALUE` adds one. `--variants A,B`
(or `all`) then times each of `VARIANTS` in the same process on the same state and
batches, an XLA option recompiling the same lowered step and a model change (fused QKV,
the activation recomputed, no hidden dropout) or Flax's dropout bits tracing it again; then the base again (its drift) and the variants
that gained, together. A/Bs in one process share the start, the
parameters' init and the data, and see the same device state.
HF's model does more work per sequence (its MLM head runs at all s positions), so the two
sides are compared in sequences per second, not in MFU.

MFU = achieved model FLOP/s over the device's dense bf16 peak from `flops.PEAK_FLOPS` (half
of it for float32 on GPUs: TF32 tensor cores), and over a measured peak (an N x N
jnp.matmul in the compute dtype, timed: `flops.measured_peak`); on CPU only the measured
one. Peak memory is the process's peak so far (memory_stats()["peak_bytes_in_use"]), plus
the compiled step's own (`memory_analysis()`: arguments + outputs + temporaries, the
donated state counted once). Each configuration prints one JSON line (null: not run); a
table closes the run. Lines are flushed as they come, so a run cut short by `timeout`
keeps the finished configurations.
"""

# ruff: noqa: E402
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and torch share a GPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import contextlib
import copy
import dataclasses
import functools
import gc
import gzip
import json
import sys
import time
from unittest import mock

import jax
import numpy as np

from bert_jax import cli, host_memory, sharding
from bert_jax import config as config_lib
from bert_jax.data import synthetic
from bert_jax.model import dropout, pretraining
from bert_jax.train import flops, loop, xla_options
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by path
import profile_summary

VOCAB = 30522  # BERT's WordPiece vocabulary (bert_jax pads its embedding to 30592 rows)
GOALS = (("base", 128, 256), ("base", 512, 64), ("large", 128, 128))


@dataclasses.dataclass(frozen=True)
class Spec:
  """One configuration to measure."""

  size: str
  seq: int
  batch: int
  dtype: str
  objective: str
  predictions: int

  @property
  def name(self):
    return f"{self.size}-s{self.seq}-b{self.batch}-{self.dtype}"


def host_batches(spec, n=2):
  """`n` synthetic masked batches (numpy); objective mlm: no sentence-pair labels."""
  gen = synthetic.synthetic_batches(
    batch_size=spec.batch,
    max_seq_length=spec.seq,
    vocab_size=VOCAB,
    max_predictions=spec.predictions,
    seed=0,
  )
  batches = [next(gen) for _ in range(n)]
  if spec.objective == "mlm":
    for b in batches:
      b["next_sentence_labels"] = np.full_like(b["next_sentence_labels"], -1)
  return batches


def _cost_flops(stage):
  """XLA's FLOPs of a lowered or compiled program (None where it reports none, or fails)."""
  try:
    cost = stage.cost_analysis()
  except Exception:  # noqa: BLE001 - a backend without it; the formula's FLOPs stand
    return None
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost.get("flops", 0.0)) if cost else None


def _write_hlo(compiled, path):
  """The compiled program's HLO text, gzipped, at `path`; a failure is one line (the
  timings stand).
  """
  try:
    text = compiled.as_text()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt") as f:
      f.write(text)
    print(f"  compiled HLO ({len(text) / 2**20:.1f} MiB of text): {path}")
  except Exception as e:  # noqa: BLE001
    print(f"  compiled HLO not written: {type(e).__name__}: {str(e)[:300]}")


def _step_bytes(compiled):
  try:
    m = compiled.memory_analysis()
    args_out = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return int(args_out + m.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


# Variants to A/B inside one process (`--variants`), each timed on the same state and
# batches as the base: (config.model changes, XLA options). XLA options (the fields XLA_FLAGS
# sets) recompile the same lowered step with them added over the step's own
# (`train.xla_options`, `Lowered.compile(compiler_options=...)`); model changes trace the
# step again (the same parameters, so the same state).
FLAX_DROPOUT = "flax_dropout_bits"  # a variant's change of the dropout bits, not the model
VARIANTS = {
  # cuBLASLt, whose epilogues can take bias adds (and their gradients) into the matmul.
  "cublaslt": ({}, {"xla_gpu_enable_cublaslt": True}),
  # Triton for any GEMM fusion, not only those XLA expects to win.
  "triton_gemm_any": ({}, {"xla_gpu_triton_gemm_any": True}),
  # XLA's default, Triton's GEMM fusions, which bert_jax's GPU step turns off
  # (`train.xla_options`: cuBLAS for every matmul measured 5-6 % faster).
  "triton_gemm": ({}, {"xla_gpu_enable_triton_gemm": True}),
  # LayerNorm (forward and backward) as cuDNN's norm kernels.
  "cudnn_layer_norm": ({}, {"xla_gpu_enable_cudnn_layer_norm": True}),
  # cuDNN GEMM fusions (a matmul with the elementwise work around it, as one cuDNN graph).
  "cudnn_gemm_fusion": ({}, {"xla_gpu_cudnn_gemm_fusion_level": 2}),
  # Q, K and V in one matmul.
  "fused_qkv": ({"fused_qkv": True}, {}),
  # The feed-forward bias add and GELU recomputed in the backward pass, not kept.
  "recompute_activation": ({"recompute_activation": True}, {}),
  # No hidden dropout (what its random bits and masks cost).
  "no_hidden_dropout": ({"hidden_dropout": 0.0}, {}),
  # Flax's dropout bits (`jax.random.bernoulli`: a float32 uniform per element, one threefry
  # block each), not bert_jax's (16 bits per element, four elements per block: `dropout`).
  "flax_dropout": ({FLAX_DROPOUT: True}, {}),
}


def parse_xla_options(items):
  """{name: value} of `--xla-option NAME=VALUE` items (true/false, integers, else text)."""
  options = {}
  for item in items or ():
    name, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--xla-option {item!r}: give NAME=VALUE, e.g. xla_gpu_enable_cublaslt=true")
    lowered = value.lower()
    if lowered in ("true", "false"):
      options[name] = lowered == "true"
    else:
      try:
        options[name] = int(value)
      except ValueError:
        options[name] = value
  return options


def timed_steps(compiled, state, dev, rng, steps, warmup):
  """(state, seconds of `steps` steps after `warmup` untimed ones, warm-up seconds, metrics)."""
  t, metrics = time.perf_counter(), None
  for i in range(warmup):
    state, metrics = compiled(state, dev[i % len(dev)], rng)
  jax.block_until_ready((state, metrics) if warmup else state)
  warmup_s = time.perf_counter() - t
  t = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, dev[i % len(dev)], rng)
  jax.block_until_ready((state, metrics))
  return state, time.perf_counter() - t, warmup_s, metrics


def time_variants(lower, base_options, names, state, dev, rng, args, batch, base_rate):
  """(state, {variant: result}): each of `names` (VARIANTS) lowered by `lower(changes, state)`,
  compiled with its XLA options over `base_options`, and timed; then the base again (the
  drift); then, if two or more gained 1 %, all of those together ("combined"). A variant
  that fails to build or compile is one line.
  """
  results = {}
  print(f"  variants, each against the base's {base_rate:.1f} seq/s:")

  def measure(name, changes, options):
    nonlocal state
    try:
      t = time.perf_counter()
      compiled = lower(changes, state).compile(compiler_options={**base_options, **options})
      compile_s = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - e.g. an option this XLA does not know
      error = f"{type(e).__name__}: {str(e)[:200]}"
      print(f"  variant {name}: not compiled: {error}")
      results[name] = {"changes": changes, "options": options, "error": error}
      return None
    state, seconds, _, _ = timed_steps(compiled, state, dev, rng, args.steps, args.warmup)
    rate = batch * args.steps / seconds
    print(
      f"  variant {name:20} {rate:10.1f} seq/s  ({rate / base_rate - 1:+.1%} on the base; "
      f"compile {compile_s:.1f} s) {changes or ''}{options or ''}"
    )
    results[name] = {
      "changes": changes,
      "options": options,
      "seq_per_s": rate,
      "compile_s": compile_s,
    }
    return rate

  for name in names:
    measure(name, *VARIANTS[name])
  again = measure("base_again", {}, {})
  best_base = max(base_rate, again or 0)
  gains = [n for n in names if results[n].get("seq_per_s", 0) > 1.01 * best_base]
  if len(gains) > 1:
    changes = {k: v for n in gains for k, v in VARIANTS[n][0].items()}
    measure("combined", changes, {k: v for n in gains for k, v in VARIANTS[n][1].items()})
  return state, results


def one_device_setup(config, model):
  """(initial state, mesh, rules, step_of) of `model` on the first device, with `config`'s
  mesh rules and optimizer; `step_of(objective)` is the jit train step of an objective over
  that state (its model's parameters: the same tree).
  """
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(config.mesh)
  tx, schedule = optimizer_lib.make_optimizer(config.train, steps=10_000, warmup_steps=100)
  create = functools.partial(step_lib.create_state, model, tx, jax.random.key(0))
  state_sh = sharding.shardings_of(create, mesh, rules)
  state = sharding.sharded_init(create, state_sh)

  def step_of(objective):
    return loop.compile_train_step(objective, tx, schedule, 1, state_sh, mesh)

  return state, mesh, rules, step_of


def one_device_step(config, objective):
  """(jit-compiled train step, initial state, mesh, rules) of `objective` (its `model`) on
  the first device, with `config`'s mesh rules and optimizer.
  """
  state, mesh, rules, step_of = one_device_setup(config, objective.model)
  return step_of(objective), state, mesh, rules


def run_jax(spec, args, batches):
  """Compiles and times bert_jax's train step; returns a dict of results."""
  c = config_lib.base_config()
  c.model.size, c.model.dtype = spec.size, spec.dtype
  c.model.hidden_dropout, c.model.attention_dropout = args.hidden_dropout, args.attention_dropout
  c.model.attention_impl = None if args.attention_impl == "auto" else args.attention_impl
  c.model.scan_layers, c.model.remat_policy = args.scan_layers, args.remat
  c.model.fused_qkv, c.model.param_dtype = args.fused_qkv, args.param_dtype
  c.model.recompute_activation = args.recompute_activation
  cfg = config_lib.model_config(c, VOCAB)

  def objective_of(model_config):
    return step_lib.Pretraining(pretraining.BertForPreTraining(model_config))

  start = time.perf_counter()
  objective = objective_of(cfg)
  state, mesh, rules, step_of = one_device_setup(c, objective.model)
  step = step_of(objective)
  rng = jax.random.key(1)
  with sharding.activate(mesh, rules):
    dev = [sharding.global_batch(b, mesh) for b in batches]
    jax.block_until_ready((state, dev))
    phases = {"init_s": time.perf_counter() - start}
    t = time.perf_counter()
    lowered = step.lower(state, dev[0], rng)
    options = parse_xla_options(args.xla_option)
    compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    compile_s = time.perf_counter() - t
    if args.hlo:  # what the profile's kernel names (fusion_N, loop_*_fusion_N) are
      _write_hlo(compiled, os.path.join(args.hlo, f"{spec.name}.hlo.txt.gz"))
    state, seconds, phases["warmup_s"], metrics = timed_steps(
      compiled, state, dev, rng, args.steps, args.warmup
    )
    loss = float(metrics["loss"])
    if args.profile:
      path = os.path.join(args.profile, spec.name)
      try:
        with jax.profiler.trace(path):
          for i in range(3):
            state, metrics = compiled(state, dev[i % len(dev)], rng)
          jax.block_until_ready((state, metrics))
        print(f"  profile of 3 steps: {path}")
        print(profile_summary.summary(path, steps=3), flush=True)
      except Exception as e:  # noqa: BLE001 - e.g. no CUPTI; the timings stand
        print(f"  profile failed: {type(e).__name__}: {str(e)[:300]}")
    variants = {}
    if args.variants:
      del compiled

      first_batch = dev[0]

      def lower(changes, state):
        if not changes:
          return lowered
        changes = dict(changes)
        flax_bits = changes.pop(FLAX_DROPOUT, False)
        other = copy.deepcopy(c)
        other.model.update(changes)
        other_step = step_of(objective_of(config_lib.model_config(other, VOCAB)))
        with _flax_dropout_bits(flax_bits):
          return other_step.lower(state, first_batch, rng)

      base_rate = spec.batch * args.steps / seconds
      state, variants = time_variants(
        lower, options, args.variants, state, dev, rng, args, spec.batch, base_rate
      )
      compiled = None
  # The program before XLA's optimizations: on GPU the compiled one's matmuls and attention
  # are library calls (cuBLAS, cuDNN) that its cost analysis does not count.
  xla = _cost_flops(lowered) or _cost_flops(compiled)
  out = {
    "seq_per_s": spec.batch * args.steps / seconds,
    "model_flops_per_seq": flops.flops_per_seq(cfg, spec.seq, spec.predictions),
    "xla_flops_per_seq": xla / spec.batch if xla else None,
    "step_bytes": _step_bytes(compiled),
    "compile_s": compile_s,
    "loss": loss,
    "xla_options": options,
    "variants": variants,
    **phases,
  }
  del state, metrics, compiled, step, dev
  return out


@contextlib.contextmanager
def _flax_dropout_bits(on: bool):
  """While tracing: bert_jax's dropout masks drawn as Flax's `nn.Dropout` draws them."""
  if not on:
    yield
    return

  def bernoulli_mask(key, shape, rate):
    return jax.random.bernoulli(key, 1.0 - rate, shape)

  with mock.patch.object(dropout, "keep_mask", bernoulli_mask):
    yield


def hf_batch(b, objective, device):
  """The torch tensors of one synthetic batch: MLM labels -100 except at masked positions."""
  import torch  # pylint: disable=g-import-not-at-top

  labels = np.full(b["input_ids"].shape, -100, np.int64)
  rows, cols = np.nonzero(b["masked_lm_weights"] > 0)
  labels[rows, b["masked_lm_positions"][rows, cols]] = b["masked_lm_ids"][rows, cols]
  out = {
    k: torch.as_tensor(np.asarray(b[k], np.int64), device=device)
    for k in ("input_ids", "token_type_ids", "attention_mask")
  }
  out["labels"] = torch.as_tensor(labels, device=device)
  if objective == "nsp":
    out["nsp"] = torch.as_tensor(np.asarray(b["next_sentence_labels"], np.int64), device=device)
  return out


def run_hf(spec, args, batches):
  """Seq/s of HF BertForPreTraining: {"eager": ..., "compile": ...} (None: not run)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cuda" and spec.dtype == "float32":
    torch.set_float32_matmul_precision("high")  # TF32, as XLA's default f32 dots on GPU
  layers, hidden = config_lib.SIZES[spec.size]
  hf_config = transformers.BertConfig(
    vocab_size=VOCAB,
    hidden_size=hidden,
    num_hidden_layers=layers,
    num_attention_heads=hidden // 64,
    intermediate_size=4 * hidden,
    hidden_dropout_prob=args.hidden_dropout,
    attention_probs_dropout_prob=args.attention_dropout,
    attn_implementation="sdpa",
  )
  torch.manual_seed(0)
  with device:  # initialised on the device: a CPU init of BERT-large takes seconds
    model = transformers.BertForPreTraining(hf_config).train()
  named = list(model.named_parameters())
  no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
  decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
  opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
    lr=1e-4,
    eps=1e-6,
    fused=device.type == "cuda",
  )
  data = [hf_batch(b, spec.objective, device) for b in batches]
  autocast = functools.partial(
    torch.autocast, device.type, dtype=torch.bfloat16, enabled=spec.dtype == "bfloat16"
  )

  def loss_fn(b):
    out = model(
      input_ids=b["input_ids"],
      token_type_ids=b["token_type_ids"],
      attention_mask=b["attention_mask"],
    )
    logits = out.prediction_logits
    loss = torch.nn.functional.cross_entropy(
      logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), ignore_index=-100
    )
    if "nsp" in b:
      loss = loss + torch.nn.functional.cross_entropy(out.seq_relationship_logits, b["nsp"])
    return loss

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  def measure(fn, label):
    def train_step(b):
      with autocast():
        loss = fn(b)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
      return loss

    t = time.perf_counter()
    for i in range(max(args.warmup, 1)):
      train_step(data[i % len(data)])
    sync()
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(args.steps):
      loss = train_step(data[i % len(data)])
    sync()
    rate = spec.batch * args.steps / (time.perf_counter() - t)
    print(f"  HF {label:7}  {rate:10.1f} seq/s  (warm-up {warm_s:.1f} s, loss {loss.item():.3f})")
    return rate

  results = {"eager": None, "compile": None}
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
  for label in ("eager", "compile") if args.hf_compile else ("eager",):
    try:
      results[label] = measure(torch.compile(loss_fn) if label == "compile" else loss_fn, label)
    except Exception as e:  # noqa: BLE001 - report it and keep the other numbers
      print(f"  HF {label} failed: {type(e).__name__}: {str(e)[:400]}")
  if device.type == "cuda":
    print(f"  HF peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
  return results


def hf_available(args, platform):
  """None if the HF side can run, else why not."""
  if args.no_hf:
    return "--no-hf"
  if platform == "tpu":
    return "TPU (no torch device)"
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top
    import transformers  # noqa: F401  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return f"{e} (pip install torch transformers)"
  return None


def _fmt(x, spec="{:.1f}"):
  return "n/a" if x is None else spec.format(x)


def measure_config(spec, args, peaks, platform):
  """bert_jax then HF for one configuration; prints and returns the JSON record."""
  dev, start = jax.devices()[0], time.perf_counter()
  print(f"\n== {spec.name} ({spec.objective}, {spec.predictions} predictions) on {dev.device_kind}")
  batches = host_batches(spec)
  j = run_jax(spec, args, batches)
  stats = jax.devices()[0].memory_stats() or {}
  peak_bytes = stats.get("peak_bytes_in_use")
  jax.clear_caches()
  gc.collect()
  if spec.dtype not in peaks:
    t = time.perf_counter()
    peaks[spec.dtype] = flops.measured_peak(spec.dtype, args.matmul_size)
    print(f"  peak matmul measured in {time.perf_counter() - t:.1f} s")
  table_peak, meas_peak = flops.device_peak(dev.device_kind, spec.dtype), peaks[spec.dtype]
  achieved = j["seq_per_s"] * j["model_flops_per_seq"]
  ratio = j["xla_flops_per_seq"] / j["model_flops_per_seq"] if j["xla_flops_per_seq"] else None
  scan_note = " (scanned layers: XLA counts the loop body once)" if args.scan_layers else ""
  print(
    f"  bert_jax {j['seq_per_s']:10.1f} seq/s  {j['seq_per_s'] * spec.seq:12.0f} tokens/s  "
    f"(init {j['init_s']:.1f} s, compile {j['compile_s']:.1f} s, warm-up {j['warmup_s']:.1f} s, "
    f"loss {j['loss']:.3f})"
  )
  print(
    f"  FLOPs/seq: formula {j['model_flops_per_seq']:.4g}, XLA {_fmt(j['xla_flops_per_seq'], '{:.4g}')}"
    f" (XLA/formula {_fmt(ratio, '{:.3f}')}{scan_note}); achieved {achieved / 1e12:.2f} TFLOP/s"
  )
  seconds_per_seq = 1 / j["seq_per_s"]
  mfu = flops.mfu(j["model_flops_per_seq"], seconds_per_seq, table_peak) if table_peak else None
  mfu_meas = flops.mfu(j["model_flops_per_seq"], seconds_per_seq, meas_peak)
  print(
    f"  MFU {_fmt(mfu and 100 * mfu, '{:.1f}%')} of the {_fmt(table_peak and table_peak / 1e12)} "
    f"TFLOP/s table peak; {100 * mfu_meas:.1f}% of the measured {meas_peak / 1e12:.2f} TFLOP/s "
    f"({args.matmul_size}^3 matmul)"
  )
  print(
    f"  peak memory {_fmt(peak_bytes and peak_bytes / 2**30, '{:.2f} GiB')} (process); "
    f"compiled step {_fmt(j['step_bytes'] and j['step_bytes'] / 2**30, '{:.2f} GiB')}"
  )
  hf = {"eager": None, "compile": None}
  why_not = hf_available(args, platform)
  if why_not:
    print(f"  HF skipped: {why_not}")
  else:
    try:
      hf = run_hf(spec, args, batches)
    except Exception as e:  # noqa: BLE001 - the JAX numbers stand
      print(f"  HF failed: {type(e).__name__}: {str(e)[:400]}")
    gc.collect()  # the HF model and optimizer are garbage now (and the error's frames)
    import torch  # pylint: disable=g-import-not-at-top

    if torch.cuda.is_available():
      torch.cuda.empty_cache()
  ratios = {k: j["seq_per_s"] / v if v else None for k, v in hf.items()}
  print(
    f"  bert_jax / HF: eager {_fmt(ratios['eager'], '{:.2f}x')}, compile {_fmt(ratios['compile'], '{:.2f}x')}"
  )
  record = {
    "device": dev.device_kind,
    "size": spec.size,
    "seq": spec.seq,
    "batch": spec.batch,
    "dtype": spec.dtype,
    "jax_seq_per_s": j["seq_per_s"],
    "jax_tokens_per_s": j["seq_per_s"] * spec.seq,
    "model_flops_per_seq": j["model_flops_per_seq"],
    "xla_flops_per_seq": j["xla_flops_per_seq"],
    "mfu": mfu if table_peak else mfu_meas,  # CPU: against the measured peak
    "mfu_measured_peak": mfu_meas,
    "peak_bytes": peak_bytes,
    "hf_eager_seq_per_s": hf["eager"],
    "hf_compile_seq_per_s": hf["compile"],
    "ratio_eager": ratios["eager"],
    "ratio_compile": ratios["compile"],
    "objective": spec.objective,
    "device_peak_flops": table_peak,
    "measured_peak_flops": meas_peak,
    "step_bytes": j["step_bytes"],
    "compile_s": j["compile_s"],
    "init_s": j["init_s"],
    "warmup_s": j["warmup_s"],
    # What else set the step, so that each line stands alone in an A/B.
    "dropout": [args.hidden_dropout, args.attention_dropout],
    "attention_impl": args.attention_impl,
    "fused_qkv": args.fused_qkv,
    "recompute_activation": args.recompute_activation,
    "param_dtype": args.param_dtype,
    "prng_impl": str(jax.config.jax_default_prng_impl),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "step_xla_options": xla_options.step_options(dev.platform),
    "xla_options": j["xla_options"],
    "variants": j["variants"],
  }
  print(json.dumps(record))
  print(f"  ({time.perf_counter() - start:.0f} s for this configuration)")
  return record


def parse_args(argv, platform):
  """Flags, with the platform's defaults filled in."""
  accel = platform != "cpu"
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--configs", choices=["one", "goals"], default="one")
  p.add_argument("--size", choices=list(config_lib.SIZES), default=None)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
  p.add_argument("--objective", choices=["nsp", "mlm"], default="nsp")
  p.add_argument("--max-predictions", type=int, default=None)
  p.add_argument("--attention-dropout", type=float, default=0.1)
  p.add_argument("--hidden-dropout", type=float, default=0.1)
  p.add_argument(
    "--attention-impl",
    choices=["auto", "xla", "cudnn", "splash"],
    default="auto",
    help="kernel when --attention-dropout is 0 (with dropout: the einsum path)",
  )
  p.add_argument("--scan-layers", action="store_true", help="nn.scan the layers (faster compile)")
  p.add_argument("--fused-qkv", action="store_true", help="Q, K, V projections in one matmul")
  p.add_argument(
    "--recompute-activation",
    action="store_true",
    help="the feed-forward bias add and GELU recomputed in the backward pass",
  )
  p.add_argument(
    "--param-dtype",
    choices=["float32", "bfloat16"],
    default="float32",
    help="storage of the parameters (and so of AdamW's moments)",
  )
  p.add_argument("--remat", choices=list(config_lib.REMAT_POLICIES), default="none")
  p.add_argument("--steps", type=int, default=None, help="timed steps")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
  p.add_argument("--no-hf", action="store_true")
  p.add_argument("--hf-compile", action=argparse.BooleanOptionalAction, default=None)
  p.add_argument("--matmul-size", type=int, default=None, help="N of the peak matmul")
  p.add_argument("--profile", metavar="DIR", help="jax.profiler trace of 3 bert_jax steps")
  p.add_argument("--hlo", metavar="DIR", help="write the compiled step's HLO (gzipped text)")
  p.add_argument(
    "--xla-option",
    action="append",
    metavar="NAME=VALUE",
    help="an XLA option for the step's compile (as XLA_FLAGS' --NAME=VALUE); repeatable",
  )
  p.add_argument(
    "--variants",
    type=lambda text: list(VARIANTS) if text == "all" else text.split(","),
    default=None,
    help=f"after the timing, time each of: {', '.join(VARIANTS)} (comma-separated, or all) "
    "in this process; then those that gained, together",
  )
  args = p.parse_args(argv)
  unknown = [n for n in args.variants or () if n not in VARIANTS]
  if unknown:
    p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)} or all")
  args.size = args.size or ("base" if accel else "mini")
  args.batch = args.batch or (256 if accel else 16)
  args.dtype = args.dtype or ("bfloat16" if accel else "float32")
  args.steps = args.steps or (20 if accel else 5)
  args.hf_compile = accel if args.hf_compile is None else args.hf_compile
  args.matmul_size = args.matmul_size or (8192 if accel else 2048)
  return args


def default_predictions(seq):
  """BERT's 20 at 128 and 80 at 512; else 15% of the length."""
  return {128: 20, 512: 80}.get(seq, max(1, round(0.15 * seq)))


def main(argv=None):
  """Runs the configurations; returns their JSON records."""
  # As `bert-jax` does on CPU (before JAX starts), when this process is the command: freed
  # scratch stays in the process, for both sides (a caller's process keeps its allocator).
  kept = argv is None and host_memory.keep_freed_memory()
  if argv is None:  # as `bert-jax` does: an installed libtpu would probe for a TPU and warn
    cli.cpu_alone_without_accelerators()
  platform = jax.default_backend()
  args = parse_args(argv, platform)
  if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(line_buffering=True)  # lines survive a `timeout` kill
  if args.configs == "goals":
    shapes, dtype, objective = GOALS, "bfloat16", "nsp"
  else:
    shapes, dtype, objective = [(args.size, args.seq, args.batch)], args.dtype, args.objective
  specs = [
    Spec(size, seq, batch, dtype, objective, args.max_predictions or default_predictions(seq))
    for size, seq, batch in shapes
  ]
  print(
    f"backend {platform}, device {jax.devices()[0].device_kind}, {args.steps} timed steps "
    f"after {args.warmup} warm-up; dropout {args.hidden_dropout}/{args.attention_dropout}; "
    f"host malloc {'kept (host_memory)' if kept else 'glibc default'}"
  )
  start, peaks, records = time.perf_counter(), {}, []
  for spec in specs:
    records.append(measure_config(spec, args, peaks, platform))
  print(
    f"\n{'config':26} {'jax seq/s':>10} {'MFU':>6} {'HF eager':>9} {'HF comp':>9} {'ratio':>11}"
  )
  for s, r in zip(specs, records):
    ratio = f"{_fmt(r['ratio_eager'], '{:.2f}')}/{_fmt(r['ratio_compile'], '{:.2f}')}"
    print(
      f"{s.name:26} {r['jax_seq_per_s']:10.1f} {100 * r['mfu']:5.1f}% "
      f"{_fmt(r['hf_eager_seq_per_s']):>9} {_fmt(r['hf_compile_seq_per_s']):>9} {ratio:>11}"
    )
  print(f"total wall time {time.perf_counter() - start:.0f} s")
  return records


if __name__ == "__main__":
  main()
