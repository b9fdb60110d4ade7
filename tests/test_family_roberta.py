"""RoBERTa and XLM-R against Hugging Face's PyTorch models: random tiny checkpoints imported
(safetensors and pytorch_model.bin), every head, export and reload, bad config.json.

The truth is `transformers` (PyTorch, CPU, eager attention) on the same weights, every
parameter perturbed so that LayerNorms and biases are not their initial ones/zeros. The
helpers here are shared with the other family tests (`test_family_distilbert`).
"""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import convert, files
from bert_jax.hf import families as hf_families
from bert_jax.hf.families import roberta as roberta_hf
from bert_jax.model import families, roberta, tasks

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.logging.set_verbosity_error()

VOCAB = 150  # the checkpoints' rows; ours are padded to 256
ATOL = 1e-4
LENGTHS = [38, 25, 9, 3]  # a padded batch of 4 rows (38: RoBERTa's longest)
HEADS = {  # our task -> (Hugging Face class suffix, num_labels)
  "classification": ("ForSequenceClassification", 3),
  "tokens": ("ForTokenClassification", 5),
  "qa": ("ForQuestionAnswering", 2),
}


class Tokenizer:
  """The special ids `hf_config` reads (RoBERTa's: <s> 0, <pad> 1, </s> 2, <unk> 3)."""

  cls_id, pad_id, sep_id, unk_id, mask_id = 0, 1, 2, 3, VOCAB - 1


def perturbed(model, seed=0):
  """`model` in eval mode, every parameter moved by N(0, 0.05) noise."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=generator))
  return model.eval()


def save(model, path, torch_bin=False, extra=None):
  """`model` saved to `path`: `save_pretrained` (safetensors), or the legacy
  pytorch_model.bin (the whole state dict, tied copies included, plus `extra` tensors).
  """
  if torch_bin:
    path.mkdir()
    model.config.save_pretrained(path)
    torch.save({**model.state_dict(), **(extra or {})}, path / "pytorch_model.bin")
  else:
    model.save_pretrained(path)
  return str(path)


def padded_batch(rng, lengths, length, pad_id, cls_id=0, low=4):
  """(input_ids, attention_mask) of rows of `lengths` real tokens, the first `cls_id`,
  padded with `pad_id`.
  """
  ids = rng.integers(low, VOCAB, size=(len(lengths), length))
  mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
  ids[:, 0] = cls_id
  return np.where(mask == 1, ids, pad_id), mask


def imported(hf_dir, hf_module, task=None, num_labels=None):
  """Our model and params for the checkpoint in `hf_dir`, read as import-hf does (the
  vocabulary padded to a multiple of 128) and converted with the table of `task`.

  Returns:
    (model, params, ignored): ignored are the tensor names `read_tensors` did not use.
  """
  hf = files.read_config(hf_dir)
  assert hf_families.for_model_type(hf["model_type"]) is hf_module
  tensors, ignored = files.read_tensors(hf_dir, hf_module)
  kwargs = hf_module.model_kwargs(hf)
  kwargs["vocab_size"] = -(-kwargs["vocab_size"] // 128) * 128
  config = families.family(hf_module.ARCH).config(**kwargs)
  model, target = init(config, task, num_labels)
  head = task or "pretraining"
  params, missing = convert.from_hf(tensors, target, hf_module.table(config, head), VOCAB)
  assert missing == [], missing
  return model, params, ignored


def init(config, task=None, num_labels=None, seed=None):
  """(model, params) of the pretraining model or `task`'s: the params' shapes and dtypes
  (enough for an import that reads every tensor), or with a `seed` random numpy values
  (N(0, 0.1), LayerNorm scales about 1): no initialisation to compile.
  """
  ids = np.ones((1, 8), np.int32)
  if task is None:
    model = families.family(config.arch).pretraining(config)
    inputs = ids, ids, ids, ids[:, :1]
  else:
    model = tasks.ForTask(config, task, num_labels)
    inputs = ids, ids, ids
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"])
  if seed is None:
    return model, shapes
  rng = np.random.default_rng(seed)

  def value(path, shape):
    scale = jax.tree_util.keystr(path).endswith("['scale']")
    return (scale + rng.normal(0.0, 0.1, shape.shape)).astype(shape.dtype)

  return model, jax.tree_util.tree_map_with_path(value, shapes)


@functools.partial(jax.jit, static_argnames="model")
def _mlm(params, ids, mask, position_ids, *, model):
  def run(m):
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    hidden, _ = m.bert(ids, ids * 0, mask, position_ids)
    logits, sentence = m(ids, ids * 0, mask, positions, position_ids)
    return hidden, logits, sentence

  return model.apply({"params": params}, method=run)


def ours_mlm(model, params, ids, mask, position_ids=None):
  """(last hidden states, MLM logits at every position) of our pretraining model.

  Compiled once per model config and input shape (tests share both where they can).
  """
  if position_ids is None:
    position_ids = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
  hidden, logits, sentence = _mlm(params, ids, mask, position_ids, model=model)
  np.testing.assert_array_equal(sentence, 0.0)  # MLM-only families: zero sentence logits
  return np.asarray(hidden), np.asarray(logits)


@functools.partial(jax.jit, static_argnames="model")
def _task(params, ids, mask, *, model):
  return model.apply({"params": params}, ids, ids * 0, mask)


def ours_task(model, params, ids, mask):
  """Our fine-tuning model's float32 logits."""
  return np.asarray(_task(params, ids, mask, model=model))


