"""Checkpoints: a state saved from a (2, 2, 2) mesh restores onto one device and onto a
(8, 1, 1) mesh with identical values; meta and params-only restores; a preemption save is
kept only until the next save, across restarts.
"""

import os
import shutil
import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoint as ckpt_lib
from tests.conftest import needs_devices
from tests.test_train_step import _config, _setup


@needs_devices(8)
@pytest.mark.slow
def test_restore_onto_another_mesh(tmp_path):
  config = _config(data=2, fsdp=2, tensor=2)
  *_, state, _ = _setup(config, jax.devices()[:8])
  saver = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"), keep=2)
  saver.save(7, state, {"step": 7, "model": {"hidden_size": 128}})
  saver.close()

  reader = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"), read_only=True)
  assert reader.all_steps() == [7] and reader.meta(7)["model"] == {"hidden_size": 128}
  for mesh_config, devices in (({"data": 1}, jax.devices()[:1]), ({"data": 8}, jax.devices())):
    *_, fresh, state_sh = _setup(_config(**mesh_config), devices)
    abstract = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), fresh, state_sh
    )
    params, opt_state = reader.restore(7, abstract.params, abstract.opt_state)
    chex.assert_trees_all_equal(jax.device_get(params), jax.device_get(state.params))
    chex.assert_trees_all_equal(jax.device_get(opt_state), jax.device_get(state.opt_state))
    word = params["bert"]["embeddings"]["word"]["embedding"]
    assert word.sharding == state_sh.params["bert"]["embeddings"]["word"]["embedding"]
    # Parameters alone (export, fill-mask, init_from) need no optimizer target.
    only, none = reader.restore(7, abstract.params)
    assert none is None
    np.testing.assert_array_equal(
      np.asarray(only["mlm"]["bias"]), np.asarray(state.params["mlm"]["bias"])
    )


def test_a_preemption_save_lives_until_the_next_save_and_keep_counts_the_others(tmp_path):
  state = types.SimpleNamespace(params={"w": jnp.ones(2)}, opt_state={"m": jnp.zeros(2)})
  directory = str(tmp_path / "checkpoints")

  def save(step, preemption=False):
    """One process's save (a restarted run reads which steps were preemption saves)."""
    saver = ckpt_lib.Checkpoints(directory, keep=2, async_save=False)
    saver.save(step, state, {"step": step}, preemption=preemption)
    saver.close()
    return ckpt_lib.Checkpoints(directory, read_only=True).all_steps()

  assert save(3) == [3]
  assert save(6) == [3, 6]
  assert save(7, preemption=True) == [3, 6, 7]  # the newest: the run resumes from it
  assert save(8, preemption=True) == [3, 6, 8]  # 7 superseded; 3 and 6 stay
  assert save(9) == [6, 9]
  assert ckpt_lib.Checkpoints(directory, read_only=True).meta(9) == {"step": 9}


def test_a_save_cut_short_is_removed_by_the_run_that_resumes(tmp_path):
  # A second Ctrl-C during an async save left `5.orbax-checkpoint-tmp` (as Orbax names it)
  # beside the committed step 3: readers leave it, the next writer removes it.
  state = types.SimpleNamespace(params={"w": jnp.ones(2)}, opt_state={"m": jnp.zeros(2)})
  directory = tmp_path / "checkpoints"
  saver = ckpt_lib.Checkpoints(str(directory), keep=2, async_save=False)
  saver.save(3, state, {"step": 3})
  saver.close()
  shutil.copytree(directory / "3", directory / "5.orbax-checkpoint-tmp")
  assert ckpt_lib.Checkpoints(str(directory), read_only=True).all_steps() == [3]
  assert (directory / "5.orbax-checkpoint-tmp").exists()
  resumed = ckpt_lib.Checkpoints(str(directory), keep=2, async_save=False)
  assert resumed.all_steps() == [3]
  resumed.save(4, state, {"step": 4})  # (Orbax removes it in the background, done by then)
  resumed.close()
  assert sorted(os.listdir(directory)) == ["3", "4"]


