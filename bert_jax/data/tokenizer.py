"""Tokenizers: a SentencePiece model we train, or a BERT WordPiece `vocab.txt`.

Both classes offer one interface (ids of the five special tokens, `encode`,
`encode_batch`, `decode`, and per-id tables for masking), so the pipeline does
not care which it has. `load` picks the class from the file.

SentencePiece models trained here have the special ids fixed, so the model, the
masking and the checkpoints agree on them without reading the tokenizer:
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. [CLS], [SEP] and [MASK] are
user-defined symbols, so "[MASK]" typed in text encodes to MASK_ID (handy for
fill-mask demos). A WordPiece vocabulary keeps its own ids (Google's BERT
vocabularies have [CLS]=101): read them from the tokenizer, not the constants.
"""

import hashlib
import io
import os
import re

import numpy as np

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

# A whole-token "[...]" (e.g. "[unused7]"): reserved, never a masking candidate.
_BRACKET_TOKEN = re.compile(r"\[[^\[\]]+\]")


def _spm():
  # Imported on use: the id constants above must import without sentencepiece (the
  # synthetic data source runs on GPU images that lack it).
  import sentencepiece
  return sentencepiece


def _read_bytes(path: str, what: str) -> bytes:
  if not os.path.isfile(path):
    raise UserError(f"{what} {path} does not exist; run data preparation first "
                    f"or fix the tokenizer path")
  with open(path, "rb") as f:
    return f.read()


def _check_special_ids(sp, path: str) -> None:
  for i, piece in zip(SPECIAL_IDS, SPECIAL_PIECES):
    if sp.piece_to_id(piece) != i:
      raise UserError(
          f"tokenizer {path} has {piece} at id {sp.piece_to_id(piece)}, not "
          f"{i}; use a model trained by bert_jax (train_sentencepiece)")


def train_sentencepiece(sentences, model_path: str, *, vocab_size: int,
                        model_type: str = "unigram",
                        input_sentence_size: int = 1_000_000,
                        seed: int = 0) -> str:
  """Trains a SentencePiece model on a stream of sentences.

  SentencePiece's result is repeatable for a given thread count but changes
  with it, so the count is a constant (`TRAIN_THREADS`), not `os.cpu_count()`:
  with one SentencePiece version, every machine trains the same model.
  `byte_fallback` is on, so no text maps to [UNK].

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
  """
  spm = _spm()
  spm.set_random_generator_seed(seed)
  proto = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=(s for s in sentences if s.strip()),
        model_writer=proto,
        vocab_size=vocab_size,
        model_type=model_type,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        num_threads=TRAIN_THREADS,
        pad_id=PAD_ID, pad_piece="[PAD]",
        unk_id=UNK_ID, unk_piece="[UNK]",
        bos_id=-1, eos_id=-1,
        user_defined_symbols=list(SPECIAL_PIECES[2:]),
        byte_fallback=True,
        minloglevel=2,
    )
  except RuntimeError as e:
    message = str(e)
    if "smaller than required_chars" in message:
      need = re.search(r"vs (\d+)", message)
      hint = f" (at least {need.group(1)} here)" if need else ""
      raise UserError(
          f"tokenizer vocab_size {vocab_size} is too small to hold the special "
          f"tokens, 256 byte pieces and the corpus's characters; set a larger "
          f"config.tokenizer.vocab_size{hint}") from None
    if "Vocabulary size too high" in message:
      limit = re.search(r"<= (\d+)", message)
      hint = f" (at most {limit.group(1)} here)" if limit else ""
      raise UserError(
          f"tokenizer vocab_size {vocab_size} is too large for this corpus; "
          f"set a smaller config.tokenizer.vocab_size{hint} or use more text"
      ) from None
    raise UserError(f"SentencePiece training failed: {message}; check the "
                    f"corpus and config.tokenizer") from None

  sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
  _check_special_ids(sp, model_path)
  tmp = model_path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(proto.getvalue())
  os.replace(tmp, model_path)
  return model_path


