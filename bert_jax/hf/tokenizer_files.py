"""Tokenizer files for Hugging Face `transformers`: ours out, a BERT checkpoint's in.

`export_tokenizer` writes `tokenizer.json` (Hugging Face `tokenizers`), `tokenizer_config.json`
and `special_tokens_map.json` (and `vocab.txt` for WordPiece), so that offline
`AutoTokenizer.from_pretrained(dir)` gives a fast tokenizer that cuts text as ours:
`[CLS] + encode(a) + [SEP] (+ encode(b) + [SEP])`, token types 0 then 1.

A SentencePiece model becomes this `tokenizers` pipeline, each step standing for one of
SentencePiece's:

    NFC, Precompiled(charsmap),  the model's normalization rule (nmt_nfkc). `Precompiled` maps
    NFC                          a short grapheme by the rule of its first character and drops
                                 the rest, and maps characters one by one where SentencePiece
                                 maps sequences: NFC before it keeps the tone marks of
                                 decomposed Vietnamese, NFC after it composes what it leaves
                                 apart (Hangul jamo, half-width katakana with a voicing mark).
    Replace(" {2,}", " "),       remove_extra_whitespaces; only U+0020, as SentencePiece (Strip
    Replace(" +\\z", "")         would also take U+0085). It strips the spaces before a special
                                 token too: as `SentencePieceTokenizer._join_specials`.
    Metaspace(first)             add_dummy_prefix: "▁" before the text, not after a special
                                 ("[MASK]x" is `[MASK] x`).
    Unigram | BPE, byte_fallback the pieces. Unigram: control, unknown and byte pieces get a
                                 score no path takes, since SentencePiece never matches them in
                                 text ("<0x41>" typed stays characters). BPE: merges from the
                                 scores (piece ranks), between normal pieces only.

Known differences (none in the built-in corpus but 7 Unigram ties in its 23,500 sentences):
  * Unigram ties: two segmentations of exactly equal score (e.g. "8000" as 8|00|0 or 8|0|00).
    SentencePiece sums scores in float32, so rounding picks one; `tokenizers` sums in float64,
    exactly, and keeps the first. Both have the same score and text.
  * A character the rule changes (ﬁ, ①, full-width forms, U+2004) followed by a combining
    mark: `Precompiled` drops the mark, SentencePiece keeps it.
  * Text not in NFC whose NFC differs from SentencePiece's rule: combining marks out of
    canonical order (Arabic shadda typed before fatha, Hebrew dagesh before the vowel), which
    NFC reorders, and a precomposed letter plus a mark that the rule leaves apart (Vietnamese
    "ê" + U+0301), which NFC composes. Without the NFC steps fully decomposed text (NFD
    Vietnamese, Yoruba, Greek, Korean) would differ instead; NFC input is the common case.

`import_tokenizer` takes a checkpoint's WordPiece tokenizer (`tokenizer.json` or `vocab.txt`
with `tokenizer_config.json`) as one `tokenizer.json` that `tokenizer.load` reads, and the
Unigram or BPE `tokenizer.json` of bert_jax's own export back as the SentencePiece model it
stands for (`tokenizer.model`): the pieces, their scores and kinds (special, byte, normal)
and the normalization rule's charsmap are all in the file. SentencePiece BPE scores are
piece ranks, so normal piece k gets -k. The model is accepted only when exporting it again
gives the same `tokenizer.json`, so the imported run cuts text exactly as the exported one.

Checkpoint directories may be URLs (`gs://...`): files are read and written through `storage`.
"""

import base64
import json
import re

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from bert_jax import storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError

