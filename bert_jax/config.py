"""Config helpers: the full schema with defaults, size presets, validation, and the
conversion of an ml_collections config into the frozen model dataclass.

Recipes in `configs/` start from `base_config()` and change what they need; a config file
loaded by the CLI is locked, so a mistyped key (`--config.trian.steps=1`) is an error.
"""

import ast
import dataclasses
import importlib.util
import os
import pathlib

import ml_collections
from ml_collections.config_dict import placeholder

from bert_jax.errors import UserError
from bert_jax.model import attention, axes, families
from bert_jax.model.bert import REMAT_POLICIES, heads_of_64

# name: (layers, hidden). Heads = hidden / 64, intermediate = 4 * hidden (Turc et al. 2019).
SIZES = {
  "tiny": (2, 128),
  "mini": (4, 256),
  "small": (4, 512),
  "medium": (8, 512),
  "base": (12, 768),
  "large": (24, 1024),
}

# config.model.dtype / param_dtype: XLA:CPU has no float16 matmul, and the step keeps no
# loss scale, so float16 is not offered.
DTYPES = ("float32", "bfloat16")
OBJECTIVES = ("nsp", "sop", "mlm")
INPUT_FORMATS = ("auto", "bert", "document", "jsonl")
LOADERS = ("auto", "tf.data", "threads")
DEFAULT_POSITIONS = 512  # config.model.max_position_embeddings unless a recipe sets it


def _recipes_dir() -> pathlib.Path:
  """The recipes: installed as bert_jax.configs (pyproject maps the top-level configs/ there,
  so a wheel has them), else the configs/ of this clone (run without installing).
  """
  spec = importlib.util.find_spec("bert_jax.configs")
  if spec is not None and spec.origin:
    return pathlib.Path(spec.origin).parent
  return pathlib.Path(__file__).resolve().parent.parent / "configs"


RECIPES = _recipes_dir()
DEFAULT_CONFIG = RECIPES / "demo.py"
DEFAULT_FINETUNE_CONFIG = RECIPES / "finetune" / "classify_csv.py"


def recipe_path(value: str) -> str:
  """The recipe file of a --config value `FILE[:ARG]`: FILE itself when it exists, else the
  installed recipe of that name (`configs/finetune/glue.py` outside a clone); FILE when
  neither exists (the caller reports it).
  """
  file = value.split(":")[0]
  if os.path.isfile(file):
    return file
  installed = _installed(file)
  return str(installed) if installed is not None and installed.is_file() else file


def _installed(path: str) -> pathlib.Path | None:
  """The installed counterpart of a path under a `configs/` folder; None for others."""
  parts = pathlib.PurePath(path).parts
  if "configs" not in parts:
    return None
  return RECIPES.joinpath(*parts[len(parts) - parts[::-1].index("configs") :])


