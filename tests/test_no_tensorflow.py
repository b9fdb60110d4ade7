"""The GPU images have no TensorFlow: the model, the train step, the synthetic data
source and inference must import and run with `import tensorflow` failing.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import FAST_COMPILE, ROOT

CODE = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name in ("tensorflow", "sentencepiece") or name.startswith("tensorflow."):
      raise ImportError(name + " blocked")
sys.meta_path.insert(0, Block())

import functools
import jax
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax import sharding
from bert_jax.data import synthetic
from bert_jax.model import pretraining
from bert_jax.train import loop, optimizer, step

c = config_lib.base_config()
c.model.size, c.train.steps, c.train.warmup_steps, c.train.batch_size = "tiny", 2, 1, 4
mesh, rules = sharding.make_mesh(c.mesh), sharding.rules_from_config(c.mesh)
model = pretraining.BertForPreTraining(config_lib.model_config(c, 256))
tx, schedule = optimizer.make_optimizer(c.train)
create = functools.partial(step.create_state, model, tx, jax.random.key(0))
state_sh = sharding.shardings_of(create, mesh, rules)
state = sharding.sharded_init(create, state_sh)
train_step = loop.compile_train_step(step.Pretraining(model), tx, schedule, 1, state_sh, mesh)
batches = synthetic.synthetic_batches(batch_size=4, max_seq_length=16, vocab_size=256,
                                      max_predictions=3, seed=0)
with sharding.activate(mesh, rules):
  state, metrics = train_step(state, sharding.global_batch(next(batches), mesh),
                              jax.random.key(1))
assert "tensorflow" not in sys.modules and "sentencepiece" not in sys.modules
print("loss", float(metrics["loss"]))
"""


@pytest.mark.slow
def test_model_step_and_synthetic_data_run_without_tensorflow():
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
  result = subprocess.run(
    [sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  loss = float(result.stdout.split("loss")[-1])
  assert 0 < loss < 20
