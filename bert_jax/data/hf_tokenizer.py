"""Tokenizers run by Hugging Face `tokenizers`: BERT's WordPiece and any `tokenizer.json`.

`WordPieceTokenizer` reads a BERT `vocab.txt` or a WordPiece `tokenizer.json` (BERT,
DistilBERT, ELECTRA). `HFTokenizer` reads any other `tokenizer.json`: byte-level BPE
(RoBERTa, ModernBERT, and the byte-level BPE bert_jax trains, `train_bytelevel_bpe`) and
Unigram (ALBERT, XLM-R). Both offer the interface of `tokenizer.SentencePieceTokenizer`
(ids of the five special roles, `pair_separator`, `encode`, `encode_batch`, `decode`, the
per-id tables for masking); `tokenizer.load` picks the class.

The five roles are found by name: cls `[CLS]` or `<s>`, sep `[SEP]` or `</s>`, pad `[PAD]` or
`<pad>`, unk `[UNK]` or `<unk>`, mask `[MASK]` or `<mask>`. Where the file has a post-processor,
its layout rules instead: `cls` is the one token before a text, `sep` the one after it, and
`pair_separator` the tokens between the two texts of a pair (one `</s>` in BERT's layout,
`</s></s>` in RoBERTa's).

The byte-level BPE trained here keeps bert_jax's special ids (pad 0, unk 1, cls 2, sep 3,
mask 4) and RoBERTa's recipe: GPT-2's byte alphabet and pre-tokenizer, no prefix space, a
mask token that takes the space before it (as RoBERTa's `<mask>`, so "a [MASK] b" masks the
word " b" would be). Its special tokens are named as the model family's (`SPECIAL_NAMES`):
BERT's `[CLS] A [SEP]`, `[CLS] A [SEP] B [SEP]` (ModernBERT's too), or RoBERTa's
`<s> A </s>`, `<s> A </s></s> B </s>`, so that an exported RoBERTa takes `<mask>`.
"""

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable

import numpy as np

from bert_jax import errors, storage
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.data.tokenizer import SPECIAL_PIECES, _read_bytes
from bert_jax.errors import UserError

# A whole-token "[...]" (e.g. "[unused7]"): reserved, never a masking candidate.
_BRACKET_TOKEN = re.compile(r"\[[^\[\]]+\]")
# A byte piece of a model with byte fallback, e.g. "<0xE4>": one UTF-8 byte of a character
# outside the vocabulary.
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# The names each role goes by, in the order they are looked for.
ROLE_NAMES = {
  "pad": ("[PAD]", "<pad>"),
  "unk": ("[UNK]", "<unk>"),
  "cls": ("[CLS]", "<s>"),
  "sep": ("[SEP]", "</s>"),
  "mask": ("[MASK]", "<mask>"),
}
_ROLES = tuple(ROLE_NAMES)  # pad, unk, cls, sep, mask: the order of `special_ids`
# The (pad, unk, cls, sep, mask) names of a trained byte-level BPE, by layout: "bert" or
# "roberta" (RoBERTa's, also with `</s></s>` between the texts of a pair).
SPECIAL_NAMES = {
  "bert": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
  "roberta": ("<pad>", "<unk>", "<s>", "</s>", "<mask>"),
}


def byte_alphabet() -> dict[str, int]:
  """GPT-2's byte-level alphabet: the character standing for each byte -> the byte."""
  printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


def _read_wordpiece_vocab(path: str, data: bytes) -> dict:
  """`models.WordPiece.read_file` of `path`, whose bytes are `data`; that reader takes a
  local file only, so a remote one is handed to it as a temporary copy.
  """
  from tokenizers import models

  if not storage.is_remote(path):
    return models.WordPiece.read_file(path)
  with tempfile.TemporaryDirectory(prefix="bert_jax_vocab_") as tmp:
    local = os.path.join(tmp, "vocab.txt")
    with open(local, "wb") as f:
      f.write(data)
    return models.WordPiece.read_file(local)


def _find(spec, kind: str) -> dict | None:
  """The first step of type `kind` in a pre-tokenizer / decoder JSON (Sequences searched)."""
  if not isinstance(spec, dict):
    return None
  if spec.get("type") == kind:
    return spec
  for key in ("pretokenizers", "decoders", "normalizers", "processors"):
    for step in spec.get(key) or ():
      found = _find(step, kind)
      if found is not None:
        return found
  return None


