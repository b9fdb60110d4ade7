"""ModernBERT's Hugging Face side: config.json, tensor names and the table
(`ModernBertForMaskedLM` names: `model.` prefix, `head.*` prediction head, `decoder.bias`; the
decoder weight is the token embeddings).

Checkpoints may have no `model.` prefix (`ModernBertModel`). config.json describes the
layer pattern and RoPE either as transformers 4.x did (`global_attn_every_n_layers`,
`global_rope_theta`, `local_rope_theta`) or as 5.x does (`layer_types`, `rope_parameters`);
exports write both. Our fused kernels split Hugging Face's: `Wqkv` (3 * hidden, hidden) is
our (embed, 3, heads, head_dim) `qkv`, `Wi` (2 * intermediate, hidden) our (embed, 2, mlp)
`wi` (input, then gate).
"""

import dataclasses

from bert_jax.errors import UserError
from bert_jax.hf import files
from bert_jax.hf.convert import COPY, HEADS_BIAS, HEADS_IN, HEADS_OUT, LINEAR, Row
from bert_jax.hf.families import bert as bert_hf
from bert_jax.hf.families import common
from bert_jax.model import bert

ARCH = "modernbert"
MODEL_TYPES = ("modernbert",)
GROUPS = {
  "mlm": "MLM head (head.*, decoder.bias)",
  "head": "fine-tuning head (head.*, classifier.*)",
}
# config.json keys without a default: the architecture (see `model_kwargs`).
REQUIRED = bert_hf.REQUIRED
_OPTIONAL_SIZES = ("max_position_embeddings", "local_attention", "global_attn_every_n_layers")
_PARTS = ("embeddings.", "layers.", "final_norm.")
# Hugging Face classes of each head.
ARCHITECTURES = {
  "pretraining": "ModernBertForMaskedLM",
  "classification": "ModernBertForSequenceClassification",
  "regression": "ModernBertForSequenceClassification",
  "tokens": "ModernBertForTokenClassification",
  "qa": "ModernBertForQuestionAnswering",
}
_GLOBAL, _LOCAL = "full_attention", "sliding_attention"
_THETA = {_GLOBAL: ("global_rope_theta", 160_000.0), _LOCAL: ("local_rope_theta", 10_000.0)}

# (embed, k, ...) kernel <-> (k * ..., embed) weight: Wqkv (k = 3: query, key, value, each
# heads x head_dim) and Wi (k = 2: input, gate), merged in C order as Hugging Face's view.
FUSED_IN = dataclasses.replace(HEADS_IN, name="merge fused axes, transpose")
FUSED_BIAS = dataclasses.replace(HEADS_BIAS, name="merge fused axes")


def _every_n(hf: dict) -> int | None:
  """global_attn_every_n_layers of `hf`, or None when its layer_types follow no such pattern
  (global attention on layers 0, n, 2n, ..., sliding windows between).
  """
  layers, n = hf["num_hidden_layers"], hf.get("global_attn_every_n_layers", 3)
  types = hf.get("layer_types")
  if types is None:
    return n
  globals_ = [i for i, t in enumerate(types) if t == _GLOBAL]
  if len(globals_) > 1:
    n = globals_[1]
  elif not (isinstance(n, int) and n >= layers):
    n = layers  # only layer 0 is global
  pattern = [_GLOBAL if i % n == 0 else _LOCAL for i in range(layers)]
  return n if list(types) == pattern else None


def _theta(hf: dict, kind: str) -> float:
  """The RoPE theta of `kind` layers (global or sliding)."""
  key, default = _THETA[kind]
  params = (hf.get("rope_parameters") or {}).get(kind) or {}
  return float(params.get("rope_theta", hf.get(key, default)))


