"""ELECTRA's Hugging Face side: config.json, tensor names and the tables.

Our pretraining model is the generator, `ElectraForMaskedLM` (`electra.` prefix,
`generator_predictions.*`, `generator_lm_head.bias`; the decoder weight is tied to the word
embeddings). A discriminator checkpoint (`ElectraForPreTraining`) imports its encoder; its
`discriminator_predictions.*` are not used and the MLM head starts initialised. The extra
head "discriminator" is the table of our `electra.ElectraDiscriminator`, exported as
`ElectraForPreTraining`. `ElectraModel` checkpoints have no `electra.` prefix.

A replaced-token-detection run (`electra.ElectraForReplacedTokenDetection`) exports two
models (`export_parts`): the discriminator as `ElectraForPreTraining` in the export's
folder, the model to fine-tune, and the generator as `ElectraForMaskedLM` in its
`generator/` folder, each with the shared embeddings, as Google's releases pair them.
`import-hf` reads such a pair back (`generator_hidden_size` checks that a generator's
config.json pairs with the discriminator's) into a replaced-token-detection model.
"""

import dataclasses

from bert_jax.errors import UserError
from bert_jax.hf.convert import Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.hf.families import common
from bert_jax.model import electra

ARCH = "electra"
MODEL_TYPES = ("electra",)
GROUPS = {
  "mlm": "generator MLM head (generator_predictions.*, generator_lm_head.bias)",
  "discriminator": "discriminator head (discriminator_predictions.*)",
}
REQUIRED = bert_hf.REQUIRED
_OPTIONAL_SIZES = ("embedding_size", "max_position_embeddings", "type_vocab_size")
_PARTS = ("embeddings.", "embeddings_project.", "encoder.")
# Buffers, and the decoder weight tied to the word embeddings.
_SKIPPED = (
  "embeddings.position_ids",
  "embeddings.token_type_ids",
  "generator_lm_head.weight",
)


def check_config(hf: dict, path: str) -> None:
  """UserError for an ELECTRA config.json our model cannot run."""
  common.check_bert_like(hf, path, "ELECTRA", REQUIRED, _OPTIONAL_SIZES)