def _read_tokenizer_json(path: str):
  """The bytes, the JSON, its model's type and the `tokenizers.Tokenizer` (padding and
  truncation, which some files carry, turned off) of a tokenizer.json.

  Raises:
    UserError: the file is missing or not a Hugging Face tokenizer.json.
  """
  import tokenizers  # Imported on use, like sentencepiece.

  data = _read_bytes(path, "tokenizer")
  try:
    spec = json.loads(data)
    model_type = spec["model"].get("type")
    tok = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
  except Exception as e:  # JSON, layout or tokenizers' own errors: one message.
    raise UserError(
      f"tokenizer {path} is not a Hugging Face tokenizer.json "
      f"({errors.first_line(e, 120)}); give a tokenizer.json, a "
      f"vocab.txt or a SentencePiece model"
    ) from None
  tok.no_padding()
  tok.no_truncation()
  return data, spec, model_type, tok


def _checked_lowercase(path: str, spec: dict, lowercase: bool | None) -> bool:
  """Whether the tokenizer.json `spec` lowercases text.

  Raises:
    UserError: it does not do as `lowercase` (when not None) says.
  """
  found = _lowercases(spec.get("normalizer"))
  if lowercase is not None and lowercase != found:
    raise UserError(
      f"tokenizer {path} {'lowercases' if found else 'keeps the case of'} "
      f"text but lowercase={lowercase} was asked; leave "
      f"config.tokenizer.lowercase unset for a tokenizer.json"
    )
  return found


def _lowercases(normalizer: dict | None) -> bool:
  """Whether a `tokenizers` normalizer (its JSON) lowercases text."""
  if not normalizer:
    return False
  kind = normalizer.get("type")
  if kind == "Sequence":
    return any(_lowercases(n) for n in normalizer.get("normalizers", ()))
  return kind == "Lowercase" or (kind == "BertNormalizer" and bool(normalizer.get("lowercase")))


