"""`bert-jax compile`: will a recipe's train step fit on a TPU slice? Compiled here, no TPU.

    bert-jax compile --config configs/bert_large.py:phase2 --topology v5e:2x4 [--config.KEY=...]

libtpu (`pip install -e ".[aot]"`) compiles for a TPU topology on any host: this lowers the
real pretraining step (`loop.compile_train_step` of `step.train_step`, the recipe's mesh,
logical rules, batch, sequence length, predictions, dtype, remat, scan and accumulation,
the state sharded by `sharding.shardings_of`) with abstract inputs only, compiles it for
the slice, and prints per chip what XLA allocates, the FLOPs per step and the collectives.
The vocabulary is `config.tokenizer.vocab_size`, or the size of the tokenizer
`config.tokenizer.path` gives (no data is read; the model pads it to
`config.model.vocab_multiple`).

Topologies: `v4:XxYxZ`, `v5p:XxYxZ`, `v5e:XxY` (or `v5litepod:XxY`), `v6e:XxY`, in chips.
v4 and v5p are compiled as megacore chips (one device per chip, as a TPU VM shows them),
hosts of 2x2x1 chips; v5e and v6e slices of up to 8 chips are one host, larger ones hosts
of 2x2 chips. HBM per chip: v4 32 GiB, v5e 16 GiB, v5p 96 GiB, v6e 32 GiB, of which a
program may use 30.75, 15.75, 95.73 and 31.24 GiB (libtpu's limits, read from its
out-of-memory errors; compile-only devices report no memory).

Memory per chip is XLA's `memory_analysis()` of the compiled program; the peak is the
larger of XLA's own peak estimate and the sum of its allocations (arguments, temporaries,
outputs not aliased to the donated state, generated code). A program whose temporaries
alone exceed the chip, the TPU compiler refuses; the report then gives its figure.

Model FLOPs per step are `train.flops.flops_per_step` (the formula, per family, in
`bert_jax/train/flops.py`; the MFU convention: remat recomputation not counted) for the
global batch of the recipe's rows, length and predictions.

XLA's figure is `cost_analysis()["flops"]`, which is per chip (the partitioned program),
times the chips; it counts a loop body once, so with `scan_layers` or windowed (collective)
matmuls it is far below the real work.

Collectives are the all-gather, reduce-scatter, all-reduce, all-to-all and
collective-permute instructions of `compiled.as_text()` (async pairs once), with the bytes
of their results on one chip. Per step: an instruction in a loop body counts once per
iteration, the trip count read from the loop's condition (`counter < N`).

Exit status: 0 fits, 1 does not fit (the report says what to change), 2 bad input.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import sys
import time

import jax

from bert_jax import config as config_lib
from bert_jax import errors, progress, sharding
from bert_jax.data import synthetic
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.model import families
from bert_jax.train import flops, loop, pretrain, rtd
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib

USAGE = """usage: bert-jax compile [--config configs/RECIPE.py[:ARG]] --topology TOPOLOGY [--config.KEY=VALUE ...]

