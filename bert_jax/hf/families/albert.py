"""ALBERT's Hugging Face side: config.json, tensor names and the tables
(`AlbertForPreTraining` names: `albert.` prefix, `predictions.*` MLM head with the decoder
tied to the word embeddings, `sop_classifier.classifier.*` sentence-order head).

The shared layers: Hugging Face's `albert.encoder.albert_layer_groups.{g}.albert_layers.{j}`
is our `bert/encoder/group_{g}/layer_{j}` (stored once, applied along the depth).
`AlbertModel` checkpoints have no `albert.` prefix; `AlbertForMaskedLM` has no pooler nor
SOP head (both start initialised).
"""

from bert_jax.errors import UserError
from bert_jax.hf.convert import Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.hf.families import common

ARCH = "albert"
MODEL_TYPES = ("albert",)
GROUPS = {
  "pooler": "pooler (albert.pooler.*)",
  "mlm": "MLM head (predictions.*)",
  "sop": "SOP head (sop_classifier.*)",
}
REQUIRED = bert_hf.REQUIRED
_OPTIONAL_SIZES = (
  "embedding_size",
  "num_hidden_groups",
  "inner_group_num",
  "max_position_embeddings",
  "type_vocab_size",
)
_PARTS = ("embeddings.", "encoder.", "pooler.")
# Buffers, and the decoder weight tied to the word embeddings.
_SKIPPED = ("embeddings.position_ids", "embeddings.token_type_ids", "predictions.decoder.weight")


def check_config(hf: dict, path: str) -> None:
  """UserError for an ALBERT config.json our model cannot run."""
  common.check_bert_like(hf, path, "ALBERT", REQUIRED, _OPTIONAL_SIZES, act_default="gelu_new")
  groups, layers = hf.get("num_hidden_groups", 1), hf["num_hidden_layers"]
  if groups > layers:
    raise UserError(
      f"{path} has num_hidden_groups={groups} > num_hidden_layers={layers}: groups no layer "
      f"runs; restore the checkpoint's config.json"
    )


def model_kwargs(hf: dict) -> dict:
  """AlbertConfig keyword arguments (before vocabulary padding) of a checked config.json."""
  kwargs = common.bert_kwargs(
    hf, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, hidden_act="gelu_new"
  )
  hidden_dropout = kwargs["hidden_dropout"]
  classifier_dropout = hf.get("classifier_dropout_prob", 0.1)
  return dict(
    kwargs,
    embedding_size=hf.get("embedding_size", 128),
    num_hidden_groups=hf.get("num_hidden_groups", 1),
    inner_group_num=hf.get("inner_group_num", 1),
    classifier_dropout=hidden_dropout if classifier_dropout is None else classifier_dropout,
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` (an `AlbertConfig`) with `vocab_size` real rows.

  `tokenizer` gives the [PAD], [CLS] and [SEP] ids; `architectures` is set by the caller.
  """
  return {
    **common.bert_hf_config(model, "albert", vocab_size, tokenizer.pad_id),
    "embedding_size": model.embedding_size,
    "num_hidden_groups": model.num_hidden_groups,
    "inner_group_num": model.inner_group_num,
    "classifier_dropout_prob": model.classifier_dropout,
    "bos_token_id": tokenizer.cls_id,
    "eos_token_id": tokenizer.sep_id,
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the tables name it ("" to skip, None unused).

  Adds the `albert.` prefix of `AlbertModel` checkpoints, renames TF's `LayerNorm.gamma` /
  `beta`, and reads the tied decoder bias as `predictions.bias`.
  """
  used = ("albert.", "predictions.", "sop_classifier.")
  # The decoder bias is the same tensor as predictions.bias (tied).
  renames = [("predictions.decoder.bias", "predictions.bias")]
  return common.tensor_name(name, "albert.", _PARTS, _SKIPPED, used, renames, tf_names=True)


# ALBERT's names of a layer's modules (`common.BERT_LAYER`'s order).
_LAYER = (
  "attention.query",
  "attention.key",
  "attention.value",
  "attention.dense",
  "attention.LayerNorm",
  "ffn",
  "ffn_output",
  "full_layer_layer_norm",
)


def _layer_rows(g, j):
  hf = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{j}."
  return common.layer_rows(hf, ("bert", "encoder", f"group_{g}", f"layer_{j}"), _LAYER)


# The token and QA models have no pooler.
ARCHITECTURES = {
  "pretraining": "AlbertForPreTraining",
  "classification": "AlbertForSequenceClassification",
  "regression": "AlbertForSequenceClassification",
  "tokens": "AlbertForTokenClassification",
  "qa": "AlbertForQuestionAnswering",
}


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (an `AlbertConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config (its groups and layers per group).
    head: "pretraining" (MLM and SOP heads), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, the shared layers, the pooler (where the head has one), the head.
  """
  mapping = "albert.encoder.embedding_hidden_mapping_in"
  rows = common.embedding_rows("albert.embeddings.")
  rows += common.linear_rows(mapping, ("bert", "embeddings_project"), "encoder")
  for g in range(model.num_hidden_groups):
    for j in range(model.inner_group_num):
      rows += _layer_rows(g, j)
  if head in ("pretraining", "classification", "regression"):
    rows += common.linear_rows("albert.pooler", ("bert", "pooler"), "pooler")
  if head != "pretraining":
    return rows + common.task_head_rows(head)
  return [
    *rows,
    common.mlm_bias_row("predictions.bias"),
    *common.norm_rows("predictions.LayerNorm", ("mlm", "layer_norm"), "mlm"),
    *common.linear_rows("predictions.dense", ("mlm", "transform"), "mlm"),
    *common.linear_rows("sop_classifier.classifier", ("sop",), "sop"),
  ]