_SPECIAL_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# BertTokenizer's defaults where tokenizer_config.json says nothing.
_BERT_DEFAULTS = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
_NORMALIZER_FIELDS = {
  "do_lower_case": "lowercase",
  "strip_accents": "strip_accents",
  "tokenize_chinese_chars": "handle_chinese_chars",
}
# A Unigram score below any path of normal pieces: a piece SentencePiece never matches.
_NEVER = 1000.0
# The tokenizer files `export_tokenizer` may write (vocab.txt for WordPiece only).
EXPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_SENTENCEPIECE_FILE = "tokenizer.model"
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
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def export_tokenizer(
  tokenizer, out_dir: str, *, model_max_length: int, arch: str = "bert"
) -> list[str]:
  """Writes the Hugging Face tokenizer files of `tokenizer` into `out_dir`.

  Args:
    tokenizer: a tokenizer of `tokenizer.load`: SentencePiece, WordPiece or any other
      `tokenizer.json` (`hf_tokenizer.HFTokenizer`).
    out_dir: the directory (created if needed), local or a URL; files of the same names
      are replaced, each atomically.
    model_max_length: the model's position count, `tokenizer_config.json`'s limit.
    arch: the model family the files go with (`ARCHS`): whether the tokenizer returns
      `token_type_ids`, and RoBERTa's bos / eos names.

  Returns:
    The names of the files written.

  Raises:
    UserError: a SentencePiece model whose settings `tokenizers` cannot reproduce, or an
      unknown `arch`.
  """
  if arch not in ARCHS:
    raise UserError(f"no tokenizer export for model family {arch!r}; known: {', '.join(ARCHS)}")
  storage.makedirs(out_dir)
  specials = dict(zip(_SPECIAL_KEYS, tokenizer_lib.SPECIAL_PIECES))
  written, settings = [], None
  if tokenizer.kind == "sentencepiece":
    hf = _from_sentencepiece(tokenizer)
  elif tokenizer.kind != "wordpiece":  # any other tokenizer.json: as it is
    hf = tokenizers.Tokenizer.from_str(tokenizer.to_hf_json())
    specials = {
      key: tokenizer.id_to_piece(i) for key, i in zip(_SPECIAL_KEYS, tokenizer.special_ids)
    }
    if hf.post_processor is None:
      hf.post_processor = _layout_template(tokenizer, specials)
  else:
    spec = json.loads(tokenizer.to_hf_json())
    hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
    hf.post_processor = _template(tokenizer.cls_id, tokenizer.sep_id)
    written.append(_write_vocab(spec["model"]["vocab"], tokenizer.vocab_size, out_dir))
    settings = _bert_settings(spec)
  if settings is not None:
    # transformers 5's BertTokenizer takes the vocabulary from tokenizer.json but rebuilds
    # the normalizer from these settings.
    config = {
      "tokenizer_class": "BertTokenizer",
      **settings,
      "do_basic_tokenize": True,
      "never_split": None,
      "clean_up_tokenization_spaces": True,
    }
  else:
    # Loads tokenizer.json as it is (transformers 5 maps it to TokenizersBackend).
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
  if ARCHS[arch] == "roberta":  # RoBERTa names its cls and sep bos and eos too
    specials = {"bos_token": specials["cls_token"], "eos_token": specials["sep_token"], **specials}
  inputs = ["input_ids", "token_type_ids", "attention_mask"]
  config.update(
    model_max_length=model_max_length,
    **specials,
    model_input_names=inputs if ARCHS[arch] == "bert" else [inputs[0], inputs[2]],
  )
  _save(hf, storage.join(out_dir, "tokenizer.json"))
  written.append("tokenizer.json")
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    storage.write_text(storage.join(out_dir, name), text)
    written.append(name)
  return written


def _layout_template(tokenizer, specials: dict):
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