Compiles the recipe's pretraining step for a TPU slice on this machine (no TPU needed;
libtpu: pip install -e ".[aot]") and reports memory per chip, FLOPs and collectives.
TOPOLOGY: v4:2x2x2, v5p:2x2x4, v5e:4x4 (or v5litepod:4x4), v6e:2x4 ... (chips), or
gcloud's accelerator type (v5litepod-16 is v5e:4x4, v4-32 is v4:2x2x4).
Exit status: 0 fits, 1 does not fit, 2 bad input."""

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class _Chip:
  name: str  # libtpu's topology prefix
  dims: int  # 3 for the 3-D tori
  hbm: int  # bytes per chip
  usable: int  # of which the TPU compiler lets a program use
  host: tuple  # chips per host (x, y, z) of a multi-host slice
  single_host: int = 0  # slices of up to this many chips are one host
  megacore: bool = False


# Usable HBM: the "available HBM" of libtpu 0.0.52's out-of-memory error, in GiB.
CHIPS = {
  "v4": _Chip("v4", 3, 32 * GiB, int(30.75 * GiB), (2, 2, 1), megacore=True),
  # v5p: "95 GB" in Google's docs; the compiler allows 95.73 GiB, so 96 GiB physical.
  "v5p": _Chip("v5p", 3, 96 * GiB, int(95.73 * GiB), (2, 2, 1), megacore=True),
  "v5e": _Chip("v5e", 2, 16 * GiB, int(15.75 * GiB), (2, 2, 1), single_host=8),
  "v6e": _Chip("v6e", 2, 32 * GiB, int(31.24 * GiB), (2, 2, 1), single_host=8),
}
CHIPS["v5litepod"] = CHIPS["v5e"]
_FORMS = (
  "v4:XxYxZ, v5p:XxYxZ, v5e:XxY (or v5litepod:XxY), v6e:XxY, e.g. v5e:4x4, or gcloud's "
  "accelerator types (v5litepod-16)"
)
_COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4}
_BYTES.update({"s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16})


# The most chips of one slice of each kind (v5e and v6e: 16x16; v4: 4096; v5p: 8960).
_MOST_CHIPS = {"v4": 4096, "v5p": 8960, "v5e": 256, "v6e": 256}
_ACCELERATOR_TYPE = re.compile(r"^(v4|v5litepod|v5p|v6e)-(\d+)$")  # gcloud's names


def topology_of_accelerator_type(name: str) -> str | None:
  """The topology (`v5e:2x2`) of a gcloud accelerator type (`v5litepod-4`), or None. v4 and
  v5p count TensorCores (two a chip), v5e and v6e chips.
  """
  match = _ACCELERATOR_TYPE.match(name.lower())
  if not match:
    return None
  kind, count = match[1], int(match[2])
  if kind in ("v4", "v5p") and count % 2:
    return None
  chips = count // 2 if kind in ("v4", "v5p") else count
  if chips < 1 or chips & (chips - 1):
    return None
  k = chips.bit_length() - 1
  if kind in ("v4", "v5p"):  # doubled in the order x, y, z, then z, y, x, ...
    dims = [1, 1, 1]
    for i in range(k):
      dims[(0, 1, 2)[i] if i < 3 else (2, 1, 0)[(i - 3) % 3]] *= 2
  else:
    dims = [2 ** (k // 2), 2 ** (k - k // 2)]
  return f"{'v5e' if kind == 'v5litepod' else kind}:{'x'.join(map(str, dims))}"


def parse_topology(name):
  """(chip, chips per axis) of a topology name like `v5e:4x4` (or gcloud's `v5litepod-16`);
  UserError if it is no TPU slice.
  """
  if (as_topology := topology_of_accelerator_type(name)) is not None:
    name = as_topology
  kind, _, shape = name.partition(":")
  chip = CHIPS.get(kind.lower())
  dims = shape.lower().split("x")
  if not chip or len(dims) != chip.dims or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise UserError(f"--topology {name!r} is not a TPU slice; use {_FORMS}")
  dims = tuple(int(d) for d in dims)
  chips = math.prod(dims)
  most = _MOST_CHIPS[chip.name]
  if chips > most:
    raise UserError(
      f"--topology {name!r} has {chips} chips; a {chip.name} slice has at most {most}"
    )
  if any(d & (d - 1) for d in dims):
    raise UserError(
      f"--topology {name!r}: each side of a slice is a power of two, e.g. {chip.name}:"
      f"{'x'.join(['2'] * chip.dims)} or {chip.name}:{'x'.join(['4'] * chip.dims)}"
    )
  return chip, dims


def topology_devices(name):
  """The compile-only devices of a TPU slice (libtpu; nothing runs on them)."""
  chip, dims = parse_topology(name)
  chips = int(functools.reduce(lambda a, b: a * b, dims))
  bounds = (tuple(dims) + (1,))[:3] if chips <= chip.single_host else chip.host
  bounds = tuple(min(b, d) for b, d in zip(bounds, (tuple(dims) + (1,))[:3]))
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise UserError('compiling for a TPU needs libtpu: pip install -e ".[aot]"') from None
  from jax.experimental import topologies

  # A compile-only client touches no TPU: another process may hold libtpu's lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  kwargs = {"chip_config_name": "megacore"} if chip.megacore else {}
  try:
    with _quiet_stderr():  # libtpu complains that this host has no TPU metadata
      topology = topologies.get_topology_desc(
        platform="tpu",
        topology_name=f"{chip.name}:{'x'.join(map(str, dims))}",
        chips_per_host_bounds=bounds,
        num_slices=1,
        **kwargs,
      )
  except jax.errors.JaxRuntimeError as e:
    raise UserError(f"--topology {name!r}: libtpu says {errors.first_line(e)}") from None
  return chip, topology.devices


@contextlib.contextmanager
def _quiet_stderr():
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, "w") as null:
    os.dup2(null.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


@contextlib.contextmanager
def _no_persistent_cache():
  """JAX's persistent compilation cache off: a program compiled for a topology is stored,
  but this host cannot load it (no TPU client), and the next `compile` warned of that.
  """
  from jax.experimental.compilation_cache import compilation_cache

  enabled = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()  # JAX decides once whether the cache is used: again
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


def _shape_bytes(shape_text):
  """Bytes of the arrays in an HLO result shape (`bf16[8,128]{...}` or a tuple of them)."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]", shape_text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _BYTES.get(dtype, 1 if dtype.startswith("f8") else 4)
  return total


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.-]+) .*\{$")
_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT )?%?[\w.-]+ = (.*?) (" + "|".join(_COLLECTIVES) + r")(-start|-done)?\("
)


