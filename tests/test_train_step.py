"""The sharded train step: shard shapes on a (2, 2, 2) mesh, the same losses as on one
device, gradient accumulation equal to the full batch, and a single compilation.
"""

import functools
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax import sharding
from bert_jax.model import families, pretraining
from bert_jax.train import loop, rtd
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib
from tests.conftest import ROOT, needs_devices, random_batch

BATCH, LENGTH, PREDICTIONS, VOCAB = 16, 32, 5, 512


def _config(**mesh):
  c = config_lib.base_config()
  c.model.size = "tiny"
  c.model.max_position_embeddings = 64
  c.train.steps, c.train.warmup_steps, c.train.learning_rate = 20, 5, 1e-3
  c.train.batch_size = BATCH
  c.mesh.update(mesh)
  return c


def _setup(config, devices):
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh)
  model_cfg = config_lib.model_config(config, VOCAB)
  model = families.family(model_cfg.arch).pretraining(model_cfg)
  tx, schedule = optimizer_lib.make_optimizer(config.train)
  create = functools.partial(step_lib.create_state, model, tx, jax.random.key(0))
  state_sh = sharding.shardings_of(create, mesh, rules)
  state = sharding.sharded_init(create, state_sh)
  return mesh, rules, model, tx, schedule, state, state_sh


def _run(config, devices, steps=20, accum_steps=1):
  mesh, rules, model, tx, schedule, state, state_sh = _setup(config, devices)
  train_step = loop.compile_train_step(
    rtd.objective_for(model), tx, schedule, accum_steps, state_sh, mesh
  )
  rng = np.random.default_rng(0)
  losses = []
  with sharding.activate(mesh, rules):
    for _ in range(steps):
      batch = sharding.global_batch(random_batch(rng, BATCH, LENGTH, PREDICTIONS, VOCAB), mesh)
      state, metrics = train_step(state, batch, jax.random.key(1))
      losses.append(float(metrics["loss"]))
  return np.array(losses), state


@needs_devices(8)
def test_shard_shapes_on_2x2x2_mesh():
  config = _config(data=2, fsdp=2, tensor=2)
  *_, state, _ = _setup(config, jax.devices()[:8])
  word = state.params["bert"]["embeddings"]["word"]["embedding"]  # (vocab, embed)
  assert word.shape == (VOCAB, 128)
  assert word.sharding.shard_shape(word.shape) == (VOCAB // 2, 128 // 2)
  q = state.params["bert"]["encoder"]["layer_0"]["attention"]["query"][
    "kernel"
  ]  # (embed, heads, kv)
  assert q.sharding.shard_shape(q.shape) == (64, 1, 64)
  inter = state.params["bert"]["encoder"]["layer_0"]["mlp"]["intermediate"][
    "kernel"
  ]  # (embed, mlp)
  assert inter.sharding.shard_shape(inter.shape) == (64, 256)
  mu = state.opt_state[1][0].mu["bert"]["embeddings"]["word"]["embedding"]
  assert mu.sharding == word.sharding  # optimizer state sharded like its parameter


@pytest.mark.slow
def test_the_word_lookup_on_a_2x2x2_mesh_compiles_without_replicating():
  """Gathering words from a table cut over fsdp (its embed axis) left the rows cut so;
  XLA then replicated them to reshard over the batch, with an "Involuntary full
  rematerialization" warning each time (9 in this train step). The lookup takes whole
  rows. Compiled in a process of its own: XLA's warnings need TF_CPP_MIN_LOG_LEVEL=0 from
  the start, and no compilation cache.
  """
  code = (
    "import jax; from tests.test_train_step import _config, _run; "
    "_run(_config(data=2, fsdp=2, tensor=2), jax.devices()[:8], steps=1)"
  )
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "JAX_ENABLE_COMPILATION_CACHE": "false"}
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Involuntary full rematerialization" not in done.stderr


