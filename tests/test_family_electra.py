"""ELECTRA against Hugging Face's PyTorch ELECTRA: random tiny models built with
`transformers`' own config classes, imported through our table (hidden states, generator
MLM logits, discriminator logits and each fine-tuning head equal within 1e-4), and our
random models exported and reloaded by `transformers` (no missing or unexpected keys, the
same logits).
"""

import types

import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import files
from bert_jax.hf.families import electra as electra_hf
from bert_jax.model import electra
from tests.family_parity import (
  Family,
  check,
  export,
  pair_batch,
  reload,
  state_tensors,
)

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

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
  defaults = dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
  return transformers.ElectraConfig(
    vocab_size=VOCAB, max_position_embeddings=64, attn_implementation="eager", **(defaults | sizes)
  )


FAMILY = Family(electra_hf, VOCAB, POSITIONS)
_random_hf, _our_config, _init = FAMILY.random_hf, FAMILY.our_config, FAMILY.init
_import, _check = FAMILY.import_over_init, FAMILY.check


def _model(cfg, head, labels):
  """`Family.model`, and the discriminator with its inputs."""
  if head == "discriminator":
    return electra.ElectraDiscriminator(cfg), pair_batch(VOCAB)
  return FAMILY.model(cfg, head, labels)


def test_generator_hidden_states_and_mlm_logits_match(tmp_path):
  """A random ElectraForMaskedLM (safetensors) imported completely."""
  hf_model = _random_hf(transformers.ElectraForMaskedLM, _hf_config(**GENERATOR), 0)
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
  hf_model = _random_hf(transformers.ElectraForPreTraining, _hf_config(**DISCRIMINATOR), 1)
  hf_model.save_pretrained(str(tmp_path), safe_serialization=False)
  tensors, ignored = files.read_tensors(str(tmp_path), electra_hf)
  assert ignored == [] and any(n.startswith("discriminator_predictions.") for n in tensors)
  cfg = _our_config(hf_model.config)
  model, args = _model(cfg, "pretraining", None)
  encoder, missing = _import(tensors, model, "pretraining", args)
  assert missing == ["mlm"]
  assert "embeddings_project" not in encoder["bert"]  # E == H

  disc, args = _model(cfg, "discriminator", None)
  params, missing = _import(state_tensors(hf_model, electra_hf), disc, "discriminator", args)
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
  hf_model = _random_hf(getattr(transformers, cls), config, 2)
  assert electra_hf.ARCHITECTURES[head] == cls
  model, args = _model(_our_config(config), head, labels)
  params, missing = _import(state_tensors(hf_model, electra_hf), model, head, args)
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
  params = _init(model, args)
  labels = ["a", "b", "c"] if head == "classification" else None
  path = export(tmp_path / head, params, electra_hf, cfg, head, VOCAB, TOKENIZER, labels)
  hf_model = reload(getattr(transformers, auto_class), path)
  assert type(hf_model).__name__ == electra_hf.ARCHITECTURES[head]
  _check(model, params, args, hf_model, head)


# A pair as Google releases them: a discriminator (E 48 -> H 64) and a generator a half as
# wide (E 48 -> 32: one head, an MLP of 128, the same depth), the embeddings shared.
PAIR_DISCRIMINATOR = dict(embedding_size=48, hidden_size=64, hidden_act="gelu")
PAIR_GENERATOR = dict(
  embedding_size=48, hidden_size=32, num_attention_heads=1, intermediate_size=128, hidden_act="gelu"
)


def _pair(tmp_path, embedding_size=48):
  """A random discriminator (with a WordPiece tokenizer) in tmp_path/hf and its generator,
  which shares its embeddings, in tmp_path/generator.
  """
  from tests import tiny_tokenizers

  hf_dir, generator_dir = tmp_path / "hf", tmp_path / "generator"
  lines = [f"the function {w} returns a sorted list of {w} items" for w in "abcdefghij"] * 3
  hf_dir.mkdir()
  tiny_tokenizers.wordpiece_files(
    lines, hf_dir, config={"tokenizer_class": "ElectraTokenizer"}, vocab_size=VOCAB
  )
  sizes = dict(embedding_size=embedding_size)
  disc = _random_hf(transformers.ElectraForPreTraining, _hf_config(**PAIR_DISCRIMINATOR | sizes), 5)
  config = _hf_config(**PAIR_GENERATOR | sizes)
  generator = _random_hf(transformers.ElectraForMaskedLM, config, 6)
  generator.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
  disc.save_pretrained(str(hf_dir))
  generator.save_pretrained(str(generator_dir))
  return hf_dir, generator_dir, disc, generator


