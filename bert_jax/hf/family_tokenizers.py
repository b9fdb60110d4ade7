"""The model families' tokenizers as `transformers` 5 builds them, and their export layouts.

Import: ALBERT's `spiece.model` (`from_spiece`), RoBERTa's `vocab.json` and `merges.txt`
(`from_vocab_merges`), and a family's `tokenizer.json` rebuilt as its `tokenizer_class`
rebuilds it (`as_transformers_loads`: ALBERT, XLM-R, RoBERTa; any other class keeps the file
as it is). Export: which families return token types and which also name cls and sep bos and
eos (`ARCHS`, `export_names`), and the `cls A sep` post-processors (`bert_template`,
`layout_template`).

Checkpoint directories may be URLs (`gs://...`): files are read through `storage`.
"""

import base64

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

from bert_jax import storage
from bert_jax.errors import UserError

# Model families -> the layout of their tokenizer: "bert" (token types 0 / 1 returned) or
# "roberta" (no token types; cls and sep also named bos and eos) or "plain" (no token types).
ARCHS = {
  "bert": "bert",
  "electra": "bert",
  "albert": "bert",
  "distilbert": "plain",
  "modernbert": "plain",
  "roberta": "roberta",
  "xlm-roberta": "roberta",
}
_ALBERT_SPECIALS = (
  ("pad_token", "<pad>"),
  ("unk_token", "<unk>"),
  ("cls_token", "[CLS]"),
  ("sep_token", "[SEP]"),
  ("mask_token", "[MASK]"),
)
_ROBERTA_SPECIALS = (
  ("cls_token", "<s>"),
  ("pad_token", "<pad>"),
  ("sep_token", "</s>"),
  ("unk_token", "<unk>"),
  ("mask_token", "<mask>"),
)
# The tokenizer class `transformers` picks from config.json's model_type when
# tokenizer_config.json names none.
_CLASS_OF_MODEL = {
  "albert": "AlbertTokenizer",
  "roberta": "RobertaTokenizer",
  "xlm-roberta": "XLMRobertaTokenizer",
}


def export_names(arch: str, specials: dict) -> tuple[dict, list[str]]:
  """The special tokens by role (RoBERTa's cls and sep also as bos and eos) and the
  `model_input_names` (token types for the "bert" layout only) of family `arch`'s files.
  """
  if ARCHS[arch] == "roberta":
    specials = {"bos_token": specials["cls_token"], "eos_token": specials["sep_token"], **specials}
  inputs = ["input_ids", "token_type_ids", "attention_mask"]
  return specials, inputs if ARCHS[arch] == "bert" else [inputs[0], inputs[2]]


def bert_template(cls_id: int, sep_id: int):
  """[CLS] A [SEP] (type 0), then B [SEP] (type 1)."""
  return processors.TemplateProcessing(
    single="[CLS]:0 $A:0 [SEP]:0",
    pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
    special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
  )


def layout_template(tokenizer, specials: dict):
  """`cls A sep` and `cls A pair_separator B sep` (token types 0, then 1 from B)."""
  cls, sep = specials["cls_token"], specials["sep_token"]
  between = " ".join(f"{tokenizer.id_to_piece(i)}:0" for i in tokenizer.pair_separator)
  return processors.TemplateProcessing(
    single=f"{cls}:0 $A:0 {sep}:0",
    pair=f"{cls}:0 $A:0 {between} $B:1 {sep}:1".replace("  ", " "),
    special_tokens=sorted(
      {(tokenizer.id_to_piece(i), i) for i in (tokenizer.cls_id, *tokenizer.pair_separator)}
      | {(sep, tokenizer.sep_id)}
    ),
  )


def read_json(path):
  """The JSON in `path`, or None when there is no such file."""
  if not storage.isfile(path):
    return None
  try:
    return storage.read_json(path)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}); fix or remove it") from None


def from_spiece(path: str, config: dict) -> tokenizers.Tokenizer:
  """ALBERT's `spiece.model` as `transformers` 5's AlbertTokenizer builds it: its pieces and
  scores as a Unigram model, `_albert_normalizer`, whitespace split and "▁", `[CLS] A [SEP]`.
  """
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top

  try:
    proto = sentencepiece_model_pb2.ModelProto.FromString(storage.read_bytes(path))
  except Exception:  # protobuf's DecodeError
    raise UserError(f"{path} is not a SentencePiece model; fix or remove it") from None
  vocab = [(p.piece, p.score) for p in proto.pieces]
  hf = tokenizers.Tokenizer(models.Unigram(vocab, proto.trainer_spec.unk_id, False))
  hf.normalizer = _albert_normalizer(config, proto.normalizer_spec.precompiled_charsmap)
  _metaspace_steps(hf, config.get("add_prefix_space", True))
  hf.add_special_tokens([_special(config, key, name) for key, name in _ALBERT_SPECIALS])
  cls = str(_special(config, "cls_token", "[CLS]"))
  sep = str(_special(config, "sep_token", "[SEP]"))
  hf.post_processor = processors.TemplateProcessing(
    single=f"{cls}:0 $A:0 {sep}:0",
    pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
    special_tokens=[(cls, hf.token_to_id(cls)), (sep, hf.token_to_id(sep))],
  )
  return hf


