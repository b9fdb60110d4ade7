"""What the families' Hugging Face sides share: the rows of BERT-shaped embeddings, layers
and heads, and the config.json checks of BERT-like encoders.

Our parameter paths are fixed by the model (`bert/embeddings/...`, `bert/encoder/layer_{i}`,
`mlm/...`, `classifier/...`); the Hugging Face names are the family's, given here as
prefixes and module names.
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

# Our post-LN layer (`bert.EncoderLayer`): each module's path and its weight and bias rules
# (None: a LayerNorm), in Hugging Face's order.
_LAYER = (
  (("attention", "query"), HEADS_IN, HEADS_BIAS),
  (("attention", "key"), HEADS_IN, HEADS_BIAS),
  (("attention", "value"), HEADS_IN, HEADS_BIAS),
  (("attention", "output"), HEADS_OUT, COPY),
  (("attention", "layer_norm"), None, None),
  (("mlp", "intermediate"), LINEAR, COPY),
  (("mlp", "output"), LINEAR, COPY),
  (("mlp", "layer_norm"), None, None),
)
# BERT's names of those modules (RoBERTa's and ELECTRA's too).
BERT_LAYER = (
  "attention.self.query",
  "attention.self.key",
  "attention.self.value",
  "attention.output.dense",
  "attention.output.LayerNorm",
  "intermediate.dense",
  "output.dense",
  "output.LayerNorm",
)


def linear_rows(hf, ours, group, rule=LINEAR, bias_rule=COPY, bias=True) -> list[Row]:
  """`{hf}.weight` (`rule`) and, with `bias`, `{hf}.bias` (`bias_rule`) of our layer `ours`."""
  rows = [Row(f"{hf}.weight", ours + ("kernel",), rule, group)]
  if bias:
    rows.append(Row(f"{hf}.bias", ours + ("bias",), bias_rule, group))
  return rows


def norm_rows(hf, ours, group, bias=True) -> list[Row]:
  """A LayerNorm's `{hf}.weight` and (with `bias`) `{hf}.bias`: our `scale` and `bias`."""
  rows = [Row(f"{hf}.weight", ours + ("scale",), COPY, group)]
  if bias:
    rows.append(Row(f"{hf}.bias", ours + ("bias",), COPY, group))
  return rows


def layer_rows(hf, ours, names=BERT_LAYER) -> list[Row]:
  """The rows of one post-LN layer: Hugging Face's modules `{hf}{name}` of `names` (in
  `BERT_LAYER`'s order), our layer at path `ours`.
  """
  rows = []
  for (path, rule, bias_rule), name in zip(_LAYER, names, strict=True):
    if rule is None:
      rows += norm_rows(f"{hf}{name}", ours + path, "encoder")
    else:
      rows += linear_rows(f"{hf}{name}", ours + path, "encoder", rule, bias_rule)
  return rows


def embedding_rows(hf, token_types=True) -> list[Row]:
  """BERT's embeddings `{hf}word_embeddings`, `position_embeddings`, (with `token_types`)
  `token_type_embeddings` and `LayerNorm`, our `bert/embeddings`.
  """
  emb = ("bert", "embeddings")
  tables = [("word", "word_embeddings"), ("position", "position_embeddings")]
  if token_types:
    tables.append(("token_type", "token_type_embeddings"))
  rows = [
    Row(f"{hf}{theirs}.weight", emb + (ours, "embedding"), COPY, "encoder")
    for ours, theirs in tables
  ]
  rows[0] = Row(rows[0].hf, rows[0].ours, COPY, "encoder", vocab_pad=0.0)  # the vocabulary
  return rows + norm_rows(f"{hf}LayerNorm", emb + ("layer_norm",), "encoder")


def mlm_bias_row(hf, ours=("mlm", "bias")) -> Row:
  """The MLM decoder's output bias: padded vocabulary rows get `PADDED_LOGIT_BIAS`."""
  return Row(hf, ours, COPY, "mlm", vocab_pad=PADDED_LOGIT_BIAS)


def mlm_rows(transform, layer_norm) -> list[Row]:
  """`MlmHead`'s dense layer (Hugging Face's `transform`) and LayerNorm (`layer_norm`)."""
  return linear_rows(transform, ("mlm", "transform"), "mlm") + norm_rows(
    layer_norm, ("mlm", "layer_norm"), "mlm"
  )


