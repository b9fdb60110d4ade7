"""Learning-rate schedules against hand-computed values."""

import math

import ml_collections
import pytest

from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.train import loop, optimizer


def _train(decay, fraction=0.1):
  return ml_collections.ConfigDict(
    {"learning_rate": 1.0, "decay": decay, "decay_fraction": fraction}
  )


def test_warmup_stable_decay_is_a_trapezoid_with_a_sqrt_tail():
  # 10 warmup steps, then 90: 72 stable, the last 18 (a fifth) decayed as 1 - sqrt, so
  # the tail runs from step 82 to step 100.
  schedule = optimizer.learning_rate_schedule(_train("wsd", 0.2), steps=100, warmup=10)
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(1.0)
  assert float(schedule(82)) == pytest.approx(1.0)
  assert float(schedule(85)) == pytest.approx(1 - math.sqrt(3 / 18), abs=1e-6)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


def test_a_decay_fraction_outside_zero_one_is_refused():
  with pytest.raises(UserError, match="decay_fraction"):
    optimizer.learning_rate_schedule(_train("wsd", 1.5), steps=100, warmup=10)


def test_a_finished_run_names_the_setting_that_lengthens_it():
  """A fine-tuning run of epochs is lengthened by config.train.epochs (before, the "nothing
  to do" line said steps); one of steps, and a pretraining run, by config.train.steps.
  """
  finetune = config_lib.finetune_base_config()
  assert loop.length_key(finetune) == "config.train.epochs"
  finetune.train.steps = 10
  assert loop.length_key(finetune) == "config.train.steps"
  assert loop.length_key(config_lib.base_config()) == "config.train.steps"
