"""ALBERT's Hugging Face side: config.json, tensor names and the tables
(`AlbertForPreTraining` names: `albert.` prefix, `predictions.*` MLM head with the decoder
tied to the word embeddings, `sop_classifier.classifier.*` sentence-order head).

The shared layers: Hugging Face's `albert.encoder.albert_layer_groups.{g}.albert_layers.{j}`
is our `bert/encoder/group_{g}/layer_{j}` (stored once, applied along the depth).
`AlbertModel` checkpoints have no `albert.` prefix; `AlbertForMaskedLM` has no pooler nor
SOP head (both start initialised).
"""

from bert_jax.errors import UserError
from bert_jax.hf import files
from bert_jax.hf.convert import (
  COPY,
  HEADS_BIAS,
  HEADS_IN,
  HEADS_OUT,
  LINEAR,
  PADDED_LOGIT_BIAS,
  Row,
)
from bert_jax.hf.families import bert as bert_hf
from bert_jax.model import bert

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
  unsupported = []
  if hf.get("hidden_act", "gelu_new") not in bert.ACTIVATIONS:
    unsupported.append(
      f"hidden_act={hf['hidden_act']!r} (one of {', '.join(sorted(bert.ACTIVATIONS))})"
    )
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  files.check_supported(path, unsupported, "ALBERT")
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)
  groups, layers = hf.get("num_hidden_groups", 1), hf["num_hidden_layers"]
  if groups > layers:
    raise UserError(
      f"{path} has num_hidden_groups={groups} > num_hidden_layers={layers}: groups no layer "
      f"runs; restore the checkpoint's config.json"
    )


def model_kwargs(hf: dict) -> dict:
  """AlbertConfig keyword arguments (before vocabulary padding) of a checked config.json."""
  hidden_dropout = hf.get("hidden_dropout_prob", 0.0)
  classifier_dropout = hf.get("classifier_dropout_prob", 0.1)
  return dict(
    bert_hf.model_kwargs(hf),
    hidden_dropout=hidden_dropout,
    attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
    hidden_act=hf.get("hidden_act", "gelu_new"),
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
    "model_type": "albert",
    "vocab_size": vocab_size,
    "embedding_size": model.embedding_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_hidden_groups": model.num_hidden_groups,
    "inner_group_num": model.inner_group_num,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_act": model.hidden_act,
    "hidden_dropout_prob": model.hidden_dropout,
    "attention_probs_dropout_prob": model.attention_dropout,
    "classifier_dropout_prob": model.classifier_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "type_vocab_size": model.type_vocab_size,
    "initializer_range": model.initializer_range,
    "layer_norm_eps": model.layer_norm_eps,
    "pad_token_id": tokenizer.pad_id,
    "bos_token_id": tokenizer.cls_id,
    "eos_token_id": tokenizer.sep_id,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the tables name it ("" to skip, None unused).

  Adds the `albert.` prefix of `AlbertModel` checkpoints, renames TF's `LayerNorm.gamma` /
  `beta`, and reads the tied decoder bias as `predictions.bias`.
  """
  if name.endswith(_SKIPPED):
    return ""
  if name.startswith(_PARTS):
    name = "albert." + name
  name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
    "LayerNorm.beta", "LayerNorm.bias"
  )
  if name == "predictions.decoder.bias":
    return "predictions.bias"  # the same tensor as predictions.bias (tied)
  return name if name.startswith(("albert.", "predictions.", "sop_classifier.")) else None


def _layer_rows(g, j):
  hf = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{j}."
  ours = ("bert", "encoder", f"group_{g}", f"layer_{j}")
  att, mlp = ours + ("attention",), ours + ("mlp",)
  rows = []
  for name in ("query", "key", "value"):
    rows += [
      Row(f"{hf}attention.{name}.weight", att + (name, "kernel"), HEADS_IN, "encoder"),
      Row(f"{hf}attention.{name}.bias", att + (name, "bias"), HEADS_BIAS, "encoder"),
    ]
  return rows + [
    Row(f"{hf}attention.dense.weight", att + ("output", "kernel"), HEADS_OUT, "encoder"),
    Row(f"{hf}attention.dense.bias", att + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}attention.LayerNorm.weight", att + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}attention.LayerNorm.bias", att + ("layer_norm", "bias"), COPY, "encoder"),
    Row(f"{hf}ffn.weight", mlp + ("intermediate", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}ffn.bias", mlp + ("intermediate", "bias"), COPY, "encoder"),
    Row(f"{hf}ffn_output.weight", mlp + ("output", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}ffn_output.bias", mlp + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}full_layer_layer_norm.weight", mlp + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}full_layer_layer_norm.bias", mlp + ("layer_norm", "bias"), COPY, "encoder"),
  ]


HEAD_NAMES = {
  "classification": "classifier",
  "regression": "classifier",
  "tokens": "classifier",
  "qa": "qa_outputs",
}
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
  emb, project = ("bert", "embeddings"), ("bert", "embeddings_project")
  mapping = "albert.encoder.embedding_hidden_mapping_in"
  rows = [
    Row(
      "albert.embeddings.word_embeddings.weight",
      emb + ("word", "embedding"),
      COPY,
      "encoder",
      vocab_pad=0.0,
    ),
    Row(
      "albert.embeddings.position_embeddings.weight",
      emb + ("position", "embedding"),
      COPY,
      "encoder",
    ),
    Row(
      "albert.embeddings.token_type_embeddings.weight",
      emb + ("token_type", "embedding"),
      COPY,
      "encoder",
    ),
    Row("albert.embeddings.LayerNorm.weight", emb + ("layer_norm", "scale"), COPY, "encoder"),
    Row("albert.embeddings.LayerNorm.bias", emb + ("layer_norm", "bias"), COPY, "encoder"),
    Row(f"{mapping}.weight", project + ("kernel",), LINEAR, "encoder"),
    Row(f"{mapping}.bias", project + ("bias",), COPY, "encoder"),
  ]
  for g in range(model.num_hidden_groups):
    for j in range(model.inner_group_num):
      rows += _layer_rows(g, j)
  if head in ("pretraining", "classification", "regression"):
    rows += [
      Row("albert.pooler.weight", ("bert", "pooler", "kernel"), LINEAR, "pooler"),
      Row("albert.pooler.bias", ("bert", "pooler", "bias"), COPY, "pooler"),
    ]
  if head != "pretraining":
    name = HEAD_NAMES[head]
    return rows + [
      Row(f"{name}.weight", ("classifier", "kernel"), LINEAR, "head"),
      Row(f"{name}.bias", ("classifier", "bias"), COPY, "head"),
    ]
  return rows + [
    Row("predictions.bias", ("mlm", "bias"), COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS),
    Row("predictions.LayerNorm.weight", ("mlm", "layer_norm", "scale"), COPY, "mlm"),
    Row("predictions.LayerNorm.bias", ("mlm", "layer_norm", "bias"), COPY, "mlm"),
    Row("predictions.dense.weight", ("mlm", "transform", "kernel"), LINEAR, "mlm"),
    Row("predictions.dense.bias", ("mlm", "transform", "bias"), COPY, "mlm"),
    Row("sop_classifier.classifier.weight", ("sop", "kernel"), LINEAR, "sop"),
    Row("sop_classifier.classifier.bias", ("sop", "bias"), COPY, "sop"),
  ]