def import_tokenizer(hf_dir: str, out_dir: str) -> str:
  """Writes the tokenizer of a Hugging Face checkpoint as a file `tokenizer.load` reads.

  The first of these files in `hf_dir` is read, as `transformers` 5 reads it:
    * `tokenizer.json`: WordPiece (BERT, DistilBERT, ELECTRA) with the lowercasing, accent
      stripping and CJK splitting of `tokenizer_config.json` where it says (BertTokenizer's
      defaults else); the Unigram or BPE file of a bert_jax export becomes the SentencePiece
      model it was made from (`tokenizer.model`); any other model (RoBERTa's byte-level BPE,
      ALBERT's and XLM-R's Unigram, ModernBERT's BPE) is kept, rebuilt as the
      `tokenizer_class` of `tokenizer_config.json` rebuilds it (`_as_transformers_loads`).
    * `vocab.txt`: WordPiece, with the settings of `tokenizer_config.json`.
    * `spiece.model`: ALBERT's SentencePiece model, converted as `AlbertTokenizer` does.
    * `vocab.json` and `merges.txt`: RoBERTa's byte-level BPE, as `RobertaTokenizer` builds it.
  Padding and truncation are dropped. `vocab.txt`, when there is one, is copied too.

  Args:
    hf_dir: the checkpoint directory, local or a URL.
    out_dir: where to write (created if needed); local, since the written tokenizer is
      loaded back to check it.

  Returns:
    The path of the written `tokenizer.json` or `tokenizer.model`.

  Raises:
    UserError: no tokenizer in `hf_dir`, or one without the five special tokens.
  """
  json_path, vocab_path = (storage.join(hf_dir, n) for n in ("tokenizer.json", "vocab.txt"))
  config = _read_json(storage.join(hf_dir, "tokenizer_config.json")) or {}
  spec = _read_json(json_path)
  if spec is not None and not (isinstance(spec, dict) and isinstance(spec.get("model"), dict)):
    raise UserError(f"{json_path} is not a Hugging Face tokenizer.json; fix or remove it")
  model_type = spec["model"].get("type") if spec is not None else None
  storage.makedirs(out_dir)
  out = storage.join(out_dir, "tokenizer.json")
  has_vocab = storage.isfile(vocab_path)
  if has_vocab:  # copied first: WordPieceTokenizer reads the copy, not a URL
    storage.copy(vocab_path, storage.join(out_dir, "vocab.txt"))
    vocab_path = storage.join(out_dir, "vocab.txt")
  if model_type == "WordPiece":
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer":
      for key, field in _NORMALIZER_FIELDS.items():
        if key in config:
          normalizer[field] = config[key]
    spec["padding"] = spec["truncation"] = None
    storage.write_text(out, json.dumps(spec, ensure_ascii=False))
  elif spec is not None:
    ours = _import_sentencepiece(spec, out_dir) if model_type in ("Unigram", "BPE") else None
    if ours is not None:
      out = ours
    else:
      hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
      model_config = _read_json(storage.join(hf_dir, "config.json"))
      model_config = model_config if isinstance(model_config, dict) else {}
      hf = _as_transformers_loads(hf, spec, config, model_config.get("model_type"))
      hf.no_padding()
      hf.no_truncation()
      _save(hf, out)
  elif has_vocab:
    settings = {k: config.get(k, v) for k, v in _BERT_DEFAULTS.items()}
    wordpiece = tokenizer_lib.WordPieceTokenizer(
      vocab_path,
      lowercase=bool(settings["do_lower_case"]),
      strip_accents=settings["strip_accents"],
      handle_chinese_chars=bool(settings["tokenize_chinese_chars"]),
    )
    hf = tokenizers.Tokenizer.from_str(wordpiece.to_hf_json())
    hf.post_processor = _template(wordpiece.cls_id, wordpiece.sep_id)
    _save(hf, out)
  elif storage.isfile(storage.join(hf_dir, "spiece.model")):
    _save(_albert_from_spiece(storage.join(hf_dir, "spiece.model"), config), out)
  elif all(storage.isfile(storage.join(hf_dir, n)) for n in ("vocab.json", "merges.txt")):
    _save(_roberta_from_files(hf_dir, config), out)
  else:
    raise UserError(
      f"no tokenizer in {hf_dir}: looked for tokenizer.json, vocab.txt, spiece.model and "
      f"vocab.json with merges.txt; give the directory of a Hugging Face checkpoint"
    )
  tokenizer_lib.load(out)  # Fails here, naming the file, if it lacks a special token.
  return out


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


