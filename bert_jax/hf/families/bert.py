"""BERT's Hugging Face side: config.json, tensor names and the table (`BertForPreTraining`
names: `bert.` prefix, `cls.predictions.*` MLM head, `cls.seq_relationship.*` NSP head).

Checkpoints may have no `bert.` prefix (`BertModel`, e.g. sentence-transformers) and the old
TF-converted `LayerNorm.gamma` / `beta` names.
"""

from bert_jax.hf.convert import Row
from bert_jax.hf.families import common

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
  common.check_bert_like(hf, path, "BERT", REQUIRED, _OPTIONAL_SIZES, activations=_ACTIVATIONS)


def model_kwargs(hf: dict) -> dict:
  """BertConfig keyword arguments (before vocabulary padding) of a Hugging Face config.

  Args:
    hf: a config.json checked by `read_config`.

  Returns:
    {BertConfig field: value}; the keys config.json may omit get Hugging Face's defaults.
  """
  return common.bert_kwargs(hf)


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` with `vocab_size` real rows.

  Args:
    model: a `bert.BertConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    tokenizer: the run's tokenizer (its [PAD] id).

  Returns:
    The config.json contents, as a dict (`architectures` set by the caller).
  """
  return common.bert_hf_config(model, "bert", vocab_size, tokenizer.pad_id)


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as BertForPreTraining names it ("" to skip, None unused).

  Adds the `bert.` prefix, renames TF's `LayerNorm.gamma` / `beta` to `weight` / `bias`,
  and reads the tied decoder bias as `cls.predictions.bias`.
  """
  # The decoder bias is the same tensor as cls.predictions.bias (tied).
  renames = [("cls.predictions.decoder.bias", "cls.predictions.bias")]
  return common.tensor_name(
    name, "bert.", _BERT_PARTS, _SKIPPED, ("bert.", "cls."), renames, tf_names=True
  )


def layer_rows(i: int, prefix: str = "bert.") -> list[Row]:
  """The rows of layer `i` (`{prefix}encoder.layer.{i}.*`, BERT's names; RoBERTa and
  ELECTRA name theirs the same under their own prefix).
  """
  return common.layer_rows(f"{prefix}encoder.layer.{i}.", ("bert", "encoder", f"layer_{i}"))


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
  rows = common.embedding_rows("bert.embeddings.")
  for i in range(model.num_layers):
    rows += layer_rows(i)
  if head in ("pretraining", "classification", "regression"):
    rows += common.linear_rows("bert.pooler.dense", ("bert", "pooler"), "pooler")
  if head != "pretraining":
    return rows + common.task_head_rows(head)
  return (
    rows
    + common.mlm_rows("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm")
    + [common.mlm_bias_row("cls.predictions.bias")]
    + common.linear_rows("cls.seq_relationship", ("nsp",), "nsp")
  )