def base_config():
  """Every key a pretraining run reads, with the original BERT's defaults."""
  c = _common()
  c.model.size = "base"  # one of SIZES, or "checkpoint": config.init_from's architecture

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_size = 30522  # pieces, including the 5 specials (the model pads to 128)
  # unigram | bpe (SentencePiece) | bytelevel_bpe (RoBERTa's, `tokenizers`, tokenizer.json) |
  # wordpiece (BERT's, `tokenizers`, vocab.txt; cased or not by tokenizer.lowercase)
  c.tokenizer.model_type = "unigram"
  c.tokenizer.path = placeholder(str)  # an existing tokenizer instead of training one: a
  # SentencePiece .model, a WordPiece vocab.txt or a
  # Hugging Face (WordPiece) tokenizer.json
  c.tokenizer.input_sentence_size = 1_000_000  # sentences sampled from the corpus to train on
  # WordPiece only. None: a given vocab lowercases if it has no capitals; a trained one does
  c.tokenizer.lowercase = placeholder(bool)

  c.data = ml_collections.ConfigDict()
  c.data.input = "builtin:python_docs"  # builtin:python_docs | glob[,glob...] | tfds:NAME
  c.data.input_format = "auto"  # auto | bert (sentence per line) | document (file) | jsonl
  c.data.text_field = "text"  # the text of a JSON Lines record or a TFDS example
  c.data.tfds_split = "train"  # TFDS split read by tfds:NAME (eval documents are held out)
  c.data.tfds_data_dir = placeholder(str)  # TFDS data dir; None: TFDS's default
  c.data.prepared_dir = placeholder(str)  # prepared shards (bert-jax prepare); default WORKDIR/data
  # Local folder for copies of the shards of a remote prepared_dir (gs://...): each process
  # copies only its own lanes' shards, checked against the manifest. A local prepared_dir is
  # read in place.
  c.data.cache_dir = placeholder(str)  # None: $XDG_CACHE_HOME/bert_jax, else ~/.cache/bert_jax
  # Batches under tf.data ("tf.data"), or a thread pool ("threads": the same batches, no
  # TensorFlow import, ~4 s sooner to start); "auto": tf.data when TensorFlow is installed.
  c.data.loader = "auto"
  c.data.num_shards = 64  # output shards (work units), split between the lanes
  c.data.lanes = 8  # data streams; a run resumes exactly on any host count
  # dividing it; it must divide train.batch_size
  c.data.num_workers = 0  # preparation processes; 0: one per core
  c.data.strict = False  # non-UTF-8 lines: False skips and counts them, True is an error
  c.data.objective = "nsp"  # nsp (BERT) | sop (ALBERT) | mlm (RoBERTa full sentences)
  c.data.packing = False  # mlm only: pack documents into rows, no attention across them
  c.data.documents_per_chunk = 1000  # documents in memory at once; random next B comes from
  # them (in a chunk of fewer than 10, also from the next work units' first documents)
  c.data.max_seq_length = 128
  c.data.max_predictions_per_seq = 20
  c.data.mask_rate = 0.15
  c.data.mask_token_rate = 0.8  # of the predicted tokens: share replaced by [MASK]
  c.data.random_token_rate = 0.1  # share replaced by a random token (the rest stay as they are)
  c.data.whole_word_masking = False  # mask all pieces of a word together
  # Mask spans of 1 to N consecutive words (tokens without whole_word_masking), N drawn
  # with p(n) proportional to 1/n: ALBERT's n-gram masking (3); 1: single words
  c.data.max_ngram = 1
  c.data.short_seq_prob = 0.1  # share of instances with a shorter random target length
  c.data.dupe_factor = 1  # passes over the corpus when building instances
  c.data.eval_fraction = 0.02  # share of documents held out for eval

  c.train.steps = 1_000_000
  c.train.batch_size = 256  # global, across all processes
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 10_000
  c.train.log_every_steps = 100

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 10_000
  c.eval.steps = 50  # batches of train.batch_size; fewer if the split is smaller
  c.eval.at_start = False  # also evaluate before the first step (the "before" numbers)
  # The held-out rows' mask rate; None: data.mask_rate. 0.15 compares runs that train at
  # other rates with BERT's (the rows keep data.max_predictions_per_seq as their cap).
  c.eval.mask_rate = placeholder(float)

  c.checkpoint.every_steps = 10_000
  c.checkpoint.keep = 3
  return c


