"""The train step's XLA options per platform (`train.xla_options`): cuBLAS for the GPU's
matmuls unless XLA_FLAGS says otherwise, none on CPU and TPU, and the step compiled with
them.
"""

import functools

import jax
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax import sharding
from bert_jax.model import families
from bert_jax.train import loop, rtd, xla_options
from bert_jax.train import optimizer as optimizer_lib
from bert_jax.train import step as step_lib
from tests.conftest import random_batch


def test_gpus_get_cublas_matmuls_and_other_platforms_nothing():
  assert xla_options.step_options("gpu", "") == {"xla_gpu_enable_triton_gemm": False}
  assert xla_options.step_options("cpu", "") is None
  assert xla_options.step_options("tpu", "") is None


@pytest.mark.parametrize(
  "flags",
  ["--xla_gpu_enable_triton_gemm=true", "--xla_dump_to=/tmp/x  --xla_gpu_enable_triton_gemm"],
)
def test_an_option_xla_flags_names_is_left_to_it(flags):
  assert xla_options.step_options("gpu", flags) is None


def test_a_longer_flag_of_the_same_start_does_not_count():
  flags = "--xla_gpu_enable_triton_gemm_any=true"
  assert xla_options.step_options("gpu", flags) == {"xla_gpu_enable_triton_gemm": False}


def test_the_variable_is_read_when_no_flags_are_given(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=true")
  assert xla_options.step_options("gpu") is None
  monkeypatch.delenv("XLA_FLAGS")
  assert xla_options.step_options("gpu") == {"xla_gpu_enable_triton_gemm": False}


def test_the_train_step_compiles_with_its_platforms_options(monkeypatch):
  """The options reach XLA: an option XLA does not know, given for this platform, fails the
  step's compile, and the step compiles and runs without it.
  """
  c = config_lib.base_config()
  c.model.size, c.model.max_position_embeddings = "tiny", 32
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.mesh)
  model_cfg = config_lib.model_config(c, 128)
  model = families.family(model_cfg.arch).pretraining(model_cfg)
  tx, schedule = optimizer_lib.make_optimizer(c.train)
  create = functools.partial(step_lib.create_state, model, tx, jax.random.key(0))
  state_sh = sharding.shardings_of(create, mesh, rules)
  state = sharding.sharded_init(create, state_sh)
  batch = sharding.global_batch(random_batch(np.random.default_rng(0), 2, 16, 3, 128), mesh)
  objective = rtd.objective_for(model)
  platform = mesh.devices.flat[0].platform

  def compiled():
    step = loop.compile_train_step(objective, tx, schedule, 1, state_sh, mesh)
    with sharding.activate(mesh, rules):
      return step.lower(state, batch, jax.random.key(1)).compile()

  monkeypatch.setitem(xla_options.STEP_OPTIONS, platform, {"xla_no_such_option_here": True})
  with pytest.raises(Exception, match="xla_no_such_option_here"):
    compiled()
  monkeypatch.setitem(xla_options.STEP_OPTIONS, platform, {})
  assert compiled() is not None
