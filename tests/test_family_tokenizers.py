"""The tokenizers of RoBERTa, XLM-R, ALBERT, ModernBERT, DistilBERT and ELECTRA, and the
byte-level BPE bert_jax trains: imported, exported and checked against `transformers`.

Each family's tokenizer is made offline as `transformers` makes it (its own tokenizer class
on tiny files trained here, then `save_pretrained`), imported with `import_tokenizer`, and
must give the ids `AutoTokenizer.from_pretrained` gives: without special tokens, with them,
and for pairs. What `export_tokenizer` writes must load in `AutoTokenizer` and give our ids.
"""

import json
import os
import string
import unicodedata

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Before transformers imports huggingface_hub.

import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")

from bert_jax.data import hf_tokenizer, tokenizer  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402
from bert_jax.finetune import data as data_lib  # noqa: E402
from bert_jax.finetune import encoding as encoding_lib  # noqa: E402
from bert_jax.hf import tokenizer_files  # noqa: E402
from tests import tiny_tokenizers  # noqa: E402

# BERT's CJK ideographs, in the copy of its BasicTokenizer that transformers keeps.
_basic = pytest.importorskip("transformers.models.prophetnet.tokenization_prophetnet")
_is_chinese_char = lambda char: _basic.BasicTokenizer()._is_chinese_char(ord(char))  # noqa: E731

VARIED = [
  "Café naïve Ångström résumé",
  "CAFÉ NAÏVE Straße",
  "double  spaces   inside",
  " leading and trailing ",
  "tab\tand\nnew\r\nlines",
  "punctuation!?;:(),.-'\"/\\@#$%^&*_+=[]{}<>|~`",
  "``quoted'' text",
  "中文字符 日本語 한국어 😀🎉",
  "Ｆｕｌｌ ｗｉｄｔｈ ﬁ ① ²",
  "e\u0301 combining",
  "a [MASK] b <mask> c",
  "[CLS] x [SEP] y </s> <s>",
  "",
  "x" * 120,
]

ASCII_SPACE = " \t\n\r\x0b\x0c"  # a byte-level token starting with one starts a word


def _starts_byte_level_word(tok, i):
  """Token `i` of a byte-level `tok` starts a word, by its text: a space first, all
  punctuation (Unicode's too, as BERT's), or a CJK ideograph first (BERT's
  `_is_chinese_char`); the first bytes of a character alone: those of U+4000..U+9FFF.
  """
  text = tok.decode([i])
  if text.startswith("\ufffd"):  # bytes of a character, not all of it
    lead = hf_tokenizer.byte_alphabet()[tok.id_to_piece(i)[0]]
    return 0xE4 <= lead <= 0xE9 and text == "\ufffd"
  punctuation = all(
    unicodedata.category(c).startswith("P") or c in string.punctuation for c in text
  )
  return text[:1] in ASCII_SPACE or (bool(text) and punctuation) or _is_chinese_char(text[0])


@pytest.fixture(scope="module")
def lines():
  """A few hundred lines of real prose (CPython's pydoc topics)."""
  from pydoc_data import topics

  out = []
  for name in sorted(topics.topics):
    out += [line.strip() for line in topics.topics[name].splitlines() if line.strip()]
    if len(out) > 600:
      return out[:600]
  return out


@pytest.fixture(scope="module")
def texts(lines):
  return VARIED + lines[::9]


def _assert_same(tok, hf, texts):
  """Our ids are `hf`'s: without and with special tokens, and for a pair."""
  ours = tok.encode_batch(texts)
  assert ours == hf(texts, add_special_tokens=False)["input_ids"]
  assert [tok.encode(t) for t in texts[:20]] == ours[:20]
  assert hf(texts)["input_ids"] == [[tok.cls_id] + ids + [tok.sep_id] for ids in ours]
  a, b = texts[0], texts[-1]
  expected = [tok.cls_id, *tok.encode(a), *tok.pair_separator, *tok.encode(b), tok.sep_id]
  assert hf(a, b)["input_ids"] == expected


