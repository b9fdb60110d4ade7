"""Tokenizers: a SentencePiece model we train, or a BERT WordPiece vocabulary.

The classes offer one interface (ids of the five special tokens, `pair_separator`,
`encode`, `encode_batch`, `decode`, and per-id tables for masking), so the pipeline
does not care which it has. `load` picks the class from the file: a SentencePiece
`.model`, a WordPiece `vocab.txt`, a Hugging Face `tokenizer.json` whose model is
WordPiece, or any other `tokenizer.json` (`hf_tokenizer.HFTokenizer`: byte-level BPE,
Unigram). `train_tokenizer` trains the kind `config.tokenizer.model_type` names.

SentencePiece models trained here have the special ids fixed, so the model, the
masking and the checkpoints agree on them without reading the tokenizer:
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. In both kinds the five special
tokens typed in text encode to their ids, as in Hugging Face tokenizers (handy
for fill-mask demos). A WordPiece vocabulary keeps its own ids (Google's BERT
vocabularies have [CLS]=101): read them from the tokenizer, not the constants.
"""

import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

from bert_jax import storage
from bert_jax.errors import UserError

PAD_ID = 0
UNK_ID = 1
CLS_ID = 2
SEP_ID = 3
MASK_ID = 4
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
SPECIAL_PIECES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Fixed, not os.cpu_count(): SentencePiece's model depends on the thread count.
TRAIN_THREADS = 16
# SentencePiece's default `max_sentence_length`, in UTF-8 bytes: it drops longer sentences
# from training (`train_sentencepiece` cuts them into pieces instead).
MAX_SENTENCE_BYTES = 4192
_WHITESPACE = re.compile(rb"\s")
# ASCII whitespace: a byte-level token that starts with one, or a byte piece of one, starts
# a word.
SPACE_BYTES = frozenset(b" \t\n\r\x0b\x0c")

# A special token typed in text. [CLS], [SEP] and [MASK] are SentencePiece user-defined
# pieces; [PAD] (control) and [UNK] (unknown) are not (see `SentencePieceTokenizer._join_specials`).
_TYPED_SPECIAL = re.compile(r"\[(?:PAD|UNK|CLS|SEP|MASK)\]")
_NOT_USER_DEFINED = re.compile(r"\[(?:PAD|UNK)\]")
_USER_DEFINED_IDS = frozenset((CLS_ID, SEP_ID, MASK_ID))


def is_punctuation(char: str) -> bool:
  """BERT's punctuation: every printable ASCII character that is not a letter or digit,
  and every Unicode punctuation character (category P*).
  """
  if char.isascii():
    return char.isprintable() and not char.isalnum() and not char.isspace()
  return unicodedata.category(char).startswith("P")


# The CJK ideographs, as Google's BERT tokenizer defines them (`_is_chinese_char`): Chinese
# characters, and the kanji and hanja of Japanese and Korean; not kana or Hangul.
_CJK_RANGES = (
  (0x3400, 0x4DBF),
  (0x4E00, 0x9FFF),
  (0xF900, 0xFAFF),
  (0x20000, 0x2A6DF),
  (0x2A700, 0x2B73F),
  (0x2B740, 0x2B81F),
  (0x2B820, 0x2CEAF),
  (0x2F800, 0x2FA1F),
)


def is_cjk(char: str) -> bool:
  """Whether `char` is a CJK ideograph, which BERT's tokenizer makes a word of its own
  (Chinese is written without spaces: its words are not marked in the text).
  """
  code = ord(char)
  return any(low <= code <= high for low, high in _CJK_RANGES)


def starts_cjk(token: bytes) -> bool:
  """Whether UTF-8 bytes start with a CJK ideograph (`is_cjk`). A byte-level token, or a
  SentencePiece byte piece, may hold only the first bytes of a character (a rare one): one
  that starts a character of U+4000..U+9FFF (lead byte E4..E9: CJK but for the 64
  hexagrams at U+4DC0) counts as one.
  """
  if not token or 0x80 <= token[0] <= 0xBF:  # empty, or inside a character
    return False
  first = token[:4].decode("utf-8", errors="replace")[0]
  if first != "\ufffd":
    return is_cjk(first)
  return 0xE4 <= token[0] <= 0xE9