# The tokenizer class `transformers` picks from config.json's model_type when
# tokenizer_config.json names none.
_CLASS_OF_MODEL = {
  "albert": "AlbertTokenizer",
  "roberta": "RobertaTokenizer",
  "xlm-roberta": "XLMRobertaTokenizer",
}


def _as_transformers_loads(hf: tokenizers.Tokenizer, spec: dict, config: dict, model_type=None):
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
    hf.model = models.BPE(
      model["vocab"], merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
    )
    add_prefix_space = bool(config.get("add_prefix_space", False))
    hf.normalizer = None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = _roberta_processing(hf, config, add_prefix_space)
  return hf


def _roberta_processing(hf: tokenizers.Tokenizer, config: dict, add_prefix_space: bool):
  """RoBERTa's `<s> A </s>` and `<s> A </s></s> B </s>` (all token type 0)."""
  sep = str(_special(config, "sep_token", "</s>"))
  cls = str(_special(config, "cls_token", "<s>"))
  return processors.RobertaProcessing(
    (sep, hf.token_to_id(sep)),
    (cls, hf.token_to_id(cls)),
    trim_offsets=bool(config.get("trim_offsets", True)),
    add_prefix_space=add_prefix_space,
  )


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


def _albert_from_spiece(path: str, config: dict) -> tokenizers.Tokenizer:
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


def _roberta_from_files(hf_dir: str, config: dict) -> tokenizers.Tokenizer:
  """RoBERTa's `vocab.json` and `merges.txt` as `transformers` 5's RobertaTokenizer builds
  them: byte-level BPE, no prefix space unless `add_prefix_space`, `<s> A </s></s> B </s>`.
  """
  vocab_path, merges_path = (storage.join(hf_dir, n) for n in ("vocab.json", "merges.txt"))
  vocab = _read_json(vocab_path)
  lines = storage.read_text(merges_path).splitlines()
  merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
  if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
    raise UserError(
      f"{vocab_path} and {merges_path} are not a BPE vocabulary (a JSON object of token ids) "
      f"and merges (two tokens a line); fix them or give a tokenizer.json"
    )
  hf = tokenizers.Tokenizer(
    models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
  )
  add_prefix_space = bool(config.get("add_prefix_space", False))
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  hf.decoder = decoders.ByteLevel()
  hf.add_special_tokens([_special(config, key, name) for key, name in _ROBERTA_SPECIALS])
  hf.post_processor = _roberta_processing(hf, config, add_prefix_space)
  return hf


def _import_sentencepiece(spec: dict, out_dir: str) -> str | None:
  """`out_dir/tokenizer.model`, the SentencePiece model our export made `spec` from, or
  None when `spec` is not such an export (then nothing is written).
  """
  try:
    proto = _sentencepiece_proto(spec)
  except (KeyError, TypeError, ValueError, AttributeError, IndexError):
    return None
  if proto is None:
    return None
  out = storage.join(out_dir, _SENTENCEPIECE_FILE)
  storage.write_bytes(out, proto)
  try:
    again = _from_sentencepiece(tokenizer_lib.load(out)).to_str()
    same = _comparable(again) == _comparable(
      tokenizers.Tokenizer.from_str(json.dumps(spec)).to_str()
    )
  except Exception:  # UserError, or tokenizers' and sentencepiece's plain exceptions
    same = False
  if not same:
    storage.remove(out)
    return None
  return out


def _comparable(hf_json: str) -> dict:
  """A tokenizer.json as a dict whose Unigram scores are float32, as SentencePiece keeps
  them (the file rounds their float64 form to 16 digits).
  """
  spec = json.loads(hf_json)
  model = spec["model"]
  if model.get("type") == "Unigram":
    model["vocab"] = [[piece, float(np.float32(score))] for piece, score in model["vocab"]]
  return spec