def collectives(hlo_text):
  """{op: {"count", "bytes"}} per step from compiled HLO text; see the module doc."""
  bodies, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(1)
      bodies[current] = []
      entry = current if line.startswith("ENTRY") else entry
    elif current and line.strip() != "}":
      bodies[current].append(line)

  def trip_count(cond):
    # jax's scans and XLA's windowed matmuls count from 0: `ROOT compare(i, N), direction=LT`
    consts = dict(re.findall(r"%([\w.-]+) = \S+ constant\((\d+)\)", "\n".join(bodies[cond])))
    for line in bodies[cond]:
      m = re.search(r"ROOT .*compare\(%[\w.-]+, %([\w.-]+)\), direction=LT", line)
      if m and m.group(1) in consts:
        return int(consts[m.group(1)])
    return 1

  times = {}

  def visit(name, n):
    times[name] = times.get(name, 0) + n
    for line in bodies.get(name, ()):
      body = re.search(r"condition=%([\w.-]+), body=%([\w.-]+)", line)
      if body:
        visit(body.group(2), n * trip_count(body.group(1)))
        continue
      for callee in re.findall(r"(?:calls|to_apply)=%([\w.-]+)", line):
        visit(callee, n)
      for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
        for callee in re.findall(r"%([\w.-]+)", group):
          visit(callee, n)

  if entry:
    visit(entry, 1)
  found = {op: {"count": 0, "bytes": 0} for op in _COLLECTIVES}
  for name, n in times.items():
    for line in bodies[name]:
      m = _INSTRUCTION.match(line)
      if m and m.group(3) != "-start":  # an async pair: its -done holds the result
        found[m.group(2)]["count"] += n
        found[m.group(2)]["bytes"] += n * _shape_bytes(m.group(1))
  return found


def vocab_size(config) -> int:
  """The vocabulary the recipe's model gets: a given tokenizer's size (as `prepare` takes
  it), else config.tokenizer.vocab_size (the size a trained one gets).
  """
  if config.tokenizer.path:
    return tokenizer_lib.load(
      config.tokenizer.path, lowercase=config.tokenizer.lowercase
    ).vocab_size
  return config.tokenizer.vocab_size


def _abstract_inputs(config, mesh):
  """ShapeDtypeStructs of a global batch (keys and dtypes of the data pipeline) and the key."""
  d = config.data
  one = next(
    synthetic.synthetic_batches(
      batch_size=1,
      max_seq_length=d.max_seq_length,
      vocab_size=vocab_size(config),
      max_predictions=d.max_predictions_per_seq,
    )
  )
  batch_sh = sharding.batch_sharding(mesh)
  batch = {
    k: jax.ShapeDtypeStruct((config.train.batch_size,) + v.shape[1:], v.dtype, sharding=batch_sh)
    for k, v in one.items()
  }
  key = jax.eval_shape(lambda: jax.random.key(0))
  return batch, jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))


