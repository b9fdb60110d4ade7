"""ELECTRA's replaced-token detection (`electra.ElectraForReplacedTokenDetection`,
`train.rtd`): the discriminator's input and labels worked out by hand, the sampler against
the softmax it draws from, the loss against numpy, the gradients the paper's method allows,
and a few steps that lower the loss. The export side (`ElectraForPreTraining` and the
generator's `ElectraForMaskedLM`, both equal to `transformers`) is in test_family_cli.py.
"""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.hf import convert
from bert_jax.model import electra, registry
from bert_jax.train import flops, pretrain, rtd
from bert_jax.train import step as step_lib

VOCAB = 96


def _config(**fields):
  """A tiny discriminator (H 64, E 48) with a generator of 32: both project E."""
  values = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    embedding_size=48,
    generator_hidden_size=32,
    packed_rows=False,
  )
  return electra.ElectraConfig(**{**values, **fields})


def _batch(seed=0, batch=4, length=16, predictions=4):
  """Masked rows as the pipeline makes them: real tokens then padding, [MASK] (id 4) at
  the real predictions; padding predictions at position 0 with id 0 and weight 0.
  """
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, VOCAB, (batch, length)).astype(np.int32)
  lengths = rng.integers(length // 2, length + 1, batch)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids *= mask
  positions = np.zeros((batch, predictions), np.int32)
  weights = np.zeros((batch, predictions), np.float32)
  for b in range(batch):
    real = rng.integers(1, predictions + 1)
    positions[b, :real] = rng.choice(np.arange(1, lengths[b]), real, replace=False)
    weights[b, :real] = 1
  originals = ids[np.arange(batch)[:, None], positions] * (weights > 0)
  masked = ids.copy()
  masked[np.arange(batch)[:, None], positions] = np.where(weights > 0, 4, ids[:, :1])
  return {
    "input_ids": masked,
    "token_type_ids": np.zeros_like(ids),
    "attention_mask": mask,
    "masked_lm_positions": positions,
    "masked_lm_ids": originals.astype(np.int32),
    "masked_lm_weights": weights,
    "next_sentence_labels": -np.ones(batch, np.int32),
  }


def _init(model):
  init = jax.jit(lambda key: model.init({"params": key}, *registry.dummy_inputs(model)))
  return nn.meta.unbox(init(jax.random.key(0))["params"])


def test_replacement_writes_real_predictions_only():
  ids = jnp.array([[2, 4, 9, 4, 3], [2, 4, 7, 3, 0]], jnp.int32)
  positions = jnp.array([[1, 3, 0], [1, 0, 0]], jnp.int32)
  originals = jnp.array([[11, 12, 0], [13, 0, 0]], jnp.int32)
  weights = jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32)
  samples = jnp.array([[11, 30, 31], [40, 41, 42]], jnp.int32)
  corrupted, replaced = electra.replace_masked(ids, positions, originals, weights, samples)
  # Row 0: position 1 sampled its original (11: not replaced), position 3 another token;
  # the padding prediction's sample (31) must not reach [CLS] at position 0.
  np.testing.assert_array_equal(corrupted, [[2, 11, 9, 30, 3], [2, 40, 7, 3, 0]])
  np.testing.assert_array_equal(replaced, [[0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])


def test_sampling_draws_from_the_generators_softmax():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  assert int(electra.sample_tokens(logits)[0]) == 0  # no key: the most likely token
  keys = jax.random.split(jax.random.key(1), 20_000)
  draws = jax.vmap(lambda k: electra.sample_tokens(logits, k)[0])(keys)
  freq = np.bincount(np.asarray(draws), minlength=4) / len(draws)
  np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.012)  # ~3.5 sigma
  # Rows past the tokenizer's pieces pad the matrix: never drawn, however likely.
  padded = jnp.log(jnp.array([[0.05, 0.05, 0.45, 0.45]]))
  assert int(electra.sample_tokens(padded, vocab_size=2)[0]) in (0, 1)
  draws = jax.vmap(lambda k: electra.sample_tokens(padded, k, vocab_size=2)[0])(keys[:2000])
  assert set(np.asarray(draws).tolist()) == {0, 1}


