"""Tests of the tokenizers: SentencePiece trained from a stream, BERT WordPiece, `load`."""

import argparse
import collections
import hashlib
import inspect
import json
import random
import string

import numpy as np
import pytest
from tokenizers import BertWordPieceTokenizer

from bert_jax.data import tokenizer
from bert_jax.errors import UserError
from tests import tiny_tokenizers

# Ids chosen by hand: [unused*] around the specials, so their ids are not the constants.
HAND_VOCAB = [
  "[PAD]",
  "[unused0]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "[unused1]",
  "the",
  "dog",
  "##s",
  "run",
  "##ning",
  "!",
  "cafe",
]


def _write_vocab(path, tokens):
  path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
  return str(path)


def _docstrings():
  modules = (argparse, collections, json, random)
  return [
    inspect.getdoc(obj)
    for module in modules
    for obj in vars(module).values()
    if callable(obj) and inspect.getdoc(obj)
  ]


def _trained_vocab(tmp_path, lowercase):
  """A vocab.txt trained by `tokenizers` on stdlib docstrings."""
  specials = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  directory = tmp_path / ("uncased" if lowercase else "cased")
  tiny_tokenizers.wordpiece_files(
    _docstrings(), directory, lowercase=lowercase, specials=specials, vocab_size=800
  )
  return str(directory / "vocab.txt")


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_matches_hugging_face(tmp_path, lowercase):
  path = _trained_vocab(tmp_path, lowercase)
  tok = tokenizer.load(path)
  assert tok.kind == "wordpiece" and tok.lowercase == lowercase  # auto-detected
  reference = BertWordPieceTokenizer(path, lowercase=lowercase)
  texts = _docstrings()[:50] + [
    "Café NAÏVE résumé, 中文字符 and Ελληνικά!",
    "a [MASK] b [SEP]",
    "",
    "tab\tand\x00control",
    "x" * 150,
  ]
  expected = [reference.encode(t, add_special_tokens=False).ids for t in texts]
  assert [tok.encode(t) for t in texts] == expected
  assert tok.encode_batch(texts) == expected
  # Each token's characters (SQuAD's answers), as `tokenizers` gives them.
  reference_offsets = [reference.encode(t, add_special_tokens=False).offsets for t in texts]
  assert tok.encode_offsets(texts) == reference_offsets
  assert tok.vocab_size == reference.get_vocab_size()
  assert (
    tok.special_ids
    == tuple(reference.token_to_id(p) for p in tokenizer.SPECIAL_PIECES)
    == (0, 2, 3, 4, 5)
  )
  assert tok.encode("a [MASK] b")[1] == tok.mask_id


def test_wordpiece_hand_vocab(tmp_path):
  path = _write_vocab(tmp_path / "vocab.txt", HAND_VOCAB)
  tok = tokenizer.WordPieceTokenizer(path)
  assert tok.lowercase  # no uppercase letter outside brackets
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4, 5)
  assert tok.vocab_size == 14
  # the dog ##s run ##ning ! cafe [MASK] [UNK]: lowercased, accent stripped.
  assert tok.encode("The Dogs running! Café [MASK] zebra") == [7, 8, 9, 10, 11, 12, 13, 5, 2]
  assert tok.decode(tok.encode("the dogs running!")) == "the dogs running!"
  assert [tok.id_to_piece(i) for i in (9, 6)] == ["##s", "[unused1]"]

  starts = tok.word_start_table()
  assert starts.shape == (14,) and np.flatnonzero(~starts).tolist() == [9, 11]
  # One word start per word: "the", "dogs", "running", "!".
  assert starts[tok.encode("the dogs running!")].sum() == 4
  special = tok.special_table()
  assert np.flatnonzero(special).tolist() == list(range(7))

  # A cased token turns lowercasing off: "Dogs" and "Café" are unknown then.
  cased = tokenizer.WordPieceTokenizer(_write_vocab(tmp_path / "cased.txt", HAND_VOCAB + ["The"]))
  assert not cased.lowercase
  assert cased.encode("The dogs Dogs Café") == [14, 8, 9, 2, 2]
  assert tokenizer.WordPieceTokenizer(path, lowercase=False).encode("The") == [2]
  assert cased.fingerprint != tok.fingerprint
  assert tok.fingerprint == hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_wordpiece_errors(tmp_path):
  no_mask = _write_vocab(tmp_path / "no_mask.txt", [t for t in HAND_VOCAB if t != "[MASK]"])
  with pytest.raises(UserError, match=r"no \[MASK\] token"):
    tokenizer.load(no_mask)
  bad = tmp_path / "latin1.txt"
  bad.write_bytes("\n".join(HAND_VOCAB + ["café"]).encode("latin1"))
  with pytest.raises(UserError, match="not UTF-8"):
    tokenizer.load(str(bad))
  with pytest.raises(UserError, match="does not exist"):
    tokenizer.load(str(tmp_path / "missing.txt"))
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"\x00\x01\x02 not a model")
  with pytest.raises(UserError, match="not a SentencePiece model"):
    tokenizer.load(str(garbage))