def model_kwargs(hf: dict) -> dict:
  """ElectraConfig keyword arguments (before vocabulary padding) of a checked config.json."""
  return dict(
    common.bert_kwargs(hf),
    embedding_size=hf.get("embedding_size", 128),
    classifier_dropout=hf.get("classifier_dropout"),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` (an `ElectraConfig`) with `vocab_size` real rows.

  `tokenizer` gives the [PAD] id; `architectures` is set by the caller.
  """
  return {
    **common.bert_hf_config(model, "electra", vocab_size, tokenizer.pad_id),
    "embedding_size": model.embedding_size,
    "classifier_dropout": model.classifier_dropout,
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the tables name it ("" to skip, None unused).

  Adds the `electra.` prefix of `ElectraModel` checkpoints and renames TF's
  `LayerNorm.gamma` / `beta`; the fine-tuning heads are not used.
  """
  used = ("electra.", "generator_", "discriminator_")
  return common.tensor_name(name, "electra.", _PARTS, _SKIPPED, used, tf_names=True)


ARCHITECTURES = {
  "pretraining": "ElectraForMaskedLM",
  "discriminator": "ElectraForPreTraining",
  "classification": "ElectraForSequenceClassification",
  "regression": "ElectraForSequenceClassification",
  "tokens": "ElectraForTokenClassification",
  "qa": "ElectraForQuestionAnswering",
}


def encoder_rows(model) -> list[Row]:
  """The encoder's rows: embeddings, the projection (when E != H), each layer."""
  rows = common.embedding_rows("electra.embeddings.")
  if model.embedding_size != model.hidden_size:
    project = ("bert", "embeddings_project")
    rows += common.linear_rows("electra.embeddings_project", project, "encoder")
  for i in range(model.num_layers):
    rows += bert_hf.layer_rows(i, "electra.")
  return rows


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (an `ElectraConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config.
    head: "pretraining" (the generator's MLM head), "discriminator" (`ElectraDiscriminator`)
      or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: the encoder's, then the head's.
  """
  rows = encoder_rows(model)
  if head == "pretraining":
    mlm = "generator_predictions."
    return (
      rows
      + common.norm_rows(f"{mlm}LayerNorm", ("mlm", "layer_norm"), "mlm")
      + common.linear_rows(f"{mlm}dense", ("mlm", "transform"), "mlm")
      + [common.mlm_bias_row("generator_lm_head.bias")]
    )
  if head == "discriminator":
    name, ours = "discriminator_predictions.", ("discriminator",)
    return [
      *rows,
      *common.linear_rows(f"{name}dense", ours + ("dense",), "discriminator"),
      *common.linear_rows(f"{name}dense_prediction", ours + ("dense_prediction",), "discriminator"),
    ]
  if head in ("classification", "regression"):
    return rows + common.first_token_head_rows()
  return rows + common.task_head_rows(head)


GENERATOR_FOLDER = "generator"  # where a replaced-token-detection export puts the generator


def generator_table(model) -> list[Row]:
  """The generator of an `ElectraForReplacedTokenDetection` (config `model`, the
  discriminator's) as `ElectraForMaskedLM`: the shared embeddings (`bert/embeddings`), its
  projection and layers (`generator/`) and its MLM head (`mlm/`).
  """

  def ours(row):
    if row.ours[0] == "bert" and row.ours[1] != "embeddings":
      return dataclasses.replace(row, ours=("generator",) + row.ours[1:])
    return row

  return [ours(row) for row in table(electra.generator_config(model), "pretraining")]


def export_parts(model, head: str) -> list[tuple[str, object, list[Row], str]]:
  """(folder within the export, model config, rows, architecture) of each model an export
  of `head` writes: two for a replaced-token-detection run's pretraining, else one.
  """
  if head != "pretraining" or model.generator_hidden_size is None:
    return [("", model, table(model, head), ARCHITECTURES[head])]
  return [
    ("", model, table(model, "discriminator"), ARCHITECTURES["discriminator"]),
    (
      GENERATOR_FOLDER,
      electra.generator_config(model),
      generator_table(model),
      ARCHITECTURES["pretraining"],
    ),
  ]


# The generator fields that must equal those bert_jax derives from the discriminator.
_PAIRED = (
  "vocab_size",
  "embedding_size",
  "num_layers",
  "num_heads",
  "intermediate_size",
  "max_position_embeddings",
  "type_vocab_size",
  "hidden_act",
)


def generator_hidden_size(discriminator: dict, generator_hf: dict, path: str) -> int:
  """The `generator_hidden_size` of a discriminator (its `model_kwargs`) and a generator
  checkpoint's config.json (read from `path`) that pair as bert_jax's RTD model pairs them.

  Raises:
    UserError: naming each field of the generator that differs from what bert_jax's
      generator of that width has (the discriminator's vocabulary, embeddings, depth and
      activation; heads of 64, an MLP 4x as wide).
  """
  width = model_kwargs(generator_hf)["hidden_size"]
  try:
    ours = electra.generator_config(
      electra.ElectraConfig(**discriminator, generator_hidden_size=width)
    )
  except ValueError as e:
    raise UserError(f"{path}: {e}") from None
  theirs = model_kwargs(generator_hf)
  differ = [
    f"{key} {theirs[key]} (bert_jax's: {getattr(ours, key)})"
    for key in _PAIRED
    if theirs[key] != getattr(ours, key)
  ]
  if differ:
    raise UserError(
      f"the generator {path} does not pair with the discriminator: {'; '.join(differ)}. "
      f"bert_jax's generator has the discriminator's vocabulary, embeddings, depth and "
      f"activation, heads of 64 and an MLP 4x its width"
    )
  return width
