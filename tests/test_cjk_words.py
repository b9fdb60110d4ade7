"""Whole-word masking on Chinese: each piece that starts with a CJK ideograph is a word, as
BERT's tokenizer makes each ideograph one, instead of a whole clause (Chinese has no spaces
between words); a character that falls back to bytes is masked with all its bytes.

The truth for the ideographs is `transformers`' copy of BERT's `_is_chinese_char`; the
tokenizers are trained here on a few sentences written for this test.
"""

import numpy as np
import pytest

from bert_jax.data import hf_tokenizer, tokenizer

CHINESE = [
  "我们在一台笔记本电脑上训练语言模型。",
  "这个模型先学习被遮盖的词，然后在新闻分类任务上微调。",
  "北京是中国的首都，也是一座历史悠久的城市。",
  "今天天气很好，我们去公园散步吧！",
  "机器学习需要大量的数据和计算资源。",
  "他说：明天早上八点在图书馆见面。",
  "语言模型可以回答问题，也可以翻译句子。",
  "我们的数据来自新闻、小说和百科全书。",
]
ENGLISH = ["Hello, world: a model learns words.", "The words of a sentence, and its commas."]


def _groups(ids, starts):
  """The ids of a row as whole-word masking groups them: a word runs from a word start to
  the next one.
  """
  groups = []
  for i in ids:
    if starts[i] or not groups:
      groups.append([])
    groups[-1].append(i)
  return groups


def test_cjk_ideographs_are_berts():
  basic = pytest.importorskip("transformers.models.prophetnet.tokenization_prophetnet")
  is_chinese = basic.BasicTokenizer()._is_chinese_char
  ours = [c for c in range(0x110000) if tokenizer.is_cjk(chr(c))]
  assert ours == [c for c in range(0x110000) if is_chinese(c)]
  assert tokenizer.is_cjk("中") and not tokenizer.is_cjk("あ") and not tokenizer.is_cjk("한")


def test_a_utf8_prefix_starts_an_ideograph_by_its_first_character():
  for text in ("中国", "中", "𠀀", "a中", "é", "あ", "，"):
    data = text.encode()
    assert tokenizer.starts_cjk(data) == tokenizer.is_cjk(text[0]), text
    assert not tokenizer.starts_cjk(data[1:2]) or len(text[0].encode()) == 1  # inside one
  # The first bytes of a character only: its lead byte says (E4..E9: U+4000..U+9FFF).
  assert tokenizer.starts_cjk("中".encode()[:2]) and tokenizer.starts_cjk(b"\xe9")
  assert not tokenizer.starts_cjk("あ".encode()[:2]) and not tokenizer.starts_cjk(b"")


def test_sentencepiece_makes_each_chinese_piece_a_word(tmp_path):
  path = tokenizer.train_sentencepiece(
    (CHINESE + ENGLISH) * 20, str(tmp_path / "zh.model"), vocab_size=400
  )
  tok = tokenizer.load(path)
  starts = tok.word_start_table()
  for sentence in CHINESE:
    ids = tok.encode(sentence)
    groups = _groups(ids, starts)
    # Before: one word from the sentence's start to its first punctuation mark.
    assert len(groups) > sum(map(tokenizer.is_punctuation, sentence)) + 1, sentence
    for group in groups:
      pieces = [tok.id_to_piece(i) for i in group]
      text = tok.decode(group)
      assert "\ufffd" not in text, pieces  # whole characters
      # One ideograph-led piece a word, or one ideograph in bytes ("<0xE5>" "<0x90>" ...).
      assert sum(tokenizer.starts_cjk(p.lstrip("\u2581").encode()) for p in pieces) <= 1, pieces
  # Spaced words keep their rule: "▁Hello" "," "▁world" ...
  english = _groups(tok.encode(ENGLISH[0]), starts)
  assert [tok.decode(g).strip() for g in english] == ["Hello", ",", "world", ":", "a", "model"] + [
    "learns",
    "words",
    ".",
  ]


def test_a_character_that_falls_back_to_bytes_is_one_word(tmp_path):
  path = tokenizer.train_sentencepiece(
    (CHINESE + ENGLISH) * 20, str(tmp_path / "zh.model"), vocab_size=400
  )
  tok = tokenizer.load(path)
  starts = tok.word_start_table()
  # Characters the training text never had: bytes, 3 or 4 a character.
  for text, words in (("鑫", 1), ("鑫龘", 2), ("😀", 1)):
    ids = [i for i in tok.encode(text) if tok.id_to_piece(i) != "\u2581"]
    assert all(tok._sp.is_byte(i) for i in ids) and len(ids) == len(text.encode()), text
    groups = _groups(ids, starts)
    assert [tok.decode(g) for g in groups] == list(text) if words > 1 else [text], text
  # A letter in bytes inside a word continues it (before: a word of each byte).
  groups = _groups(tok.encode("a naïve model"), starts)
  assert [tok.decode(g).strip() for g in groups] == ["a", "naïve", "model"]


def test_byte_level_bpe_makes_each_chinese_token_a_word(tmp_path):
  path = hf_tokenizer.train_bytelevel_bpe(
    (CHINESE + ENGLISH) * 20, str(tmp_path / "tokenizer.json"), vocab_size=400
  )
  tok = tokenizer.load(path)
  starts = tok.word_start_table()
  alphabet = hf_tokenizer.byte_alphabet()
  for sentence in CHINESE + ["鑫龘"]:
    ids = tok.encode(sentence)
    groups = _groups(ids, starts)
    assert len(groups) > sum(map(tokenizer.is_punctuation, sentence)) + 1, sentence
    for group in groups:
      assert "\ufffd" not in tok.decode(group), group
      raw = [bytes(alphabet[c] for c in tok.id_to_piece(i)) for i in group]
      # A word of Chinese is one token, unless later tokens start inside a character (the
      # merges of a small vocabulary cross characters: b"\xa3\xe6" ends one, starts one).
      inside = [0x80 <= b[0] <= 0xBF for b in raw[1:]]
      assert not tokenizer.starts_cjk(raw[0]) or not raw[1:] or any(inside), raw
  english = _groups(tok.encode(ENGLISH[0]), starts)
  assert [tok.decode(g).strip() for g in english][:4] == ["Hello", ",", "world", ":"]
  table = np.asarray(starts)
  assert table.dtype == bool and table.shape == (tok.vocab_size,)
