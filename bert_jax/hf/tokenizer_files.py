"""Tokenizer files for Hugging Face `transformers`: ours out, a checkpoint's in.

`export_tokenizer` writes `tokenizer.json` (Hugging Face `tokenizers`), `tokenizer_config.json`
and `special_tokens_map.json` (and `vocab.txt` for WordPiece), so that offline
`AutoTokenizer.from_pretrained(dir)` gives a fast tokenizer that cuts text as ours:
`[CLS] + encode(a) + [SEP] (+ encode(b) + [SEP])`, token types 0 then 1. A SentencePiece
model becomes the pipeline of `sentencepiece_json`; the family's layout comes from
`family_tokenizers`.

`import_tokenizer` takes a checkpoint's WordPiece tokenizer (`tokenizer.json` or `vocab.txt`
with `tokenizer_config.json`) as one `tokenizer.json` that `tokenizer.load` reads, the Unigram
or BPE `tokenizer.json` of bert_jax's own export back as the SentencePiece model it stands for
(`sentencepiece_json.to_sentencepiece`), and any other family's tokenizer as `transformers`
builds it (`family_tokenizers`).

Checkpoint directories may be URLs (`gs://...`): files are read and written through `storage`.
"""

import json

import tokenizers

from bert_jax import storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.hf import family_tokenizers, sentencepiece_json

_SPECIAL_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# BertTokenizer's defaults where tokenizer_config.json says nothing.
_BERT_DEFAULTS = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True}
_NORMALIZER_FIELDS = {
  "do_lower_case": "lowercase",
  "strip_accents": "strip_accents",
  "tokenize_chinese_chars": "handle_chinese_chars",
}
# The tokenizer files `export_tokenizer` may write (vocab.txt for WordPiece only).
EXPORT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


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
    arch: the model family the files go with (`family_tokenizers.ARCHS`): whether the
      tokenizer returns `token_type_ids`, and RoBERTa's bos / eos names.

  Returns:
    The names of the files written.

  Raises:
    UserError: a SentencePiece model whose settings `tokenizers` cannot reproduce, or an
      unknown `arch`.
  """
  if arch not in family_tokenizers.ARCHS:
    known = ", ".join(family_tokenizers.ARCHS)
    raise UserError(f"no tokenizer export for model family {arch!r}; known: {known}")
  storage.makedirs(out_dir)
  specials = dict(zip(_SPECIAL_KEYS, tokenizer_lib.SPECIAL_PIECES))
  written, settings = [], None
  if tokenizer.kind == "sentencepiece":
    hf = sentencepiece_json.from_sentencepiece(tokenizer)
  elif tokenizer.kind != "wordpiece":  # any other tokenizer.json: as it is
    hf = tokenizers.Tokenizer.from_str(tokenizer.to_hf_json())
    specials = {
      key: tokenizer.id_to_piece(i) for key, i in zip(_SPECIAL_KEYS, tokenizer.special_ids)
    }
    if hf.post_processor is None:
      hf.post_processor = family_tokenizers.layout_template(tokenizer, specials)
  else:
    spec = json.loads(tokenizer.to_hf_json())
    hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
    hf.post_processor = family_tokenizers.bert_template(tokenizer.cls_id, tokenizer.sep_id)
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
  specials, inputs = family_tokenizers.export_names(arch, specials)
  config.update(model_max_length=model_max_length, **specials, model_input_names=inputs)
  _save(hf, storage.join(out_dir, "tokenizer.json"))
  written.append("tokenizer.json")
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    storage.write_text(storage.join(out_dir, name), text)
    written.append(name)
  return written


def import_tokenizer(hf_dir: str, out_dir: str) -> str:
  """Writes the tokenizer of a Hugging Face checkpoint as a file `tokenizer.load` reads.

  The first of these files in `hf_dir` is read, as `transformers` 5 reads it:
    * `tokenizer.json`: WordPiece (BERT, DistilBERT, ELECTRA) with the lowercasing, accent
      stripping and CJK splitting of `tokenizer_config.json` where it says (BertTokenizer's
      defaults else); the Unigram or BPE file of a bert_jax export becomes the SentencePiece
      model it was made from (`tokenizer.model`); any other model (RoBERTa's byte-level BPE,
      ALBERT's and XLM-R's Unigram, ModernBERT's BPE) is kept, rebuilt as the
      `tokenizer_class` of `tokenizer_config.json` rebuilds it
      (`family_tokenizers.as_transformers_loads`).
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
  read_json = family_tokenizers.read_json
  json_path, vocab_path = (storage.join(hf_dir, n) for n in ("tokenizer.json", "vocab.txt"))
  config = read_json(storage.join(hf_dir, "tokenizer_config.json")) or {}
  spec = read_json(json_path)
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
    maybe_ours = model_type in ("Unigram", "BPE")
    ours = sentencepiece_json.to_sentencepiece(spec, out_dir) if maybe_ours else None
    if ours is not None:
      out = ours
    else:
      hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
      model_config = read_json(storage.join(hf_dir, "config.json"))
      model_config = model_config if isinstance(model_config, dict) else {}
      hf = family_tokenizers.as_transformers_loads(hf, spec, config, model_config.get("model_type"))
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
    hf.post_processor = family_tokenizers.bert_template(wordpiece.cls_id, wordpiece.sep_id)
    _save(hf, out)
  elif storage.isfile(storage.join(hf_dir, "spiece.model")):
    _save(family_tokenizers.from_spiece(storage.join(hf_dir, "spiece.model"), config), out)
  elif all(storage.isfile(storage.join(hf_dir, n)) for n in ("vocab.json", "merges.txt")):
    _save(family_tokenizers.from_vocab_merges(hf_dir, config), out)
  else:
    raise UserError(
      f"no tokenizer in {hf_dir}: looked for tokenizer.json, vocab.txt, spiece.model and "
      f"vocab.json with merges.txt; give the directory of a Hugging Face checkpoint"
    )
  tokenizer_lib.load(out)  # Fails here, naming the file, if it lacks a special token.
  return out


def _save(hf: tokenizers.Tokenizer, path: str) -> None:
  """`hf.save(path)` (the same bytes), atomically and for URLs too."""
  storage.write_text(path, hf.to_str(pretty=True))


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
