"""ALBERT against Hugging Face's PyTorch ALBERT: random tiny models built with
`transformers`' own config classes, imported through our table (hidden states, MLM and SOP
logits and each fine-tuning head equal within 1e-4; one shared layer unrolled, and two
groups of two layers scanned), and our random models exported and reloaded by `transformers`
(no missing or unexpected keys, the same logits).
"""

import functools
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import convert, files
from bert_jax.hf.families import albert as albert_hf
from bert_jax.model import albert, tasks

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.logging.set_verbosity_error()

VOCAB = 211  # padded to 256 in our models
TOKENIZER = types.SimpleNamespace(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
ONE_SHARED_LAYER = dict(num_hidden_layers=2, num_hidden_groups=1, inner_group_num=1)
GROUPS = dict(num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu")
POSITIONS = np.array([[1, 5, 11], [0, 4, 8], [1, 2, 4]], np.int32)  # non-padding tokens


def _hf_config(**shape):
  return transformers.AlbertConfig(
    vocab_size=VOCAB,
    embedding_size=16,
    hidden_size=32,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    attn_implementation="eager",
    **shape,
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


def _our_config(hf_config, **changes):
  kwargs = albert_hf.model_kwargs(hf_config.to_dict())
  vocab = -(-kwargs["vocab_size"] // 128) * 128
  return albert.AlbertConfig(**dict(kwargs, vocab_size=vocab, **changes))


def _model(cfg, head, labels):
  """Our module for `head` and its inputs."""
  ids, types_, mask = _batch()
  if head == "pretraining":
    return albert.AlbertForPreTraining(cfg), (ids, types_, mask, POSITIONS)
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
    ours = albert_hf.tensor_name(name)
    if ours != "":
      tensors[ours or name] = value.float().numpy()
  return tensors


def _import(tensors, model, head, args):
  target = _init(model, *args)
  params, missing = convert.from_hf(tensors, target, albert_hf.table(model.config, head), VOCAB)
  return _merge(target, params), missing


def _assert_close(ours, theirs):
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-4, rtol=0)


def _check(model, params, args, hf_model, head):
  """Our last hidden states and `head`'s logits equal the Hugging Face model's, at the
  tokens that are not padding (pretraining: MLM, and SOP where `hf_model` has it).
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
    mlm, sop = logits
    theirs = out.prediction_logits if hasattr(out, "sop_logits") else out.logits
    _assert_close(mlm[..., :VOCAB], np.take_along_axis(theirs.numpy(), POSITIONS[..., None], 1))
    if hasattr(out, "sop_logits"):
      _assert_close(sop, out.sop_logits.numpy())
  elif head == "qa":
    _assert_close(logits[..., 0][real], out.start_logits.numpy()[real])
    _assert_close(logits[..., 1][real], out.end_logits.numpy()[real])
  elif head == "classification":
    _assert_close(logits, out.logits.numpy())
  else:
    _assert_close(logits[real], out.logits.numpy()[real])


def test_pretraining_model_matches(tmp_path):
  """AlbertForPreTraining (safetensors): one layer shared along the depth, MLM and SOP."""
  hf_model = _hf_model(transformers.AlbertForPreTraining, _hf_config(**ONE_SHARED_LAYER), 0)
  hf_model.save_pretrained(str(tmp_path))
  tensors, ignored = files.read_tensors(str(tmp_path), albert_hf)
  assert ignored == []
  model, args = _model(_our_config(hf_model.config), "pretraining", None)
  params, missing = _import(tensors, model, "pretraining", args)
  assert missing == []
  assert list(params["bert"]["encoder"]) == ["group_0"]  # stored once
  _check(model, params, args, hf_model, "pretraining")


def test_groups_of_layers_match_scanned(tmp_path):
  """AlbertForMaskedLM (pytorch_model.bin): two groups of two layers over a depth of
  three (group 0 twice, group 1 once), scanned (the unrolled depth: the test above); no
  pooler nor SOP head in the checkpoint.
  """
  hf_model = _hf_model(transformers.AlbertForMaskedLM, _hf_config(**GROUPS), 1)
  hf_model.save_pretrained(str(tmp_path), safe_serialization=False)
  tensors, ignored = files.read_tensors(str(tmp_path), albert_hf)
  assert ignored == []
  unrolled, args = _model(_our_config(hf_model.config), "pretraining", None)
  scanned, _ = _model(_our_config(hf_model.config, scan_layers=True), "pretraining", None)
  structure = jax.tree_util.tree_structure
  assert structure(_init(scanned, *args)) == structure(_init(unrolled, *args))  # one layout
  params, missing = _import(tensors, scanned, "pretraining", args)
  assert missing == ["pooler", "sop"]
  assert sorted(params["bert"]["encoder"]) == ["group_0", "group_1"]
  assert sorted(params["bert"]["encoder"]["group_1"]) == ["layer_0", "layer_1"]
  _check(scanned, params, args, hf_model, "pretraining")


@pytest.mark.parametrize(
  "head, cls, labels",
  [
    ("classification", "AlbertForSequenceClassification", 3),
    ("tokens", "AlbertForTokenClassification", 2),
    ("qa", "AlbertForQuestionAnswering", 2),
  ],
)
def test_fine_tuning_heads_match(head, cls, labels):
  config = _hf_config(**ONE_SHARED_LAYER)
  config.num_labels = labels
  hf_model = _hf_model(getattr(transformers, cls), config, 2)
  assert albert_hf.ARCHITECTURES[head] == cls
  model, args = _model(_our_config(config), head, labels)
  params, missing = _import(_state_tensors(hf_model), model, head, args)
  assert missing == []
  _check(model, params, args, hf_model, head)


@pytest.mark.parametrize(
  "head, auto_class",
  [
    ("pretraining", "AutoModelForPreTraining"),
    ("classification", "AutoModelForSequenceClassification"),
  ],
)
def test_export_loads_in_transformers_with_the_same_logits(head, auto_class, tmp_path):
  """Our random parameters -> the table -> transformers: every tensor used, none missing,
  the same logits (the models of the import tests: compiled once).
  """
  cfg = _our_config(_hf_config(**ONE_SHARED_LAYER))
  model, args = _model(cfg, head, 3)
  params = _init(model, *args)
  tensors = convert.to_hf(params, albert_hf.table(cfg, head), VOCAB)
  config = {"architectures": [albert_hf.ARCHITECTURES[head]]}
  config.update(albert_hf.hf_config(cfg, VOCAB, TOKENIZER))
  if head == "classification":
    config = files.task_config(config, head, ["a", "b", "c"])
  files.write(str(tmp_path), tensors, config)
  hf_model, info = getattr(transformers, auto_class).from_pretrained(
    str(tmp_path), output_loading_info=True
  )
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched
  assert type(hf_model).__name__ == albert_hf.ARCHITECTURES[head]
  _check(model, params, args, hf_model.eval(), head)
  if head == "pretraining":  # what pipeline("fill-mask") loads
    _, info = transformers.AutoModelForMaskedLM.from_pretrained(
      str(tmp_path), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_check_config_rejects_what_we_do_not_implement():
  hf = _hf_config(**GROUPS).to_dict()
  albert_hf.check_config(hf, "config.json")
  with pytest.raises(UserError, match="hidden_act='quick_gelu'") as e:
    albert_hf.check_config(dict(hf, hidden_act="quick_gelu"), "config.json")
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="num_hidden_groups=5 > num_hidden_layers=3"):
    albert_hf.check_config(dict(hf, num_hidden_groups=5), "config.json")
