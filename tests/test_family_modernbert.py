"""ModernBERT against Hugging Face's PyTorch ModernBERT.

Random tiny models built with `transformers`' own config classes are imported through the
family's table: hidden states, MLM logits and every fine-tuning head equal transformers'
within 1e-4 on padded rows three times longer than the local window. Our random models are
exported and reloaded by `transformers` with no missing or unexpected keys and the same
logits; packed rows equal their examples run alone; what we do not implement is one error
line.

Every model of one shape runs through one jitted function (`family_parity.outputs`,
`family_parity.logits`), so each compiles once.
"""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import convert, files
from bert_jax.hf.families import modernbert as hf_modernbert
from bert_jax.model import attention, modernbert
from tests.family_parity import (
  export,
  logits,
  model_for,
  our_config,
  outputs,
  random_hf_model,
  random_params,
  reload,
  shapes,
)

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install torch)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

VOCAB = 150  # padded to 256 rows in our models
LENGTH = 24  # three times the local window (local_attention=8: |q - k| <= 4)
TOKENS = types.SimpleNamespace(pad_id=0, cls_id=1, sep_id=2, mask_id=3, unk_id=4)
SHAPE = dict(
  vocab_size=VOCAB,
  hidden_size=32,
  num_attention_heads=4,
  intermediate_size=37,
  max_position_embeddings=64,
  local_attention=8,
  global_rope_theta=1000.0,
  local_rope_theta=50.0,  # far from the global theta: a swapped theta shows
  pad_token_id=0,
  bos_token_id=1,
  eos_token_id=2,
  cls_token_id=1,
  sep_token_id=2,
)
CONFIGS = {
  # Defaults: no biases, [CLS] pooling; global layers 0 and 2 of 3.
  "plain": dict(num_hidden_layers=3, global_attn_every_n_layers=2),
  # Every bias on, mean pooling, other activations; global layers 0 and 3 of 4.
  "biases": dict(
    num_hidden_layers=4,
    global_attn_every_n_layers=3,
    norm_bias=True,
    attention_bias=True,
    mlp_bias=True,
    classifier_bias=True,
    classifier_pooling="mean",
    hidden_activation="gelu_pytorch_tanh",
    classifier_activation="silu",
  ),
}
HF_CLASSES = {
  "pretraining": "ModernBertForMaskedLM",
  "classification": "ModernBertForSequenceClassification",
  "tokens": "ModernBertForTokenClassification",
  "qa": "ModernBertForQuestionAnswering",
}
# Masked positions (batch, 4) at real tokens, near and far from the window's reach.
POSITIONS = np.array([[0, 5, 11, 23], [2, 8, 13, 16], [1, 4, 6, 8]])


def _hf_model(name, head="pretraining", num_labels=2, seed=0):
  """A random HF model in eval mode; every parameter (norms and biases too) perturbed."""
  config = transformers.ModernBertConfig(
    **SHAPE, **CONFIGS[name], num_labels=num_labels, attn_implementation="eager"
  )
  return random_hf_model(getattr(transformers, HF_CLASSES[head]), config, seed)


def _batch():
  """(ids, mask) rows of 24, 17 and 9 real tokens: longer than the window, and padded."""
  rng = np.random.default_rng(0)
  ids = rng.integers(5, VOCAB, size=(3, LENGTH)).astype(np.int64)
  mask = np.zeros_like(ids)
  for row, n in enumerate((LENGTH, 17, 9)):
    mask[row, :n] = 1
  ids[mask == 0] = TOKENS.pad_id
  ids[:, 0] = TOKENS.cls_id
  return ids, mask


def _arange(ids):
  return np.broadcast_to(np.arange(ids.shape[1]), ids.shape)


def _our_config(hf_dir):
  """Our config of the checkpoint in `hf_dir` (vocabulary padded to a multiple of 128)."""
  return our_config(hf_modernbert, files.read_config(hf_dir))


def _import(tensors, model, config, head):
  """`tensors` read by the `head` table into params shaped as `model`'s."""
  target = shapes(model, 4 if head == "pretraining" else 3)
  return convert.from_hf(tensors, target, hf_modernbert.table(config, head), VOCAB)