def _numpy_loss(mlm_logits, rtd_logits, replaced, batch, weight):
  """ELECTRA's loss worked out in numpy from the model's outputs."""
  mlm_logits, rtd_logits = np.asarray(mlm_logits, np.float64), np.asarray(rtd_logits, np.float64)
  log_probs = mlm_logits - np.log(np.exp(mlm_logits).sum(-1, keepdims=True))
  w = batch["masked_lm_weights"]
  picked = np.take_along_axis(log_probs, batch["masked_lm_ids"][..., None], -1)[..., 0]
  mlm = -(picked * w).sum() / w.sum()
  y, real = np.asarray(replaced), batch["attention_mask"] > 0
  p = 1 / (1 + np.exp(-rtd_logits))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  return mlm + weight * bce[real].mean(), y[real].mean()


def test_objective_is_electras_loss():
  cfg = _config()
  model = electra.pretraining_model(cfg)
  objective = rtd.objective_for(model)
  assert isinstance(objective, rtd.ReplacedTokenDetection)
  params, batch = _init(model), _batch()
  rng = jax.random.key(7)
  metrics = jax.jit(lambda p: objective.summarize(objective.sums(p, batch, rng, True)))(params)
  # The same forward pass, with the sample key the objective derives from the step's key.
  outputs = jax.jit(
    lambda p: model.apply(
      {"params": p},
      *(batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")),
      *(batch[k] for k in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")),
      deterministic=True,
      sample_key=jax.random.split(rng)[1],
      method="replaced_token_detection",
    )
  )(params)
  loss, share = _numpy_loss(*outputs, batch, cfg.discriminator_weight)
  assert 0 < share < 1  # some real predictions sampled another token, some did not
  np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["rtd_replaced"]), share, rtol=1e-6)
  # The discriminator sees only the real predictions' positions changed.
  _, _, replaced = outputs
  outside = np.ones_like(batch["input_ids"], bool)
  for b, (pos, w) in enumerate(zip(batch["masked_lm_positions"], batch["masked_lm_weights"])):
    outside[b, pos[w > 0]] = False
  assert not np.asarray(replaced)[outside].any()


def test_an_evaluation_samples_the_same_under_either_threefry():
  # The training loop on one CPU draws with the original threefry, `bert-jax evaluate`
  # with the partitionable one: an evaluation's samples (and so its numbers) are the same.
  model = electra.pretraining_model(_config())
  objective = rtd.objective_for(model)
  params, batch = _init(model), _batch()
  evaluate = lambda p: objective.sums(p, batch, None, True)  # noqa: E731
  with jax.threefry_partitionable(False):
    original = jax.jit(evaluate)(params)
  with jax.threefry_partitionable(True):
    partitionable = jax.jit(evaluate)(params)
  assert 0 < float(original["rtd_replaced"]) < float(original["rtd_count"])
  chex.assert_trees_all_equal(original, partitionable)
  # A training step's samples do follow the caller's threefry.
  train = lambda p: objective.sums(p, batch, jax.random.key(1), True)  # noqa: E731
  with jax.threefry_partitionable(False):
    a = jax.jit(train)(params)
  with jax.threefry_partitionable(True):
    b = jax.jit(train)(params)
  assert float(a["rtd_replaced"]) != float(b["rtd_replaced"])


@pytest.mark.slow
def test_the_discriminators_loss_reaches_the_generator_only_through_the_embeddings():
  """The samples are not differentiated (the paper): the RTD loss has no gradient in the
  generator's own layers or MLM head, and one in the shared embeddings.
  """
  model = electra.pretraining_model(_config())
  objective = rtd.objective_for(model)
  params, batch = _init(model), _batch(1)
  rtd_loss = lambda p: objective.sums(p, batch, jax.random.key(3), True)["rtd_loss"]  # noqa: E731
  grads = jax.jit(jax.grad(rtd_loss))(params)
  norms = {k: float(optax.tree.norm(v)) for k, v in grads.items()}
  assert norms["generator"] == 0 and norms["mlm"] == 0, norms
  assert norms["discriminator"] > 0 and norms["bert"] > 0, norms
  assert float(optax.tree.norm(grads["bert"]["embeddings"])) > 0


@pytest.mark.slow
def test_training_steps_lower_both_losses():
  model = electra.pretraining_model(_config())
  objective = rtd.objective_for(model)
  tx = optax.adamw(3e-3)
  params = _init(model)
  state = step_lib.TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params)
  )
  train = jax.jit(
    lambda s, b: step_lib.train_step(
      s, b, jax.random.key(0), objective=objective, tx=tx, schedule=lambda _: 3e-3
    )
  )
  batch = _batch(2)
  first = None
  for _ in range(30):
    state, metrics = train(state, batch)
    first = first or {k: float(v) for k, v in metrics.items()}
  last = {k: float(v) for k, v in metrics.items()}
  assert last["mlm_loss"] < 0.5 * first["mlm_loss"], (first, last)
  assert last["rtd_loss"] < first["rtd_loss"], (first, last)