def _common():
  """The sections pretraining and fine-tuning share: model, optimizer, checkpoints, mesh."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameters, data order, masking and dropout all derive from it
  c.distributed = False  # call jax.distributed.initialize() (multi-host pods, SLURM)
  c.init_from = placeholder(str)  # a workdir (or its checkpoints/) to take parameters from

  c.model = ml_collections.ConfigDict()
  c.model.size = "checkpoint"
  # The encoder family (model.families.ARCHES). None: "bert" for a size preset;
  # config.init_from's with size "checkpoint" (a family given there must be the same).
  c.model.arch = placeholder(str)
  # Shape overrides of the size preset (None: the preset's; heads = hidden / 64).
  c.model.num_layers = placeholder(int)
  c.model.hidden_size = placeholder(int)
  c.model.intermediate_size = placeholder(int)  # None: 4 x hidden
  # Family settings, None: the family's default. A setting the family lacks is an error.
  c.model.hidden_act = placeholder(str)  # gelu | gelu_new | relu | silu
  c.model.embedding_size = placeholder(int)  # ALBERT, ELECTRA: factorised embeddings
  # ELECTRA: replaced-token detection with a generator this wide (heads of 64, the same
  # depth; the paper: a quarter to a third of the hidden size); None: masked LM alone
  c.model.generator_hidden_size = placeholder(int)
  c.model.discriminator_weight = placeholder(float)  # ELECTRA: the RTD loss's weight (50)
  c.model.local_attention = placeholder(int)  # ModernBERT: sliding window width (tokens)
  c.model.global_attn_every_n_layers = placeholder(int)  # ModernBERT
  c.model.global_rope_theta = placeholder(float)  # ModernBERT
  c.model.local_rope_theta = placeholder(float)  # ModernBERT
  c.model.max_position_embeddings = DEFAULT_POSITIONS
  c.model.hidden_dropout = 0.1
  c.model.attention_dropout = 0.1  # 0 lets GPUs use cuDNN flash attention in training
  c.model.dtype = "float32"  # compute dtype; "bfloat16" on GPU / TPU
  c.model.param_dtype = "float32"  # storage dtype of the parameters
  c.model.scan_layers = False  # nn.scan over layers: faster compiles for deep models
  c.model.remat_policy = "none"  # none | full | dots | dots_no_batch
  c.model.attention_impl = placeholder(str)  # None (auto: splash on TPU) | xla | cudnn | splash
  c.model.fused_qkv = False  # BERT-family attention: Q, K, V in one matmul (same parameters)
  # BERT-family feed-forward: the bias add and activation after its first matmul recomputed
  # in the backward pass, not kept (less memory traffic; same parameters and values).
  c.model.recompute_activation = False
  c.model.vocab_multiple = 128  # embedding rows padded to a multiple (fast matmuls)

  c.train = ml_collections.ConfigDict()
  c.train.decay = "linear"  # linear | cosine | constant | wsd, after the warmup
  c.train.decay_fraction = 0.1  # wsd: the last share of the steps, decayed as 1 - sqrt
  c.train.optimizer = "adamw"  # adamw | lamb
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-6
  c.train.weight_decay = 0.01  # not on LayerNorm parameters or biases
  c.train.clip_norm = 1.0  # global gradient norm; 0: no clipping
  c.train.accum_steps = 1  # micro-batches per step (gradient accumulation)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.async_save = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices not used by the other axes
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = axes.DEFAULT_RULES  # (logical, mesh axes) pairs
  return c


def finetune_base_config():
  """Every key a fine-tuning run reads, with the paper's defaults (Devlin et al. 2018, A.3):
  batch 32, 3 epochs, 10 % warmup then linear decay, dropout 0.1; the architecture and
  tokenizer are config.init_from's.
  """
  c = _common()
  c.task = "classification"  # classification | regression | tokens | qa | embedding

  c.head = ml_collections.ConfigDict()
  c.head.reinit = False  # a new head even if config.init_from has one of this task
  c.head.freeze_encoder = False  # train only the head (the feature-based use of BERT)
  c.head.reinit_layers = 0  # re-initialise the top k encoder layers (and the pooler)

  c.data = ml_collections.ConfigDict()
  c.data.train = placeholder(str)  # a .csv / .tsv / .jsonl file, or tfds:NAME:SPLIT
  c.data.eval = placeholder(str)  # the same kinds; evaluated every eval.every_steps
  c.data.text_column = "text"  # tokens task: a list of words (or a whitespace-split string)
  c.data.text_pair_column = placeholder(str)  # the second text of pair tasks (e.g. NLI)
  c.data.label_column = "label"  # strings or ints; regression: numbers; tokens: tag lists
  c.data.labels = placeholder(str)  # comma-separated label names in id order; None: sorted
  # labels of the train data (TFDS: its ClassLabel names)
  c.data.max_seq_length = 128
  c.data.tfds_data_dir = placeholder(str)  # TFDS data dir; None: TFDS's default
  c.data.doc_stride = 128  # qa: tokens between the starts of a context's windows
  c.data.max_query_length = 64  # qa: question tokens kept
  c.data.negative_column = placeholder(str)  # embedding: a hard negative for each pair
  c.data.score_column = placeholder(str)  # embedding eval: a similarity score (Spearman)

  # task "embedding": sentence embeddings trained on (anchor = text_column, positive =
  # text_pair_column) pairs.
  c.embedding = ml_collections.ConfigDict()
  c.embedding.pooling = "mean"  # mean | cls | max
  c.embedding.normalize = True  # unit-length embeddings (the export's Normalize module)
  c.embedding.loss = "mnrl"  # mnrl (in-batch negatives, InfoNCE) | triplet
  c.embedding.scale = 20.0  # mnrl: cosine similarities times this (1 / temperature)
  c.embedding.symmetric = False  # mnrl: also positives -> anchors
  c.embedding.margin = 5.0  # triplet: euclidean margin (sentence-transformers' default)

  c.qa = ml_collections.ConfigDict()
  c.qa.n_best = 20  # start and end candidates per window
  c.qa.max_answer_length = 30  # tokens
  c.qa.null_threshold = 0.0  # SQuAD 2.0: predict no answer when null - best > this
  c.qa.version_2 = False  # SQuAD 2.0: questions may have no answer

  c.train.epochs = 3.0
  c.train.steps = placeholder(int)  # None: epochs x (train examples // batch_size)
  c.train.batch_size = 32  # global, across all processes
  c.train.learning_rate = 2e-5  # the paper picks from 5e-5, 4e-5, 3e-5, 2e-5 on the dev set
  c.train.warmup_fraction = 0.1
  c.train.log_every_steps = 10

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = placeholder(int)  # None: at the end of every epoch
  c.eval.batch_size = placeholder(int)  # None: train.batch_size
  c.eval.metric = placeholder(str)  # the metric the best checkpoint is kept by; None: the
  # task's (accuracy, f1, matthews, spearman, entity f1, ...)
  # The metrics evaluated, comma-separated (e.g. "matthews,accuracy"); None: the task's, or
  # a TFDS split's registry's. The TFDS recipes (GLUE, ...) set their task's.
  c.eval.metrics = placeholder(str)
  c.eval.at_start = False

  c.checkpoint.keep = 2  # latest checkpoints (for resuming); the best is kept apart
  return c


def distill_base_config():
  """Every key a distillation run reads: a fine-tuning config (the student's task, data,
  optimizer) plus the teacher and the losses. The student is a size preset of the teacher's
  family (`config.model.size`) or the teacher's own layers (`distill.student_layers`).
  """
  c = finetune_base_config()
  # The student: a size preset (a new model of the teacher's family), "teacher" (the
  # teacher's own layers, distill.student_layers), or "checkpoint" (config.init_from's
  # architecture and encoder, which must use the teacher's tokenizer).
  c.model.size = "mini"
  c.model.arch = placeholder(str)  # a size preset's family; None: the teacher's
  c.teacher = placeholder(str)  # a fine-tuned run, or a HF *ForSequenceClassification dir
  c.distill = ml_collections.ConfigDict()
  c.distill.temperature = 2.0  # softens teacher and student logits for the soft loss
  c.distill.alpha = 0.5  # weight of the soft (teacher) loss; 1 - alpha on the hard labels
  c.distill.unlabeled = placeholder(str)  # a file of extra texts the teacher labels
  c.distill.student_layers = placeholder(str)  # e.g. "0,2,4": the teacher's layers kept
  c.distill.hidden_weight = 0.0  # MSE between mapped hidden states (not implemented: 0)
  c.distill.attention_weight = 0.0  # KL between mapped attention maps (not implemented: 0)
  return c


_NEEDS_INIT_FROM = (
  "config.model.size='checkpoint' takes the architecture of config.init_from; "
  "set --config.init_from=WORKDIR (e.g. made by import-hf)"
)
# The architecture that `config.model.size="checkpoint"` takes from config.init_from.
SHAPE_KEYS = (
  "vocab_size",
  "hidden_size",
  "num_layers",
  "num_heads",
  "intermediate_size",
  "max_position_embeddings",
  "type_vocab_size",
)


# config.model keys that set a field of the family's config when given (not None).
FAMILY_KEYS = (
  "intermediate_size",
  "hidden_act",
  "embedding_size",
  "generator_hidden_size",
  "discriminator_weight",
  "local_attention",
  "global_attn_every_n_layers",
  "global_rope_theta",
  "local_rope_theta",
)
# Model-dict fields that come from config.model, not from the checkpoint.
_RUN_KEYS = (
  "hidden_dropout",
  "attention_dropout",
  "dtype",
  "param_dtype",
  "scan_layers",
  "remat_policy",
  "attention_impl",
  "fused_qkv",
  "recompute_activation",
)


def attention_heads(hidden: int) -> int:
  """The attention heads of a new model `hidden` wide: one per 64 (BERT's sizes), one below.

  Raises:
    UserError: a width that does not split into them.
  """
  heads = heads_of_64(hidden)
  if hidden < 1 or hidden % heads:
    raise UserError(
      f"config.model.hidden_size={hidden} does not split into {heads} attention heads (one "
      f"per 64); use a multiple of 64, or a size below 64 (one head)"
    )
  return heads


def _check_no_shape_given(m, model) -> None:
  """Refuses a shape in config.model (`m`) that differs from the checkpoint `model` that
  config.model.size='checkpoint' takes (it would be ignored): layers, width, the family's
  keys, positions other than the default's.
  """
  given = {k: m[k] for k in ("num_layers", "hidden_size", *FAMILY_KEYS) if m[k] is not None}
  if m.max_position_embeddings != DEFAULT_POSITIONS:
    given["max_position_embeddings"] = m.max_position_embeddings
  fields = {f.name for f in dataclasses.fields(model)}
  for key, value in sorted(given.items()):
    if key in fields and getattr(model, key) == value:
      continue
    has = f"{key} {getattr(model, key)}" if key in fields else f"no {key}"
    raise UserError(
      f"config.model.{key}={value!r}, but config.model.size='checkpoint' takes the "
      f"architecture of config.init_from ({model.arch}, {has}); drop --config.model.{key} "
      f"(where a recipe sets it: --config.model.{key}=None), or set a size preset to train "
      f"a new model"
    )


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
  """`vocab_size` rounded up to a multiple of `multiple` (at least 1): the embedding rows."""
  multiple = max(1, multiple)
  return -(-vocab_size // multiple) * multiple


def model_config(config, vocab_size, init_model=None, pad_id=0):
  """The frozen model dataclass (its family's) for `config` and a tokenizer of
  `vocab_size` pieces whose [PAD] is `pad_id`.

  The embedding (and tied MLM output) matrix gets `vocab_size` rounded up to a multiple of
  `config.model.vocab_multiple` rows; the extra rows are never a target or an input.
  With `config.model.size="checkpoint"`, the architecture (family included) is
  `init_model`'s (the model dict of config.init_from's checkpoint, e.g. an imported Hugging
  Face model); dropout, dtypes, scan and remat still come from `config.model`, and
  `packed_rows` from `config.data.packing` (rows of one example and padding without it).
  """
  m = config.model
  common = {key: m[key] for key in _RUN_KEYS}
  common["packed_rows"] = bool(config.get("data", {}).get("packing", False))
  if m.size == "checkpoint":
    if init_model is None:
      raise UserError(_NEEDS_INIT_FROM)
    arch = {k: v for k, v in init_model.items() if k not in common}
    model = families.config_from_dict({**arch, **common})
    if m.arch is not None and m.arch != model.arch:
      raise UserError(
        f"config.model.arch={m.arch!r}, but config.init_from holds a {model.arch} model, "
        f"and config.model.size='checkpoint' takes its architecture; leave "
        f"config.model.arch unset, or set a size preset to train a new {m.arch} model"
      )
    _check_no_shape_given(m, model)
    if model.vocab_size < vocab_size:
      raise UserError(
        f"config.init_from has {model.vocab_size} vocabulary rows but the "
        f"tokenizer has {vocab_size} tokens; use the checkpoint's own tokenizer"
      )
    if config.data.max_seq_length > model.max_length:
      raise UserError(
        f"config.data.max_seq_length={config.data.max_seq_length} exceeds the "
        f"{model.max_length} positions of config.init_from; lower the sequence length "
        f"(a checkpoint's positions are fixed)"
      )
    return model
  arch = new_model_arch(config)
  family = families.family(arch)
  layers, hidden = _size(config)
  layers, hidden = m.num_layers or layers, m.hidden_size or hidden
  fields = {f.name for f in dataclasses.fields(family.config)}
  given = {key: m[key] for key in FAMILY_KEYS if m[key] is not None}
  foreign = sorted(set(given) - fields)
  if foreign:
    raise UserError(
      f"config.model.{foreign[0]} does not apply to config.model.arch={arch!r}; "
      f"leave it unset (None)"
    )
  if "pad_token_id" in fields:
    given["pad_token_id"] = pad_id
  given.setdefault("intermediate_size", 4 * hidden)
  heads = attention_heads(hidden)
  try:
    model = family.config(
      vocab_size=padded_vocab_size(vocab_size, m.vocab_multiple),
      hidden_size=hidden,
      num_layers=layers,
      num_heads=heads,
      max_position_embeddings=m.max_position_embeddings,
      **given,
      **common,
    )
  except ValueError as e:  # a setting the family cannot take (e.g. scan_layers)
    raise UserError(f"config.model: {e}") from None
  return model


def new_model_arch(config) -> str:
  """The family of a new model (a size preset): config.model.arch, "bert" when unset."""
  if config.model.arch is None:
    return "bert"
  check_choice(config, "model.arch", families.ARCHES)
  return config.model.arch


def with_model_arch(config, model_cfg):
  """A copy of `config` whose model.arch is `model_cfg`'s family (config.json then names
  the family a run trained, also when it came from config.init_from).
  """
  if config.model.arch == model_cfg.arch:
    return config
  config = config.copy_and_resolve_references()
  config.model.arch = model_cfg.arch
  return config


def _size(config):
  """(layers, hidden) of `config.model.size`."""
  if config.model.size == "checkpoint":
    if not config.init_from:
      raise UserError(_NEEDS_INIT_FROM)
    return None
  if config.model.size not in SIZES:
    raise UserError(
      f"config.model.size={config.model.size!r} is not one of {', '.join(SIZES)}, checkpoint"
    )
  return SIZES[config.model.size]


def check_same_model(
  saved_model: dict,
  model_dict: dict,
  where: str,
  fix: str = "use a new --workdir or the matching config.model settings",
  layout: bool = True,
) -> None:
  """Bad input: a checkpoint (its meta's model dict) of another architecture than the config's.

  `layout`: the layers' layout (scan_layers) must match too (a run resumed, optimizer state
  and all); init_from restores either layout into the other (`run.restore_as`).

  Raises:
    UserError: naming `where` (the workdir or init_from) and each key that differs.
  """
  saved_model = {"arch": "bert", **saved_model}  # checkpoints from before the families
  keys = ("arch",) + SHAPE_KEYS + (("scan_layers",) if layout else ())
  diff = {
    k: (saved_model.get(k), model_dict.get(k))
    for k in keys
    if saved_model.get(k) != model_dict.get(k)
  }
  if list(diff) == ["scan_layers"]:  # the one setting that names its fix
    fix = f"resume with --config.model.scan_layers={saved_model['scan_layers']}"
  if diff:
    detail = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
    raise UserError(f"{where} holds a checkpoint of another model ({detail}); {fix}")


def model_dict(model):
  """The model dataclass as the plain dict a checkpoint's meta stores."""
  return dataclasses.asdict(model)


