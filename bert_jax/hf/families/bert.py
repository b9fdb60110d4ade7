"""BERT's Hugging Face side: config.json, tensor names and the table (`BertForPreTraining`
names: `bert.` prefix, `cls.predictions.*` MLM head, `cls.seq_relationship.*` NSP head).

Checkpoints may have no `bert.` prefix (`BertModel`, e.g. sentence-transformers) and the old
TF-converted `LayerNorm.gamma` / `beta` names.
"""

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

ARCH = "bert"
MODEL_TYPES = ("bert",)
GROUPS = {
  "pooler": "pooler (bert.pooler.*)",
  "mlm": "MLM head (cls.predictions.*)",
  "nsp": "NSP head (cls.seq_relationship.*)",
}
# config.json keys without a default: the architecture (see `model_kwargs`).
REQUIRED = (
  "vocab_size",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
)
_OPTIONAL_SIZES = ("max_position_embeddings", "type_vocab_size")
_ACTIVATIONS = ("gelu",)  # exact erf GELU, as our model
_BERT_PARTS = ("embeddings.", "encoder.", "pooler.")
# Buffers, and the decoder weight tied to the word embeddings.
_SKIPPED = ("embeddings.position_ids", "cls.predictions.decoder.weight")


def check_config(hf: dict, path: str) -> None:
  """UserError for a BERT config.json our model cannot run."""
  unsupported = []
  if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
    unsupported.append(f"hidden_act={hf['hidden_act']!r} (only exact 'gelu')")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    unsupported.append("a decoder / cross-attention (only the BERT encoder)")
  files.check_supported(path, unsupported, "BERT")
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)


def model_kwargs(hf: dict) -> dict:
  """BertConfig keyword arguments (before vocabulary padding) of a Hugging Face config.

  Args:
    hf: a config.json checked by `read_config`.

  Returns:
    {BertConfig field: value}; the keys config.json may omit get Hugging Face's defaults.
  """
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    max_position_embeddings=hf.get("max_position_embeddings", 512),
    type_vocab_size=hf.get("type_vocab_size", 2),
    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
    initializer_range=hf.get("initializer_range", 0.02),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` with `vocab_size` real rows.

  Args:
    model: a `bert.BertConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    tokenizer: the run's tokenizer (its [PAD] id).

  Returns:
    The config.json contents, as a dict (`architectures` set by the caller).
  """
  return {
    "model_type": "bert",
    "vocab_size": vocab_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_act": "gelu",
    "hidden_dropout_prob": model.hidden_dropout,
    "attention_probs_dropout_prob": model.attention_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "type_vocab_size": model.type_vocab_size,
    "initializer_range": model.initializer_range,
    "layer_norm_eps": model.layer_norm_eps,
    "pad_token_id": tokenizer.pad_id,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as BertForPreTraining names it ("" to skip, None unused).

  Adds the `bert.` prefix, renames TF's `LayerNorm.gamma` / `beta` to `weight` / `bias`,
  and reads the tied decoder bias as `cls.predictions.bias`.
  """
  if name.endswith(_SKIPPED):
    return ""
  if name.startswith(_BERT_PARTS):
    name = "bert." + name
  name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
    "LayerNorm.beta", "LayerNorm.bias"
  )
  if name.endswith("cls.predictions.decoder.bias"):
    return "cls.predictions.bias"  # the same tensor as cls.predictions.bias (tied)
  return name if name.startswith(("bert.", "cls.")) else None


def _layer_rows(i):
  hf, ours = f"bert.encoder.layer.{i}.", ("bert", "encoder", f"layer_{i}")
  att, mlp = ours + ("attention",), ours + ("mlp",)
  rows = []
  for name in ("query", "key", "value"):
    rows += [
      Row(f"{hf}attention.self.{name}.weight", att + (name, "kernel"), HEADS_IN, "encoder"),
      Row(f"{hf}attention.self.{name}.bias", att + (name, "bias"), HEADS_BIAS, "encoder"),
    ]
  return rows + [
    Row(f"{hf}attention.output.dense.weight", att + ("output", "kernel"), HEADS_OUT, "encoder"),
    Row(f"{hf}attention.output.dense.bias", att + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}attention.output.LayerNorm.weight", att + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}attention.output.LayerNorm.bias", att + ("layer_norm", "bias"), COPY, "encoder"),
    Row(f"{hf}intermediate.dense.weight", mlp + ("intermediate", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}intermediate.dense.bias", mlp + ("intermediate", "bias"), COPY, "encoder"),
    Row(f"{hf}output.dense.weight", mlp + ("output", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}output.dense.bias", mlp + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}output.LayerNorm.weight", mlp + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}output.LayerNorm.bias", mlp + ("layer_norm", "bias"), COPY, "encoder"),
  ]


# Fine-tuning heads: Hugging Face's head tensor names; ours is `classifier/` for all.
HEAD_NAMES = {
  "classification": "classifier",
  "regression": "classifier",
  "tokens": "classifier",
  "qa": "qa_outputs",
}
# Hugging Face classes of each head; the token and QA models have no pooler.
ARCHITECTURES = {
  "pretraining": "BertForPreTraining",
  "classification": "BertForSequenceClassification",
  "regression": "BertForSequenceClassification",
  "tokens": "BertForTokenClassification",
  "qa": "BertForQuestionAnswering",
}


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `bert.BertConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config (its layer count).
    head: "pretraining" (MLM and NSP heads), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the pooler (where the head has one), the head.
  """
  emb = ("bert", "embeddings")
  rows = [
    Row(
      "bert.embeddings.word_embeddings.weight",
      emb + ("word", "embedding"),
      COPY,
      "encoder",
      vocab_pad=0.0,
    ),
    Row(
      "bert.embeddings.position_embeddings.weight", emb + ("position", "embedding"), COPY, "encoder"
    ),
    Row(
      "bert.embeddings.token_type_embeddings.weight",
      emb + ("token_type", "embedding"),
      COPY,
      "encoder",
    ),
    Row("bert.embeddings.LayerNorm.weight", emb + ("layer_norm", "scale"), COPY, "encoder"),
    Row("bert.embeddings.LayerNorm.bias", emb + ("layer_norm", "bias"), COPY, "encoder"),
  ]
  for i in range(model.num_layers):
    rows += _layer_rows(i)
  if head in ("pretraining", "classification", "regression"):
    rows += [
      Row("bert.pooler.dense.weight", ("bert", "pooler", "kernel"), LINEAR, "pooler"),
      Row("bert.pooler.dense.bias", ("bert", "pooler", "bias"), COPY, "pooler"),
    ]
  if head != "pretraining":
    name = HEAD_NAMES[head]
    return rows + [
      Row(f"{name}.weight", ("classifier", "kernel"), LINEAR, "head"),
      Row(f"{name}.bias", ("classifier", "bias"), COPY, "head"),
    ]
  return rows + [
    Row("cls.predictions.transform.dense.weight", ("mlm", "transform", "kernel"), LINEAR, "mlm"),
    Row("cls.predictions.transform.dense.bias", ("mlm", "transform", "bias"), COPY, "mlm"),
    Row("cls.predictions.transform.LayerNorm.weight", ("mlm", "layer_norm", "scale"), COPY, "mlm"),
    Row("cls.predictions.transform.LayerNorm.bias", ("mlm", "layer_norm", "bias"), COPY, "mlm"),
    Row("cls.predictions.bias", ("mlm", "bias"), COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS),
    Row("cls.seq_relationship.weight", ("nsp", "kernel"), LINEAR, "nsp"),
    Row("cls.seq_relationship.bias", ("nsp", "bias"), COPY, "nsp"),
  ]