def _sentencepiece_proto(spec: dict) -> bytes | None:
  """The serialized SentencePiece model behind our export's `spec`, or None when `spec`
  is not one (see the module docstring). Raises KeyError, TypeError... on odd layouts.
  """
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top

  model, kind = spec["model"], spec["model"]["type"]
  if not model.get("byte_fallback"):
    return None
  if kind == "Unigram":
    pieces = [(str(piece), float(score)) for piece, score in model["vocab"]]
    unk_id = model["unk_id"]
  else:
    ids = model["vocab"]
    pieces = [(piece, 0.0) for piece in sorted(ids, key=ids.get)]
    if [ids[p] for p, _ in pieces] != list(range(len(pieces))):
      return None
    unk_id = ids[model["unk_token"]]
  names = [piece for piece, _ in pieces]
  pad_piece, unk_piece = tokenizer_lib.SPECIAL_PIECES[:2]
  if names[0] != pad_piece or names[unk_id] != unk_piece:
    return None
  proto = sentencepiece_model_pb2.ModelProto()
  kinds = proto.SentencePiece
  user_defined = tokenizer_lib.SPECIAL_PIECES[2:]
  rank = 0
  for i, (piece, score) in enumerate(pieces):
    if i == unk_id:
      kind_of, score = kinds.UNKNOWN, 0.0
    elif i == 0:  # [PAD]
      kind_of, score = kinds.CONTROL, 0.0
    elif piece in user_defined:
      kind_of = kinds.USER_DEFINED
    elif _BYTE_PIECE.fullmatch(piece):
      kind_of, score = kinds.BYTE, 0.0
    else:
      kind_of = kinds.NORMAL
      if kind == "BPE":
        score, rank = -float(rank), rank + 1
    proto.pieces.add(piece=piece, score=score, type=kind_of)
  trainer = proto.trainer_spec
  trainer.model_type = trainer.UNIGRAM if kind == "Unigram" else trainer.BPE
  trainer.vocab_size = len(pieces)
  trainer.byte_fallback = True
  trainer.unk_id, trainer.pad_id, trainer.bos_id, trainer.eos_id = unk_id, 0, -1, -1
  trainer.unk_piece, trainer.pad_piece = unk_piece, pad_piece
  trainer.user_defined_symbols.extend(user_defined)
  steps = (spec.get("normalizer") or {}).get("normalizers") or []
  charsmaps = [s["precompiled_charsmap"] for s in steps if s.get("type") == "Precompiled"]
  if charsmaps:
    proto.normalizer_spec.name = "nmt_nfkc"
    proto.normalizer_spec.precompiled_charsmap = base64.b64decode(charsmaps[0])
  else:
    proto.normalizer_spec.name = "identity"
  return proto.SerializeToString()


def _read_json(path):
  """The JSON in `path`, or None when there is no such file."""
  if not storage.isfile(path):
    return None
  try:
    return storage.read_json(path)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}); fix or remove it") from None


def _save(hf: tokenizers.Tokenizer, path: str) -> None:
  """`hf.save(path)` (the same bytes), atomically and for URLs too."""
  storage.write_text(path, hf.to_str(pretty=True))


def _template(cls_id: int, sep_id: int):
  """[CLS] A [SEP] (type 0), then B [SEP] (type 1)."""
  return processors.TemplateProcessing(
    single="[CLS]:0 $A:0 [SEP]:0",
    pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
    special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
  )


def _write_vocab(vocab: dict, vocab_size: int, out_dir: str) -> str:
  """vocab.txt: the token of id i on line i (a hole, from a repeated line, gets a name)."""
  tokens = {i: token for token, i in vocab.items()}
  storage.write_lines(
    storage.join(out_dir, "vocab.txt"),
    (tokens.get(i, f"[unused hole {i}]") + "\n" for i in range(vocab_size)),
  )
  return "vocab.txt"


def _bert_settings(spec: dict) -> dict | None:
  """BertTokenizer's settings for a tokenizer.json it rebuilds exactly, else None."""
  normalizer = spec.get("normalizer") or {}
  model = spec["model"]
  if (
    normalizer.get("type") != "BertNormalizer"
    or not normalizer.get("clean_text", True)
    or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
    or model.get("continuing_subword_prefix") != "##"
    or model.get("unk_token") != "[UNK]"
    or model.get("max_input_chars_per_word") != 100
  ):
    return None
  return {
    key: normalizer.get(field, _BERT_DEFAULTS[key]) for key, field in _NORMALIZER_FIELDS.items()
  }