def compile_step(config, topology):
  """Compiles the recipe's train step for `topology`; returns the report as a dict."""
  if "tokenizer" not in config:
    raise UserError("compile takes a pretraining recipe (configs/demo.py, bert_base.py, ...)")
  if config.model.size == "checkpoint":
    raise UserError(
      "config.model.size='checkpoint' takes the architecture of a checkpoint; "
      "name a size to compile, e.g. --config.model.size=base"
    )
  config = pretrain.lanes_for_the_batch(config, say=lambda _: None)  # as pretrain reads
  pretrain.validate(config)
  chip, devices = topology_devices(topology)
  shape = sharding.mesh_shape(config.mesh, len(devices))
  if math.prod(shape) != len(devices):
    raise UserError(
      f"config.mesh {dict(zip(sharding.MESH_AXES, shape))} uses {math.prod(shape)} of "
      f"the {len(devices)} chips of {topology}; a slice runs on all its chips (set one axis "
      f"to -1)"
    )
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh)
  t, d = config.train, config.data
  sharding.check_batch_divides(t.batch_size, t.accum_steps, mesh)
  model_cfg = config_lib.model_config(config, vocab_size(config))
  model = families.family(model_cfg.arch).pretraining(model_cfg)
  tx, schedule = optimizer_lib.make_optimizer(t, warmup_steps=min(t.warmup_steps, t.steps))
  # As the loop builds it; the key is this host's (CPU) array, and the state is only traced.
  create = functools.partial(
    step_lib.create_state, model, tx, jax.random.fold_in(jax.random.key(config.seed), 0)
  )
  state_sh = sharding.shardings_of(create, mesh, rules)
  state = sharding.abstract_like(create, state_sh)
  train_step = loop.compile_train_step(
    rtd.objective_for(model, config.tokenizer.vocab_size),
    tx,
    schedule,
    t.accum_steps,
    state_sh,
    mesh,
  )
  batch, rng = _abstract_inputs(config, mesh)
  start = time.time()
  report = {
    "topology": topology,
    "chips": len(devices),
    "device_kind": devices[0].device_kind,
    "mesh": dict(mesh.shape),
    "model": {
      "size": config.model.size,
      "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))),
      "dtype": config.model.dtype,
      "remat_policy": config.model.remat_policy,
      "scan_layers": config.model.scan_layers,
    },
    "batch_size": t.batch_size,
    "max_seq_length": d.max_seq_length,
    "max_predictions_per_seq": d.max_predictions_per_seq,
    "accum_steps": t.accum_steps,
    "hbm_per_chip_bytes": chip.hbm,
    "hbm_usable_per_chip_bytes": chip.usable,
    "model_flops_per_step": flops.flops_per_step(
      model_cfg, t.batch_size, d.max_seq_length, d.max_predictions_per_seq
    ),
  }
  try:
    with sharding.activate(mesh, rules), _no_persistent_cache():
      compiled = train_step.lower(state, batch, rng).compile()
  except jax.errors.JaxRuntimeError as e:
    # The TPU compiler refuses a program whose temporaries exceed the chip's HBM.
    needed = re.search(r"temporaries \(([\d.]+)G\) exceeds available HBM", str(e))
    if not needed:
      raise
    report.update(
      compile_seconds=round(time.time() - start, 1),
      peak_bytes_per_chip=int(float(needed.group(1)) * GiB),  # temporaries alone
      fits=False,
      compiler_error=errors.first_line(e, 1000),
    )
    return report
  m = compiled.memory_analysis()
  allocated = (
    m.argument_size_in_bytes
    + m.temp_size_in_bytes
    + m.output_size_in_bytes
    - m.alias_size_in_bytes
    + m.generated_code_size_in_bytes
  )
  peak = max(allocated, getattr(m, "peak_memory_in_bytes", 0))
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  report.update(
    compile_seconds=round(time.time() - start, 1),
    argument_bytes_per_chip=m.argument_size_in_bytes,
    output_bytes_per_chip=m.output_size_in_bytes,
    alias_bytes_per_chip=m.alias_size_in_bytes,
    temp_bytes_per_chip=m.temp_size_in_bytes,
    generated_code_bytes_per_chip=m.generated_code_size_in_bytes,
    peak_bytes_per_chip=int(peak),
    fits=peak <= chip.usable,
    xla_flops_per_step=float(cost.get("flops", 0.0)) * len(devices),
    collectives=_collectives_of(compiled),
  )
  return report


