"""RoBERTa's and XLM-R's Hugging Face side: config.json, tensor names and the table
(`RobertaForMaskedLM` names: `roberta.` prefix, `lm_head.*` LM head).

Checkpoints may have no `roberta.` prefix (`RobertaModel`), whose pooler we do not use (the
MLM and fine-tuning models have none), and old `lm_head.decoder.bias` copies of
`lm_head.bias`. The layers are named as BERT's.
"""

import dataclasses

from bert_jax.errors import UserError
from bert_jax.hf import files
from bert_jax.hf.convert import COPY, LINEAR, PADDED_LOGIT_BIAS, Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.model import bert

ARCH = "roberta"
MODEL_TYPES = ("roberta", "xlm-roberta")
GROUPS = {
  "mlm": "LM head (lm_head.*)",
  "head": "fine-tuning head",
}
# config.json keys without a default: the architecture (see `model_kwargs`).
REQUIRED = (
  "vocab_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
  "max_position_embeddings",
)
_OPTIONAL_SIZES = ("type_vocab_size",)
_PARTS = ("embeddings.", "encoder.")
# Buffers, and the decoder weight tied to the word embeddings.
_SKIPPED = (
  "embeddings.position_ids",
  "embeddings.token_type_ids",
  "lm_head.decoder.weight",
)
# Hugging Face classes of each head.
ARCHITECTURES = {
  "pretraining": "RobertaForMaskedLM",
  "classification": "RobertaForSequenceClassification",
  "regression": "RobertaForSequenceClassification",
  "tokens": "RobertaForTokenClassification",
  "qa": "RobertaForQuestionAnswering",
}


def check_config(hf: dict, path: str) -> None:
  """UserError for a RoBERTa / XLM-R config.json our model cannot run."""
  unsupported = []
  if hf.get("hidden_act", "gelu") not in bert.ACTIVATIONS:
    unsupported.append(f"hidden_act={hf['hidden_act']!r} (one of {', '.join(bert.ACTIVATIONS)})")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    unsupported.append("a decoder / cross-attention (only the RoBERTa encoder)")
  files.check_supported(path, unsupported, "RoBERTa")
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)
  pad = hf.get("pad_token_id", 1)
  if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
    raise UserError(f"{path} has pad_token_id={pad!r}; it must be a token id (an int >= 0)")
  if hf["max_position_embeddings"] <= pad + 1:
    raise UserError(
      f"{path} has max_position_embeddings={hf['max_position_embeddings']} and "
      f"pad_token_id={pad}: RoBERTa's positions start after the padding id, which leaves "
      f"no position; restore the checkpoint's config.json"
    )


def model_kwargs(hf: dict) -> dict:
  """RobertaConfig keyword arguments (before vocabulary padding) of a config.json."""
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    max_position_embeddings=hf["max_position_embeddings"],
    type_vocab_size=hf.get("type_vocab_size", 2),
    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
    initializer_range=hf.get("initializer_range", 0.02),
    hidden_act=hf.get("hidden_act", "gelu"),
    pad_token_id=hf.get("pad_token_id", 1),
    classifier_dropout=hf.get("classifier_dropout"),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our RoBERTa `model` with `vocab_size` real rows.

  Args:
    model: a `roberta.RobertaConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    tokenizer: the run's tokenizer (its <s> and </s> ids; the padding id is the model's,
      which its positions depend on).

  Returns:
    The config.json contents, as a dict (`architectures` set by the caller).
  """
  return {
    "model_type": "roberta",
    "vocab_size": vocab_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_act": model.hidden_act,
    "hidden_dropout_prob": model.hidden_dropout,
    "attention_probs_dropout_prob": model.attention_dropout,
    "classifier_dropout": model.classifier_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "type_vocab_size": model.type_vocab_size,
    "initializer_range": model.initializer_range,
    "layer_norm_eps": model.layer_norm_eps,
    "pad_token_id": model.pad_token_id,
    "bos_token_id": tokenizer.cls_id,
    "eos_token_id": tokenizer.sep_id,
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the table names it ("" to skip, None unused).

  Adds the `roberta.` prefix of a `RobertaModel`, reads the old `lm_head.decoder.bias` as
  `lm_head.bias` (the same tensor), and skips buffers and the tied decoder; the pooler
  (`RobertaModel` only) is not used.
  """
  if name.endswith(_SKIPPED):
    return ""
  if name.startswith(_PARTS):
    name = "roberta." + name
  if name == "lm_head.decoder.bias":
    return "lm_head.bias"
  if name.startswith(("roberta.embeddings.", "roberta.encoder.", "lm_head.")):
    return name
  if name.startswith(("classifier.", "qa_outputs.")):
    return name  # the fine-tuning heads (their tables read them)
  return None


def _layer_rows(i):
  """BERT's rows of layer `i`, under `roberta.`."""
  return [
    dataclasses.replace(row, hf="roberta." + row.hf.removeprefix("bert."))
    for row in bert_hf._layer_rows(i)
  ]


def _head_rows(head):
  if head in ("classification", "regression"):
    return [
      Row("classifier.dense.weight", ("classifier", "dense", "kernel"), LINEAR, "head"),
      Row("classifier.dense.bias", ("classifier", "dense", "bias"), COPY, "head"),
      Row("classifier.out_proj.weight", ("classifier", "out_proj", "kernel"), LINEAR, "head"),
      Row("classifier.out_proj.bias", ("classifier", "out_proj", "bias"), COPY, "head"),
    ]
  name = "qa_outputs" if head == "qa" else "classifier"
  return [
    Row(f"{name}.weight", ("classifier", "kernel"), LINEAR, "head"),
    Row(f"{name}.bias", ("classifier", "bias"), COPY, "head"),
  ]


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `roberta.RobertaConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config (its layer count).
    head: "pretraining" (the LM head), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the head.
  """
  hf, emb = "roberta.embeddings.", ("bert", "embeddings")
  rows = [
    Row(f"{hf}word_embeddings.weight", emb + ("word", "embedding"), COPY, "encoder", vocab_pad=0.0),
    Row(f"{hf}position_embeddings.weight", emb + ("position", "embedding"), COPY, "encoder"),
    Row(f"{hf}token_type_embeddings.weight", emb + ("token_type", "embedding"), COPY, "encoder"),
    Row(f"{hf}LayerNorm.weight", emb + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}LayerNorm.bias", emb + ("layer_norm", "bias"), COPY, "encoder"),
  ]
  for i in range(model.num_layers):
    rows += _layer_rows(i)
  if head != "pretraining":
    return rows + _head_rows(head)
  return rows + [
    Row("lm_head.dense.weight", ("mlm", "transform", "kernel"), LINEAR, "mlm"),
    Row("lm_head.dense.bias", ("mlm", "transform", "bias"), COPY, "mlm"),
    Row("lm_head.layer_norm.weight", ("mlm", "layer_norm", "scale"), COPY, "mlm"),
    Row("lm_head.layer_norm.bias", ("mlm", "layer_norm", "bias"), COPY, "mlm"),
    Row("lm_head.bias", ("mlm", "bias"), COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS),
  ]