def starts_byte_piece_word(value: int) -> bool:
  """Whether a byte piece ("<0xE4>", SentencePiece's byte fallback: a character outside the
  vocabulary, one piece per UTF-8 byte) of byte `value` starts a word, as the piece of its
  character would: when it is ASCII punctuation or space, or starts a CJK ideograph
  (`starts_cjk`). Else it continues one, so a character's bytes, and a word's letters, are
  masked together.
  """
  if value < 0x80:  # an ASCII character outside a small vocabulary
    return is_punctuation(chr(value)) or value in SPACE_BYTES
  return starts_cjk(bytes([value]))


def starts_metaspace_word(piece: str, metaspace: str = "\u2581") -> bool:
  """Whether a SentencePiece-style piece starts a word, for whole-word masking.

  A piece starts a word when it begins with the metaspace ("▁", a space before it), is
  made only of punctuation, or begins with a CJK ideograph. SentencePiece keeps
  punctuation out of letter pieces but gives "hello," as "▁hello" ","; without the second
  rule the comma would be masked with "hello". BERT's tokenizer makes each punctuation
  mark a word, and ALBERT's `_is_start_piece_sp` starts a word at one. Chinese has no
  spaces: without the third rule a whole clause would be one word; with it each piece of
  Chinese is a word, as BERT makes each ideograph one (a piece of two, "中国", stays one).
  ALBERT also starts a word at every piece with a digit or a non-English letter, which
  would mask most words of other scripts piece by piece, so that rule is left out.
  """
  if not piece:
    return False
  return piece.startswith(metaspace) or is_cjk(piece[0]) or all(map(is_punctuation, piece))