def check_config(hf: dict, path: str) -> None:
  """UserError for a ModernBERT config.json our model cannot run."""
  files.check_sizes(hf, path, REQUIRED, _OPTIONAL_SIZES)
  unsupported = []
  for key in ("hidden_activation", "classifier_activation"):
    if hf.get(key, "gelu") not in bert.ACTIVATIONS:
      unsupported.append(f"{key}={hf[key]!r} (one of {', '.join(bert.ACTIVATIONS)})")
  if hf.get("classifier_pooling", "cls") not in ("cls", "mean"):
    unsupported.append(f"classifier_pooling={hf['classifier_pooling']!r} (cls or mean)")
  if _every_n(hf) is None:
    unsupported.append(
      f"layer_types={hf['layer_types']} (only global attention on every n-th layer from "
      f"layer 0, sliding windows between)"
    )
  rope = hf.get("rope_parameters") or {}
  kinds = sorted({(v or {}).get("rope_type", "default") for v in rope.values()} - {"default"})
  if kinds or hf.get("rope_scaling"):
    unsupported.append(f"RoPE scaling {kinds or hf['rope_scaling']} (only the default RoPE)")
  if hf.get("tie_word_embeddings", True) is False:
    unsupported.append("tie_word_embeddings=false (the decoder is the token embeddings)")
  if hf["hidden_size"] % hf["num_attention_heads"] or (
    hf["hidden_size"] // hf["num_attention_heads"] % 2
  ):
    unsupported.append(
      f"hidden_size={hf['hidden_size']} with num_attention_heads="
      f"{hf['num_attention_heads']} (heads must split it into even head sizes)"
    )
  files.check_supported(path, unsupported, "ModernBERT")
  if hf.get("head_dim") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
    raise UserError(f"{path} has head_dim={hf['head_dim']}; ModernBERT's is hidden / heads")


def model_kwargs(hf: dict) -> dict:
  """ModernBertConfig keyword arguments (before vocabulary padding) of a config.json.

  Hugging Face's embedding and MLP dropouts are one (`hidden_dropout`, from `mlp_dropout`);
  runs set dropout from config.model anyway.
  """
  return dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=hf["num_attention_heads"],
    intermediate_size=hf["intermediate_size"],
    max_position_embeddings=hf.get("max_position_embeddings", 8192),
    hidden_dropout=float(hf.get("mlp_dropout", 0.0)),
    attention_dropout=float(hf.get("attention_dropout", 0.0)),
    layer_norm_eps=hf.get("norm_eps", 1e-5),
    initializer_range=hf.get("initializer_range", 0.02),
    hidden_act=hf.get("hidden_activation", "gelu"),
    global_attn_every_n_layers=_every_n(hf),
    local_attention=hf.get("local_attention", 128),
    global_rope_theta=_theta(hf, _GLOBAL),
    local_rope_theta=_theta(hf, _LOCAL),
    norm_bias=bool(hf.get("norm_bias", False)),
    attention_bias=bool(hf.get("attention_bias", False)),
    mlp_bias=bool(hf.get("mlp_bias", False)),
    classifier_bias=bool(hf.get("classifier_bias", False)),
    decoder_bias=bool(hf.get("decoder_bias", True)),
    classifier_activation=hf.get("classifier_activation", "gelu"),
    classifier_pooling=hf.get("classifier_pooling", "cls"),
    classifier_dropout=float(hf.get("classifier_dropout", 0.0)),
    initializer_cutoff_factor=float(hf.get("initializer_cutoff_factor", 2.0)),
  )


def hf_config(model, vocab_size: int, tokenizer) -> dict:
  """config.json contents for our `model` with `vocab_size` real rows.

  Args:
    model: a `modernbert.ModernBertConfig`.
    vocab_size: the tokenizer's rows (the model's padding rows are not exported).
    tokenizer: the run's tokenizer (its pad / cls / sep ids; ModernBERT's bos is [CLS], its
      eos [SEP]).

  Returns:
    The config.json contents, as a dict (`architectures` set by the caller).
  """
  n = model.global_attn_every_n_layers
  types = [_GLOBAL if i % n == 0 else _LOCAL for i in range(model.num_layers)]
  classifier_dropout = model.classifier_dropout
  return {
    "model_type": "modernbert",
    "vocab_size": vocab_size,
    "hidden_size": model.hidden_size,
    "num_hidden_layers": model.num_layers,
    "num_attention_heads": model.num_heads,
    "intermediate_size": model.intermediate_size,
    "hidden_activation": model.hidden_act,
    "max_position_embeddings": model.max_position_embeddings,
    "initializer_range": model.initializer_range,
    "initializer_cutoff_factor": model.initializer_cutoff_factor,
    "norm_eps": model.layer_norm_eps,
    "norm_bias": model.norm_bias,
    "pad_token_id": tokenizer.pad_id,
    "bos_token_id": tokenizer.cls_id,
    "eos_token_id": tokenizer.sep_id,
    "cls_token_id": tokenizer.cls_id,
    "sep_token_id": tokenizer.sep_id,
    "attention_bias": model.attention_bias,
    "attention_dropout": model.attention_dropout,
    # transformers 4.x's names and 5.x's, the same values.
    "global_attn_every_n_layers": n,
    "global_rope_theta": model.global_rope_theta,
    "local_rope_theta": model.local_rope_theta,
    "layer_types": types,
    "rope_parameters": {
      _GLOBAL: {"rope_type": "default", "rope_theta": model.global_rope_theta},
      _LOCAL: {"rope_type": "default", "rope_theta": model.local_rope_theta},
    },
    "local_attention": model.local_attention,
    "embedding_dropout": model.hidden_dropout,
    "mlp_bias": model.mlp_bias,
    "mlp_dropout": model.hidden_dropout,
    "decoder_bias": model.decoder_bias,
    "classifier_pooling": model.classifier_pooling,
    "classifier_dropout": (
      model.hidden_dropout if classifier_dropout is None else classifier_dropout
    ),
    "classifier_bias": model.classifier_bias,
    "classifier_activation": model.classifier_activation,
    "tie_word_embeddings": True,
    "dtype": "float32",
  }


