"""bert_jax's SentencePiece model as a Hugging Face `tokenizer.json`, and back.

`from_sentencepiece` turns the model into this `tokenizers` pipeline, each step standing for
one of SentencePiece's:

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

`to_sentencepiece` takes such a Unigram or BPE `tokenizer.json` back as the SentencePiece model
it stands for (`tokenizer.model`): the pieces, their scores and kinds (special, byte, normal)
and the normalization rule's charsmap are all in the file. SentencePiece BPE scores are piece
ranks, so normal piece k gets -k. The model is accepted only when exporting it again gives
the same `tokenizer.json`, so the imported run cuts text exactly as the exported one.
"""

import base64
import json
import re

import numpy as np
import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from bert_jax import storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.hf import family_tokenizers

# A Unigram score below any path of normal pieces: a piece SentencePiece never matches.
_NEVER = 1000.0
_SENTENCEPIECE_FILE = "tokenizer.model"
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def from_sentencepiece(tokenizer):
  """Our SentencePiece model as a `tokenizers.Tokenizer` (see the module docstring).

  Raises:
    UserError: a setting the pipeline does not reproduce.
  """
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
  hf.post_processor = family_tokenizers.bert_template(tokenizer.cls_id, tokenizer.sep_id)
  return hf


def to_sentencepiece(spec: dict, out_dir: str) -> str | None:
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
    again = from_sentencepiece(tokenizer_lib.load(out)).to_str()
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