def hf_mlm(model, ids, mask, **kwargs):
  """(last hidden states, MLM logits) of a Hugging Face MLM model."""
  with torch.no_grad():
    out = model(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      output_hidden_states=True,
      **kwargs,
    )
  return out.hidden_states[-1].numpy(), out.logits.numpy()


def hf_task(model, task, ids, mask):
  """A Hugging Face head model's logits, shaped as ours."""
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
  if task == "qa":
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
  return out.logits.numpy()


def assert_close(ours, theirs, mask=None):
  """Equal within ATOL (at the real tokens where `mask` is given; our extra vocabulary
  rows dropped).
  """
  ours = ours[..., : theirs.shape[-1]]
  if mask is not None:
    real = mask.astype(bool)
    ours, theirs = ours[real], theirs[real]
  np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


def export(tmp_path, params, hf_module, config, head, labels=None, tokenizer=Tokenizer):
  """Our `params` written as `export-hf` does; returns the directory."""
  out = tmp_path / f"export-{head}"
  out.mkdir()
  tensors = convert.to_hf(params, hf_module.table(config, head), VOCAB)
  hf = {"architectures": [hf_module.ARCHITECTURES[head]]}
  hf.update(hf_module.hf_config(config, VOCAB, tokenizer))
  if head != "pretraining":
    hf = files.task_config(hf, head, labels)
  files.write(str(out), tensors, hf)
  return str(out)


def reload(auto_class, path):
  """`auto_class.from_pretrained(path)`, asserting that every tensor was used and set."""
  model, info = auto_class.from_pretrained(path, output_loading_info=True)
  assert not any(info.values()), info  # missing, unexpected, mismatched, error messages
  return model.eval()


def assert_one_line_error(path, match):
  """`files.read_config(path)` raises one UserError line matching `match`."""
  with pytest.raises(UserError, match=match) as e:
    files.read_config(str(path))
  assert "\n" not in str(e.value)


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
  rng = np.random.default_rng(0)
  # Rows of different lengths, the longest as long as the positions allow.
  ids, mask = padded_batch(rng, LENGTHS, model.config.max_length, pad_id=1)
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)


def test_packed_row_takes_positions_after_the_padding_id(mlm_dir, mlm_imported):
  """Two examples packed in one row (ids 1, 2; positions restart at 0) equal each alone."""
  _, hf_model = mlm_dir
  model, params, _ = mlm_imported
  ids, mask = padded_batch(np.random.default_rng(1), LENGTHS, 38, pad_id=1)
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
  ids, mask = padded_batch(np.random.default_rng(2), LENGTHS, 38, pad_id=1)
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
  _, target = init(config, seed=0)
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
  ids, mask = padded_batch(np.random.default_rng(4), LENGTHS, 38, pad_id=1)
  logits = ours_task(model, params, ids, mask)
  expected = hf_task(hf_model, task, ids, mask)
  assert_close(logits, expected, None if task == "classification" else mask)


def _config(**kwargs):
  """Our config of the checkpoints `_hf_config(**kwargs)` describes (compiles are shared)."""
  hf = roberta_hf.model_kwargs(_hf_config(**kwargs))
  return roberta.RobertaConfig(**{**hf, "vocab_size": 256})


def test_export_reloads_in_transformers_with_equal_logits(tmp_path):
  config = _config()
  ids, mask = padded_batch(np.random.default_rng(5), LENGTHS, 38, pad_id=1)
  model, params = init(config, seed=1)
  path = export(tmp_path, params, roberta_hf, config, "pretraining")
  assert json.loads(open(f"{path}/config.json").read())["architectures"] == ["RobertaForMaskedLM"]
  hf_model = reload(transformers.AutoModelForMaskedLM, path)
  assert type(hf_model).__name__ == "RobertaForMaskedLM"
  hidden, logits = ours_mlm(model, params, ids, mask)
  hf_hidden, hf_logits = hf_mlm(hf_model, ids, mask)
  assert_close(hidden, hf_hidden, mask)
  assert_close(logits, hf_logits, mask)

  config = _config(classifier_dropout=0.3)
  model, params = init(config, "classification", 3, seed=2)
  path = export(tmp_path, params, roberta_hf, config, "classification", ["a", "b", "c"])
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