def check_positive(config, key: str) -> None:
  """Bad input: `config.<key>` (e.g. "train.steps") below 1."""
  section, name = key.split(".")
  if config[section][name] < 1:
    raise UserError(f"config.{key} must be at least 1, got {config[section][name]}")


def check_choice(config, key: str, choices) -> None:
  """Bad input: `config.<key>` (a dotted path) not one of `choices`."""
  value = config
  for part in key.split("."):
    value = value[part]
  if value not in choices:
    raise UserError(f"config.{key}={value!r} is not one of {', '.join(map(str, choices))}")


def validate_common(config) -> None:
  """The checks every job shares: model size, remat policy, dtypes, batch, learning rate,
  accumulation, logging, checkpoints kept.

  Each job's `validate` calls this, then checks its own keys. Raises UserError.
  """
  size = _size(config)  # None for "checkpoint"
  if size is not None:  # a new model's heads, before any data is prepared
    attention_heads(config.model.hidden_size or size[1])
  check_choice(config, "model.remat_policy", REMAT_POLICIES)
  check_choice(config, "model.attention_impl", attention.IMPLEMENTATIONS)
  for key in ("model.dtype", "model.param_dtype"):
    check_choice(config, key, DTYPES)
  for key in ("hidden_dropout", "attention_dropout"):
    if not 0 <= config.model[key] < 1:
      raise UserError(f"config.model.{key}={config.model[key]} must be in [0, 1): a probability")
  for key in ("weight_decay", "clip_norm"):
    if config.train[key] < 0:
      raise UserError(f"config.train.{key}={config.train[key]} must be 0 (none) or more")
  if (config.eval.every_steps or 0) < 0:
    raise UserError(f"config.eval.every_steps={config.eval.every_steps} must be 0 (none) or more")
  check_positive(config, "checkpoint.keep")
  for key in ("train.batch_size", "train.accum_steps", "train.log_every_steps"):
    check_positive(config, key)
  if not config.train.learning_rate > 0:
    raise UserError(f"config.train.learning_rate={config.train.learning_rate} must be above 0")
  if config.train.batch_size % config.train.accum_steps:
    raise UserError(
      f"config.train.batch_size={config.train.batch_size} is not divisible by "
      f"config.train.accum_steps={config.train.accum_steps}"
    )