def __getattr__(name: str):
  """`WordPieceTokenizer` and `HFTokenizer`, which live in `hf_tokenizer` (imported on use:
  it imports this module).
  """
  if name in ("WordPieceTokenizer", "HFTokenizer"):
    from bert_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top

    return getattr(hf_tokenizer, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _spm():
  # Imported on use: the id constants above must import without sentencepiece (the
  # synthetic data source runs on GPU images that lack it).
  import sentencepiece

  return sentencepiece


def _read_bytes(path: str, what: str) -> bytes:
  if not storage.isfile(path):
    raise UserError(
      f"{what} {path} does not exist; run data preparation first or fix the tokenizer path"
    )
  return storage.read_bytes(path)


def _check_special_ids(sp, path: str) -> None:
  for i, piece in zip(SPECIAL_IDS, SPECIAL_PIECES):
    if sp.piece_to_id(piece) != i:
      raise UserError(
        f"tokenizer {path} has {piece} at id {sp.piece_to_id(piece)}, not "
        f"{i}; use a model trained by bert_jax (train_sentencepiece)"
      )


def train_sentencepiece(
  sentences: Iterable[str],
  model_path: str,
  *,
  vocab_size: int,
  model_type: str = "unigram",
  input_sentence_size: int = 1_000_000,
  seed: int = 0,
) -> str:
  """Trains a SentencePiece model on a stream of sentences.

  SentencePiece's result is repeatable for a given thread count but changes
  with it, so the count is a constant (`TRAIN_THREADS`), not `os.cpu_count()`:
  with one SentencePiece version, every machine trains the same model.
  `byte_fallback` is on, so no text maps to [UNK]. SentencePiece drops sentences
  longer than `MAX_SENTENCE_BYTES` (a corpus of long lines would leave it
  nothing): those are cut into pieces first (`cut_long_sentence`).

  Args:
    sentences: iterable of sentences (str); blank ones are skipped. It is read
      once, to the end; SentencePiece keeps a uniform random sample of
      `input_sentence_size` of them.
    model_path: where to write the model; written atomically.
    vocab_size: number of pieces, special tokens and 256 byte pieces included.
    model_type: "unigram" or "bpe".
    input_sentence_size: at most this many sentences are sampled for training.
    seed: SentencePiece's random seed (sentence sampling).

  Returns:
    `model_path`.

  Raises:
    UserError: the vocabulary does not fit the corpus.
    BaseException: what reading `sentences` raised (a UserError, KeyboardInterrupt for
      Ctrl-C, errors.Terminated for SIGTERM), itself, not SentencePiece's report of it.
      Ctrl-C or SIGTERM while SentencePiece learns the pieces (C++) takes effect when it
      ends: the model, of the whole sample, is written first, and the exception says so
      (`model_kept`), so that a rerun need not learn it again.
  """
  spm = _spm()
  spm.set_random_generator_seed(seed)
  proto = io.BytesIO()
  raised = []

  def pieces():
    try:
      for sentence in sentences:
        if sentence.strip():
          yield from cut_long_sentence(sentence)
    except BaseException as e:  # SentencePiece stops with an error of its own (Ctrl-C, SIGTERM)
      raised.append(e)
      raise

  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=pieces(),
      model_writer=proto,
      vocab_size=vocab_size,
      model_type=model_type,
      input_sentence_size=input_sentence_size,
      shuffle_input_sentence=True,
      num_threads=TRAIN_THREADS,
      pad_id=PAD_ID,
      pad_piece="[PAD]",
      unk_id=UNK_ID,
      unk_piece="[UNK]",
      bos_id=-1,
      eos_id=-1,
      user_defined_symbols=list(SPECIAL_PIECES[2:]),
      byte_fallback=True,
      # max_sentence_length stays unset: MAX_SENTENCE_BYTES is its default, and a value set
      # (even the default) is recorded in the model, changing its bytes and fingerprint.
      minloglevel=2,
    )
  except RuntimeError as e:
    _raise_training_error(e, raised, vocab_size)
  except BaseException as e:  # a stop deferred while the pieces were learnt (C++)
    if not raised and proto.getvalue():  # the sample was read whole: the model is good
      _save_model(proto.getvalue(), model_path)
      e.model_kept = True
    raise
  _save_model(proto.getvalue(), model_path)
  return model_path


def _save_model(model: bytes, model_path: str) -> None:
  """Checks a trained model's special ids and writes it (atomically)."""
  _check_special_ids(_spm().SentencePieceProcessor(model_proto=model), model_path)
  storage.write_bytes(model_path, model)


def _raise_training_error(e: RuntimeError, raised: list, vocab_size: int):
  """The UserError of SentencePiece's `RuntimeError`, or the iterator's own error."""
  if raised:  # the iterator's own error (a UserError, Ctrl-C), not SentencePiece's copy
    raise raised[0] from None
  message = str(e)
  if "smaller than required_chars" in message:
    need = re.search(r"vs (\d+)", message)
    hint = f" (at least {need.group(1)} here)" if need else ""
    raise UserError(
      f"tokenizer vocab_size {vocab_size} is too small to hold the special "
      f"tokens, 256 byte pieces and the corpus's characters; set a larger "
      f"config.tokenizer.vocab_size{hint}"
    ) from None
  if "Vocabulary size too high" in message:
    limit = re.search(r"<= (\d+)", message)
    hint = f" (at most {limit.group(1)} here)" if limit else ""
    raise UserError(
      f"tokenizer vocab_size {vocab_size} is too large for this corpus; "
      f"set a smaller config.tokenizer.vocab_size{hint} or use more text"
    ) from None
  raise UserError(
    f"SentencePiece training failed: {message}; check the corpus and config.tokenizer"
  ) from None