def task_head_rows(head: str) -> list[Row]:
  """A linear fine-tuning head (`classifier/`): Hugging Face's `qa_outputs` for QA, else
  `classifier`.
  """
  return linear_rows("qa_outputs" if head == "qa" else "classifier", ("classifier",), "head")


def first_token_head_rows() -> list[Row]:
  """`tasks.FirstTokenHead` (RoBERTa's and ELECTRA's sequence head): `classifier.dense`,
  `classifier.out_proj`.
  """
  return [
    row
    for name in ("dense", "out_proj")
    for row in linear_rows(f"classifier.{name}", ("classifier", name), "head")
  ]


def check_bert_like(hf, path, name, required, optional, act_default="gelu", activations=None):
  """UserError for a config.json of a BERT-like encoder (BERT, RoBERTa, ELECTRA, ALBERT) that
  our `name` model cannot run: its `hidden_act` (one of `activations`, default
  `bert.ACTIVATIONS`), relative positions, a decoder; then its sizes (`files.check_sizes`).
  """
  activations = tuple(bert.ACTIVATIONS) if activations is None else activations
  unsupported = []
  if hf.get("hidden_act", act_default) not in activations:
    allowed = ", ".join(activations)
    allowed = f"one of {allowed}" if len(activations) > 1 else f"only {allowed!r}"
    unsupported.append(f"hidden_act={hf['hidden_act']!r} ({allowed})")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    unsupported.append(
      f"position_embedding_type={hf['position_embedding_type']!r} (only 'absolute')"
    )
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    unsupported.append(f"a decoder / cross-attention (only the {name} encoder)")
  files.check_supported(path, unsupported, name)
  files.check_sizes(hf, path, required, optional)


def bert_kwargs(hf: dict, **defaults) -> dict:
  """BertConfig's keyword arguments of a BERT-like config.json (Hugging Face's names and,
  where it omits a key, its defaults; `defaults` overrides those, e.g. ALBERT's dropouts).
  """
  get = {**BERT_DEFAULTS, **defaults}
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    **{ours: hf.get(theirs, get[theirs]) for theirs, ours in _BERT_OPTIONAL.items()},
  )


# config.json key -> our BertConfig field, and Hugging Face's BertConfig default.
_BERT_OPTIONAL = {
  "max_position_embeddings": "max_position_embeddings",
  "type_vocab_size": "type_vocab_size",
  "hidden_dropout_prob": "hidden_dropout",
  "attention_probs_dropout_prob": "attention_dropout",
  "layer_norm_eps": "layer_norm_eps",
  "initializer_range": "initializer_range",
  "hidden_act": "hidden_act",
}
BERT_DEFAULTS = {
  "max_position_embeddings": 512,
  "type_vocab_size": 2,
  "hidden_dropout_prob": 0.1,
  "attention_probs_dropout_prob": 0.1,
  "layer_norm_eps": 1e-12,
  "initializer_range": 0.02,
  "hidden_act": "gelu",
}


def bert_hf_config(model, model_type: str, vocab_size: int, pad_token_id: int) -> dict:
  """The config.json keys every BERT-like export writes (Hugging Face's BertConfig names),
  for our `model` with `vocab_size` real rows; families add and override keys.
  """
  return {
    "model_type": model_type,
    "vocab_size": vocab_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_act": model.hidden_act,
    "hidden_dropout_prob": model.hidden_dropout,
    "attention_probs_dropout_prob": model.attention_dropout,
    "max_position_embeddings": model.max_position_embeddings,
    "type_vocab_size": model.type_vocab_size,
    "initializer_range": model.initializer_range,
    "layer_norm_eps": model.layer_norm_eps,
    "pad_token_id": pad_token_id,
    "position_embedding_type": "absolute",
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name, prefix, parts, skipped, used, renames=(), tf_names=False):
  """A checkpoint tensor's name as the family's table names it: "" for the `skipped`
  suffixes (buffers, tied copies), None for a name that starts with none of `used` (not
  read, listed by import).

  Adds the family's `prefix` to a base model's `parts`; with `tf_names` reads TF's
  `LayerNorm.gamma` / `beta` as `weight` / `bias`; an old name of `renames` ((old, new)
  pairs: a tied copy) reads as the new one.
  """
  if name.endswith(skipped):
    return ""
  if name.startswith(parts):
    name = prefix + name
  if tf_names:
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
    name = name.replace("LayerNorm.beta", "LayerNorm.bias")
  name = dict(renames).get(name, name)
  return name if name.startswith(used) else None
