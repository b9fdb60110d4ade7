"""Inference outside training (predict, evaluate, a teacher's logits): rows go in batches of
similar length, each cut to a multiple of 32 tokens, and the logits equal those of the
whole padded length.
"""

import dataclasses

import jax
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import evaluate
from bert_jax.model import tasks

LENGTH, VOCAB = 128, 300
ROW_LENGTHS = [5, 120, 17, 33, 64, 2, 90, 31, 128, 40]  # [CLS] ... [SEP], padding after


def test_length_batches_visit_every_row_once_shortest_first():
  lengths = np.array(ROW_LENGTHS)
  batches = list(data_lib.length_batches(lengths, 4, LENGTH))
  rows = np.concatenate([index for index, _ in batches])
  assert sorted(rows.tolist()) == list(range(len(lengths)))
  assert lengths[rows].tolist() == sorted(ROW_LENGTHS)
  # Widths: the longest of each batch rounded up to 32: (2, 5, 17, 31), (33, 40, 64, 90), ...
  assert [width for _, width in batches] == [32, 96, 128]
  assert [w for _, w in data_lib.length_batches(np.array([0, 1]), 4, 16)] == [16]  # capped


def _inputs():
  rng = np.random.default_rng(0)
  mask = (np.arange(LENGTH)[None] < np.array(ROW_LENGTHS)[:, None]).astype(np.int32)
  return {
    "input_ids": rng.integers(5, VOCAB, size=mask.shape).astype(np.int32) * mask,
    "token_type_ids": ((np.arange(LENGTH)[None] >= 3) * mask).astype(np.int32),
    "attention_mask": mask,
  }


@pytest.mark.parametrize("task", ["classification", "tokens"])
def test_logits_by_length_equal_the_whole_length(task, monkeypatch):
  c = config_lib.finetune_base_config()
  c.model.size, c.model.arch = "tiny", "bert"
  cfg = dataclasses.replace(config_lib.model_config(c, VOCAB), num_layers=1)
  model = tasks.ForTask(cfg, task, 3)
  inputs = _inputs()
  params = model.init(jax.random.key(0), *(inputs[k][:1] for k in evaluate.INPUT_KEYS))["params"]
  whole = np.asarray(jax.jit(model.apply)({"params": params}, *inputs.values()))

  widths = []
  real = evaluate._logits_fn(model)
  monkeypatch.setattr(
    evaluate, "_logits_fn", lambda m: lambda p, b: widths.append(b["input_ids"].shape) or real(p, b)
  )
  ours = evaluate.logits(model, params, inputs, 4)
  assert widths == [(4, 32), (4, 96), (4, 128)]  # a fixed batch, each cut to its rows
  assert ours.shape == whole.shape
  if task == "tokens":  # compared where there is text; zero past each batch's width
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[mask], whole[mask], atol=1e-5)
    assert not ours[0, 32:].any()
  else:
    np.testing.assert_allclose(ours, whole, atol=1e-5)
