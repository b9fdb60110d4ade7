"""RoBERTa and XLM-R against Hugging Face's PyTorch models: random tiny checkpoints imported
(safetensors and pytorch_model.bin), every head, export and reload, bad config.json.

The truth is `transformers` on the same weights (`tests.family_parity`).
"""

import json

import numpy as np
import pytest

from bert_jax.hf import convert, files
from bert_jax.hf.families import roberta as roberta_hf
from bert_jax.model import roberta
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
LENGTHS = [38, 25, 9, 3]  # a padded batch of 4 rows (38: RoBERTa's longest)


class Tokenizer:
  """The special ids `hf_config` reads (RoBERTa's: <s> 0, <pad> 1, </s> 2, <unk> 3)."""

  cls_id, pad_id, sep_id, unk_id, mask_id = 0, 1, 2, 3, VOCAB - 1


def _batch(seed, length=38):
  return padded_batch(np.random.default_rng(seed), LENGTHS, length, pad_id=1, vocab=VOCAB)


# RoBERTa.


def _hf_config(**kwargs):
  values = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,  # 38 usable positions after pad_token_id 1
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
  )
  return {**values, **kwargs}


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
  torch.manual_seed(0)
  model = perturbed(transformers.RobertaForMaskedLM(transformers.RobertaConfig(**_hf_config())))
  model.config._attn_implementation = "eager"
  return save(model, tmp_path_factory.mktemp("roberta") / "mlm"), model


@pytest.fixture(scope="module")
def mlm_imported(mlm_dir):
  return imported(mlm_dir[0], roberta_hf)


def test_mlm_matches_transformers_on_padded_batches(mlm_dir, mlm_imported):
  _, hf_model = mlm_dir
  model, params, ignored = mlm_imported
  assert ignored == [] and model.config.max_length == 38
  # Rows of different lengths, the longest as long as the positions allow.
  ids, mask = _batch(0, model.config.max_length)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)


def test_packed_row_takes_positions_after_the_padding_id(mlm_dir, mlm_imported):
  """Two examples packed in one row (ids 1, 2; positions restart at 0) equal each alone."""
  _, hf_model = mlm_dir
  model, params, _ = mlm_imported
  ids, mask = _batch(1)
  a, b = ids[0, :20].copy(), ids[1, :18].copy()
  ids[0] = np.concatenate([a, b])
  mask[0] = np.repeat([1, 2], [20, 18])
  position_ids = np.broadcast_to(np.arange(38), ids.shape).copy()
  position_ids[0] = np.concatenate([np.arange(20), np.arange(18)])
  hidden, logits = ours_mlm(model, params, ids, mask, position_ids)
  for part, alone in ((slice(0, 20), a), (slice(20, 38), b)):
    hf_hidden, hf_logits = hf_mlm(hf_model, alone[None], np.ones((1, len(alone)), np.int64))
    assert_close(hidden[0, part], hf_hidden[0])
    assert_close(logits[0, part], hf_logits[0])


def test_xlm_roberta_pytorch_bin_with_old_names(tmp_path):
  """An XLM-R `pytorch_model.bin` with the tied decoder, the old `lm_head.decoder.bias` and
  the position_ids buffer saved (older `transformers`): read as `roberta`, equal outputs.
  """
  torch.manual_seed(1)
  config = transformers.XLMRobertaConfig(**_hf_config())
  hf_model = perturbed(transformers.XLMRobertaForMaskedLM(config), seed=1)
  hf_model.config._attn_implementation = "eager"
  extra = {
    "lm_head.decoder.bias": hf_model.lm_head.bias.detach().clone(),
    "roberta.embeddings.position_ids": torch.arange(40)[None],
  }
  path = save(hf_model, tmp_path / "xlmr", torch_bin=True, extra=extra)
  model, params, ignored = imported(path, roberta_hf)
  assert ignored == []
  ids, mask = _batch(2)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)