def _imported(hf_dir, out_dir):
  return tokenizer.load(tokenizer_files.import_tokenizer(str(hf_dir), str(out_dir)))


def _assert_exports(tok, out_dir, texts, arch):
  """`export_tokenizer`'s files load in AutoTokenizer, which cuts text as ours does and
  knows each special token's role; token types only for the families that have them.
  """
  names = tokenizer_files.export_tokenizer(tok, str(out_dir), model_max_length=64, arch=arch)
  assert sorted(names) == sorted(os.listdir(out_dir))
  hf = transformers.AutoTokenizer.from_pretrained(str(out_dir))
  assert hf.is_fast and hf.model_max_length == 64
  _assert_same(tok, hf, texts)
  roles = (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
  assert roles == tok.special_ids
  assert ("token_type_ids" in hf("a", "b")) == (arch in ("bert", "albert", "electra"))
  return hf


def test_roberta_slow_files_tokenizer_json_and_export(lines, texts, tmp_path):
  from tokenizers.implementations import ByteLevelBPETokenizer

  bpe = ByteLevelBPETokenizer()
  specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
  bpe.train_from_iterator(lines, vocab_size=700, special_tokens=specials, show_progress=False)
  slow = tmp_path / "slow"
  slow.mkdir()
  bpe.save_model(str(slow))  # vocab.json, merges.txt
  mask = {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "special": True}
  config = {"tokenizer_class": "RobertaTokenizer", "mask_token": mask}
  (slow / "tokenizer_config.json").write_text(json.dumps(config))
  hf = transformers.AutoTokenizer.from_pretrained(str(slow))
  assert type(hf).__name__ == "RobertaTokenizer"
  hf.save_pretrained(str(tmp_path / "fast"))

  for name in ("slow", "fast"):
    tok = _imported(tmp_path / name, tmp_path / f"{name}_imported")
    assert tok.kind == "bytelevel_bpe" and not tok.lowercase
    assert tok.special_ids == tuple(
      bpe.token_to_id(t) for t in ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
    )
    assert tok.pair_separator == (tok.sep_id, tok.sep_id)  # <s> A </s></s> B </s>
    _assert_same(tok, hf, texts)
  assert tok.encode("a <mask> b") == tok.encode("a") + [tok.mask_id] + tok.encode(" b")
  # Whole-word masking: a word starts where a token's text starts with a space, or is
  # ASCII punctuation.
  starts = tok.word_start_table()
  for i in range(tok.vocab_size):
    if i not in tok.special_ids:
      assert starts[i] == _starts_byte_level_word(tok, i), tok.id_to_piece(i)

  hf = _assert_exports(tok, tmp_path / "export", texts, arch="roberta")
  assert (hf.bos_token, hf.eos_token) == ("<s>", "</s>")


def test_albert_spiece_model_tokenizer_json_and_export(lines, texts, tmp_path):
  slow = tiny_tokenizers.albert_files(lines, tmp_path / "slow", vocab_size=500)
  hf = transformers.AutoTokenizer.from_pretrained(str(slow))
  assert type(hf).__name__ == "AlbertTokenizer"
  hf.save_pretrained(str(tmp_path / "fast"))
  for name in ("slow", "fast"):
    tok = _imported(tmp_path / name, tmp_path / f"{name}_imported")
    assert tok.kind == "unigram" and tok.lowercase  # ALBERT lowercases
    assert tok.special_ids == (0, 1, 2, 3, 4) and tok.pair_separator == (3,)
    _assert_same(tok, hf, texts)
  assert tok.encode("Café") == tok.encode("cafe")
  _assert_exports(tok, tmp_path / "export", texts, arch="albert")

  # tokenizer_config.json's settings rule, as in transformers: a cased ALBERT.
  path = tmp_path / "fast" / "tokenizer_config.json"
  config = json.loads(path.read_text())
  path.write_text(json.dumps({**config, "do_lower_case": False, "keep_accents": True}))
  cased = _imported(tmp_path / "fast", tmp_path / "cased_imported")
  assert not cased.lowercase and cased.encode("Café") != cased.encode("cafe")
  _assert_same(cased, transformers.AutoTokenizer.from_pretrained(str(tmp_path / "fast")), texts)


def test_xlm_roberta_unigram(lines, texts, tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers

  uni = Tokenizer(models.Unigram())
  uni.pre_tokenizer = pre_tokenizers.Metaspace()
  trainer = trainers.UnigramTrainer(
    vocab_size=500,
    special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
    unk_token="<unk>",
    show_progress=False,
  )
  uni.train_from_iterator(lines, trainer)
  vocab = [tuple(v) for v in json.loads(uni.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]
  hf = transformers.XLMRobertaTokenizer(vocab=vocab)
  hf.save_pretrained(str(tmp_path / "hf"))
  tok = _imported(tmp_path / "hf", tmp_path / "imported")
  assert tok.kind == "unigram"
  assert tok.special_ids == (1, 3, 0, 2, len(vocab) - 1)
  assert tok.pair_separator == (2, 2)
  _assert_same(tok, hf, texts)
  # SentencePiece style: a word starts with "▁", or is punctuation.
  starts = tok.word_start_table()
  punctuation = set(string.punctuation)
  assert all(
    starts[i] == (p.startswith("\u2581") or set(p) <= punctuation)
    for i, (p, _) in enumerate(vocab)
    if i not in tok.special_ids and p.isascii()
  )
  assert any(set(p) <= punctuation for p, _ in vocab)
  _assert_exports(tok, tmp_path / "export", texts, arch="xlm-roberta")


def test_modernbert_bpe_with_bert_names(lines, texts, tmp_path):
  hf = tiny_tokenizers.modernbert_bpe(lines, vocab_size=700)
  hf.save_pretrained(str(tmp_path / "hf"))
  tok = _imported(tmp_path / "hf", tmp_path / "imported")
  assert tok.kind == "bytelevel_bpe"
  bpe = hf.backend_tokenizer
  assert tok.special_ids == tuple(bpe.token_to_id(n) for n in tokenizer.SPECIAL_PIECES)
  assert tok.pair_separator == (bpe.token_to_id("[SEP]"),)
  assert tok.vocab_size == bpe.get_vocab_size()
  assert tok.special_table().sum() == 5
  _assert_same(tok, hf, texts)
  _assert_exports(tok, tmp_path / "export", texts, arch="modernbert")


@pytest.mark.parametrize("family", ["distilbert", "electra"])
def test_wordpiece_families(family, lines, texts, tmp_path):
  name = {"distilbert": "DistilBertTokenizer", "electra": "ElectraTokenizer"}[family]
  config = {"tokenizer_class": name}
  slow = tiny_tokenizers.wordpiece_files(lines, tmp_path / "slow", config=config, vocab_size=600)
  hf = transformers.AutoTokenizer.from_pretrained(str(slow))
  hf.save_pretrained(str(tmp_path / "fast"))
  for directory in ("slow", "fast"):
    tok = _imported(tmp_path / directory, tmp_path / f"{directory}_imported")
    assert tok.kind == "wordpiece" and tok.lowercase and tok.pair_separator == (tok.sep_id,)
    _assert_same(tok, hf, texts)
  hf = _assert_exports(tok, tmp_path / "export", texts, arch=family)
  assert type(hf).__name__ == "BertTokenizer"


@pytest.mark.parametrize("lowercase", [None, False])
def test_trained_wordpiece_is_berts_tokenizer(lines, texts, tmp_path, lowercase):
  """A WordPiece vocab.txt trained by bert_jax (None: uncased, BERT's default) is read by
  `transformers`' BertTokenizer, which cuts every text as ours does; it exports as BERT's.
  """
  assert tokenizer.trained_file_name("wordpiece") == "vocab.txt"
  paths = [str(tmp_path / f"{i}" / "vocab.txt") for i in range(2)]
  for path in paths:
    os.makedirs(os.path.dirname(path))
    tokenizer.train_tokenizer(
      iter(lines), path, vocab_size=600, model_type="wordpiece", lowercase=lowercase
    )
  with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
    assert a.read() == b.read()  # the same corpus trains the same vocabulary
  cased = lowercase is False
  (tmp_path / "0" / "tokenizer_config.json").write_text(
    json.dumps({"do_lower_case": not cased, "tokenizer_class": "BertTokenizer"})
  )
  tok = tokenizer.load(paths[0])  # the case is read from the vocabulary
  assert tok.kind == "wordpiece" and tok.lowercase == (not cased) and tok.vocab_size == 600
  assert [tok.id_to_piece(i) for i in tokenizer.SPECIAL_IDS] == list(tokenizer.SPECIAL_PIECES)
  _assert_same(tok, transformers.AutoTokenizer.from_pretrained(str(tmp_path / "0")), texts)
  assert type(_assert_exports(tok, tmp_path / "export", texts, arch="bert")).__name__ == (
    "BertTokenizer"
  )
  with pytest.raises(UserError, match="no text"):
    tokenizer.train_tokenizer(["", " "], paths[0], vocab_size=600, model_type="wordpiece")


@pytest.mark.parametrize("model_type", ["bytelevel_bpe", "unigram", "wordpiece"])
def test_sentences_and_words_encode_as_their_whole_text(lines, tmp_path, model_type):
  """A document's sentences, prepared one by one, give the ids of the document's whole text;
  NER's words give those of the words after a space (Hugging Face's `add_prefix_space`).
  Before, byte-level BPE began every sentence, and every word, without its "Ġ".
  """
  path = tmp_path / tokenizer.trained_file_name(model_type)
  tokenizer.train_tokenizer(iter(lines), str(path), vocab_size=600, model_type=model_type)
  tok = tokenizer.load(str(path))
  assert tok.space_starts_words == (model_type == "bytelevel_bpe")
  sentences = ["Return a new list.", "The items are sorted.", "Each one is kept!"]
  ids = tok.encode_batch(tokenizer.as_in_the_text(tok, sentences))
  assert sum(ids, []) == tok.encode(" ".join(sentences))
  # Sentence pairs: the first sentence as after a space too, so that no segment's first
  # word tells a document's start (a random B's, a swapped A's) from the others'.
  ids = tok.encode_batch(tokenizer.as_in_the_text(tok, sentences, all_spaced=True))
  assert sum(ids, []) == tok.encode(" " + " ".join(sentences))
  words = "The items are sorted by key .".split()
  examples = data_lib.Examples([{"words": words, "tags": None}], 0)
  arrays, _ = encoding_lib.encode_tokens(examples, tok, 32)
  got = arrays["input_ids"][0][arrays["attention_mask"][0] == 1].tolist()
  assert got == [tok.cls_id, *tok.encode(" " + " ".join(words)), tok.sep_id]


def test_trained_bytelevel_bpe(lines, texts, tmp_path):
  assert tokenizer.trained_file_name("bytelevel_bpe") == "tokenizer.json"
  assert tokenizer.trained_file_name("unigram") == "tokenizer.model"
  paths = [str(tmp_path / f"{i}" / "tokenizer.json") for i in range(2)]
  for path in paths:
    os.makedirs(os.path.dirname(path))
    tokenizer.train_tokenizer(iter(lines), path, vocab_size=600, model_type="bytelevel_bpe")
  with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
    assert a.read() == b.read()  # the same corpus trains the same tokenizer
  tok = tokenizer.load(paths[0])
  assert isinstance(tok, hf_tokenizer.HFTokenizer) and tok.kind == "bytelevel_bpe"
  assert tok.special_ids == tokenizer.SPECIAL_IDS and tok.pair_separator == (tokenizer.SEP_ID,)
  assert tok.vocab_size == 600 and tok.file_name == "tokenizer.json"
  assert [tok.id_to_piece(i) for i in tokenizer.SPECIAL_IDS] == list(tokenizer.SPECIAL_PIECES)
  # No text is unknown (bytes), text comes back, and [MASK] takes the space before it.
  ids = tok.encode_batch(texts)
  assert all(tokenizer.UNK_ID not in i for i in ids)
  assert [tok.decode(i) for t, i in zip(texts, ids) if "[MASK]" not in t] == [
    t for t in texts if "[MASK]" not in t
  ]
  assert tok.encode("a [MASK] b") == tok.encode("a") + [tokenizer.MASK_ID] + tok.encode(" b")
  starts = tok.word_start_table()
  assert all(
    starts[i] == _starts_byte_level_word(tok, i)
    for i in range(tok.vocab_size)
    if i not in tokenizer.SPECIAL_IDS
  )
  assert any(starts[i] and tok.decode([i]) in string.punctuation for i in range(tok.vocab_size))
  for arch in ("bert", "roberta", "modernbert"):
    _assert_exports(tok, tmp_path / f"export_{arch}", texts, arch=arch)
  assert tokenizer.load(paths[0], lowercase=False).fingerprint == tok.fingerprint

  with pytest.raises(UserError, match="vocab_size 100 is too small for byte-level BPE"):
    tokenizer.train_tokenizer(lines, paths[0], vocab_size=100, model_type="bytelevel_bpe")
  with pytest.raises(UserError, match="no text"):
    tokenizer.train_tokenizer(["", " "], paths[0], vocab_size=600, model_type="bytelevel_bpe")
  with pytest.raises(UserError, match="keeps the case of text but lowercase=True"):
    tokenizer.load(paths[0], lowercase=True)
  with pytest.raises(UserError, match="no tokenizer export for model family 'gpt2'"):
    tokenizer_files.export_tokenizer(tok, str(tmp_path / "x"), model_max_length=8, arch="gpt2")


def test_trained_bytelevel_bpe_with_robertas_names_is_robertas_tokenizer(lines, texts, tmp_path):
  """Trained for RoBERTa (`layout="roberta"`), the byte-level BPE names its specials `<s>`,
  `</s>`, `<pad>`, `<unk>`, `<mask>` at bert_jax's ids, and cuts every text, with its
  specials and as a pair, as `transformers`' own RobertaTokenizer does on its vocabulary and
  merges; its export takes `<mask>`.
  """
  path = str(tmp_path / "tokenizer.json")
  tokenizer.train_tokenizer(
    iter(lines), path, vocab_size=600, model_type="bytelevel_bpe", layout="roberta"
  )
  tok = tokenizer.load(path)
  assert tok.special_ids == tokenizer.SPECIAL_IDS
  names = [tok.id_to_piece(i) for i in tokenizer.SPECIAL_IDS]
  assert names == ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
  assert tok.pair_separator == (tok.sep_id, tok.sep_id)  # <s> A </s></s> B </s>
  model = json.loads((tmp_path / "tokenizer.json").read_text())["model"]
  slow = tmp_path / "slow"
  slow.mkdir()
  (slow / "vocab.json").write_text(json.dumps(model["vocab"]))
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  (slow / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
  mask = transformers.AddedToken("<mask>", lstrip=True, special=True)  # as roberta-base's
  hf = transformers.RobertaTokenizer(
    str(slow / "vocab.json"), str(slow / "merges.txt"), mask_token=mask
  )
  _assert_same(tok, hf, texts)
  assert tok.encode("a <mask> b") == tok.encode("a") + [tok.mask_id] + tok.encode(" b")
  exported = _assert_exports(tok, tmp_path / "export", texts, arch="roberta")
  assert (exported.mask_token, exported.bos_token, exported.eos_token) == ("<mask>", "<s>", "</s>")