class _Tokenizers:
  """What both classes share: a `tokenizers.Tokenizer` run without adding special tokens.

  Attributes:
    vocab_size: the largest id + 1 (a repeated vocab.txt line leaves a hole in the ids).
    model_path: the file read.
    fingerprint: the SHA-256 of its bytes.
    space_starts_words: whether a word's tokens depend on the space before it (byte-level
      BPE: "Ġword" after a space, "word" at the start of a text), so that text cut into
      pieces (sentences, words) encodes as the whole text only with that space kept.
  """

  space_starts_words = False

  def _adopt(self, tok, path: str, data: bytes) -> None:
    """Runs `tok`, read from `path` whose bytes are `data`."""
    self._tok = tok
    self._vocab = tok.get_vocab(with_added_tokens=True)
    # Ids are line numbers; a repeated line leaves a hole, so not len(vocab).
    self.vocab_size = max(self._vocab.values()) + 1
    self.model_path = path
    self.fingerprint = hashlib.sha256(data).hexdigest()

  def to_hf_json(self) -> str:
    """The Hugging Face `tokenizers` JSON of this tokenizer (no padding or truncation)."""
    return self._tok.to_str()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS] / [SEP]."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of several texts (one Rust call, in parallel threads)."""
    encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
    return [e.ids for e in encodings]

  def encode_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Each text's (char_start, char_end) per token of `encode_batch`, in the text."""
    return [e.offsets for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    """The text of token ids, special tokens kept."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    """The token of id `i`, e.g. "##ing" or "Ġword"."""
    return self._tok.id_to_token(int(i))

  def _table(self, predicate) -> np.ndarray:
    table = np.zeros(self.vocab_size, dtype=bool)
    table[[i for token, i in self._vocab.items() if predicate(token)]] = True
    return table


class WordPieceTokenizer(_Tokenizers):
  """A BERT WordPiece tokenizer, run by Hugging Face `tokenizers`.

  From a `vocab.txt`, text is cut as Google's BERT and `BertTokenizerFast` cut
  it: BertNormalizer (control characters removed, CJK characters split apart,
  lowercasing and accent stripping when `lowercase`), then BertPreTokenizer
  (whitespace and punctuation), then greedy longest-match WordPiece with "##"
  continuations. From a Hugging Face `tokenizer.json` (`from_hf_json`), as that
  file says. The five special tokens typed in text encode to their ids.

  Attributes:
    lowercase: whether text is lowercased.
    file_name: "vocab.txt" or "tokenizer.json", the kind of file it was read from.
  """

  kind = "wordpiece"

  def __init__(
    self,
    vocab_path: str,
    *,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
    handle_chinese_chars: bool = True,
  ):
    """Reads `vocab_path` (one token per line, the id is the line number).

    Args:
      vocab_path: a BERT `vocab.txt`.
      lowercase: None (auto) lowercases iff lowercasing changes no token (its
        "[...]" brackets aside), which tells cased from uncased vocabularies.
      strip_accents: None strips accents iff `lowercase` (as BERT).
      handle_chinese_chars: put spaces around CJK characters (as BERT).
    """
    import tokenizers  # Imported on use, like sentencepiece.
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    data = _read_bytes(vocab_path, "WordPiece vocabulary")
    try:
      vocab = _read_wordpiece_vocab(vocab_path, data)
    except Exception:  # tokenizers raises a plain Exception on bad UTF-8.
      raise UserError(
        f"WordPiece vocabulary {vocab_path} is not UTF-8 text; "
        f"give a BERT vocab.txt (one token per line)"
      ) from None
    for piece in SPECIAL_PIECES:
      if piece not in vocab:
        raise UserError(
          f"WordPiece vocabulary {vocab_path} has no {piece} "
          f"token; add a line {piece} or use a BERT vocab.txt"
        )
    if lowercase is None:
      # c.lower() != c, not c.isupper(): uncased BERT vocabularies hold "ℝ", which is
      # upper case but has no lower case (lowercasing keeps it).
      lowercase = not any(c.lower() != c for token in vocab for c in _BRACKET_TOKEN.sub("", token))
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
      lowercase=lowercase, strip_accents=strip_accents, handle_chinese_chars=handle_chinese_chars
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    self._setup(tok, vocab_path, data, lowercase=lowercase, file_name="vocab.txt")

  @classmethod
  def from_hf_json(cls, path: str, *, lowercase: bool | None = None) -> "WordPieceTokenizer":
    """Reads a Hugging Face `tokenizer.json` whose model is WordPiece (BERT's).

    Its normalizer, pre-tokenizer and vocabulary are used as they are; padding
    and truncation, which some files carry (all-MiniLM-L6-v2 pads to 128), are
    turned off: ids are cut and padded later, by the pipeline.

    Args:
      path: the `tokenizer.json`.
      lowercase: None, or what the file's normalizer must do (else an error).

    Raises:
      UserError: the file is not a tokenizer.json, its model is not WordPiece,
        it lacks a special token, or it does not lowercase as `lowercase` says.
    """
    data, spec, model_type, tok = _read_tokenizer_json(path)
    if model_type != "WordPiece":
      raise UserError(
        f"tokenizer {path} is a Hugging Face {model_type} tokenizer, not WordPiece; "
        f"read it with tokenizer.load (HFTokenizer)"
      )
    found = _checked_lowercase(path, spec, lowercase)
    self = cls.__new__(cls)
    self._setup(
      tok,
      path,
      data,
      lowercase=found,
      file_name="tokenizer.json",
      prefix=spec["model"].get("continuing_subword_prefix") or "##",
    )
    return self

  def _setup(
    self, tok, path: str, data: bytes, *, lowercase: bool, file_name: str, prefix: str = "##"
  ) -> None:
    for piece in SPECIAL_PIECES:
      if tok.token_to_id(piece) is None:
        raise UserError(f"tokenizer {path} has no {piece} token; use a BERT tokenizer.json")
    tok.add_special_tokens(list(SPECIAL_PIECES))
    self._adopt(tok, path, data)
    self._prefix = prefix
    self.lowercase = lowercase
    self.file_name = file_name
    self.special_ids = tuple(self._vocab[p] for p in SPECIAL_PIECES)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = self.special_ids
    self.pair_separator = (self.sep_id,)  # the ids between the two texts of a pair

  def word_start_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for every token not starting with "##"."""
    return self._table(lambda token: not token.startswith(self._prefix))

  def special_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for the five specials and every "[...]" token."""
    return self._table(
      lambda token: token in SPECIAL_PIECES or _BRACKET_TOKEN.fullmatch(token) is not None
    )


class HFTokenizer(_Tokenizers):
  """A Hugging Face `tokenizer.json` of any model, run by `tokenizers`.

  Attributes:
    kind: "bytelevel_bpe", "bpe", "unigram" (or the model's type, lowercased).
    lowercase: whether the normalizer lowercases text.
    pair_separator: the ids between the two texts of a pair.
    special_ids: (pad, unk, cls, sep, mask) ids.
    file_name: "tokenizer.json".
  """

  file_name = "tokenizer.json"

  def __init__(self, path: str, *, lowercase: bool | None = None):
    """Reads `path`, a Hugging Face tokenizer.json.

    Args:
      path: the file, local or a URL.
      lowercase: None, or what the file's normalizer must do (else an error).

    Raises:
      UserError: not a tokenizer.json, a role without its token, an odd post-processor, or
        lowercasing other than `lowercase`.
    """
    data, spec, model_type, tok = _read_tokenizer_json(path)
    self.lowercase = _checked_lowercase(path, spec, lowercase)
    self._adopt(tok, path, data)
    model_type = str(model_type or "model").lower()
    self._byte_level = _find(spec.get("pre_tokenizer"), "ByteLevel") is not None
    self.space_starts_words = self._byte_level
    self.kind = f"bytelevel_{model_type}" if self._byte_level else model_type
    metaspace = _find(spec.get("pre_tokenizer"), "Metaspace")
    self._metaspace = metaspace.get("replacement", "\u2581") if metaspace else None
    self._prefix = spec["model"].get("continuing_subword_prefix") or None
    self._byte_fallback = bool(spec["model"].get("byte_fallback"))
    self._specials = {t["content"] for t in spec.get("added_tokens") or () if t.get("special")}
    ids = {role: self._named(role) for role in _ROLES}
    layout = self._layout()
    if layout is not None:
      ids["cls"], ids["sep"], self.pair_separator = layout
    missing = [f"{' or '.join(ROLE_NAMES[r])}" for r in _ROLES if ids[r] is None]
    if missing:
      raise UserError(
        f"tokenizer {path} has no {', no '.join(missing)} token; bert_jax needs the five "
        f"special tokens (pad, unk, cls, sep, mask) of a BERT or RoBERTa tokenizer"
      )
    self.special_ids = tuple(ids[r] for r in _ROLES)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = self.special_ids
    if layout is None:
      self.pair_separator = (self.sep_id,)

  def _named(self, role: str) -> int | None:
    """The id of the first of the role's names in the vocabulary, or None."""
    return next((self._vocab[n] for n in ROLE_NAMES[role] if n in self._vocab), None)

  def _layout(self) -> tuple[int, int, tuple[int, ...]] | None:
    """(cls, sep, pair_separator) from the post-processor, or None when there is none.

    Raises:
      UserError: the post-processor does not give `cls A sep` and `cls A ... B sep`.
    """
    if self._tok.post_processor is None:
      return None
    single = self._tok.encode("a", add_special_tokens=True)
    pair = self._tok.encode("a", "b", add_special_tokens=True)

    def parts(encoding):
      ids, seq = encoding.ids, encoding.sequence_ids
      a = [i for i, s in enumerate(seq) if s == 0]
      b = [i for i, s in enumerate(seq) if s == 1]
      return ids, a, b

    ids, a, _ = parts(single)
    pair_ids, pa, pb = parts(pair)
    before, after = ids[: a[0]] if a else [], ids[a[-1] + 1 :] if a else []
    if not a or not pa or not pb or len(before) != 1 or len(after) != 1:
      pieces = [self._tok.id_to_token(i) for i in before], [self._tok.id_to_token(i) for i in after]
      raise UserError(
        f"tokenizer {self.model_path} adds {pieces[0]} before a text and {pieces[1]} after "
        f"it, not one classification token and one separator; give the tokenizer.json of "
        f"an encoder (BERT, RoBERTa, ALBERT, ModernBERT)"
      )
    cls_id, sep_id = before[0], after[0]
    if pair_ids[: pa[0]] != [cls_id] or pair_ids[pb[-1] + 1 :] != [sep_id]:
      raise UserError(
        f"tokenizer {self.model_path} does not add the same tokens around a pair as around "
        f"one text; give the tokenizer.json of an encoder (BERT, RoBERTa, ALBERT, ModernBERT)"
      )
    return cls_id, sep_id, tuple(pair_ids[pa[-1] + 1 : pb[0]])

  def word_start_table(self) -> np.ndarray:
    """(vocab_size,) bool: True where a token starts a word (for whole-word masking).

    Byte-level: a token starting with a whitespace byte ("Ġ" for a space), made of
    punctuation (a sentence's "." after "Ġword", Chinese's "。"), or starting with a CJK
    ideograph (`tokenizer.starts_cjk`: Chinese has no spaces, so each token of it is a
    word). Metaspace (SentencePiece style): starting with "▁" or a CJK ideograph, or made
    of punctuation (`tokenizer.starts_metaspace_word`); with byte fallback, a byte piece
    ("<0xE4>") as `tokenizer.starts_byte_piece_word` says. Else, with a continuing-subword prefix
    ("##"): not starting with it; else every token. Special tokens are words of their own.
    """
    special = self.special_table()
    if self._byte_level:
      alphabet = byte_alphabet()

      def starts(token):
        raw = bytes(alphabet.get(c, 0) for c in token)
        text = raw.decode("utf-8", errors="replace")
        return bool(raw) and (
          raw[0] in tokenizer_lib.SPACE_BYTES
          or ("\ufffd" not in text and all(map(tokenizer_lib.is_punctuation, text)))
          or tokenizer_lib.starts_cjk(raw)
        )

      table = self._table(starts)
    elif self._metaspace:

      def starts(token):
        byte = _BYTE_PIECE.fullmatch(token) if self._byte_fallback else None
        if byte:
          return tokenizer_lib.starts_byte_piece_word(int(byte[1], 16))
        return tokenizer_lib.starts_metaspace_word(token, self._metaspace)

      table = self._table(starts)
    elif self._prefix:
      table = self._table(lambda t: not t.startswith(self._prefix))
    else:
      table = np.ones(self.vocab_size, dtype=bool)
    return table | special

  def special_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for the five roles and every special added token."""
    table = self._table(lambda t: t in self._specials)
    table[list(self.special_ids)] = True
    return table


def train_bytelevel_bpe(
  sentences: Iterable[str],
  path: str,
  *,
  vocab_size: int,
  min_frequency: int = 2,
  layout: str = "bert",
) -> str:
  """Trains a byte-level BPE tokenizer (RoBERTa's recipe) with bert_jax's special ids.

  `tokenizers`' BPE trainer gives the same merges for the same sentences on any machine.

  Args:
    sentences: iterable of sentences (str); blank ones are skipped. Read once, to the end.
    path: where to write the `tokenizer.json`; written atomically.
    vocab_size: tokens in all: the 5 specials, the 256 bytes and the merges (fewer when
      the corpus has no more pairs to merge).
    min_frequency: a pair seen fewer times is not merged.
    layout: "bert" (`[CLS] A [SEP] B [SEP]`) or "roberta" (`<s> A </s></s> B </s>`): the
      special tokens' names and the pair layout (`SPECIAL_NAMES`).

  Returns:
    `path`.

  Raises:
    UserError: `vocab_size` cannot hold the specials and the byte alphabet, or no text.
  """
  import tokenizers
  from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers

  names = SPECIAL_NAMES[layout]
  least = len(names) + 256
  if vocab_size < least:
    raise UserError(
      f"tokenizer vocab_size {vocab_size} is too small for byte-level BPE: the 5 special "
      f"tokens and 256 bytes need {least}; set a larger config.tokenizer.vocab_size"
    )
  seen = [0]

  def texts():
    for sentence in sentences:
      if sentence.strip():
        seen[0] += 1
        yield sentence

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = [AddedToken(p, special=True, normalized=False, lstrip=p == names[-1]) for p in names]
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=specials,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts(), trainer=trainer)
  if not seen[0]:
    raise UserError("no text to train the tokenizer on; give a corpus with non-blank lines")
  cls, sep = names[2:4]
  between = f"{sep}:0" + (f" {sep}:0" if layout == "roberta" else "")
  tok.post_processor = processors.Sequence(
    [
      processors.ByteLevel(trim_offsets=True),
      processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {between} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer_lib.CLS_ID), (sep, tokenizer_lib.SEP_ID)],
      ),
    ]
  )
  for piece, i in zip(names, tokenizer_lib.SPECIAL_IDS):
    assert tok.token_to_id(piece) == i, (piece, tok.token_to_id(piece))
  storage.write_text(path, tok.to_str(pretty=True))
  return path


def train_wordpiece(
  sentences: Iterable[str], path: str, *, vocab_size: int, lowercase: bool = True
) -> str:
  """Trains a WordPiece vocabulary (BERT's recipe) with bert_jax's special ids, written as
  a `vocab.txt` (one piece per line, in id order) that `transformers`' `BertTokenizer`
  reads.

  Text is normalised and split into words as BERT's tokenizer does it (control characters
  removed, CJK characters split, with `lowercase` lowercased and accents stripped; split
  on whitespace and punctuation). The pieces are learnt by `tokenizers`' BPE trainer, with
  every character after a word's first moved to a code point of its own, so that the
  continuation pieces (`##...`) are symbols as any other: unlike its WordPiece trainer,
  whose ties fall by hash order, the same sentences give the same vocabulary in every
  process (each host of a pod may train its own).

  Args:
    sentences: iterable of sentences (str); blank ones are skipped. Read once, to the end.
    path: where to write the `vocab.txt`; written atomically.
    vocab_size: pieces in all, the 5 specials and every character seen (as a word's
      first and as a continuation) included; fewer when the corpus has no more to learn.
    lowercase: BERT's uncased (True) or cased (False) tokenizer.

  Returns:
    `path`.

  Raises:
    UserError: no text, or more distinct characters than the twin code points can hold.
  """
  import collections

  import tokenizers
  from tokenizers import models, normalizers, pre_tokenizers, trainers

  normalizer = normalizers.BertNormalizer(lowercase=lowercase)
  split = pre_tokenizers.BertPreTokenizer()
  words = collections.Counter()
  for sentence in sentences:
    if sentence.strip():
      words.update(w for w, _ in split.pre_tokenize_str(normalizer.normalize_str(sentence)))
  if not words:
    raise UserError("no text to train the tokenizer on; give a corpus with non-blank lines")
  # Continuation characters become code points of the supplementary private use areas the
  # text does not use, assigned in code point order.
  alphabet = sorted({c for w in words for c in w[1:]})
  used = {c for w in words for c in w}
  areas = (*range(0xF0000, 0xFFFFE), *range(0x100000, 0x10FFFE))  # not U+xFFFE, U+xFFFF
  free = (chr(i) for i in areas if chr(i) not in used)
  twin = {c: t for c, t in zip(alphabet, free)}
  if len(twin) < len(alphabet):
    raise UserError(f"the corpus has {len(alphabet)} distinct characters, too many to train")
  back = {t: c for c, t in twin.items()}

  def twinned(word):
    return word[0] + "".join(twin[c] for c in word[1:])

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=list(tokenizer_lib.SPECIAL_PIECES),
    show_progress=False,
  )
  tok.train_from_iterator(
    (" ".join([twinned(w)] * n) for w, n in sorted(words.items())), trainer=trainer
  )
  pieces = [p for p, _ in sorted(tok.get_vocab().items(), key=lambda item: item[1])]
  for piece, i in zip(tokenizer_lib.SPECIAL_PIECES, tokenizer_lib.SPECIAL_IDS):
    assert pieces[i] == piece, (piece, pieces[i])

  def restored(piece):
    if piece in tokenizer_lib.SPECIAL_PIECES:
      return piece
    text = "".join(back.get(c, c) for c in piece)
    return "##" + text if piece[0] in back else text

  storage.write_text(path, "".join(f"{restored(p)}\n" for p in pieces))
  return path