def test_sentencepiece_from_stream(tmp_path):
  """Trained from a generator larger than `input_sentence_size`: the sample spans it all."""
  rng = random.Random(0)
  latin = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(2, 7))) for _ in range(200)]
  greek = ["".join(rng.choices("αβγδεζηθικλμνξοπ", k=rng.randint(2, 7))) for _ in range(200)]
  consumed = []

  def sentences():
    # Latin words only in the first half, Greek only in the second.
    for words in [latin] * 2000 + [greek] * 2000:
      consumed.append(1)
      yield " ".join(rng.choices(words, k=rng.randint(5, 12)))
    yield "   "

  path = tokenizer.train_sentencepiece(
    sentences(), str(tmp_path / "sp.model"), vocab_size=400, input_sentence_size=1000
  )
  assert len(consumed) == 4000
  tok = tokenizer.load(path)
  assert tok.kind == "sentencepiece" and tok.vocab_size == 400
  assert tok.special_ids == tokenizer.SPECIAL_IDS
  # Both halves were sampled: their letters are pieces, not byte fallbacks.
  text = " ".join(latin[:20] + greek[:20])
  ids = tok.encode(text)
  assert not any(tok.id_to_piece(i).startswith("<0x") for i in ids)
  assert tok.decode(ids) == text
  # Each piece's characters: in order, covering the text (a piece's "▁" its space).
  offsets = tok.encode_offsets([text, "a [MASK] b"])
  assert len(offsets[0]) == len(ids) and offsets[1] is None  # typed specials: no offsets
  assert "".join(text[a:b] for a, b in offsets[0]) == text

  starts = tok.word_start_table()
  assert starts.shape == (400,)
  assert starts[ids].sum() == 40  # one word start per word
  byte_ids = [i for i in range(400) if tok.id_to_piece(i).startswith("<0x")]
  # A byte piece (a character outside the vocabulary, a piece per UTF-8 byte) starts a word
  # as its character would: ASCII punctuation or space, or the first byte of an ideograph of
  # U+4000..U+9FFF; the rest continue a word, so a character's bytes are masked together.
  values = [int(tok.id_to_piece(i)[3:5], 16) for i in byte_ids]
  assert len(byte_ids) == 256 and values == list(range(256))
  expected = [chr(v) in string.punctuation + string.whitespace or 0xE4 <= v <= 0xE9 for v in values]
  assert starts[byte_ids].tolist() == expected
  assert starts[list(tokenizer.SPECIAL_IDS)].all()
  assert np.flatnonzero(tok.special_table()).tolist() == list(tokenizer.SPECIAL_IDS)


