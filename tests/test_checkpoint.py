"""Checkpoints: a state saved from a (2, 2, 2) mesh restores onto one device and onto a
(8, 1, 1) mesh with identical values; meta and params-only restores.
"""

import chex
import jax
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