def _mlm(config, params, ids, mask, positions):
  """(hidden states, MLM logits at POSITIONS, sentence logits) of our MLM model."""
  model = model_for(config)
  hidden, (mlm, sentence) = outputs(
    model, params, ids, ids, mask, POSITIONS, position_ids=positions
  )
  return hidden, mlm, sentence


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """{name: (HF ForMaskedLM, our config, params)} of each config: "plain" read from
  model.safetensors, "biases" from pytorch_model.bin.
  """
  out = {}
  for name in CONFIGS:
    hf_model = _hf_model(name)
    hf_dir = str(tmp_path_factory.mktemp(name))
    hf_model.save_pretrained(hf_dir, safe_serialization=name == "plain")
    tensors, ignored = files.read_tensors(hf_dir, hf_modernbert)
    config = _our_config(hf_dir)
    params, missing = _import(tensors, model_for(config), config, "pretraining")
    assert missing == [] and ignored == []
    out[name] = hf_model, config, params
  return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hidden_states_and_mlm_logits_match_transformers(imported, name):
  hf_model, config, params = imported[name]
  ids, mask = _batch()
  with torch.no_grad():
    hidden_hf = hf_model.model(torch.from_numpy(ids), torch.from_numpy(mask)).last_hidden_state
    logits_hf = hf_model(torch.from_numpy(ids), torch.from_numpy(mask)).logits.numpy()
  hidden, logits, sentence = map(np.asarray, _mlm(config, params, ids, mask, _arange(ids)))
  real = mask.astype(bool)
  np.testing.assert_allclose(hidden[real], hidden_hf.numpy()[real], atol=1e-4, rtol=0)
  expected = np.take_along_axis(logits_hf, POSITIONS[..., None], axis=1)
  assert logits.shape == (3, 4, config.vocab_size) and not sentence.any()
  np.testing.assert_allclose(logits[..., :VOCAB], expected, atol=1e-4, rtol=0)
  assert np.all(logits[..., VOCAB:] < -1e3)  # padded vocabulary rows get no probability


@pytest.mark.parametrize("lengths", [(3, 2), (13, 9)])
def test_a_packed_row_equals_its_examples_alone(imported, lengths):
  """Two examples packed into one row, then padding (attention_mask 1.., 2.., 0..; position
  ids restarting): each example's hidden states equal those of the example alone (in a row
  of its own, padded), and those equal transformers' on the example unpadded.
  """
  hf_model, config, params = imported["plain"]
  rng = np.random.default_rng(1)
  examples = [rng.integers(5, VOCAB, size=n) for n in lengths]
  # Row 0: the packed examples; rows 1, 2: each alone.
  ids, mask, positions = (np.zeros((3, LENGTH), np.int64) for _ in range(3))
  start = 0
  for i, example in enumerate(examples):
    n = len(example)
    ids[0, start : start + n], ids[i + 1, :n] = example, example
    mask[0, start : start + n], mask[i + 1, :n] = i + 1, 1
    positions[0, start : start + n] = positions[i + 1, :n] = np.arange(n)
    start += n
  hidden = np.asarray(_mlm(config, params, ids, mask, positions)[0])
  start = 0
  for i, example in enumerate(examples):
    n = len(example)
    with torch.no_grad():
      hf = hf_model.model(torch.from_numpy(example[None])).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden[i + 1, :n], hf[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden[0, start : start + n], hidden[i + 1, :n], atol=1e-5, rtol=0)
    start += n
  # Without the example ids the examples see each other, and the states differ.
  mixed = np.asarray(_mlm(config, params, ids, (mask > 0) * 1, positions)[0])
  assert not np.allclose(mixed[0, : lengths[0]], hidden[0, : lengths[0]], atol=1e-3)