def test_sentencepiece_punctuation_starts_a_word(tmp_path):
  """SentencePiece gives "x," as "▁x" ","; the comma is a word of its own, as in BERT."""
  from pydoc_data import topics

  lines = [line for text in topics.topics.values() for line in text.splitlines()][:3000]
  tok = tokenizer.load(
    tokenizer.train_sentencepiece(iter(lines), str(tmp_path / "sp.model"), vocab_size=600)
  )
  text = "Return x, or (if y) the list's items."
  ids = tok.encode(text)
  pieces = [tok.id_to_piece(i) for i in ids]
  punctuation = [p for p in pieces if not p.startswith("\u2581") and p in ",()'."]
  assert punctuation == [",", ")", "'", "."], pieces  # "(" comes as "▁(" here
  starts = tok.word_start_table()
  # The piece after a mark continues its word, as in ALBERT: "'" "s" is one word.
  words = ["Return", "x", ",", "or", "(if", "y", ")", "the", "list", "'s", "items", "."]
  assert starts[ids].sum() == len(words)
  assert [tok.decode(w).strip() for w in np.split(ids, np.flatnonzero(starts[ids])[1:])] == words
  for piece, expected in (
    ("\u2581dog", True),
    ("s", False),
    ("--", True),
    ("»", True),
    ("é", False),
  ):
    assert tokenizer.starts_metaspace_word(piece) == expected, piece


def test_cut_long_sentence_at_whitespace_and_character_boundaries():
  # Fits: returned whole.
  assert tokenizer.cut_long_sentence("ab cd", 5) == ["ab cd"]
  # Cut at the last space within the limit (a space right after a piece counts too).
  assert tokenizer.cut_long_sentence("ab cd ef gh", 5) == ["ab cd", "ef gh"]
  assert tokenizer.cut_long_sentence("abc de fgh", 6) == ["abc de", "fgh"]
  # No whitespace in a piece's second half: cut at the limit, never inside a character.
  assert tokenizer.cut_long_sentence("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
  assert tokenizer.cut_long_sentence("é" * 5, 5) == ["éé", "éé", "é"]  # 2 bytes each
  assert tokenizer.cut_long_sentence("a€€€", 4) == ["a€", "€", "€"]  # € is 3 bytes
  # Every piece fits, and the words come back in order.
  rng = random.Random(0)
  words = ["".join(rng.choices("abcé€𝄞", k=rng.randint(1, 9))) for _ in range(3000)]
  text = " ".join(words)
  pieces = tokenizer.cut_long_sentence(text, 100)
  assert max(len(p.encode("utf-8")) for p in pieces) <= 100
  assert " ".join(pieces).split() == words


def test_sentencepiece_trains_on_lines_longer_than_it_reads(tmp_path):
  """SentencePiece drops sentences over 4192 bytes, so a corpus of long lines (here 6 KB
  each) left it nothing ('!sentences_.empty()'); they are cut into pieces instead.
  """
  rng = random.Random(1)
  words = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(3, 7))) for _ in range(60)]
  lines = [" ".join(rng.choices(words, k=1200)) for _ in range(30)]
  assert min(len(line.encode()) for line in lines) > tokenizer.MAX_SENTENCE_BYTES
  path = tokenizer.train_sentencepiece(lines, str(tmp_path / "sp.model"), vocab_size=330)
  tok = tokenizer.load(path)
  ids = tok.encode(lines[0])
  assert tok.decode(ids) == lines[0]
  assert not any(tok.id_to_piece(i).startswith("<0x") for i in ids)  # letters are pieces
  learned = [tok.id_to_piece(i).lstrip("\u2581") for i in range(tok.vocab_size)]
  assert sum(len(p) > 2 and p.isalpha() for p in learned) > 20  # and so are parts of words


def test_an_error_of_the_sentence_stream_is_raised_as_itself(tmp_path):
  """SentencePiece reports an exception of its iterator as a RuntimeError of its own; the
  original comes out (a UserError's own message, KeyboardInterrupt for Ctrl-C).
  """
  for error in (UserError("the corpus is bad; fix it"), KeyboardInterrupt()):

    def sentences(error=error):
      yield "a first sentence of words"
      raise error

    with pytest.raises(type(error)) as raised:
      tokenizer.train_sentencepiece(sentences(), str(tmp_path / "sp.model"), vocab_size=300)
    assert raised.value is error
  assert not (tmp_path / "sp.model").exists()
