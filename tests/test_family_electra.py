"""ELECTRA against Hugging Face's PyTorch ELECTRA: random tiny models built with
`transformers`' own config classes, imported through our table (hidden states, generator
MLM logits, discriminator logits and each fine-tuning head equal within 1e-4), and our
random models exported and reloaded by `transformers` (no missing or unexpected keys, the
same logits).
"""

import functools
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import convert, files
from bert_jax.hf.families import electra as electra_hf
from bert_jax.model import electra, tasks

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.logging.set_verbosity_error()

VOCAB = 203  # padded to 256 in our models
TOKENIZER = types.SimpleNamespace(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
# The generator's shape (embedding_size < hidden_size: the projection) and the
# discriminator's (equal sizes, no projection). Activations other than exact GELU show that
# the generator and classification heads use exact GELU whatever hidden_act is, and the
# discriminator's head hidden_act.
GENERATOR = dict(embedding_size=16, hidden_size=32, hidden_act="gelu_new")
DISCRIMINATOR = dict(embedding_size=32, hidden_size=32, hidden_act="relu")
POSITIONS = np.array([[1, 5, 11], [0, 4, 8], [1, 2, 4]], np.int32)  # non-padding tokens


def _hf_config(**sizes):
  return transformers.ElectraConfig(
    vocab_size=VOCAB,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    attn_implementation="eager",
    **sizes,
  )


def _batch():
  """Pairs with token types, padded: rows of 12, 9 and 5 tokens."""
  rng = np.random.default_rng(0)
  lengths = np.array([12, 9, 5])
  mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, VOCAB, size=(3, 12)).astype(np.int32) * mask
  types_ = ((np.arange(12)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
  return ids, types_, mask


def _hf_model(cls, config, seed):
  """A random `cls` in eval mode: every parameter (biases and LayerNorms too) moved by
  N(0, 0.2) noise, so that each one matters at 1e-4 (Hugging Face's init is N(0, 0.02) with
  zero biases).
  """
  torch.manual_seed(seed)
  hf_model = cls(config).eval()
  with torch.no_grad():
    for value in hf_model.parameters():  # tied tensors once
      value.add_(0.2 * torch.randn_like(value))
  return hf_model


def _torch(array):
  return torch.from_numpy(array.astype(np.int64))


def _our_config(hf_config):
  kwargs = electra_hf.model_kwargs(hf_config.to_dict())
  return electra.ElectraConfig(**dict(kwargs, vocab_size=-(-kwargs["vocab_size"] // 128) * 128))


def _model(cfg, head, labels):
  """Our module for `head` and its inputs."""
  ids, types_, mask = _batch()
  if head == "pretraining":
    return electra.ElectraForMaskedLM(cfg), (ids, types_, mask, POSITIONS)
  if head == "discriminator":
    return electra.ElectraDiscriminator(cfg), (ids, types_, mask)
  return tasks.ForTask(cfg, head, labels), (ids, types_, mask)


@functools.cache
def _shapes(model, num_args):
  """`model`'s parameter shapes, boxed with their axis names (traced once per model)."""
  args = (*_batch(), POSITIONS)[:num_args]
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *args)["params"])


def _init(model, *args):
  """Random parameters of `model` (numpy, from its shapes: no compile), each with logical
  axis names; LayerNorm scales near 1, everything else N(0, 0.2).
  """
  boxed = _shapes(model, len(args))
  flat = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for _, leaf in flat)  # every param named
  rng = np.random.default_rng(len(flat))

  def value(path, leaf):
    shape = leaf.value.shape
    base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return (base + rng.normal(0.0, 0.2, shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(
    value, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model, params, *args):
  """(last hidden states, the model's outputs): one compile per model and shapes."""
  variables = {"params": params}
  hidden, _ = model.apply(variables, *args[:3], method=lambda m, *a: m.bert(*a))
  return hidden, model.apply(variables, *args)


def _merge(base, new):
  """`base` with the leaves of `new` (from_hf returns only the table's parameters)."""
  if not isinstance(base, dict):
    return new
  return {k: _merge(v, new[k]) if k in new else v for k, v in base.items()}


def _state_tensors(hf_model):
  """The model's tensors as the tables name them, heads included (import lists those)."""
  tensors = {}
  for name, value in hf_model.state_dict().items():
    ours = electra_hf.tensor_name(name)
    if ours != "":
      tensors[ours or name] = value.float().numpy()
  return tensors


def _import(tensors, model, head, args):
  target = _init(model, *args)
  params, missing = convert.from_hf(tensors, target, electra_hf.table(model.config, head), VOCAB)
  return _merge(target, params), missing


def _assert_close(ours, theirs):
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-4, rtol=0)


def _check(model, params, args, hf_model, head):
  """Our last hidden states and `head`'s logits equal the Hugging Face model's, at the
  tokens that are not padding.
  """
  ids, types_, mask = args[:3]
  with torch.no_grad():
    out = hf_model(
      _torch(ids),
      attention_mask=_torch(mask),
      token_type_ids=_torch(types_),
      output_hidden_states=True,
    )
  hidden, logits = jax.tree_util.tree_map(np.asarray, _outputs(model, params, *args))
  real = mask.astype(bool)
  _assert_close(hidden[real], out.hidden_states[-1].numpy()[real])
  if head == "pretraining":
    mlm, sentence = logits
    _assert_close(mlm[..., :VOCAB], np.take_along_axis(out.logits.numpy(), POSITIONS[..., None], 1))
    assert np.array_equal(sentence, np.zeros((len(ids), 2)))
  elif head == "qa":
    _assert_close(logits[..., 0][real], out.start_logits.numpy()[real])
    _assert_close(logits[..., 1][real], out.end_logits.numpy()[real])
  elif head == "classification":
    _assert_close(logits, out.logits.numpy())
  else:  # tokens, discriminator: a logit per token
    _assert_close(logits[real], out.logits.numpy()[real])


def test_generator_hidden_states_and_mlm_logits_match(tmp_path):
  """A random ElectraForMaskedLM (safetensors) imported completely."""
  hf_model = _hf_model(transformers.ElectraForMaskedLM, _hf_config(**GENERATOR), 0)
  hf_model.save_pretrained(str(tmp_path))
  tensors, ignored = files.read_tensors(str(tmp_path), electra_hf)
  assert ignored == []
  model, args = _model(_our_config(hf_model.config), "pretraining", None)
  params, missing = _import(tensors, model, "pretraining", args)
  assert missing == []
  assert "embeddings_project" in params["bert"]  # E != H
  assert params["mlm"]["bias"][VOCAB:].max() < -1e3  # padded ids get no probability
  _check(model, params, args, hf_model, "pretraining")


def test_discriminator_checkpoint_imports_its_encoder_and_head(tmp_path):
  """An ElectraForPreTraining as pytorch_model.bin: the encoder read, its head listed as
  not used and the MLM head initialised; its head through the "discriminator" table.
  """
  hf_model = _hf_model(transformers.ElectraForPreTraining, _hf_config(**DISCRIMINATOR), 1)
  hf_model.save_pretrained(str(tmp_path), safe_serialization=False)
  tensors, ignored = files.read_tensors(str(tmp_path), electra_hf)
  assert ignored and all(n.startswith("discriminator_predictions.") for n in ignored)
  cfg = _our_config(hf_model.config)
  model, args = _model(cfg, "pretraining", None)
  encoder, missing = _import(tensors, model, "pretraining", args)
  assert missing == ["mlm"]
  assert "embeddings_project" not in encoder["bert"]  # E == H

  disc, args = _model(cfg, "discriminator", None)
  params, missing = _import(_state_tensors(hf_model), disc, "discriminator", args)
  assert missing == []
  _check(disc, params, args, hf_model, "discriminator")
  jax.tree_util.tree_map(np.testing.assert_array_equal, encoder["bert"], params["bert"])


@pytest.mark.parametrize(
  "head, cls, labels",
  [
    ("classification", "ElectraForSequenceClassification", 3),
    ("tokens", "ElectraForTokenClassification", 2),
    ("qa", "ElectraForQuestionAnswering", 2),
  ],
)
def test_fine_tuning_heads_match(head, cls, labels):
  config = _hf_config(**GENERATOR)
  config.num_labels = labels
  hf_model = _hf_model(getattr(transformers, cls), config, 2)
  assert electra_hf.ARCHITECTURES[head] == cls
  model, args = _model(_our_config(config), head, labels)
  params, missing = _import(_state_tensors(hf_model), model, head, args)
  assert missing == []
  _check(model, params, args, hf_model, head)


@pytest.mark.parametrize(
  "head, shape, auto_class",
  [
    ("pretraining", GENERATOR, "AutoModelForMaskedLM"),
    ("discriminator", DISCRIMINATOR, "AutoModelForPreTraining"),
    ("classification", GENERATOR, "AutoModelForSequenceClassification"),
  ],
)
def test_export_loads_in_transformers_with_the_same_logits(head, shape, auto_class, tmp_path):
  """Our random parameters -> the table -> transformers: every tensor used, none missing,
  the same logits (the models of the import tests: compiled once).
  """
  cfg = _our_config(_hf_config(**shape))
  model, args = _model(cfg, head, 3)
  params = _init(model, *args)
  tensors = convert.to_hf(params, electra_hf.table(cfg, head), VOCAB)
  config = {"architectures": [electra_hf.ARCHITECTURES[head]]}
  config.update(electra_hf.hf_config(cfg, VOCAB, TOKENIZER))
  if head == "classification":
    config = files.task_config(config, head, ["a", "b", "c"])
  files.write(str(tmp_path), tensors, config)
  hf_model, info = getattr(transformers, auto_class).from_pretrained(
    str(tmp_path), output_loading_info=True
  )
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched
  assert type(hf_model).__name__ == electra_hf.ARCHITECTURES[head]
  _check(model, params, args, hf_model.eval(), head)


def test_check_config_rejects_what_we_do_not_implement():
  hf = _hf_config(**GENERATOR).to_dict()
  electra_hf.check_config(hf, "config.json")
  with pytest.raises(UserError, match="position_embedding_type='relative_key'") as e:
    electra_hf.check_config(dict(hf, position_embedding_type="relative_key"), "config.json")
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="hidden_act='quick_gelu'"):
    electra_hf.check_config(dict(hf, hidden_act="quick_gelu"), "config.json")