def test_flops_add_the_generator_to_the_discriminator():
  cfg = _config()
  length, predictions = 16, 4
  generator = electra.generator_config(cfg)
  # By hand: the generator (H 32, one head of 32, MLP 128, its projection 48 -> 32, the MLM
  # head 32 -> 48 and the 48 x 96 decoder at the predictions); the discriminator (H 64,
  # MLP 128, the projection 48 -> 64, its head 64 -> 64 -> 1 at every token).
  assert (generator.hidden_size, generator.num_heads, generator.intermediate_size) == (32, 1, 128)

  def encoder(h, i):
    return length * 2 * (4 * h * h + 2 * h * i + 2 * length * h)

  gen = encoder(32, 128) + length * 48 * 32 + predictions * (32 * 48 + 48 * VOCAB)
  disc = encoder(64, 128) + length * 48 * 64 + length * (64 * 64 + 64)
  assert flops.flops_per_seq(cfg, length, predictions) == 6 * (gen + disc)


@pytest.mark.parametrize(
  ("overrides", "message"),
  [
    ({"generator_hidden_size": 100}, "generator_hidden_size=100"),
    ({"generator_hidden_size": 512}, "at most hidden_size=256"),
    ({"generator_hidden_size": 64, "discriminator_weight": -1.0}, "must be positive"),
  ],
)
def test_a_bad_generator_size_is_one_line(overrides, message):
  c = config_lib.base_config()
  c.model.arch, c.model.size = "electra", "mini"
  for key, value in overrides.items():
    c.model[key] = value
  with pytest.raises(UserError, match=message):
    config_lib.model_config(c, 1000)


def test_generator_settings_belong_to_electra():
  c = config_lib.base_config()
  c.model.size, c.model.generator_hidden_size = "mini", 64
  with pytest.raises(UserError, match="generator_hidden_size does not apply to"):
    config_lib.model_config(c, 1000)


def test_without_a_generator_electra_pretrains_masked_lm():
  cfg = dataclasses.replace(_config(), generator_hidden_size=None)
  model = electra.pretraining_model(cfg)
  assert isinstance(model, electra.ElectraForMaskedLM)
  assert isinstance(rtd.objective_for(model), step_lib.Pretraining)
  # A new run says so in one line, and one from a discriminator alone (its MLM head new);
  # a continued generator (init_from) and the recipe say nothing.
  note = pretrain.mlm_alone_note(cfg, None)
  assert "masked LM alone" in note and "configs/electra.py" in note and "\n" not in note
  assert pretrain.mlm_alone_note(cfg, init=("run", 10, {})) is None
  assert pretrain.mlm_alone_note(cfg, init=("run", 0, {"initialized": []})) is None
  note = pretrain.mlm_alone_note(cfg, init=("run", 0, {"initialized": ["mlm"]}))
  assert "discriminator without its generator" in note and "--generator" in note
  assert pretrain.mlm_alone_note(_config(), None) is None
  bert = config_lib.model_config(config_lib.base_config(), 1000)
  assert pretrain.mlm_alone_note(bert, None) is None


@pytest.mark.slow
def test_scanned_layers_unscan_for_export():
  """A scanned RTD model (discriminator and generator layers stacked) and the unrolled
  model on `convert.unscan`'s tree give the same losses: the export's tables see both
  encoders' layers.
  """
  scanned = electra.pretraining_model(_config(scan_layers=True))
  unrolled = electra.pretraining_model(_config())
  params, batch = _init(scanned), _batch(3)
  flat = convert.unscan(params)
  assert set(flat["generator"]["encoder"]) == {"layer_0", "layer_1"}
  assert set(flat["bert"]["encoder"]) == {"layer_0", "layer_1"}

  def losses(model, p):
    objective = rtd.objective_for(model)
    return jax.jit(
      lambda p: objective.summarize(objective.sums(p, batch, jax.random.key(5), True))
    )(p)

  a, b = losses(scanned, params), losses(unrolled, flat)
  for key in ("mlm_loss", "rtd_loss"):
    np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-5)
