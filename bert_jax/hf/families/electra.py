"""ELECTRA's Hugging Face side: config.json, tensor names and the tables.

Our pretraining model is the generator, `ElectraForMaskedLM` (`electra.` prefix,
`generator_predictions.*`, `generator_lm_head.bias`; the decoder weight is tied to the word
embeddings). A discriminator checkpoint (`ElectraForPreTraining`) imports its encoder; its
`discriminator_predictions.*` are not used and the MLM head starts initialised. The extra
head "discriminator" is the table of our `electra.ElectraDiscriminator`, exported as
`ElectraForPreTraining`. `ElectraModel` checkpoints have no `electra.` prefix.
"""

from bert_jax.hf import files
from bert_jax.hf.convert import COPY, LINEAR, PADDED_LOGIT_BIAS, Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.model import bert

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
  unsupported = []
  if hf.get("hidden_act", "gelu") not in bert.ACTIVATIONS:
    unsupported.append(
      f"hidden_act={hf['hidden_act']!r} (one of {', '.join(sorted(bert.ACTIVATIONS))})"
    )
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    unsupported.append("a decoder / cross-attention (only the ELECTRA encoder)")
  files.check_supported(path, unsupported, "ELECTRA")
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)


def model_kwargs(hf: dict) -> dict:
  """ElectraConfig keyword arguments (before vocabulary padding) of a checked config.json."""
  return dict(
    bert_hf.model_kwargs(hf),
    embedding_size=hf.get("embedding_size", 128),
    hidden_act=hf.get("hidden_act", "gelu"),
    classifier_dropout=hf.get("classifier_dropout"),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` (an `ElectraConfig`) with `vocab_size` real rows.

  `tokenizer` gives the [PAD] id; `architectures` is set by the caller.
  """
  return {
    "model_type": "electra",
    "vocab_size": vocab_size,
    "embedding_size": model.embedding_size,
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
    "pad_token_id": tokenizer.pad_id,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as the tables name it ("" to skip, None unused).

  Adds the `electra.` prefix of `ElectraModel` checkpoints and renames TF's
  `LayerNorm.gamma` / `beta`; the discriminator and fine-tuning heads are not used.
  """
  if name.endswith(_SKIPPED):
    return ""
  if name.startswith(_PARTS):
    name = "electra." + name
  name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
    "LayerNorm.beta", "LayerNorm.bias"
  )
  return name if name.startswith(("electra.", "generator_")) else None


def _layer_rows(i):
  """BERT's layer rows under the `electra.` prefix."""
  return [
    Row("electra." + row.hf[len("bert.") :], row.ours, row.rule, row.group)
    for row in bert_hf._layer_rows(i)
  ]


HEAD_NAMES = {"tokens": "classifier", "qa": "qa_outputs"}
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
  emb = ("bert", "embeddings")
  rows = [
    Row(
      "electra.embeddings.word_embeddings.weight",
      emb + ("word", "embedding"),
      COPY,
      "encoder",
      vocab_pad=0.0,
    ),
    Row(
      "electra.embeddings.position_embeddings.weight",
      emb + ("position", "embedding"),
      COPY,
      "encoder",
    ),
    Row(
      "electra.embeddings.token_type_embeddings.weight",
      emb + ("token_type", "embedding"),
      COPY,
      "encoder",
    ),
    Row("electra.embeddings.LayerNorm.weight", emb + ("layer_norm", "scale"), COPY, "encoder"),
    Row("electra.embeddings.LayerNorm.bias", emb + ("layer_norm", "bias"), COPY, "encoder"),
  ]
  if model.embedding_size != model.hidden_size:
    project = ("bert", "embeddings_project")
    rows += [
      Row("electra.embeddings_project.weight", project + ("kernel",), LINEAR, "encoder"),
      Row("electra.embeddings_project.bias", project + ("bias",), COPY, "encoder"),
    ]
  for i in range(model.num_layers):
    rows += _layer_rows(i)
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
    return rows + [
      Row(f"{mlm}LayerNorm.weight", ("mlm", "layer_norm", "scale"), COPY, "mlm"),
      Row(f"{mlm}LayerNorm.bias", ("mlm", "layer_norm", "bias"), COPY, "mlm"),
      Row(f"{mlm}dense.weight", ("mlm", "transform", "kernel"), LINEAR, "mlm"),
      Row(f"{mlm}dense.bias", ("mlm", "transform", "bias"), COPY, "mlm"),
      Row("generator_lm_head.bias", ("mlm", "bias"), COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS),
    ]
  if head == "discriminator":
    name, ours = "discriminator_predictions.", ("discriminator",)
    return rows + [
      Row(f"{name}dense.weight", ours + ("dense", "kernel"), LINEAR, "discriminator"),
      Row(f"{name}dense.bias", ours + ("dense", "bias"), COPY, "discriminator"),
      Row(
        f"{name}dense_prediction.weight",
        ours + ("dense_prediction", "kernel"),
        LINEAR,
        "discriminator",
      ),
      Row(
        f"{name}dense_prediction.bias", ours + ("dense_prediction", "bias"), COPY, "discriminator"
      ),
    ]
  if head in ("classification", "regression"):
    return rows + [
      Row("classifier.dense.weight", ("classifier", "dense", "kernel"), LINEAR, "head"),
      Row("classifier.dense.bias", ("classifier", "dense", "bias"), COPY, "head"),
      Row("classifier.out_proj.weight", ("classifier", "out_proj", "kernel"), LINEAR, "head"),
      Row("classifier.out_proj.bias", ("classifier", "out_proj", "bias"), COPY, "head"),
    ]
  name = HEAD_NAMES[head]
  return rows + [
    Row(f"{name}.weight", ("classifier", "kernel"), LINEAR, "head"),
    Row(f"{name}.bias", ("classifier", "bias"), COPY, "head"),
  ]