class Tokenizer:
  """A trained SentencePiece model with BERT's special ids."""

  kind = "sentencepiece"
  pad_id, unk_id, cls_id, sep_id, mask_id = SPECIAL_IDS
  special_ids = SPECIAL_IDS

  def __init__(self, model_path: str):
    data = _read_bytes(model_path, "tokenizer model")
    try:
      self._sp = _spm().SentencePieceProcessor(model_proto=data)
    except RuntimeError:
      raise UserError(f"tokenizer model {model_path} is not a SentencePiece "
                      f"model; delete it to retrain or give the right file"
                      ) from None
    _check_special_ids(self._sp, model_path)
    self._space_id = self._sp.piece_to_id("\u2581")
    self.model_path = model_path
    self.fingerprint = hashlib.sha256(data).hexdigest()

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS] / [SEP]."""
    return self._join_mask(self._sp.encode(text, out_type=int))

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of several texts (one C++ call, faster than a loop)."""
    return [self._join_mask(ids) for ids in self._sp.encode(texts, out_type=int)]

  def _join_mask(self, ids: list[int]) -> list[int]:
    """Drops the lone word-start piece SentencePiece puts before "[MASK]".

    "a [MASK] b" encodes as `▁a ▁ [MASK] ▁b`; in training a masked word is one
    piece that carries its own `▁`, so the [MASK] stands for `▁word` and the
    lone `▁` would be a token the model never saw there (Hugging Face strips
    the space before an ALBERT-style [MASK] the same way).
    """
    if MASK_ID not in ids:
      return ids
    return [t for i, t in enumerate(ids)
            if not (t == self._space_id and i + 1 < len(ids) and ids[i + 1] == MASK_ID)]

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def word_start_table(self) -> np.ndarray:
    """(vocab_size,) bool: True where a piece starts a word (for whole-word masking).

    A piece starts a word when it begins with "▁"; the special and byte pieces
    count as words of their own.
    """
    sp = self._sp
    return np.array([i in SPECIAL_IDS or sp.is_byte(i) or
                     sp.id_to_piece(i).startswith("\u2581")
                     for i in range(self.vocab_size)], dtype=bool)

  def special_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for the five special ids."""
    table = np.zeros(self.vocab_size, dtype=bool)
    table[list(SPECIAL_IDS)] = True
    return table


class WordPieceTokenizer:
  """A BERT WordPiece vocabulary (`vocab.txt`), run by Hugging Face `tokenizers`.

  Text is cut as Google's BERT and `BertTokenizerFast` cut it: BertNormalizer
  (control characters removed, CJK characters split apart, lowercasing and
  accent stripping when `lowercase`), then BertPreTokenizer (whitespace and
  punctuation), then greedy longest-match WordPiece with "##" continuations.
  The five special tokens typed in text encode to their ids.

  Attributes:
    lowercase: whether text is lowercased (and accents stripped).
  """

  kind = "wordpiece"

  def __init__(self, vocab_path: str, *, lowercase: bool | None = None):
    """Reads `vocab_path` (one token per line, the id is the line number).

    Args:
      vocab_path: a BERT `vocab.txt`.
      lowercase: None (auto) lowercases iff no token has an uppercase letter
        outside "[...]" brackets, which tells cased from uncased vocabularies.
    """
    import tokenizers  # Imported on use, like sentencepiece.
    from tokenizers import decoders, models, normalizers, pre_tokenizers
    data = _read_bytes(vocab_path, "WordPiece vocabulary")
    try:
      vocab = models.WordPiece.read_file(vocab_path)
    except Exception:  # tokenizers raises a plain Exception on bad UTF-8.
      raise UserError(f"WordPiece vocabulary {vocab_path} is not UTF-8 text; "
                      f"give a BERT vocab.txt (one token per line)") from None
    for piece in SPECIAL_PIECES:
      if piece not in vocab:
        raise UserError(f"WordPiece vocabulary {vocab_path} has no {piece} "
                        f"token; add a line {piece} or use a BERT vocab.txt")
    if lowercase is None:
      lowercase = not any(c.isupper() for token in vocab
                          for c in _BRACKET_TOKEN.sub("", token))
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(list(SPECIAL_PIECES))
    self._tok = tok
    self._vocab = vocab
    self.lowercase = lowercase
    self.special_ids = tuple(vocab[p] for p in SPECIAL_PIECES)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.special_ids)
    # Ids are line numbers; a repeated line leaves a hole, so not len(vocab).
    self.vocab_size = max(vocab.values()) + 1
    self.model_path = vocab_path
    self.fingerprint = hashlib.sha256(data).hexdigest()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS] / [SEP]."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of several texts (one Rust call, in parallel threads)."""
    encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
    return [e.ids for e in encodings]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(int(i))

  def _table(self, predicate) -> np.ndarray:
    table = np.zeros(self.vocab_size, dtype=bool)
    table[[i for token, i in self._vocab.items() if predicate(token)]] = True
    return table

  def word_start_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for every token not starting with "##"."""
    return self._table(lambda token: not token.startswith("##"))

  def special_table(self) -> np.ndarray:
    """(vocab_size,) bool: True for the five specials and every "[...]" token."""
    return self._table(lambda token: token in SPECIAL_PIECES or
                       _BRACKET_TOKEN.fullmatch(token) is not None)


def _is_text(path: str) -> bool:
  """Whether the file's first line is printable UTF-8 text.

  A SentencePiece model fails: its first byte, protobuf field 1's tag, is a
  newline, so its first line is empty.
  """
  with open(path, "rb") as f:
    line = f.read(4096).split(b"\n", 1)[0].rstrip(b"\r")
  try:
    text = line.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return bool(text.strip()) and text.isprintable()


def load(path: str, lowercase: bool | None = None) -> Tokenizer | WordPieceTokenizer:
  """The tokenizer in `path`.

  Args:
    path: a text file is read as a WordPiece `vocab.txt`, anything else as a
      SentencePiece model.
    lowercase: WordPiece only; None: lowercase if the vocab has no capitals.

  Raises:
    UserError: the file is missing or is neither kind of tokenizer.
  """
  if not os.path.isfile(path):
    raise UserError(f"tokenizer {path} does not exist; give a SentencePiece "
                    f"model or a BERT vocab.txt, or fix config.tokenizer.path")
  if _is_text(path):
    return WordPieceTokenizer(path, lowercase=lowercase)
  return Tokenizer(path)