def _recipes_in(folder: str) -> str:
  """The recipe files in `folder`, for messages: "a.py, b.py, ..." (12 at most); "" for none."""
  recipes = sorted(n for n in os.listdir(folder) if n.endswith(".py") and n != "__init__.py")
  return ", ".join(recipes[:12]) + (", ..." if len(recipes) > 12 else "")


def check_recipe(file: str) -> None:
  """Bad input: a --config file that is missing, not Python, or has no get_config().

  Raises:
    UserError: one line naming the file (and the line of a syntax error).
  """
  if os.path.isdir(file):
    shown = _recipes_in(file)
    raise UserError(
      f"config file {file!r} is a folder; give a recipe file in it"
      + (f" ({shown})" if shown else "")
    )
  if not os.path.isfile(file):
    folder, installed = os.path.dirname(file), _installed(file)
    if installed is not None and not os.path.isdir(folder):
      folder = str(installed.parent)  # where recipe_path looked: outside a clone
    shown = _recipes_in(folder) if installed is not None and os.path.isdir(folder) else ""
    where = f"; the recipes in {folder}/ are {shown}" if shown else "; recipes are in configs/"
    raise UserError(f"config file {file!r} not found{where}")
  with open(file, encoding="utf-8", errors="replace") as f:
    source = f.read()
  try:
    tree = ast.parse(source, filename=file)
  except SyntaxError as e:
    raise UserError(
      f"config file {file} line {e.lineno}: {e.msg}; fix the recipe (a Python file)"
    ) from None
  if not any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body):
    raise UserError(
      f"config file {file} defines no get_config(); a recipe returns its ConfigDict from "
      f"get_config(), or get_config(arg) for FILE.py:ARG (see configs/demo.py)"
    )