@pytest.mark.parametrize(
  "metric, best_step", [("accuracy", 2), ("loss", 3)], ids=["highest", "lowest loss"]
)
def test_best_keeps_the_highest_metric_or_the_lowest_loss(tmp_path, metric, best_step):
  """Evals at steps 1-3 (accuracy 0.5, 0.9, 0.7; loss 2.0, 1.5, 1.0): by accuracy the best
  is step 2, by loss step 3 (before, a loss metric kept the highest loss: step 1).
  """
  from bert_jax.train import loop

  best = loop._Best(str(tmp_path), metric)
  params = {"w": jnp.ones(3)}
  for step, accuracy, loss in [(1, 0.5, 2.0), (2, 0.9, 1.5), (3, 0.7, 1.0)]:
    best.update(step, params, {"accuracy": accuracy, "loss": loss}, {"step": step})
  best.close()
  assert best.step == best_step
  assert loop._Best(str(tmp_path), metric).step == best_step  # as saved in best/


def test_orbax_s_short_waits_for_the_save_before_are_not_said(caplog):
  """On a bucket Orbax warned at every save that waited a second for the one before; a
  wait of QUIET_WAIT_S or more (saves slower than their interval) is still said.
  """
  from absl import logging as absl_logging

  message = (
    "Waiting for previous save to complete took %f seconds. If this number is high, consider "
    "checkpointing less frequently."
  )
  with caplog.at_level("WARNING", logger="absl"):
    absl_logging.warning(message, 1.1)
    absl_logging.warning(message, ckpt_lib.QUIET_WAIT_S + 5)
    absl_logging.warning("another warning")
  said = [r.getMessage() for r in caplog.records]
  assert said == [message % (ckpt_lib.QUIET_WAIT_S + 5), "another warning"]


@pytest.mark.slow  # 6 x 2-4 CPU-s
@pytest.mark.parametrize("saved_scanned", [True, False], ids=["scanned saved", "unrolled saved"])
@pytest.mark.parametrize("arch", ["bert", "electra", "modernbert"])
def test_init_from_restores_the_other_layer_layout(tmp_path, arch, saved_scanned):
  """A run saved with scan_layers (a recipe's default) starts a run without it, and the
  other way: every layer's parameters arrive, stacked or unstacked (ELECTRA's generator too;
  ModernBERT's groups). Truth: the saved parameters, unrolled by `unscan`.
  """
  from bert_jax import config as config_lib
  from bert_jax import run as run_lib
  from bert_jax.hf import convert
  from bert_jax.model import families, registry

  family = families.family(arch)

  def model(scan):
    config = family.config(
      vocab_size=128, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64,
      max_position_embeddings=64, scan_layers=scan,
    )  # fmt: skip
    return family.pretraining(config)

  saved_model = model(saved_scanned)
  init = jax.jit(lambda key: saved_model.init(key, *registry.dummy_inputs(saved_model)))
  params = nn.meta.unbox(init(jax.random.key(0)))["params"]
  meta = {"model": config_lib.model_dict(saved_model.config)}
  saver = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"), keep=1, async_save=False)
  saver.save(5, types.SimpleNamespace(params=params, opt_state={"m": jnp.zeros(1)}), meta)
  saver.close()

  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  wanted = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
    run_lib.abstract_params(model(not saved_scanned)),
  )
  source = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"), read_only=True)
  restored = run_lib.restore_as(source, 5, meta, wanted)
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(wanted)
  chex.assert_trees_all_equal(convert.unscan(restored), convert.unscan(params))
  encoder = run_lib.restore_encoder(source, 5, meta, wanted["bert"])
  chex.assert_trees_all_equal(
    convert.unscan({"bert": encoder}), {"bert": convert.unscan(params)["bert"]}
  )