@pytest.mark.slow
@pytest.mark.parametrize("embedding_size", [48, 16])  # 16: narrower than the generator
def test_a_discriminator_and_its_generator_import_as_replaced_token_detection(
  tmp_path, embedding_size
):
  """`import-hf --generator`: one RTD model whose discriminator and generator give the
  Hugging Face models' hidden states and logits; nothing initialised, nothing unused.
  """
  from bert_jax import run as run_lib
  from bert_jax.hf import import_hf

  hf_dir, generator_dir, disc, generator = _pair(tmp_path, embedding_size)
  said = []
  cfg = import_hf.import_hf(
    str(hf_dir), str(tmp_path / "run"), generator_dir=str(generator_dir), log=said.append
  )
  assert cfg.generator_hidden_size == 32
  assert "replaced-token detection" in said[0]
  assert not [line for line in said if "initialised" in line or "not used" in line], said
  assert not [line for line in said if "differ" in line], said  # shared: the same values
  run = run_lib.load(str(tmp_path / "run"))
  assert isinstance(run.model, electra.ElectraForReplacedTokenDetection)
  p = run.params
  args = pair_batch(VOCAB)
  discriminator = {"bert": p["bert"], "discriminator": p["discriminator"]}
  check(electra.ElectraDiscriminator(cfg), discriminator, args, disc, "discriminator", POSITIONS)
  mlm = electra.ElectraForMaskedLM(electra.generator_config(cfg))
  generator_params = {
    "bert": {"embeddings": p["bert"]["embeddings"], **p["generator"]},
    "mlm": p["mlm"],
  }
  check(mlm, generator_params, (*args, POSITIONS), generator, "pretraining", POSITIONS)


def test_a_generator_with_embeddings_of_its_own_is_said_in_one_line():
  from bert_jax.hf import import_hf

  table = {"word": {"embedding": np.zeros((4, 2), np.float32)}}
  said = []
  import_hf._compare_embeddings(table, table, said.append)
  assert said == []
  moved = {"word": {"embedding": np.full((4, 2), 0.25, np.float32)}}
  import_hf._compare_embeddings(moved, table, said.append)
  assert len(said) == 1 and "by up to 0.25" in said[0] and "discriminator's" in said[0]


def test_a_generator_that_does_not_pair_is_one_line():
  discriminator = electra_hf.model_kwargs(_hf_config(**PAIR_DISCRIMINATOR).to_dict())
  generator = _hf_config(**PAIR_GENERATOR).to_dict()
  assert electra_hf.generator_hidden_size(discriminator, generator, "g/config.json") == 32
  for change, message in (
    (dict(num_hidden_layers=3), "num_layers 3 \\(bert_jax's: 2\\)"),
    (dict(intermediate_size=64), "intermediate_size 64 \\(bert_jax's: 128\\)"),
    (dict(hidden_size=96, num_attention_heads=1), "generator_hidden_size=96 must be"),
    (dict(embedding_size=16), "embedding_size 16 \\(bert_jax's: 48\\)"),
  ):
    with pytest.raises(UserError, match=message) as e:
      electra_hf.generator_hidden_size(discriminator, dict(generator, **change), "g/config.json")
    assert "\n" not in str(e.value) and "g/config.json" in str(e.value)


def test_check_config_rejects_what_we_do_not_implement():
  hf = _hf_config(**GENERATOR).to_dict()
  electra_hf.check_config(hf, "config.json")
  with pytest.raises(UserError, match="position_embedding_type='relative_key'") as e:
    electra_hf.check_config(dict(hf, position_embedding_type="relative_key"), "config.json")
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="hidden_act='quick_gelu'"):
    electra_hf.check_config(dict(hf, hidden_act="quick_gelu"), "config.json")