def cut_long_sentence(sentence: str, max_bytes: int = MAX_SENTENCE_BYTES) -> list[str]:
  """`sentence` cut into pieces of at most `max_bytes` UTF-8 bytes, for tokenizer training.

  A cut falls on the last whitespace in the second half of a piece (the whitespace
  is dropped), else, in a run of text without whitespace, on the last character
  boundary that fits: a piece never splits a UTF-8 character.

  Args:
    sentence: any text.
    max_bytes: the longest piece, in UTF-8 bytes (>= 4).

  Returns:
    `[sentence]` when it fits, else its non-blank pieces in order.
  """
  data = sentence.encode("utf-8")
  if len(data) <= max_bytes:
    return [sentence]
  pieces, start = [], 0
  while len(data) - start > max_bytes:
    window = data[start : start + max_bytes + 1]  # a space just after the piece also cuts
    spaces = [m.start() for m in _WHITESPACE.finditer(window, max_bytes // 2)]
    if spaces:
      end, skip = start + spaces[-1], 1
    else:
      end, skip = start + max_bytes, 0
      while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: not a character start
        end -= 1
    pieces.append(data[start:end].decode("utf-8"))
    start = end + skip
  pieces.append(data[start:].decode("utf-8"))
  return [piece for piece in pieces if piece.strip()]


def as_in_the_text(tok, pieces: list[str], *, all_spaced: bool = False) -> list[str]:
  """The pieces of one text (its sentences, its words) as the whole text has them: for a
  tokenizer whose words depend on the space before them (`space_starts_words`: byte-level
  BPE, "ĠWord" after a space, "Word" at a text's start), each after the first keeps a
  leading space; with `all_spaced` the first too (a sentence pair's segment, which starts at
  any sentence; a word of a tokens row, as Hugging Face's `add_prefix_space` encodes it).
  """
  if not tok.space_starts_words:
    return pieces
  return [" " + p for p in pieces] if all_spaced else pieces[:1] + [" " + p for p in pieces[1:]]


# The files a tokenizer is kept in (`file_name`), by preference when a folder holds more.
FILE_NAMES = ("tokenizer.json", "vocab.txt", "tokenizer.model")


class SentencePieceTokenizer:
  """A trained SentencePiece model with BERT's special ids."""

  kind = "sentencepiece"
  file_name = "tokenizer.model"  # its name in a prepared data dir
  pad_id, unk_id, cls_id, sep_id, mask_id = SPECIAL_IDS
  special_ids = SPECIAL_IDS
  pair_separator = (SEP_ID,)  # the ids between the two texts of a pair
  space_starts_words = False  # its "▁" starts every text's first word (`_Tokenizers`)

  def __init__(self, model_path: str):
    data = _read_bytes(model_path, "tokenizer model")
    try:
      self._sp = _spm().SentencePieceProcessor(model_proto=data)
    except RuntimeError:
      raise UserError(
        f"tokenizer model {model_path} is not a SentencePiece "
        f"model; delete it to retrain or give the right file"
      ) from None
    _check_special_ids(self._sp, model_path)
    self._space_id = self._sp.piece_to_id("\u2581")
    self.model_path = model_path
    self.fingerprint = hashlib.sha256(data).hexdigest()

  @property
  def vocab_size(self) -> int:
    """The number of pieces (ids are 0 .. vocab_size - 1)."""
    return self._sp.get_piece_size()

  def model_proto(self) -> bytes:
    """The serialized SentencePiece `ModelProto` (for export)."""
    return self._sp.serialized_model_proto()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS] / [SEP]."""
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of several texts (one C++ call, faster than a loop)."""
    encoded = self._sp.encode(texts, out_type=int)
    # `in` on the text runs in C: only texts with a "[" can hold a special.
    return [
      ids if "[" not in text else self._join_specials(text, ids)
      for text, ids in zip(texts, encoded)
    ]

  def encode_offsets(self, texts: list[str]) -> list[list[tuple[int, int]] | None]:
    """Each text's (char_start, char_end) per piece of `encode_batch`, in the text; None
    for a text with a typed special ("["), whose pieces `encode_batch` rejoins.
    """
    offsets = []
    for text, encoded in zip(texts, self._sp.encode(texts, out_type="proto")):
      if "[" in text:
        offsets.append(None)
        continue
      # SentencePiece counts UTF-8 bytes of the input; chars[b] is the char at byte b: the
      # characters that start before it (a character starts at each non-continuation byte).
      starts = (np.frombuffer(text.encode("utf-8"), np.uint8) & 0xC0) != 0x80
      chars = np.concatenate([[0], np.cumsum(starts)])
      offsets.append([(int(chars[p.begin]), int(chars[p.end])) for p in encoded.pieces])
    return offsets

  def _join_specials(self, text: str, ids: list[int]) -> list[int]:
    """The ids of a text with special tokens typed in it, as Hugging Face gives them.

    SentencePiece cuts out its user-defined pieces ([CLS], [SEP], [MASK]) from the
    raw text but never its control and unknown pieces, so a typed "[PAD]" would
    become characters: the text is encoded again with "[PAD]" and "[UNK]" swapped
    for "[MASK]", and their ids are put back (one user-defined id per typed
    special, in order).

    The lone word-start piece before each special is dropped: "a [MASK] b"
    encodes as `▁a ▁ [MASK] ▁b`, but in training a masked word is one piece that
    carries its own `▁`, so the [MASK] stands for `▁word` and the lone `▁` would
    be a token the model never saw there; the same holds for the specials that
    training inserts as ids. The Hugging Face export drops it too: its normalizer
    strips the spaces before a special token.
    """
    typed = _TYPED_SPECIAL.findall(text)
    if not typed:
      return ids
    if len(typed) != sum(t in _USER_DEFINED_IDS for t in ids):
      ids = self._sp.encode(_NOT_USER_DEFINED.sub("[MASK]", text), out_type=int)
    queue = iter(typed)
    out = []
    for t in ids:
      if t in _USER_DEFINED_IDS:
        t = SPECIAL_IDS[SPECIAL_PIECES.index(next(queue))]
        if out and out[-1] == self._space_id:
          out.pop()
      out.append(t)
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """The text of token ids (special pieces as they are)."""
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    """The piece of id `i`, e.g. "▁word"."""
    return self._sp.id_to_piece(int(i))

  def word_start_table(self) -> np.ndarray:
    """(vocab_size,) bool: True where a piece starts a word (for whole-word masking).

    A piece starts a word as `starts_metaspace_word` says; the special pieces are words of
    their own; a byte piece ("<0xE4>") as `starts_byte_piece_word` says.
    """
    sp = self._sp

    def starts(i):
      if i in SPECIAL_IDS:
        return True
      if sp.is_byte(i):
        return starts_byte_piece_word(int(sp.id_to_piece(i)[1:-1], 16))  # "<0xE4>"
      return starts_metaspace_word(sp.id_to_piece(i))

    return np.array([starts(i) for i in range(self.vocab_size)], dtype=bool)

  def special_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for the five special ids."""
    table = np.zeros(self.vocab_size, dtype=bool)
    table[list(SPECIAL_IDS)] = True
    return table


def _is_hf_json(path: str) -> bool:
  """Whether to read the file as a Hugging Face tokenizer.json.

  A ".json" name says so (a broken one then gets its own error); otherwise the
  file must be a JSON object with a "model".
  """
  if path.endswith(".json"):
    return True
  with storage.open_file(path, "rb") as f:
    if not f.read(64).lstrip().startswith(b"{"):
      return False
  try:
    spec = json.loads(storage.read_bytes(path))
  except (ValueError, UnicodeDecodeError):
    return False
  return isinstance(spec, dict) and "model" in spec


def _is_text(path: str) -> bool:
  """Whether the file's first line is printable UTF-8 text.

  A SentencePiece model fails: its first byte, protobuf field 1's tag, is a
  newline, so its first line is empty.
  """
  with storage.open_file(path, "rb") as f:
    line = f.read(4096).split(b"\n", 1)[0].rstrip(b"\r")
  try:
    text = line.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return bool(text.strip()) and text.isprintable()


def load(path: str, lowercase: bool | None = None):
  """The tokenizer in `path`.

  Args:
    path: a Hugging Face `tokenizer.json` (WordPiece: `WordPieceTokenizer`; any other
      model: `hf_tokenizer.HFTokenizer`), a WordPiece `vocab.txt` (any other text file), or
      a SentencePiece model; local or a URL (`gs://...`).
    lowercase: None: lowercase if the vocab has no capitals (vocab.txt), or as the
      tokenizer.json says; else an error when the tokenizer.json does otherwise.

  Returns:
    A `SentencePieceTokenizer`, `WordPieceTokenizer` or `hf_tokenizer.HFTokenizer`.

  Raises:
    UserError: the file is missing or is no tokenizer we read.
  """
  if not storage.isfile(path):
    raise UserError(
      f"tokenizer {path} does not exist; give a SentencePiece model, a "
      f"BERT vocab.txt or tokenizer.json, or fix config.tokenizer.path"
    )
  from bert_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top

  if _is_hf_json(path):
    if _hf_model_type(path) in (None, "WordPiece"):  # None: WordPiece's error for a bad file
      return hf_tokenizer.WordPieceTokenizer.from_hf_json(path, lowercase=lowercase)
    return hf_tokenizer.HFTokenizer(path, lowercase=lowercase)
  if _is_text(path):
    return hf_tokenizer.WordPieceTokenizer(path, lowercase=lowercase)
  return SentencePieceTokenizer(path)


def _hf_model_type(path: str) -> str | None:
  """The model type of a tokenizer.json ("WordPiece", "BPE", ...), None if unreadable."""
  try:
    spec = json.loads(storage.read_bytes(path))
    return spec["model"].get("type")
  except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
    return None


# config.tokenizer.model_type: SentencePiece's unigram and bpe, byte-level BPE (RoBERTa's), or
# WordPiece (BERT's: a vocab.txt).
TRAINED_KINDS = ("unigram", "bpe", "bytelevel_bpe", "wordpiece")


def trained_file_name(model_type: str) -> str:
  """The file name of a tokenizer `train_tokenizer` trains for `model_type`."""
  return {"bytelevel_bpe": "tokenizer.json", "wordpiece": "vocab.txt"}.get(
    model_type, SentencePieceTokenizer.file_name
  )


def train_tokenizer(
  sentences: Iterable[str],
  path: str,
  *,
  vocab_size: int,
  model_type: str = "unigram",
  lowercase: bool | None = None,
  layout: str = "bert",
  **options,
) -> str:
  """Trains the tokenizer `model_type` names: `train_sentencepiece`, or for
  "bytelevel_bpe" and "wordpiece" `hf_tokenizer.train_bytelevel_bpe` and
  `hf_tokenizer.train_wordpiece` (which read every sentence given: the caller samples).
  Name `path` with `trained_file_name(model_type)`.

  Args:
    sentences: as `train_sentencepiece` takes them.
    path: where to write the tokenizer.
    vocab_size: the number of tokens.
    model_type: one of `TRAINED_KINDS`.
    lowercase: WordPiece only: lowercase (and strip accents, as BERT's uncased
      tokenizer) before training and tokenizing; None: True.
    layout: byte-level BPE only: "bert" (`[CLS] A [SEP] B [SEP]`) or "roberta" (`<s> A
      </s></s> B </s>`), the special tokens' names and the pair layout.
    **options: `train_sentencepiece`'s `input_sentence_size` and `seed` (byte-level BPE
      has neither: it takes every sentence, and trains the same merges from them).

  Returns:
    `path`.
  """
  if model_type == "bytelevel_bpe":
    from bert_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top

    return hf_tokenizer.train_bytelevel_bpe(sentences, path, vocab_size=vocab_size, layout=layout)
  if model_type == "wordpiece":
    from bert_jax.data import hf_tokenizer  # pylint: disable=g-import-not-at-top

    lowercase = True if lowercase is None else lowercase
    return hf_tokenizer.train_wordpiece(sentences, path, vocab_size=vocab_size, lowercase=lowercase)
  return train_sentencepiece(
    sentences, path, vocab_size=vocab_size, model_type=model_type, **options
  )