def test_roberta_model_reads_without_prefix_and_skips_its_pooler(tmp_path):
  torch.manual_seed(2)
  base = transformers.RobertaModel(transformers.RobertaConfig(**_hf_config()))
  path = save(base, tmp_path / "base")
  tensors, ignored = files.read_tensors(path, roberta_hf)
  assert ignored == ["pooler.dense.bias", "pooler.dense.weight"]
  config = roberta.RobertaConfig(
    **{**roberta_hf.model_kwargs(files.read_config(path)), "vocab_size": 256}
  )
  target = random_params(model_for(config), 4)
  params, missing = convert.from_hf(tensors, target, roberta_hf.table(config), VOCAB)
  assert missing == ["mlm"]  # a RobertaModel has no LM head: import initialises it
  word = params["bert"]["embeddings"]["word"]["embedding"]
  np.testing.assert_array_equal(word[:VOCAB], base.embeddings.word_embeddings.weight.detach())


@pytest.mark.parametrize("task", list(HEADS))
def test_heads_match_transformers(task, tmp_path):
  suffix, num_labels = HEADS[task]
  torch.manual_seed(3)
  config = transformers.RobertaConfig(**_hf_config(num_labels=num_labels, classifier_dropout=0.3))
  hf_model = perturbed(getattr(transformers, "Roberta" + suffix)(config), seed=3)
  hf_model.config._attn_implementation = "eager"
  path = save(hf_model, tmp_path / task)
  model, params, _ = imported(path, roberta_hf, task, num_labels)
  assert model.config.classifier_dropout == 0.3
  ids, mask = _batch(4)
  logits = ours_task(model, params, ids, mask)
  expected = hf_task(hf_model, task, ids, mask)
  assert_close(logits, expected, None if task == "classification" else mask)


def _config(**kwargs):
  """Our config of the checkpoints `_hf_config(**kwargs)` describes (compiles are shared)."""
  return our_config(roberta_hf, _hf_config(**kwargs))


def test_export_reloads_in_transformers_with_equal_logits(tmp_path):
  config = _config()
  ids, mask = _batch(5)
  model = model_for(config)
  params = random_params(model, 4, seed=1)
  path = export(tmp_path / "mlm", params, roberta_hf, config, "pretraining", VOCAB, Tokenizer)
  assert json.loads(open(f"{path}/config.json").read())["architectures"] == ["RobertaForMaskedLM"]
  hf_model = reload(transformers.AutoModelForMaskedLM, path)
  assert type(hf_model).__name__ == "RobertaForMaskedLM"
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)

  config = _config(classifier_dropout=0.3)
  model = model_for(config, "classification", 3)
  params = random_params(model, 3, seed=2)
  labels = ["a", "b", "c"]
  path = export(
    tmp_path / "cls", params, roberta_hf, config, "classification", VOCAB, Tokenizer, labels
  )
  hf_model = reload(transformers.AutoModelForSequenceClassification, path)
  assert type(hf_model).__name__ == "RobertaForSequenceClassification"
  assert_close(ours_task(model, params, ids, mask), hf_task(hf_model, "classification", ids, mask))


def test_max_length_leaves_out_the_rows_before_the_padding_id():
  assert roberta.RobertaConfig(vocab_size=256, max_position_embeddings=514).max_length == 512
  config = roberta.RobertaConfig(vocab_size=256, max_position_embeddings=66, pad_token_id=0)
  assert config.max_length == 65


def test_unsupported_config_is_one_line(tmp_path):
  config = {"model_type": "roberta", **_hf_config(position_embedding_type="relative_key")}
  (tmp_path / "config.json").write_text(json.dumps(config))
  assert_one_line_error(tmp_path, "RoBERTa does not implement: position_embedding_type")
  config = {"model_type": "xlm-roberta", **_hf_config(pad_token_id=39)}
  (tmp_path / "config.json").write_text(json.dumps(config))
  assert_one_line_error(tmp_path, "max_position_embeddings=40 and pad_token_id=39")
