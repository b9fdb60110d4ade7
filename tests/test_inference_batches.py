"""Inference outside training (predict, evaluate, a teacher's logits): rows go in batches of
similar length, each cut to a multiple of 32 tokens, batches wider than 512 tokens hold
fewer rows, and the logits equal those of the whole padded length.
"""

import dataclasses

import jax
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.finetune import batching as batching_lib
from bert_jax.finetune import evaluate
from bert_jax.model import tasks

LENGTH, VOCAB = 128, 300
ROW_LENGTHS = [5, 120, 17, 33, 64, 2, 90, 31, 128, 40]  # [CLS] ... [SEP], padding after


def test_length_batches_visit_every_row_once_shortest_first():
  lengths = np.array(ROW_LENGTHS)
  batches = list(batching_lib.length_batches(lengths, 4, LENGTH))
  rows = np.concatenate([index for index, _, _ in batches])
  assert sorted(rows.tolist()) == list(range(len(lengths)))
  assert lengths[rows].tolist() == sorted(ROW_LENGTHS)
  # Widths: the longest of each batch rounded up to 32: (2, 5, 17, 31), (33, 40, 64, 90), ...
  assert [(width, count) for _, width, count in batches] == [(32, 4), (96, 4), (128, 4)]
  assert [w for _, w, _ in batching_lib.length_batches(np.array([0, 1]), 4, 16)] == [16]  # capped


def test_wide_batches_hold_fewer_rows():
  """Rows x width^2 at most 32 x 512^2: 28 rows of 544 tokens (32 x 512^2 / 544^2 = 28.4),
  8 of 1,024, 2 of 2,048, 1 of 8,192; each batch takes as many rows as its width holds.
  """
  assert [batching_lib.rows_at(w, 32) for w in (32, 512, 544, 1024, 2048, 8192)] == [
    32, 32, 28, 8, 2, 1,
  ]  # fmt: skip
  lengths = np.array([3000] * 3 + [10] * 40 + [1000] * 10)
  batches = list(batching_lib.length_batches(lengths, 32, 4096))
  assert [(len(index), width, count) for index, width, count in batches] == [
    (32, 32, 32),
    (8, 32, 32),  # the next 32 rows would reach 3,008 tokens: the 8 short ones alone
    (8, 1024, 8),
    (2, 1024, 8),
    (1, 3008, 1),
    (1, 3008, 1),
    (1, 3008, 1),
  ]
  assert sorted(np.concatenate([b[0] for b in batches]).tolist()) == list(range(len(lengths)))


def _inputs(row_lengths=ROW_LENGTHS, length=LENGTH):
  rng = np.random.default_rng(0)
  mask = (np.arange(length)[None] < np.array(row_lengths)[:, None]).astype(np.int32)
  return {
    "input_ids": rng.integers(5, VOCAB, size=mask.shape).astype(np.int32) * mask,
    "token_type_ids": ((np.arange(length)[None] >= 3) * mask).astype(np.int32),
    "attention_mask": mask,
  }


def _logits_and_shapes(task, inputs, monkeypatch, **options):
  """(`evaluate.logits` of a tiny one-layer BERT at batch 4 with `options`, the whole
  length's logits, the batch shapes it ran).
  """
  c = config_lib.finetune_base_config()
  c.model.size, c.model.arch = "tiny", "bert"
  length = inputs["input_ids"].shape[1]
  cfg = dataclasses.replace(
    config_lib.model_config(c, VOCAB), num_layers=1, max_position_embeddings=max(length, 512)
  )
  model = tasks.ForTask(cfg, task, 3)
  params = model.init(jax.random.key(0), *(inputs[k][:1] for k in evaluate.INPUT_KEYS))["params"]
  whole = np.asarray(jax.jit(model.apply)({"params": params}, *inputs.values()))
  shapes = []
  real = evaluate._logits_fn(model)
  monkeypatch.setattr(
    evaluate, "_logits_fn", lambda m: lambda p, b: shapes.append(b["input_ids"].shape) or real(p, b)
  )
  return evaluate.logits(model, params, inputs, 4, **options), whole, shapes


@pytest.mark.parametrize("task", ["classification", "tokens"])
def test_logits_by_length_equal_the_whole_length(task, monkeypatch):
  inputs = _inputs()
  ours, whole, widths = _logits_and_shapes(task, inputs, monkeypatch)
  assert widths == [(4, 32), (4, 96), (4, 128)]  # a fixed batch, each cut to its rows
  assert ours.shape == whole.shape
  if task == "tokens":  # compared where there is text; zero past each batch's width
    mask = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[mask], whole[mask], atol=1e-5)
    assert not ours[0, 32:].any()
  else:
    np.testing.assert_allclose(ours, whole, atol=1e-5)


def test_qa_rows_are_cut_only_where_the_padding_is_not_read(monkeypatch):
  """QA's loss spans the padding: evaluate runs the whole length. predict
  (`padding_read=False`) cuts the rows as the other tasks' and gives -inf past them, where
  no answer may start or end.
  """
  inputs = _inputs()
  whole_length, whole, shapes = _logits_and_shapes("qa", inputs, monkeypatch)
  assert {s[1] for s in shapes} == {LENGTH}
  np.testing.assert_allclose(whole_length, whole, atol=1e-5)
  ours, _, shapes = _logits_and_shapes("qa", inputs, monkeypatch, padding_read=False)
  assert shapes == [(4, 32), (4, 96), (4, 128)] and ours.shape == whole.shape
  mask = inputs["attention_mask"].astype(bool)
  np.testing.assert_allclose(ours[mask], whole[mask], atol=1e-5)
  assert np.isneginf(ours[0, 32:]).all()


def test_wide_rows_go_in_smaller_batches_with_the_same_logits(monkeypatch):
  """Rows of 40, 600 and 700 tokens at batch 4: (2, 608) then (2, 704), as 4 x 512^2 allows
  2 rows that wide; the logits equal the whole length's (768).
  """
  ours, whole, shapes = _logits_and_shapes(
    "classification", _inputs([40, 600, 700], 768), monkeypatch
  )
  np.testing.assert_allclose(ours, whole, atol=1e-5)
  assert shapes == [(2, 608), (2, 704)]