def _collectives_of(compiled):
  """`collectives` of the compiled program, or None when libtpu cannot print it (it fails
  on some one-chip programs with async instructions; one chip has no collectives anyway).
  """
  try:
    return collectives(compiled.as_text())
  except jax.errors.JaxRuntimeError:
    return None


def _gib(n):
  return f"{n / GiB:.2f} GiB"


def advice(config, report):
  """What to change when the step does not fit, as `--config` overrides."""
  tips = []
  if config.model.remat_policy != "full":
    tips.append("recompute activations (--config.model.remat_policy=full)")
  if config.mesh.fsdp != -1 and config.mesh.tensor == 1:
    tips.append("shard the state over every chip (--config.mesh.fsdp=-1 --config.mesh.data=1)")
  micro = config.train.batch_size // config.train.accum_steps
  shards = report["mesh"]["data"] * report["mesh"]["fsdp"]
  if micro % 2 == 0 and (micro // 2) % shards == 0:
    tips.append(
      f"smaller micro-batches (--config.train.accum_steps={2 * config.train.accum_steps})"
    )
  tips.append("a larger slice")
  return "; or ".join(tips)


def print_report(config, r):
  """The human-readable report, then one JSON line."""
  model, usable, peak = r["model"], r["hbm_usable_per_chip_bytes"], r["peak_bytes_per_chip"]
  print(
    f"{model['size']} ({progress.parameters(model['params'])}) on {r['topology']}: "
    f"{r['chips']} chips ({r['device_kind']}, {_gib(r['hbm_per_chip_bytes'])} HBM each, "
    f"{_gib(usable)} usable), mesh {r['mesh']}"
  )
  print(
    f"step: batch {r['batch_size']} x {r['max_seq_length']} tokens, "
    f"{r['max_predictions_per_seq']} predictions, accum_steps {r['accum_steps']}, "
    f"{model['dtype']}, remat {model['remat_policy']}, scan_layers {model['scan_layers']}; "
    f"compile {r['compile_seconds']:.0f} s"
  )
  tokens = r["batch_size"] * r["max_seq_length"]
  flops_line = f"FLOPs per step: model {r['model_flops_per_step']:.3e} ({tokens:,} tokens)"
  if "compiler_error" in r:
    print(f"{flops_line}\nthe TPU compiler: {r['compiler_error']}")
  else:
    print("memory per chip (XLA memory_analysis):")
    print(f"  arguments       {_gib(r['argument_bytes_per_chip']):>11}  (state shard + batch)")
    print(
      f"  outputs         {_gib(r['output_bytes_per_chip']):>11}  "
      f"({_gib(r['alias_bytes_per_chip'])} of them reuse the donated state)"
    )
    print(f"  temporaries     {_gib(r['temp_bytes_per_chip']):>11}")
    print(f"  generated code  {_gib(r['generated_code_bytes_per_chip']):>11}")
    print(f"  peak            {_gib(peak):>11}  of {_gib(usable)} usable")
    print(
      f"{flops_line}; XLA {r['xla_flops_per_step']:.3e} (cost_analysis per chip x {r['chips']} "
      f"chips; a loop body counted once)"
    )
    if r["collectives"] is None:
      print("collectives per step: unknown (libtpu could not print the compiled program)")
    else:
      print("collectives per step (loop bodies times their trip count; result bytes per chip):")
    for op, c in (r["collectives"] or {}).items():
      print(f"  {op:<19} {c['count']:>6}  {_gib(c['bytes']):>11}")
  if r["fits"]:
    print(
      f"fits: peak {_gib(peak)} of {_gib(usable)} usable per chip, "
      f"{_gib(usable - peak)} ({(usable - peak) / usable:.0%}) headroom"
    )
  else:
    print(
      f"does not fit: {_gib(peak)} needed of the {_gib(usable)} usable per chip; "
      f"try {advice(config, r)}"
    )
  print(json.dumps(r))


def main(config, topology):
  """`bert-jax compile`: prints the report; returns whether the step fits."""
  report = compile_step(config, topology)
  print_report(config, report)
  return report["fits"]
