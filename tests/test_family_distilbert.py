"""DistilBERT against Hugging Face's PyTorch models: random tiny checkpoints imported
(safetensors, and a sinusoidal-position pytorch_model.bin), every head, export and reload,
scan, bad config.json. The truth is `transformers` on the same weights (`tests.family_parity`).
"""

import json

import numpy as np
import pytest

from bert_jax.hf import convert, files
from bert_jax.hf.families import distilbert as distilbert_hf
from tests.family_parity import (
  HEADS,
  assert_close,
  assert_one_line_error,
  export,
  hf_mlm,
  hf_task,
  imported,
  model_for,
  our_config,
  ours_mlm,
  ours_task,
  padded_batch,
  perturbed,
  random_params,
  reload,
  save,
)

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

VOCAB = 150  # the checkpoints' rows; ours are padded to 256
LENGTHS = [38, 25, 9, 3]  # a padded batch of 4 rows
LENGTH = max(LENGTHS)


class Tokenizer:
  """The special ids `hf_config` reads (a WordPiece vocabulary's order)."""

  pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4


def _hf_config(**kwargs):
  values = dict(
    vocab_size=VOCAB,
    dim=32,
    n_layers=2,
    n_heads=4,
    hidden_dim=37,
    max_position_embeddings=40,
    pad_token_id=0,
  )
  return transformers.DistilBertConfig(**{**values, **kwargs})


def _config(scan_layers=False, **kwargs):
  """Our config of the checkpoints `_hf_config(**kwargs)` describes (compiles are shared)."""
  return our_config(distilbert_hf, _hf_config(**kwargs).to_dict(), scan_layers=scan_layers)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return padded_batch(rng, LENGTHS, LENGTH, pad_id=0, vocab=VOCAB, cls_id=2)


def _eager(model):
  model.config._attn_implementation = "eager"
  return model


def test_mlm_matches_transformers_on_a_padded_batch(tmp_path):
  torch.manual_seed(0)
  hf_model = _eager(perturbed(transformers.DistilBertForMaskedLM(_hf_config())))
  model, params, ignored = imported(save(hf_model, tmp_path / "mlm"), distilbert_hf)
  assert ignored == [] and model.config == _config()
  ids, mask = _batch(0)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)


def test_sinusoidal_pytorch_bin_reads(tmp_path):
  """A `sinusoidal_pos_embds` checkpoint, as pytorch_model.bin with the tied
  `vocab_projector.weight` and the position_ids buffer: its fixed table is read.
  """
  torch.manual_seed(1)
  config = _hf_config(sinusoidal_pos_embds=True)
  hf_model = _eager(transformers.DistilBertForMaskedLM(config).eval())
  table = hf_model.distilbert.embeddings.position_embeddings.weight.detach().numpy()
  np.testing.assert_allclose(table[3, 1], np.cos(3 / 10000 ** (0 / 32)), atol=1e-6)  # sinusoids
  extra = {"distilbert.embeddings.position_ids": torch.arange(40)[None]}
  path = save(hf_model, tmp_path / "sinusoidal", torch_bin=True, extra=extra)
  model, params, ignored = imported(path, distilbert_hf)
  assert ignored == [] and model.config == _config()
  np.testing.assert_array_equal(params["bert"]["embeddings"]["position"]["embedding"], table)
  ids, mask = _batch(1)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)


def test_distilbert_model_reads_without_prefix(tmp_path):
  torch.manual_seed(2)
  base = transformers.DistilBertModel(_hf_config())
  path = save(base, tmp_path / "base")
  tensors, ignored = files.read_tensors(path, distilbert_hf)
  assert ignored == []
  config = _config()
  target = random_params(model_for(config), 4)
  params, missing = convert.from_hf(tensors, target, distilbert_hf.table(config), VOCAB)
  assert missing == ["mlm"]  # a DistilBertModel has no MLM head: import initialises it
  layer = params["bert"]["encoder"]["layer_1"]["mlp"]["output"]["kernel"]
  np.testing.assert_array_equal(layer, base.transformer.layer[1].ffn.lin2.weight.detach().T)


@pytest.mark.parametrize("task", list(HEADS))
def test_heads_match_transformers(task, tmp_path):
  suffix, num_labels = HEADS[task]
  torch.manual_seed(3)
  config = _hf_config(num_labels=num_labels, seq_classif_dropout=0.3, activation="relu")
  hf_model = _eager(perturbed(getattr(transformers, "DistilBert" + suffix)(config), seed=3))
  model, params, _ = imported(save(hf_model, tmp_path / task), distilbert_hf, task, num_labels)
  assert model.config.seq_classif_dropout == 0.3 and model.config.hidden_act == "relu"
  ids, mask = _batch(4)
  logits = ours_task(model, params, ids, mask)
  expected = hf_task(hf_model, task, ids, mask)
  assert_close(logits, expected, None if task == "classification" else mask)


def test_export_reloads_in_transformers_with_equal_logits(tmp_path):
  ids, mask = _batch(5)
  config = _config()
  model = model_for(config)
  params = random_params(model, 4, seed=1)
  path = export(tmp_path / "mlm", params, distilbert_hf, config, "pretraining", VOCAB, Tokenizer)
  exported = json.loads(open(f"{path}/config.json").read())
  assert exported["architectures"] == ["DistilBertForMaskedLM"]
  assert exported["sinusoidal_pos_embds"] is False
  hf_model = reload(transformers.AutoModelForMaskedLM, path)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)

  config = _config(seq_classif_dropout=0.3, activation="relu")
  model = model_for(config, "classification", 3)
  params = random_params(model, 3, seed=2)
  labels = ["a", "b", "c"]
  path = export(
    tmp_path / "cls", params, distilbert_hf, config, "classification", VOCAB, Tokenizer, labels
  )
  hf_model = reload(transformers.AutoModelForSequenceClassification, path)
  assert type(hf_model).__name__ == "DistilBertForSequenceClassification"
  assert_close(ours_task(model, params, ids, mask), hf_task(hf_model, "classification", ids, mask))


def test_scanned_layers_equal_unrolled():
  ids, mask = _batch(6)
  scanned = model_for(_config(scan_layers=True))
  params = random_params(scanned, 4, seed=4)
  assert "layers" in params["bert"]["encoder"]
  unrolled = model_for(_config())
  want = ours_mlm(unrolled, convert.unscan(params), ids, mask)
  got = ours_mlm(scanned, params, ids, mask)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_unsupported_config_is_one_line(tmp_path):
  config = _hf_config().to_dict()
  (tmp_path / "config.json").write_text(json.dumps({**config, "activation": "tanh"}))
  assert_one_line_error(tmp_path, "DistilBERT does not implement: activation='tanh'")
  del config["dim"]
  (tmp_path / "config.json").write_text(json.dumps(config))
  assert_one_line_error(tmp_path, "lacks dim")
