"""DistilBERT's Hugging Face side: config.json, tensor names and the table
(`DistilBertForMaskedLM` names: `distilbert.` prefix, `vocab_transform`,
`vocab_layer_norm` and the tied `vocab_projector` MLM head).

Checkpoints may have no `distilbert.` prefix (`DistilBertModel`). A `sinusoidal_pos_embds`
checkpoint stores its fixed position table, which is read as any other; an export writes
`sinusoidal_pos_embds: false`, so `transformers` keeps the table it is given.
"""

from bert_jax.hf import files
from bert_jax.hf.convert import Row
from bert_jax.hf.families import common
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
  used = ("distilbert.", "vocab_", *_HEADS)
  return common.tensor_name(name, "distilbert.", _PARTS, _SKIPPED, used)


# DistilBERT's names of a layer's modules (`common.BERT_LAYER`'s order).
_LAYER = (
  "attention.q_lin",
  "attention.k_lin",
  "attention.v_lin",
  "attention.out_lin",
  "sa_layer_norm",
  "ffn.lin1",
  "ffn.lin2",
  "output_layer_norm",
)


def _layer_rows(i):
  hf, ours = f"distilbert.transformer.layer.{i}.", ("bert", "encoder", f"layer_{i}")
  return common.layer_rows(hf, ours, _LAYER)


def _head_rows(head):
  if head in ("classification", "regression"):
    return [
      row
      for name in ("pre_classifier", "classifier")
      for row in common.linear_rows(name, ("classifier", name), "head")
    ]
  return common.task_head_rows(head)


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `distilbert.DistilBertConfig`) and `head`, in Hugging Face's
  order.

  Args:
    model: the model config (its layer count).
    head: "pretraining" (the MLM head), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the head.
  """
  rows = common.embedding_rows("distilbert.embeddings.", token_types=False)
  for i in range(model.num_layers):
    rows += _layer_rows(i)
  if head != "pretraining":
    return rows + _head_rows(head)
  return (
    rows
    + common.mlm_rows("vocab_transform", "vocab_layer_norm")
    + [common.mlm_bias_row("vocab_projector.bias")]
  )
