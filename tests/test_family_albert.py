"""ALBERT against Hugging Face's PyTorch ALBERT: random tiny models built with
`transformers`' own config classes, imported through our table (hidden states, MLM and SOP
logits and each fine-tuning head equal within 1e-4; one shared layer unrolled, and two
groups of two layers scanned), and our random models exported and reloaded by `transformers`
(no missing or unexpected keys, the same logits).
"""

import types

import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import files
from bert_jax.hf.families import albert as albert_hf
from tests.family_parity import (
  Family,
  export,
  reload,
  state_tensors,
)

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")

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


FAMILY = Family(albert_hf, VOCAB, POSITIONS)
_random_hf, _our_config, _init = FAMILY.random_hf, FAMILY.our_config, FAMILY.init
_import, _check = FAMILY.import_over_init, FAMILY.check
_model = FAMILY.model


def test_pretraining_model_matches(tmp_path):
  """AlbertForPreTraining (safetensors): one layer shared along the depth, MLM and SOP."""
  hf_model = _random_hf(transformers.AlbertForPreTraining, _hf_config(**ONE_SHARED_LAYER), 0)
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
  hf_model = _random_hf(transformers.AlbertForMaskedLM, _hf_config(**GROUPS), 1)
  hf_model.save_pretrained(str(tmp_path), safe_serialization=False)
  tensors, ignored = files.read_tensors(str(tmp_path), albert_hf)
  assert ignored == []
  unrolled, args = _model(_our_config(hf_model.config), "pretraining", None)
  scanned, _ = _model(_our_config(hf_model.config, scan_layers=True), "pretraining", None)
  structure = jax.tree_util.tree_structure
  assert structure(_init(scanned, args)) == structure(_init(unrolled, args))  # one layout
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
  hf_model = _random_hf(getattr(transformers, cls), config, 2)
  assert albert_hf.ARCHITECTURES[head] == cls
  model, args = _model(_our_config(config), head, labels)
  params, missing = _import(state_tensors(hf_model, albert_hf), model, head, args)
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
  params = _init(model, args)
  labels = ["a", "b", "c"] if head == "classification" else None
  path = export(tmp_path / head, params, albert_hf, cfg, head, VOCAB, TOKENIZER, labels)
  hf_model = reload(getattr(transformers, auto_class), path)
  assert type(hf_model).__name__ == albert_hf.ARCHITECTURES[head]
  _check(model, params, args, hf_model, head)
  if head == "pretraining":  # what pipeline("fill-mask") loads
    _, info = transformers.AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_check_config_rejects_what_we_do_not_implement():
  hf = _hf_config(**GROUPS).to_dict()
  albert_hf.check_config(hf, "config.json")
  with pytest.raises(UserError, match="hidden_act='quick_gelu'") as e:
    albert_hf.check_config(dict(hf, hidden_act="quick_gelu"), "config.json")
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="num_hidden_groups=5 > num_hidden_layers=3"):
    albert_hf.check_config(dict(hf, num_hidden_groups=5), "config.json")