@pytest.mark.parametrize(
  "name,head",
  [
    ("plain", "classification"),  # [CLS] pooling
    ("biases", "classification"),  # mean pooling, biases
    ("biases", "tokens"),
    ("plain", "qa"),
  ],
)
def test_fine_tuning_heads_match_transformers(tmp_path, name, head):
  num_labels = 2 if head == "qa" else 3
  hf_model = _hf_model(name, head, num_labels, seed=1)
  hf_model.save_pretrained(str(tmp_path))
  config = _our_config(str(tmp_path))
  # The head's table reads the class's own names (import-hf reads the MLM table).
  tensors = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  ids, mask = _batch()
  model = model_for(config, head, num_labels)
  params, missing = _import(tensors, model, config, head)
  assert missing == []
  ours = np.asarray(logits(model, params, ids, ids, mask))
  with torch.no_grad():
    out = hf_model(torch.from_numpy(ids), torch.from_numpy(mask))
  if head == "qa":
    expected = np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)
  else:
    expected = out.logits.numpy()
  if head == "classification":
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  else:
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("head", ["pretraining", "classification"])
def test_export_loads_in_transformers_with_equal_logits(imported, tmp_path, name, head):
  """Our random params -> the table -> model.safetensors + config.json -> transformers'
  Auto class: nothing missing, unexpected or mismatched, the same logits; and config.json
  reads back as the same config.
  """
  config = imported[name][1]
  config = modernbert.ModernBertConfig(
    **{**config.__dict__, "hidden_dropout": 0.1, "classifier_dropout": 0.2}
  )
  ids, mask = _batch()
  model = model_for(config, head, 3)
  params = random_params(model, 4 if head == "pretraining" else 3)
  labels = None if head == "pretraining" else ["a", "b", "c"]
  path = export(tmp_path / "out", params, hf_modernbert, config, head, VOCAB, TOKENS, labels)
  auto = {
    "pretraining": transformers.AutoModelForMaskedLM,
    "classification": transformers.AutoModelForSequenceClassification,
  }[head]
  hf_model = reload(auto, path, attn_implementation="eager")  # nothing missing, unexpected
  assert type(hf_model).__name__ == hf_modernbert.ARCHITECTURES[head]
  with torch.no_grad():
    expected = hf_model(torch.from_numpy(ids), torch.from_numpy(mask)).logits.numpy()
  if head == "pretraining":
    ours = np.asarray(_mlm(config, params, ids, mask, _arange(ids))[1])[..., :VOCAB]
    expected = np.take_along_axis(expected, POSITIONS[..., None], axis=1)
  else:
    ours = np.asarray(logits(model, params, ids, ids, mask))
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  saved = json.loads((tmp_path / "out" / "config.json").read_text())
  again = hf_modernbert.model_kwargs(saved)
  assert modernbert.ModernBertConfig(**{**again, "vocab_size": config.vocab_size}) == config
  assert saved["pad_token_id"] == 0 and saved["cls_token_id"] == saved["bos_token_id"] == 1


def test_a_base_model_checkpoint_imports_its_encoder(imported, tmp_path):
  """A `ModernBertModel` (names without `model.`, no head): the encoder as the MLM model's,
  the MLM head reported missing.
  """
  hf_model, config, params = imported["plain"]
  hf_model.model.save_pretrained(str(tmp_path))
  tensors, ignored = files.read_tensors(str(tmp_path), hf_modernbert)
  assert ignored == [] and all(name.startswith("model.") for name in tensors)
  target = jax.tree_util.tree_map(np.zeros_like, params)
  again, missing = convert.from_hf(tensors, target, hf_modernbert.table(config), VOCAB)
  assert missing == ["mlm"]
  for a, b in zip(
    jax.tree_util.tree_leaves(again["bert"]), jax.tree_util.tree_leaves(params["bert"])
  ):
    np.testing.assert_array_equal(a, b)


def test_transformers_4_config_names_read_as_5():
  """config.json of transformers 4.x (global_attn_every_n_layers, *_rope_theta, no
  layer_types / rope_parameters) reads as the same model as 5.x's names.
  """
  config = transformers.ModernBertConfig(**SHAPE, **CONFIGS["plain"]).to_dict()
  assert config["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
  old = {k: v for k, v in config.items() if k not in ("layer_types", "rope_parameters")}
  old.update(global_rope_theta=1000.0, local_rope_theta=50.0)
  new = hf_modernbert.model_kwargs(config)
  assert hf_modernbert.model_kwargs(old) == new
  assert (new["global_attn_every_n_layers"], new["global_rope_theta"]) == (2, 1000.0)
  assert new["local_rope_theta"] == 50.0


@pytest.mark.parametrize(
  "change,message",
  [
    (
      {"layer_types": ["full_attention", "full_attention", "sliding_attention"]},
      "layer_types",
    ),
    (
      {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}},
      "RoPE scaling ['linear']",
    ),
    ({"hidden_activation": "quick_gelu"}, "hidden_activation='quick_gelu'"),
  ],
)
def test_unsupported_settings_are_one_error_line(tmp_path, change, message):
  config = {"model_type": "modernbert", **SHAPE, **CONFIGS["plain"], **change}
  config["num_hidden_layers"] = 3
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError) as e:
    files.read_config(str(tmp_path))
  assert message in str(e.value) and "\n" not in str(e.value)
  assert "ModernBERT does not implement" in str(e.value)


