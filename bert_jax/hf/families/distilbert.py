"""DistilBERT's Hugging Face side: config.json, tensor names and the table
(`DistilBertForMaskedLM` names: `distilbert.` prefix, `vocab_transform`,
`vocab_layer_norm` and the tied `vocab_projector` MLM head).

Checkpoints may have no `distilbert.` prefix (`DistilBertModel`). A `sinusoidal_pos_embds`
checkpoint stores its fixed position table, which is read as any other; an export writes
`sinusoidal_pos_embds: false`, so `transformers` keeps the table it is given.
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
from bert_jax.model import bert

ARCH = "distilbert"
MODEL_TYPES = ("distilbert",)
GROUPS = {
  "mlm": "MLM head (vocab_transform, vocab_layer_norm, vocab_projector)",
  "head": "fine-tuning head",
}
# config.json keys without a default: the architecture (see `model_kwargs`).
REQUIRED = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim")
_OPTIONAL_SIZES = ("max_position_embeddings",)
_PARTS = ("embeddings.", "transformer.")
# Buffers, and the decoder weight tied to the word embeddings.
_SKIPPED = ("embeddings.position_ids", "vocab_projector.weight")
_HEADS = ("pre_classifier.", "classifier.", "qa_outputs.")
# Hugging Face classes of each head.
ARCHITECTURES = {
  "pretraining": "DistilBertForMaskedLM",
  "classification": "DistilBertForSequenceClassification",
  "regression": "DistilBertForSequenceClassification",
  "tokens": "DistilBertForTokenClassification",
  "qa": "DistilBertForQuestionAnswering",
}


def check_config(hf: dict, path: str) -> None:
  """UserError for a DistilBERT config.json our model cannot run."""
  unsupported = []
  if hf.get("activation", "gelu") not in bert.ACTIVATIONS:
    unsupported.append(f"activation={hf['activation']!r} (one of {', '.join(bert.ACTIVATIONS)})")
  files.check_supported(path, unsupported, "DistilBERT")
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)


def model_kwargs(hf: dict) -> dict:
  """DistilBertConfig keyword arguments (before vocabulary padding) of a config.json."""
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["dim"],
    num_layers=hf["n_layers"],
    num_heads=hf["n_heads"],
    intermediate_size=hf["hidden_dim"],
    max_position_embeddings=hf.get("max_position_embeddings", 512),
    hidden_dropout=hf.get("dropout", 0.1),
    attention_dropout=hf.get("attention_dropout", 0.1),
    initializer_range=hf.get("initializer_range", 0.02),
    hidden_act=hf.get("activation", "gelu"),
    seq_classif_dropout=hf.get("seq_classif_dropout", 0.2),
    qa_dropout=hf.get("qa_dropout", 0.1),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our DistilBERT `model` with `vocab_size` real rows.

  Args:
    model: a `distilbert.DistilBertConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    tokenizer: the run's tokenizer (its [PAD] id).

  Returns:
    The config.json contents, as a dict (`architectures` set by the caller).
  """
  return {
    "model_type": "distilbert",
    "vocab_size": vocab_size,
    "dim": model.hidden_size,
    "n_layers": model.num_layers,
    "n_heads": model.num_heads,
    "hidden_dim": model.intermediate_size,
    "activation": model.hidden_act,
    "dropout": model.hidden_dropout,
    "attention_dropout": model.attention_dropout,
    "qa_dropout": model.qa_dropout,
    "seq_classif_dropout": model.seq_classif_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "sinusoidal_pos_embds": False,
    "initializer_range": model.initializer_range,
    "pad_token_id": tokenizer.pad_id,
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the table names it ("" to skip, None unused).

  Adds the `distilbert.` prefix of a `DistilBertModel` and skips buffers and the tied
  decoder.
  """
  if name.endswith(_SKIPPED):
    return ""
  if name.startswith(_PARTS):
    name = "distilbert." + name
  if name.startswith(("distilbert.", "vocab_")) or name.startswith(_HEADS):
    return name
  return None


def _layer_rows(i):
  hf, ours = f"distilbert.transformer.layer.{i}.", ("bert", "encoder", f"layer_{i}")
  att, mlp = ours + ("attention",), ours + ("mlp",)
  rows = []
  for theirs, name in (("q_lin", "query"), ("k_lin", "key"), ("v_lin", "value")):
    rows += [
      Row(f"{hf}attention.{theirs}.weight", att + (name, "kernel"), HEADS_IN, "encoder"),
      Row(f"{hf}attention.{theirs}.bias", att + (name, "bias"), HEADS_BIAS, "encoder"),
    ]
  return rows + [
    Row(f"{hf}attention.out_lin.weight", att + ("output", "kernel"), HEADS_OUT, "encoder"),
    Row(f"{hf}attention.out_lin.bias", att + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}sa_layer_norm.weight", att + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}sa_layer_norm.bias", att + ("layer_norm", "bias"), COPY, "encoder"),
    Row(f"{hf}ffn.lin1.weight", mlp + ("intermediate", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}ffn.lin1.bias", mlp + ("intermediate", "bias"), COPY, "encoder"),
    Row(f"{hf}ffn.lin2.weight", mlp + ("output", "kernel"), LINEAR, "encoder"),
    Row(f"{hf}ffn.lin2.bias", mlp + ("output", "bias"), COPY, "encoder"),
    Row(f"{hf}output_layer_norm.weight", mlp + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}output_layer_norm.bias", mlp + ("layer_norm", "bias"), COPY, "encoder"),
  ]


def _head_rows(head):
  if head in ("classification", "regression"):
    ours = ("classifier", "pre_classifier"), ("classifier", "classifier")
    return [
      Row("pre_classifier.weight", ours[0] + ("kernel",), LINEAR, "head"),
      Row("pre_classifier.bias", ours[0] + ("bias",), COPY, "head"),
      Row("classifier.weight", ours[1] + ("kernel",), LINEAR, "head"),
      Row("classifier.bias", ours[1] + ("bias",), COPY, "head"),
    ]
  name = "qa_outputs" if head == "qa" else "classifier"
  return [
    Row(f"{name}.weight", ("classifier", "kernel"), LINEAR, "head"),
    Row(f"{name}.bias", ("classifier", "bias"), COPY, "head"),
  ]


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `distilbert.DistilBertConfig`) and `head`, in Hugging Face's
  order.

  Args:
    model: the model config (its layer count).
    head: "pretraining" (the MLM head), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the head.
  """
  hf, emb = "distilbert.embeddings.", ("bert", "embeddings")
  rows = [
    Row(f"{hf}word_embeddings.weight", emb + ("word", "embedding"), COPY, "encoder", vocab_pad=0.0),
    Row(f"{hf}position_embeddings.weight", emb + ("position", "embedding"), COPY, "encoder"),
    Row(f"{hf}LayerNorm.weight", emb + ("layer_norm", "scale"), COPY, "encoder"),
    Row(f"{hf}LayerNorm.bias", emb + ("layer_norm", "bias"), COPY, "encoder"),
  ]
  for i in range(model.num_layers):
    rows += _layer_rows(i)
  if head != "pretraining":
    return rows + _head_rows(head)
  return rows + [
    Row("vocab_transform.weight", ("mlm", "transform", "kernel"), LINEAR, "mlm"),
    Row("vocab_transform.bias", ("mlm", "transform", "bias"), COPY, "mlm"),
    Row("vocab_layer_norm.weight", ("mlm", "layer_norm", "scale"), COPY, "mlm"),
    Row("vocab_layer_norm.bias", ("mlm", "layer_norm", "bias"), COPY, "mlm"),
    Row("vocab_projector.bias", ("mlm", "bias"), COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS),
  ]
