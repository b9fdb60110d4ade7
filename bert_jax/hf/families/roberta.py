"""RoBERTa's and XLM-R's Hugging Face side: config.json, tensor names and the table
(`RobertaForMaskedLM` names: `roberta.` prefix, `lm_head.*` LM head).

Checkpoints may have no `roberta.` prefix (`RobertaModel`), whose pooler we do not use (the
MLM and fine-tuning models have none), and old `lm_head.decoder.bias` copies of
`lm_head.bias`. The layers are named as BERT's.
"""

from bert_jax.errors import UserError
from bert_jax.hf.convert import Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.hf.families import common

ARCH = "roberta"
MODEL_TYPES = ("roberta", "xlm-roberta")
GROUPS = {
  "mlm": "LM head (lm_head.*)",
  "head": "fine-tuning head",
}
# config.json keys without a default: the architecture (see `model_kwargs`).
REQUIRED = (*bert_hf.REQUIRED, "max_position_embeddings")
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
  common.check_bert_like(hf, path, "RoBERTa", REQUIRED, _OPTIONAL_SIZES)
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
    common.bert_kwargs(hf),
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
    **common.bert_hf_config(model, "roberta", vocab_size, model.pad_token_id),
    "classifier_dropout": model.classifier_dropout,
    "bos_token_id": tokenizer.cls_id,
    "eos_token_id": tokenizer.sep_id,
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the table names it ("" to skip, None unused).

  Adds the `roberta.` prefix of a `RobertaModel`, reads the old `lm_head.decoder.bias` as
  `lm_head.bias` (the same tensor), and skips buffers and the tied decoder; the pooler
  (`RobertaModel` only) is not used.
  """
  # The encoder, the LM head and the fine-tuning heads (their tables read them).
  used = ("roberta.embeddings.", "roberta.encoder.", "lm_head.", "classifier.", "qa_outputs.")
  renames = [("lm_head.decoder.bias", "lm_head.bias")]
  return common.tensor_name(name, "roberta.", _PARTS, _SKIPPED, used, renames)


def _head_rows(head):
  if head in ("classification", "regression"):
    return common.first_token_head_rows()
  return common.task_head_rows(head)


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `roberta.RobertaConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config (its layer count).
    head: "pretraining" (the LM head), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the head.
  """
  rows = common.embedding_rows("roberta.embeddings.")
  for i in range(model.num_layers):
    rows += bert_hf.layer_rows(i, "roberta.")
  if head != "pretraining":
    return rows + _head_rows(head)
  return (
    rows
    + common.mlm_rows("lm_head.dense", "lm_head.layer_norm")
    + [common.mlm_bias_row("lm_head.bias")]
  )
