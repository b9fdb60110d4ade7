"""SentencePiece tokenizer with BERT's special tokens at fixed ids.

The ids are fixed so the model, the masking and the checkpoints agree on them
without reading the tokenizer: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
[CLS], [SEP] and [MASK] are SentencePiece user-defined symbols, so "[MASK]"
typed in text encodes to MASK_ID (handy for fill-mask demos).
"""

import hashlib
import io
import os
import re

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


def _spm():
  # Imported on use: the id constants above must import without sentencepiece (the
  # synthetic data source runs on GPU images that lack it).
  import sentencepiece
  return sentencepiece


def _check_special_ids(sp, path: str) -> None:
  for i, piece in zip(SPECIAL_IDS, SPECIAL_PIECES):
    if sp.piece_to_id(piece) != i:
      raise UserError(
          f"tokenizer {path} has {piece} at id {sp.piece_to_id(piece)}, not "
          f"{i}; use a model trained by bert_jax (train_sentencepiece)")


def train_sentencepiece(documents, model_path: str, *, vocab_size: int,
                        model_type: str = "unigram",
                        input_sentence_size: int = 1_000_000,
                        seed: int = 0) -> str:
  """Trains a SentencePiece model on in-memory documents.

  SentencePiece's result is repeatable for a given thread count but changes
  with it, so the count is a constant (`TRAIN_THREADS`), not `os.cpu_count()`:
  with one SentencePiece version, every machine trains the same model.
  `byte_fallback` is on, so no text maps to [UNK].

  Args:
    documents: documents, each a list of sentences (str).
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
  def sentences():
    for document in documents:
      for sentence in document:
        if sentence.strip():
          yield sentence

  spm = _spm()
  spm.set_random_generator_seed(seed)
  proto = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(),
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

  sp = _spm().SentencePieceProcessor(model_proto=proto.getvalue())
  _check_special_ids(sp, model_path)
  tmp = model_path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(proto.getvalue())
  os.replace(tmp, model_path)
  return model_path


class Tokenizer:
  """A trained SentencePiece model with BERT's special ids."""

  def __init__(self, model_path: str):
    if not os.path.isfile(model_path):
      raise UserError(f"tokenizer model {model_path} does not exist; run data "
                      f"preparation first or fix the tokenizer path")
    with open(model_path, "rb") as f:
      data = f.read()
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

  pad_id = property(lambda self: PAD_ID)
  unk_id = property(lambda self: UNK_ID)
  cls_id = property(lambda self: CLS_ID)
  sep_id = property(lambda self: SEP_ID)
  mask_id = property(lambda self: MASK_ID)