@needs_devices(8)
@pytest.mark.slow
def test_2x2x2_mesh_matches_one_device():
  sharded, _ = _run(_config(data=2, fsdp=2, tensor=2), jax.devices()[:8])
  single, _ = _run(_config(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  assert sharded[-1] < sharded[0]  # it learns
  np.testing.assert_allclose(sharded, single, rtol=1e-4)


@needs_devices(8)
@pytest.mark.slow
def test_fused_qkv_on_a_2x2x2_mesh_matches_three_projections_on_one_device():
  """The same parameter tree and initial values (the state is created from one key), the
  same loss and the same updates, with the stacked kernels sharded as their parts (heads
  over `tensor`, embed over `fsdp`).
  """
  fused_config = _config(data=2, fsdp=2, tensor=2)
  fused_config.model.fused_qkv = True
  fused, fused_state = _run(fused_config, jax.devices()[:8], steps=3)
  single, state = _run(_config(data=1, fsdp=1, tensor=1), jax.devices()[:1], steps=3)
  assert jax.tree.structure(fused_state) == jax.tree.structure(state)  # the same checkpoints
  np.testing.assert_allclose(fused, single, rtol=1e-4)


@needs_devices(8)
@pytest.mark.slow
def test_electra_replaced_token_detection_on_a_2x2x2_mesh_matches_one_device():
  """ELECTRA's generator and discriminator (E 64, generator 64) sharded: the same losses,
  dropout and sampled replacements included, as on one device.
  """

  def electra(**mesh):
    c = _config(**mesh)
    c.model.arch, c.model.embedding_size, c.model.generator_hidden_size = "electra", 64, 64
    return c

  sharded, state = _run(electra(data=2, fsdp=2, tensor=2), jax.devices()[:8], steps=3)
  single, _ = _run(electra(data=1, fsdp=1, tensor=1), jax.devices()[:1], steps=3)
  assert "generator" in state.params and "discriminator" in state.params
  np.testing.assert_allclose(sharded, single, rtol=1e-4)


@pytest.mark.parametrize(
  "devices,accum",
  [(1, 2), pytest.param(4, 2, marks=pytest.mark.slow), pytest.param(8, 4, marks=pytest.mark.slow)],
)
def test_accumulated_gradient_equals_full_batch(devices, accum):
  if jax.device_count() < devices:
    pytest.skip(f"needs {devices} devices")
  config = _config(data=devices)
  mesh, rules, model, tx, _, state, _ = _setup(config, jax.devices()[:devices])
  batch = random_batch(np.random.default_rng(5), BATCH, LENGTH, PREDICTIONS, VOCAB)
  counts = batch["masked_lm_weights"].reshape(BATCH // accum, accum, -1).sum(axis=(0, 2))
  assert len(set(counts)) > 1  # micro-batches really hold different numbers of masks
  grad = jax.jit(step_lib.gradients, static_argnames=("objective", "accum_steps", "deterministic"))
  objective = step_lib.Pretraining(model)
  with sharding.activate(mesh, rules):
    gbatch = sharding.global_batch(batch, mesh)
    full, full_sums = grad(
      state.params,
      gbatch,
      jax.random.key(0),
      objective=objective,
      accum_steps=1,
      deterministic=True,
    )
    acc, acc_sums = grad(
      state.params,
      gbatch,
      jax.random.key(0),
      objective=objective,
      accum_steps=accum,
      deterministic=True,
    )
  chex.assert_trees_all_close(acc, full, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(acc_sums, full_sums, rtol=1e-5)


def test_step_compiles_once():
  config = _config(data=1)
  mesh, rules, model, tx, schedule, state, state_sh = _setup(config, jax.devices()[:1])
  traced = chex.assert_max_traces(step_lib.train_step, n=1)
  step = jax.jit(
    functools.partial(traced, objective=step_lib.Pretraining(model), tx=tx, schedule=schedule),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  with sharding.activate(mesh, rules):
    for _ in range(3):
      state, _ = step(
        state, random_batch(rng, BATCH, LENGTH, PREDICTIONS, VOCAB), jax.random.key(0)
      )
  chex.clear_trace_counter()


@needs_devices(8)
def test_a_selected_init_equals_that_part_of_the_full_init():
  """`sharded_init(..., select)` (a fine-tune's fresh head) computes only the part it keeps,
  with the values and shardings the whole initialisation gives it.
  """
  _, _, _, _, _, state, state_sh = _setup(_config(fsdp=2, tensor=2), jax.devices())
  model = pretraining.BertForPreTraining(config_lib.model_config(_config(), VOCAB))
  tx, _ = optimizer_lib.make_optimizer(_config().train)
  create = functools.partial(step_lib.create_state, model, tx, jax.random.key(0))

  def select(tree):
    return {"heads": {k: v for k, v in tree.params.items() if k != "bert"}}

  part = sharding.sharded_init(create, state_sh, select)
  chex.assert_trees_all_equal(part, select(state))
  assert jax.tree.map(lambda a: a.sharding, part) == select(state_sh)


def test_random_bits_are_non_partitionable_on_a_lone_cpu_device_only(monkeypatch):
  """A lone CPU device draws its random bits (ELECTRA's samples) with JAX's original threefry
  (about 6x cheaper on XLA:CPU); several devices and other platforms keep the partitionable
  bits, and the setting is restored afterwards.
  """
  assert jax.config.jax_threefry_partitionable
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  with loop._cpu_threefry():
    inside = jax.random.bernoulli(jax.random.key(0), 0.9, (64,))
  assert jax.config.jax_threefry_partitionable
  with jax.threefry_partitionable(False):
    original = jax.random.bernoulli(jax.random.key(0), 0.9, (64,))
  np.testing.assert_array_equal(inside, original)
  assert not (inside == jax.random.bernoulli(jax.random.key(0), 0.9, (64,))).all()
  for device_count, backend in ((8, "cpu"), (1, "gpu")):
    monkeypatch.setattr(jax, "device_count", lambda n=device_count: n)
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    with loop._cpu_threefry():
      assert jax.config.jax_threefry_partitionable