def tfds_finetune_config(key):
  """A fine-tuning config for the registered TFDS task `key` (`tfds_tasks.TASKS`): its
  kind, train / eval data and columns; the recipes add lengths and the optimizer.
  """
  from bert_jax.finetune import tfds_tasks

  task = tfds_tasks.TASKS[key]
  c = finetune_base_config()
  c.task = task.task
  c.data.train = tfds_tasks.data_spec(task.name, task.train_split)
  c.data.eval = tfds_tasks.data_spec(task.name, task.eval_split)
  c.data.text_column = task.text_column
  c.data.text_pair_column = task.text_pair_column
  c.data.label_column = task.label_column
  # The task's official metrics, also on local files given for its data.
  c.eval.metrics = ",".join(task.metrics)
  c.eval.metric = task.main_metric
  return c


def paper_recipe(size, phase):
  """Devlin et al. (2018): batch 256, lr 1e-4, 1M steps = 900k at length 128 + 100k at 512.

  `phase` is "phase1" (length 128, 20 predictions, 10k warmup) or "phase2" (length 512,
  80 predictions, 1k warmup, parameters from phase 1 via `init_from`, fresh optimizer).
  """
  if phase not in ("phase1", "phase2"):
    raise ValueError(f"the config argument is :phase1 or :phase2, not :{phase}")
  c = base_config()
  c.model.size = size
  c.model.dtype = "bfloat16"  # compute in bf16 on GPU / TPU; params stay float32
  c.model.scan_layers = True  # one compiled layer: fast compiles
  c.tokenizer.vocab_size = 30522
  c.data.input = "data/corpus/*.txt"
  c.data.num_shards = 1024  # 4 shards to each of 256 lanes
  c.data.lanes = 256  # 1..256 hosts (powers of 2) read the same batches
  c.mesh.data, c.mesh.fsdp = 1, -1  # shard params and optimizer state over all devices
  if phase == "phase1":
    c.data.max_seq_length, c.data.max_predictions_per_seq = 128, 20
    c.data.prepared_dir = "data/prepared128"
    c.train.steps, c.train.warmup_steps = 900_000, 10_000
  else:
    c.data.max_seq_length, c.data.max_predictions_per_seq = 512, 80
    c.data.prepared_dir = "data/prepared512"  # its own shards of 512-token rows ...
    c.tokenizer.path = "data/prepared128/tokenizer.model"  # ... with phase 1's tokenizer
    c.train.steps, c.train.warmup_steps = 100_000, 1_000
    c.init_from = f"runs/{size}128"  # phase 1's workdir
  return c