@pytest.mark.parametrize("num_layers,rest", [(7, []), (6, ["layer_4", "layer_5"])])
def test_scanned_layers_export_with_transformers_logits(tmp_path, num_layers, rest):
  """scan_layers: layer_0, then groups of global_attn_every_n_layers (3) layers under one
  scan, then the layers left; `unscan` gives the export, whose `transformers` MLM logits
  equal the scanned model's; `scan_like` lays the unrolled layers out again bit for bit.
  """
  hf = transformers.ModernBertConfig(
    **SHAPE, num_hidden_layers=num_layers, global_attn_every_n_layers=3
  ).to_dict()
  config = our_config(hf_modernbert, hf, scan_layers=True)
  model = model_for(config)
  params = random_params(model, 4)
  encoder = params["bert"]["encoder"]
  assert sorted(encoder) == sorted(["layer_0", "groups", *rest])
  assert sorted(encoder["groups"]) == ["layer_0", "layer_1", "layer_2"]
  groups = (num_layers - 1) // 3
  assert encoder["groups"]["layer_0"]["attn"]["qkv"]["kernel"].shape[0] == groups
  unrolled = convert.unscan(params)
  assert sorted(unrolled["bert"]["encoder"]) == sorted(f"layer_{i}" for i in range(num_layers))
  np.testing.assert_array_equal(  # layer 1 + g n + j is group g's layer_j
    unrolled["bert"]["encoder"]["layer_3"]["mlp"]["wo"]["kernel"],
    encoder["groups"]["layer_2"]["mlp"]["wo"]["kernel"][0],
  )
  again = convert.scan_like(unrolled["bert"]["encoder"], encoder)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, encoder)
  path = export(tmp_path / "out", unrolled, hf_modernbert, config, "pretraining", VOCAB, TOKENS)
  hf_model = reload(transformers.AutoModelForMaskedLM, path, attn_implementation="eager")
  ids, mask = _batch()
  with torch.no_grad():
    expected = hf_model(torch.from_numpy(ids), torch.from_numpy(mask)).logits.numpy()
  ours = np.asarray(_mlm(config, params, ids, mask, _arange(ids))[1])[..., :VOCAB]
  expected = np.take_along_axis(expected, POSITIONS[..., None], axis=1)
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # 10 s of compiling on 2 cores
def test_scanned_gradients_equal_the_unrolled_model_s():
  """A scanned, rematerialised ModernBERT (7 layers: layer 0 and two groups of 3) has the
  unrolled model's MLM loss gradients, laid out by `unscan`.
  """
  hf = transformers.ModernBertConfig(
    **SHAPE, num_hidden_layers=7, global_attn_every_n_layers=3
  ).to_dict()
  scanned_config = our_config(hf_modernbert, hf, scan_layers=True, remat_policy="full")
  scanned = model_for(scanned_config)
  unrolled = model_for(our_config(hf_modernbert, hf))
  params = random_params(scanned, 4)
  ids, mask = _batch()

  def gradients(model, params):
    def loss(params):
      mlm, _ = model.apply({"params": params}, ids, ids * 0, mask, POSITIONS)
      return jax.nn.logsumexp(mlm.astype(jnp.float32), axis=-1).mean()

    return jax.jit(jax.grad(loss))(params)

  ours = convert.unscan(gradients(scanned, params))
  expected = gradients(unrolled, convert.unscan(params))
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), ours, expected
  )


def test_global_and_local_layers_alternate_and_the_window_is_local():
  """Layer kinds by depth; the local mask keeps |q - k| <= local_attention // 2 inside an
  example, and padding queries keep every real key (no empty softmax row).
  """
  config = modernbert.ModernBertConfig(vocab_size=128, num_layers=7, global_attn_every_n_layers=3)
  assert [config.is_global(i) for i in range(7)] == [1, 0, 0, 1, 0, 0, 1]
  mask = jnp.array([[1] * 10 + [2] * 4 + [0] * 2])
  local = np.asarray(attention.AttentionMask(mask, 3).dense())[0, 0]
  q, k = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
  example = np.asarray(mask[0])
  same = (example[q] == example[k]) & (example[k] > 0)
  expected = np.where(example[q] > 0, same & (np.abs(q - k) <= 3), example[k] > 0)
  np.testing.assert_array_equal(local, expected)
