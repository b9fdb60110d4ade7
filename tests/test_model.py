"""The encoder: shapes, logical axis names on every parameter, and the math of one layer
checked against a plain-numpy BERT layer written from the paper.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from bert_jax import config as config_lib
from bert_jax.model import bert, pretraining
from tests.conftest import random_batch

TINY = bert.BertConfig(
  vocab_size=512,
  hidden_size=64,
  num_layers=2,
  num_heads=2,
  intermediate_size=256,
  max_position_embeddings=64,
)


def _init(cfg, batch):
  model = pretraining.BertForPreTraining(cfg)
  variables = model.init(
    jax.random.key(0),
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    batch["masked_lm_positions"],
  )
  return model, variables


@pytest.mark.parametrize("scan", [False, True])
def test_output_shapes_and_every_param_named(scan):
  cfg = TINY.__class__(**{**TINY.__dict__, "scan_layers": scan})
  batch = random_batch(np.random.default_rng(0), 3)
  model, variables = _init(cfg, batch)
  leaves = jax.tree_util.tree_leaves(
    variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  assert all(len(x.names) == x.value.ndim for x in leaves)
  mlm, nsp = model.apply(
    nn.meta.unbox(variables),
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    batch["masked_lm_positions"],
  )
  assert mlm.shape == (3, 5, 512) and mlm.dtype == jnp.float32
  assert nsp.shape == (3, 2)


def test_size_presets():
  for name, (layers, hidden) in config_lib.SIZES.items():
    c = config_lib.base_config()
    c.model.size = name
    m = config_lib.model_config(c, 30522)
    assert (m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (
      layers,
      hidden,
      hidden // 64,
      4 * hidden,
    )


def _np_layer_norm(x, p, eps=1e-12):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(x):
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _np_bert(p, ids, types, mask, cfg):
  """BERT encoder in numpy, written from Devlin et al. / the HF PyTorch code."""
  e = p["embeddings"]
  pos = np.arange(ids.shape[1])
  x = (
    e["word"]["embedding"][ids]
    + e["position"]["embedding"][pos]
    + e["token_type"]["embedding"][types]
  )
  x = _np_layer_norm(x, e["layer_norm"])
  bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
  for i in range(cfg.num_layers):
    lp = p["encoder"][f"layer_{i}"]
    a = lp["attention"]
    q, k, v = (
      np.einsum("btd,dnh->btnh", x, a[n]["kernel"]) + a[n]["bias"]
      for n in ("query", "key", "value")
    )
    s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(cfg.head_dim) + bias
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    y = np.einsum("bnts,bsnh->btnh", s, v)
    y = np.einsum("btnh,nhd->btd", y, a["output"]["kernel"]) + a["output"]["bias"]
    x = _np_layer_norm(x + y, a["layer_norm"])
    m = lp["mlp"]
    h = _np_gelu(x @ m["intermediate"]["kernel"] + m["intermediate"]["bias"])
    x = _np_layer_norm(x + h @ m["output"]["kernel"] + m["output"]["bias"], m["layer_norm"])
  pooled = np.tanh(x[:, 0] @ p["pooler"]["kernel"] + p["pooler"]["bias"])
  return x, pooled


def test_encoder_matches_numpy_reference():
  batch = random_batch(np.random.default_rng(1), 4)
  model, variables = _init(TINY, batch)
  params = nn.meta.unbox(variables)["params"]
  hidden, pooled = model.apply(
    {"params": params},
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    method=model.encode,
  )
  np_params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  ref_hidden, ref_pooled = _np_bert(
    np_params["bert"], batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], TINY
  )
  real = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(hidden)[real], ref_hidden[real], atol=2e-5)
  np.testing.assert_allclose(pooled, ref_pooled, atol=2e-5)


def test_mlm_head_is_tied_to_word_embeddings():
  batch = random_batch(np.random.default_rng(2), 2)
  model, variables = _init(TINY, batch)
  params = nn.meta.unbox(variables)["params"]
  assert "decoder" not in str(jax.tree_util.tree_structure(params["mlm"]))
  hidden, _ = model.apply(
    {"params": params},
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    method=model.encode,
  )
  gathered = np.take_along_axis(np.asarray(hidden), batch["masked_lm_positions"][..., None], 1)
  m = jax.tree_util.tree_map(np.asarray, params["mlm"])
  h = _np_layer_norm(
    _np_gelu(gathered @ m["transform"]["kernel"] + m["transform"]["bias"]), m["layer_norm"]
  )
  expected = h @ np.asarray(params["bert"]["embeddings"]["word"]["embedding"]).T + m["bias"]
  mlm, _ = model.apply(
    {"params": params},
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    batch["masked_lm_positions"],
  )
  np.testing.assert_allclose(mlm, expected, atol=1e-4)


def test_scan_equals_unrolled():
  batch = random_batch(np.random.default_rng(3), 2)
  model, variables = _init(TINY, batch)
  params = nn.meta.unbox(variables)["params"]
  scanned_cfg = bert.BertConfig(**{**TINY.__dict__, "scan_layers": True})
  enc = params["bert"]["encoder"]
  stacked = jax.tree_util.tree_map(
    lambda *xs: jnp.stack(xs), *[enc[f"layer_{i}"] for i in range(TINY.num_layers)]
  )
  scanned_params = {**params, "bert": {**params["bert"], "encoder": {"layers": stacked}}}
  scanned = pretraining.BertForPreTraining(scanned_cfg)
  args = (
    batch["input_ids"],
    batch["token_type_ids"],
    batch["attention_mask"],
    batch["masked_lm_positions"],
  )
  np.testing.assert_allclose(
    model.apply({"params": params}, *args)[0],
    scanned.apply({"params": scanned_params}, *args)[0],
    atol=1e-5,
  )


@pytest.mark.parametrize(("hidden", "heads"), [(32, 1), (100, 1), (768, 12), (129, None)])
def test_heads_are_one_per_64_of_the_width(hidden, heads):
  from bert_jax.errors import UserError

  c = config_lib.base_config()
  c.model.size, c.model.hidden_size = "tiny", hidden
  if heads is None:  # two heads of 64.5: refused in one line, not a crash
    with pytest.raises(UserError, match="hidden_size=129 does not split into 2 attention"):
      config_lib.model_config(c, 128)
    return
  m = config_lib.model_config(c, 128)
  assert (m.num_heads, m.head_dim) == (heads, hidden // heads)


def test_model_pads_the_vocab_to_a_multiple_of_128():
  c = config_lib.base_config()
  c.model.size = "tiny"
  assert config_lib.model_config(c, 30522).vocab_size == 30592 == 239 * 128
  assert config_lib.model_config(c, 128).vocab_size == 128
  c.model.vocab_multiple = 1
  assert config_lib.model_config(c, 30522).vocab_size == 30522


@pytest.mark.parametrize(
  ("key", "value", "refused"),
  [
    ("num_layers", 6, "num_layers 2"),
    ("hidden_size", 128, "hidden_size 64"),
    ("max_position_embeddings", 1024, "max_position_embeddings 64"),
    ("embedding_size", 32, "no embedding_size"),
    ("num_layers", 2, None),  # the checkpoint's own value: nothing to refuse
  ],
)
def test_a_shape_given_with_size_checkpoint_is_refused_not_ignored(key, value, refused):
  from bert_jax.errors import UserError

  c = config_lib.base_config()
  c.model.size = "checkpoint"
  c.data.max_seq_length = 32
  c.model[key] = value
  checkpoint = config_lib.model_dict(TINY)
  if refused is None:
    assert config_lib.model_config(c, 512, checkpoint).num_layers == TINY.num_layers
    return
  with pytest.raises(UserError, match=f"config.model.{key}={value}, but .*{refused}"):
    config_lib.model_config(c, 512, checkpoint)


@pytest.mark.slow  # 12-22 CPU-s: the fast tier's largest
@pytest.mark.parametrize("scan", [False, True])
def test_a_packed_row_equals_its_examples_run_alone(scan):
  """Three examples packed into one row (attention_mask = example index, position ids
  restarting) give each example's hidden states exactly as it has alone.
  """
  cfg = TINY.__class__(**{**TINY.__dict__, "scan_layers": scan})
  model = bert.Bert(cfg)
  rng = np.random.default_rng(1)
  lengths, total = [7, 12, 5], 32
  examples = [rng.integers(5, cfg.vocab_size, size=n).astype(np.int32) for n in lengths]
  ids = np.zeros((1, total), np.int32)
  mask = np.zeros((1, total), np.int32)
  positions = np.zeros((1, total), np.int32)
  start = 0
  for i, example in enumerate(examples):
    ids[0, start : start + len(example)] = example
    mask[0, start : start + len(example)] = i + 1
    positions[0, start : start + len(example)] = np.arange(len(example))
    start += len(example)
  params = nn.meta.unbox(model.init(jax.random.key(0), ids))
  packed, _ = model.apply(params, ids, None, mask, positions)
  start = 0
  for example in examples:
    alone, _ = model.apply(params, example[None], None, np.ones((1, len(example)), np.int32))
    np.testing.assert_allclose(
      packed[0, start : start + len(example)], alone[0], rtol=1e-5, atol=1e-5
    )
    start += len(example)
  # Without the example ids the examples see each other, and the states differ.
  mixed, _ = model.apply(params, ids, None, (mask > 0).astype(np.int32), positions)
  assert not np.allclose(mixed[0, :7], packed[0, :7], atol=1e-3)