def tensor_name(name: str) -> str | None:
  """A checkpoint's tensor name as ModernBertForMaskedLM names it ("" to skip, None unused).

  Adds the `model.` prefix of a `ModernBertModel`'s names; skips the tied decoder weight.
  The fine-tuning classes' `head.*` is read as the MLM model's (as transformers does).
  """
  if name == "decoder.weight":
    return ""  # the token embeddings
  return common.tensor_name(name, "model.", _PARTS, (), ("model.", "head.", "decoder.bias"))


def _norm_rows(hf, ours, model, group):
  return common.norm_rows(hf, ours, group, bias=model.norm_bias)


def _linear_rows(hf, ours, rule, bias_rule, use_bias, group):
  return common.linear_rows(hf, ours, group, rule, bias_rule, bias=use_bias)


def _layer_rows(model, i):
  hf, ours = f"model.layers.{i}.", ("bert", "encoder", f"layer_{i}")
  g = "encoder"
  rows = [] if i == 0 else _norm_rows(f"{hf}attn_norm", ours + ("attn_norm",), model, g)
  attn, mlp = ours + ("attn",), ours + ("mlp",)
  rows += _linear_rows(
    f"{hf}attn.Wqkv", attn + ("qkv",), FUSED_IN, FUSED_BIAS, model.attention_bias, g
  )
  rows += _linear_rows(f"{hf}attn.Wo", attn + ("output",), HEADS_OUT, COPY, model.attention_bias, g)
  rows += _norm_rows(f"{hf}mlp_norm", ours + ("mlp_norm",), model, g)
  rows += _linear_rows(f"{hf}mlp.Wi", mlp + ("wi",), FUSED_IN, FUSED_BIAS, model.mlp_bias, g)
  rows += _linear_rows(f"{hf}mlp.Wo", mlp + ("wo",), LINEAR, COPY, model.mlp_bias, g)
  return rows


def table(model, head: str = "pretraining") -> list[Row]:
  """Every row for `model` (a `ModernBertConfig`) and `head`, in Hugging Face's order.

  Args:
    model: the model config (its layer count and biases).
    head: "pretraining" (the MLM head), or a fine-tuning task of `tasks.TASKS`.

  Returns:
    The rows: embeddings, each layer, the final norm, the head.
  """
  emb = ("bert", "embeddings")
  rows = [
    Row(
      "model.embeddings.tok_embeddings.weight",
      emb + ("word", "embedding"),
      COPY,
      "encoder",
      vocab_pad=0.0,
    ),
    *_norm_rows("model.embeddings.norm", emb + ("norm",), model, "encoder"),
  ]
  for i in range(model.num_layers):
    rows += _layer_rows(model, i)
  rows += _norm_rows("model.final_norm", ("bert", "final_norm"), model, "encoder")
  if head == "pretraining":
    ours, group = ("head",), "mlm"
  else:
    ours, group = ("classifier", "head"), "head"
  rows += _linear_rows("head.dense", ours + ("dense",), LINEAR, COPY, model.classifier_bias, group)
  rows += _norm_rows("head.norm", ours + ("norm",), model, group)
  if head != "pretraining":
    return rows + _linear_rows("classifier", ("classifier", "out"), LINEAR, COPY, True, "head")
  if model.decoder_bias:
    rows.append(common.mlm_bias_row("decoder.bias", ("decoder", "bias")))
  return rows
