"""The device mesh, logical-axis rules, sharded initialisation and global batches.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism with
parameters and optimizer state sharded across it) and `tensor` (Megatron-style model
parallelism over heads, the MLP and the vocabulary). Logical names from `model.axes`
map onto them through `config.mesh.rules`.
"""

import contextlib
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from bert_jax import multihost
from bert_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the leading batch dimension shards over both


def mesh_shape(mesh_config, num_devices):
  """Resolves (data, fsdp, tensor) sizes; one of them may be -1 (fills the rest).

  Fixed sizes whose product is below `num_devices` are kept: the mesh then uses that many
  devices (see `make_mesh`), e.g. `config.mesh.data=1` for one device of several.
  """
  sizes = [int(mesh_config[name]) for name in MESH_AXES]
  for axis, size in zip(MESH_AXES, sizes):
    if size < 1 and size != -1:
      raise UserError(
        f"config.mesh.{axis}={size}: a mesh axis takes a size of 1 or more, or -1 for the "
        f"devices the other axes leave"
      )
  if sizes.count(-1) > 1:
    raise UserError("at most one of config.mesh.{data,fsdp,tensor} may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise UserError(
        f"config.mesh {dict(zip(MESH_AXES, sizes))} does not divide "
        f"{num_devices} devices; make the fixed sizes divide it"
      )
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) > num_devices:
    raise UserError(
      f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
      f"devices but {num_devices} are visible; set one axis to -1"
    )
  return tuple(sizes)


def make_mesh(mesh_config, devices=None):
  """The (data, fsdp, tensor) mesh of config.mesh over `devices` (default: all visible).

  A mesh of fixed sizes smaller than the devices takes the first devices it needs (one
  process only: on several, every process must hold a part of the mesh).
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  used = int(np.prod(shape))
  if used < len(devices):
    if jax.process_count() > 1:
      raise UserError(
        f"config.mesh {dict(zip(MESH_AXES, shape))} uses {used} of the {len(devices)} "
        f"devices of {jax.process_count()} processes; a multi-process mesh takes them all "
        f"(set one axis to -1)"
      )
    devices = devices[:used]
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def rules_from_config(mesh_config):
  """The logical-axis rules of config.mesh.rules as tuples."""
  return tuple(
    (name, tuple(axis) if isinstance(axis, list) else axis) for name, axis in mesh_config.rules
  )


@contextlib.contextmanager
def activate(mesh, rules):
  """Makes `mesh` and `rules` current, so logical constraints bind while tracing."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def batch_sharding(mesh):
  """The leading batch dimension sharded over the data and fsdp axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh):
  """A value replicated on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def shardings_of(create_fn, mesh, rules):
  """NamedShardings for the pytree that `create_fn` returns (leaves `nn.Partitioned`).

  A dimension its mesh axes do not divide is replicated instead (e.g. the one attention
  head of a small ELECTRA generator under `tensor=2`); every other one is sharded as the
  rules say.
  """
  abstract = jax.eval_shape(create_fn)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
  return jax.tree_util.tree_map(
    lambda value, sharding: _divisible(sharding, value.shape), nn.meta.unbox(abstract), shardings
  )


def _divisible(sharding, shape):
  """`sharding` with each dimension of `shape` that its mesh axes do not divide replicated."""
  spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
  fixed = []
  for size, axes in zip(shape, spec, strict=True):
    names = axes if isinstance(axes, tuple) else (() if axes is None else (axes,))
    parts = math.prod(sharding.mesh.shape[name] for name in names)
    fixed.append(axes if size % parts == 0 else None)
  return NamedSharding(sharding.mesh, PartitionSpec(*fixed))


def sharded_init(create_fn, shardings, select=lambda tree: tree):
  """Runs `create_fn` under jit so every array is born in its sharded layout (no
  unsharded copy ever exists, which is what lets BERT-large start on small devices).

  `select` (a function of the unboxed tree, applied to `shardings` too) keeps a part:
  only that part is computed, since XLA drops the initialisers of the rest (a fine-tune's
  fresh head compiles in well under a second where the whole model takes seconds).
  """
  return jax.jit(lambda: select(nn.meta.unbox(create_fn())), out_shardings=select(shardings))()


def abstract_like(create_fn, shardings):
  """ShapeDtypeStructs with shardings: the restore target for a checkpoint."""
  abstract = nn.meta.unbox(jax.eval_shape(create_fn))
  return jax.tree_util.tree_map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def global_batch(local_batch, mesh):
  """Turns this process's slice of the batch (numpy) into global jax.Arrays."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }


def check_batch_divides(batch_size, accum_steps, mesh):
  """Bad-input check: the (micro-)batch must split evenly over the batch mesh axes."""
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % accum_steps:
    raise UserError(
      f"config.train.batch_size={batch_size} is not divisible by "
      f"config.train.accum_steps={accum_steps}"
    )
  micro = batch_size // accum_steps
  if micro % shards:
    raise UserError(
      f"the micro-batch of {micro} sequences (config.train.batch_size={batch_size} / "
      f"accum_steps={accum_steps}) does not divide over the {shards} data x fsdp "
      f"shards of mesh {dict(mesh.shape)}; use a multiple of {shards}"
    )
  if batch_size % jax.process_count():
    raise UserError(
      f"config.train.batch_size={batch_size} does not divide over {jax.process_count()} processes"
    )


def initialize_distributed():
  """jax.distributed.initialize(): cluster auto-detection (Cloud TPU, SLURM, MPI, k8s),
  or explicit JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID (e.g. two
  processes on one machine).
  """
  env = os.environ
  if "JAX_NUM_PROCESSES" in env:
    jax.distributed.initialize(
      coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(env["JAX_NUM_PROCESSES"]),
      process_id=int(env["JAX_PROCESS_ID"]),
    )
  else:
    try:
      jax.distributed.initialize()
    except ValueError as e:  # no cluster found to join
      raise UserError(
        f"config.distributed=True found no cluster to join ({e}); it is detected on Cloud "
        f"TPU, SLURM, MPI and Kubernetes, elsewhere set JAX_COORDINATOR_ADDRESS=HOST:PORT, "
        f"JAX_NUM_PROCESSES and JAX_PROCESS_ID in each process"
      ) from None
  multihost.watch_for_failures()