def _from_sentencepiece(tokenizer):
  """Our SentencePiece model as a `tokenizers.Tokenizer` (see the module docstring)."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top

  proto = sentencepiece_model_pb2.ModelProto.FromString(tokenizer.model_proto())
  _check_convertible(proto, tokenizer.model_path)
  if proto.trainer_spec.model_type == proto.trainer_spec.UNIGRAM:
    hf = tokenizers.Tokenizer(_unigram(proto))
  else:
    hf = tokenizers.Tokenizer(_bpe(proto))
  steps = []
  if proto.normalizer_spec.precompiled_charsmap:
    steps += [
      normalizers.NFC(),
      normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
      normalizers.NFC(),
    ]
  steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(" +\\z"), "")]
  hf.normalizer = normalizers.Sequence(steps)
  hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
  hf.decoder = decoders.Sequence(
    [
      decoders.Replace("\u2581", " "),
      decoders.ByteFallback(),
      decoders.Fuse(),
      decoders.Strip(" ", 1, 0),
    ]
  )
  # Matched in the raw text, as SentencePiece matches its user-defined pieces.
  hf.add_special_tokens(
    [AddedToken(p, special=True, normalized=False) for p in tokenizer_lib.SPECIAL_PIECES]
  )
  hf.post_processor = _template(tokenizer.cls_id, tokenizer.sep_id)
  return hf


def _check_convertible(proto, path: str) -> None:
  """UserError for a SentencePiece setting the pipeline above does not reproduce."""
  trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
  user_defined = [p.piece for p in proto.pieces if p.type == p.USER_DEFINED]
  problems = {
    f"model_type {trainer.ModelType.Name(trainer.model_type)} (unigram and bpe convert)": trainer.model_type
    not in (trainer.UNIGRAM, trainer.BPE),
    "byte_fallback off": not trainer.byte_fallback,
    "treat_whitespace_as_suffix": trainer.treat_whitespace_as_suffix,
    "split_by_whitespace off": not trainer.split_by_whitespace,
    "add_dummy_prefix off": not normalizer.add_dummy_prefix,
    "remove_extra_whitespaces off": not normalizer.remove_extra_whitespaces,
    "escape_whitespaces off": not normalizer.escape_whitespaces,
    f"user-defined pieces {user_defined}": user_defined != ["[CLS]", "[SEP]", "[MASK]"],
  }
  found = [name for name, bad in problems.items() if bad]
  if found:
    raise UserError(
      f"cannot export SentencePiece model {path} to a Hugging Face tokenizer "
      f"exactly: {', '.join(found)}; export a model trained by bert_jax "
      f"(train_sentencepiece)"
    )


def _unigram(proto):
  matched = (proto.SentencePiece.NORMAL, proto.SentencePiece.USER_DEFINED)
  never = min(p.score for p in proto.pieces if p.type == p.NORMAL) - _NEVER
  vocab = [(p.piece, p.score if p.type in matched else never) for p in proto.pieces]
  return models.Unigram(vocab, proto.trainer_spec.unk_id, True)


def _bpe(proto):
  """SentencePiece BPE merges the adjacent pair whose union is the best-scored piece."""
  ids = {p.piece: i for i, p in enumerate(proto.pieces)}
  normal = {p.piece: p.score for p in proto.pieces if p.type == p.NORMAL}
  merges = sorted(
    (-score, ids[piece[:k]], piece[:k], piece[k:])
    for piece, score in normal.items()
    for k in range(1, len(piece))
    if piece[:k] in normal and piece[k:] in normal
  )
  return models.BPE(
    ids,
    [(a, b) for *_, a, b in merges],
    unk_token=proto.pieces[proto.trainer_spec.unk_id].piece,
    byte_fallback=True,
  )