def from_vocab_merges(hf_dir: str, config: dict) -> tokenizers.Tokenizer:
  """RoBERTa's `vocab.json` and `merges.txt` as `transformers` 5's RobertaTokenizer builds
  them: byte-level BPE, no prefix space unless `add_prefix_space`, `<s> A </s></s> B </s>`.
  """
  vocab_path, merges_path = (storage.join(hf_dir, n) for n in ("vocab.json", "merges.txt"))
  vocab = read_json(vocab_path)
  lines = storage.read_text(merges_path).splitlines()
  merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
  if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
    raise UserError(
      f"{vocab_path} and {merges_path} are not a BPE vocabulary (a JSON object of token ids) "
      f"and merges (two tokens a line); fix them or give a tokenizer.json"
    )
  hf = tokenizers.Tokenizer(_byte_level_bpe(vocab, merges))
  hf.add_special_tokens([_special(config, key, name) for key, name in _ROBERTA_SPECIALS])
  _byte_level_steps(hf, config)
  return hf


def as_transformers_loads(hf: tokenizers.Tokenizer, spec: dict, config: dict, model_type=None):
  """`hf` as `transformers` 5 builds it for the `tokenizer_class` of `config` (else the one
  of config.json's `model_type`).

  Its AlbertTokenizer, RobertaTokenizer and XLMRobertaTokenizer keep a tokenizer.json's
  vocabulary (and merges) but rebuild the model's settings, the normalizer, pre-tokenizer
  and decoder from their own (`do_lower_case`, `keep_accents`, `add_prefix_space`); any
  other class (ModernBERT's PreTrainedTokenizerFast) takes the file as it is.
  """
  kind = str(config.get("tokenizer_class") or _CLASS_OF_MODEL.get(model_type, ""))
  kind = kind.removesuffix("Fast")
  model = spec["model"]
  if kind in ("AlbertTokenizer", "XLMRobertaTokenizer") and model.get("type") == "Unigram":
    unk_id = 1 if kind == "AlbertTokenizer" else 3
    hf.model = models.Unigram([(p, float(s)) for p, s in model["vocab"]], unk_id, False)
    charsmap = _charsmap(spec)
    if kind == "AlbertTokenizer":
      hf.normalizer = _albert_normalizer(config, charsmap)
    else:
      hf.normalizer = normalizers.Precompiled(charsmap) if charsmap else None
    _metaspace_steps(hf, config.get("add_prefix_space", True))
  elif kind == "RobertaTokenizer" and model.get("type") == "BPE":
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    hf.model = _byte_level_bpe(model["vocab"], merges)
    hf.normalizer = None
    _byte_level_steps(hf, config)
  return hf


def _special(config: dict, key: str, default: str) -> AddedToken:
  """The special token `config[key]` names (a string, or a dict with its flags), as
  `transformers` adds it: special, not normalized.
  """
  value = config.get(key, default)
  if isinstance(value, dict):
    flags = {k: value[k] for k in ("lstrip", "rstrip", "single_word") if k in value}
    return AddedToken(value["content"], special=True, normalized=False, **flags)
  return AddedToken(str(value), special=True, normalized=False)


def _albert_normalizer(config: dict, charsmap: bytes | None):
  """AlbertTokenizer's normalizer: quotes, accents stripped unless `keep_accents`,
  lowercased iff `do_lower_case` (both from `config`; ALBERT lowercases by default), then
  SentencePiece's rule (its precompiled charsmap).
  """
  steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
  if not config.get("keep_accents", False):
    steps += [normalizers.NFKD(), normalizers.StripAccents()]
  if config.get("do_lower_case", True):
    steps.append(normalizers.Lowercase())
  if charsmap:
    steps.append(normalizers.Precompiled(charsmap))
  return normalizers.Sequence(steps)


def _metaspace_steps(hf: tokenizers.Tokenizer, add_prefix_space: bool) -> None:
  """ALBERT's and XLM-R's pre-tokenizer and decoder: whitespace split, "▁" for spaces."""
  scheme = "always" if add_prefix_space else "never"
  hf.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme),
    ]
  )
  hf.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)


def _charsmap(spec: dict) -> bytes | None:
  """The SentencePiece charsmap of a tokenizer.json's `Precompiled` normalizer, or None."""
  normalizer = spec.get("normalizer") or {}
  steps = normalizer.get("normalizers") or [normalizer]
  found = [s["precompiled_charsmap"] for s in steps if s.get("type") == "Precompiled"]
  return base64.b64decode(found[0]) if found and found[0] else None


def _byte_level_bpe(vocab: dict, merges: list) -> models.BPE:
  """RobertaTokenizer's BPE model: no subword prefix or suffix, unknowns not fused."""
  return models.BPE(
    vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
  )


def _byte_level_steps(hf: tokenizers.Tokenizer, config: dict) -> None:
  """RobertaTokenizer's pre-tokenizer, decoder and `<s> A </s></s> B </s>` (all token type
  0), no prefix space unless `add_prefix_space`.
  """
  add_prefix_space = bool(config.get("add_prefix_space", False))
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  hf.decoder = decoders.ByteLevel()
  sep = str(_special(config, "sep_token", "</s>"))
  cls = str(_special(config, "cls_token", "<s>"))
  hf.post_processor = processors.RobertaProcessing(
    (sep, hf.token_to_id(sep)),
    (cls, hf.token_to_id(cls)),
    trim_offsets=bool(config.get("trim_offsets", True)),
    add_prefix_space=add_prefix_space,
  )
