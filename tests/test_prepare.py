"""`prepare`: shards and manifest, independent of the worker count, resumable, reused,
constant memory, TFDS and WordPiece inputs, and one clear error for each bad input.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import aot
from bert_jax.data import corpus, pipeline, prepare, records, sources, synthetic, tokenizer, units
from bert_jax.errors import UserError
from tests.conftest import ROOT
from tests.test_pipeline import _corpus, small_config


def _quiet(config, data_dir, **kwargs):
  return prepare.prepare(
    config, str(data_dir), log=kwargs.pop("log", lambda _: None), progress=False
  )


def _read_split(data_dir, manifest, split):
  """Every row of a split, decoded, read back independently of the pipeline."""
  from array_record.python import array_record_module

  raw = []
  for shard in manifest["splits"][split]["shards"]:
    reader = array_record_module.ArrayRecordReader(os.path.join(data_dir, shard["file"]))
    assert reader.num_records() == shard["rows"]
    raw += reader.read_all()
  return records.decode_rows(
    raw,
    max_seq_length=manifest["max_seq_length"],
    dtype=np.dtype(manifest["token_dtype"]),
    packed=manifest["settings"]["packing"],
    pad_id=manifest["special_ids"]["pad"],
  )


def _shard_bytes(data_dir):
  base = os.path.join(data_dir, prepare.SHARDS)
  return {
    n: open(os.path.join(base, n), "rb").read()
    for n in sorted(os.listdir(base))
    if n.endswith(".array_record")
  }


def test_prepare_writes_shards_and_a_manifest(tmp_path, monkeypatch):
  c = small_config(tmp_path, num_workers=2, num_shards=4)
  _corpus(tmp_path / "more.txt", documents=40, seed=1)
  c.data.input = f"{tmp_path}/corpus.txt, {tmp_path}/mo*.txt"
  manifest = _quiet(c, tmp_path / "d1")
  counts, splits = manifest["counts"], manifest["splits"]
  assert counts["documents"] == 160
  assert splits["train"]["documents"] + splits["eval"]["documents"] == 160
  assert 4 <= splits["eval"]["documents"] <= 32  # eval_fraction 0.1, by a seeded hash
  train = _read_split(str(tmp_path / "d1"), manifest, "train")
  assert len(train["input_ids"]) == splits["train"]["rows"] > 100
  ids = train["input_ids"]
  assert (ids[:, 0] == tokenizer.CLS_ID).all()
  freq = np.bincount(ids[ids > max(tokenizer.SPECIAL_IDS)])
  assert manifest["most_frequent_token_id"] == np.argmax(freq)
  assert (
    manifest["tokenizer_fingerprint"]
    == tokenizer.load(str(tmp_path / "d1" / "tokenizer.model")).fingerprint
  )

  # One worker writes the same bytes as two (the family does not matter; a RoBERTa
  # run's own tokenizer is another kind, which a note says).
  c.data.num_workers, c.model.arch, lines = 1, "roberta", []
  again = _quiet(c, tmp_path / "d2", log=lines.append)
  assert (
    "note: config.model.arch='roberta' with a unigram tokenizer; roberta's own is "
    "--config.tokenizer.model_type=bytelevel_bpe"
  ) in lines
  assert _shard_bytes(tmp_path / "d1") == _shard_bytes(tmp_path / "d2")
  assert {k: v for k, v in again.items() if k != "seconds"} == {
    k: v for k, v in manifest.items() if k != "seconds"
  }

  # Prepared: reused without reading the corpus.
  monkeypatch.setattr(sources, "read_unit", lambda *a, **k: pytest.fail("corpus read again"))
  lines = []
  assert _quiet(c, tmp_path / "d1", log=lines.append) == manifest
  assert "is prepared" in lines[0]
  # Data an older version prepared (other rows for the same settings) is refused in a line.
  old = {**manifest, "settings": {**manifest["settings"], "format_version": 3}}
  (tmp_path / "d1" / prepare.MANIFEST).write_text(json.dumps(old))
  with pytest.raises(UserError, match=r"holds data an older bert_jax prepared \(format 3; this"):
    _quiet(c, tmp_path / "d1")


def test_prepare_resumes_by_skipping_finished_shards(tmp_path, monkeypatch):
  c = small_config(tmp_path, num_shards=4)
  first = _quiet(c, tmp_path / "d")
  before = _shard_bytes(tmp_path / "d")
  # As if killed while writing unit 2: no manifest, unit 2 without its done file.
  os.remove(tmp_path / "d" / prepare.MANIFEST)
  os.remove(tmp_path / "d" / prepare.SHARDS / "unit-00002.json")
  os.remove(tmp_path / "d" / prepare.SHARDS / "train-00002.array_record")
  done = []
  real = units.process_unit
  monkeypatch.setattr(units, "process_unit", lambda args: done.append(args[0]) or real(args))
  lines = []
  again = _quiet(c, tmp_path / "d", log=lines.append)
  assert done == [2] and any("3 of 4 shards already done" in line for line in lines)
  assert _shard_bytes(tmp_path / "d") == before
  assert again["splits"] == first["splits"]


def test_a_rerun_with_fewer_shards_removes_the_cut_short_ones_files(tmp_path):
  _quiet(small_config(tmp_path, num_shards=4), tmp_path / "d")
  os.remove(tmp_path / "d" / prepare.MANIFEST)  # as if cut short before the manifest
  lines = []
  manifest = _quiet(small_config(tmp_path, num_shards=2), tmp_path / "d", log=lines.append)
  names = sorted(os.listdir(tmp_path / "d" / prepare.SHARDS))
  kinds = (("eval", "array_record"), ("train", "array_record"), ("unit", "json"))
  assert names == sorted(f"{kind}-{i:05d}.{ext}" for i in (0, 1) for kind, ext in kinds)
  assert [shard["file"] for shard in manifest["splits"]["train"]["shards"]] == [
    f"{prepare.SHARDS}/train-{i:05d}.array_record" for i in (0, 1)
  ]
  assert any("removed 6 files of units past this plan's 2" in line for line in lines), lines


def test_objectives_and_packing(tmp_path):
  sop = small_config(tmp_path, objective="sop", max_seq_length=128)  # chunks of sentences
  manifest = _quiet(sop, tmp_path / "sop")
  labels = _read_split(str(tmp_path / "sop"), manifest, "train")["next_sentence_labels"]
  assert 0.3 < labels.mean() < 0.7  # swapped (or random next) about half the time

  packed = small_config(tmp_path, objective="mlm", packing=True)
  manifest = _quiet(packed, tmp_path / "packed")
  rows = _read_split(str(tmp_path / "packed"), manifest, "train")
  assert (rows["next_sentence_labels"] == -1).all()
  assert rows["attention_mask"].max() > 1  # several documents in a row
  assert manifest["splits"]["train"]["density"] > 0.9
  stream = pipeline.Stream(
    str(tmp_path / "packed"),
    manifest,
    "train",
    batch_size=4,
    seed=0,
    max_predictions=5,
    whole_word_masking=True,
  )
  batch = stream.batch_at(0)
  starts = batch["position_ids"] == 0  # each packed example starts with [CLS]
  assert (batch["input_ids"][starts & (batch["attention_mask"] > 0)] == tokenizer.CLS_ID).all()

  # Another objective in the same directory: refused, naming the difference.
  with pytest.raises(UserError, match="objective: 'mlm' there, 'sop' here"):
    _quiet(sop, tmp_path / "packed")
  # Another input: named once (not also as changed files), with the ways out.
  (tmp_path / "other.txt").write_text((tmp_path / "corpus.txt").read_text())
  moved = small_config(tmp_path, objective="mlm", packing=True, input=str(tmp_path / "other.txt"))
  with pytest.raises(UserError) as raised:
    _quiet(moved, tmp_path / "packed")
  assert f"input: {str(tmp_path / 'corpus.txt')!r} there, " in str(raised.value)
  assert "give the settings it was prepared with (its manifest.json lists them)" in str(
    raised.value
  )
  # An input that reads no file here (a recipe's placeholder on a pod that trains from a
  # bucket; the corpus moved) and changed input files: used as prepared, in one line.
  for input_, line in (
    (str(tmp_path / "gone" / "*.txt"), f"reads no file here; using {tmp_path}/packed"),
    (str(tmp_path / "corpus.txt"), "the input files changed since"),
  ):
    if "gone" not in input_:
      os.utime(tmp_path / "corpus.txt", ns=(0, 0))
    lines = []
    config = small_config(tmp_path, objective="mlm", packing=True, input=input_)
    assert _quiet(config, tmp_path / "packed", log=lines.append) == manifest
    assert any(line in seen for seen in lines), lines


def _wordpiece_vocab(path, corpus_path):
  from tokenizers import BertWordPieceTokenizer

  wp = BertWordPieceTokenizer(lowercase=True)
  wp.train(
    [str(corpus_path)],
    vocab_size=200,
    min_frequency=1,
    special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
  )
  wp.save_model(str(path.parent), path.stem)
  return str(path.parent / f"{path.stem}-vocab.txt")


def test_wordpiece_vocab_txt(tmp_path):
  c = small_config(tmp_path)
  vocab = _wordpiece_vocab(tmp_path / "wp", tmp_path / "corpus.txt")
  c.tokenizer.path = vocab
  c.tokenizer.vocab_size = tokenizer.load(vocab).vocab_size
  manifest = _quiet(c, tmp_path / "d")
  assert manifest["tokenizer_kind"] == "wordpiece"
  assert manifest["tokenizer_file"] == "vocab.txt"
  rows = _read_split(str(tmp_path / "d"), manifest, "train")
  assert (rows["input_ids"][:, 0] == manifest["special_ids"]["cls"]).all()
  stream = pipeline.Stream(
    str(tmp_path / "d"),
    manifest,
    "train",
    batch_size=8,
    seed=0,
    max_predictions=5,
    whole_word_masking=True,
  )
  assert stream.batch_at(3)["masked_lm_weights"].sum() > 0
  # A given tokenizer has its own size: config.tokenizer.vocab_size (for training) is moot.
  c.tokenizer.vocab_size += 1
  assert _quiet(c, tmp_path / "other")["vocab_size"] == manifest["vocab_size"]
  assert _quiet(c, tmp_path / "d")["vocab_size"] == manifest["vocab_size"]  # still prepared
  assert aot.vocab_size(c) == manifest["vocab_size"]  # `bert-jax compile` sizes it so too


def test_tfds_input(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  c = small_config(tmp_path, input="tfds:imdb_reviews", num_shards=2)
  with tfds.testing.mock_data(num_examples=40):
    manifest = _quiet(c, tmp_path / "d")
  assert manifest["counts"]["documents"] > 0 and manifest["splits"]["train"]["rows"] > 0
  c.data.input = "tfds:no_such_dataset_anywhere"
  with pytest.raises(UserError, match="no_such_dataset_anywhere"):
    _quiet(c, tmp_path / "missing")
  assert not os.path.exists(tmp_path / "missing" / prepare.MANIFEST)


def test_bad_input(tmp_path):
  def fails(match, **data):
    c = small_config(tmp_path, **data)
    with pytest.raises(UserError, match=match):
      _quiet(c, tmp_path / "bad")
    assert not os.path.exists(tmp_path / "bad" / prepare.MANIFEST)

  fails("matches no file", input=str(tmp_path / "nope*.txt"))
  (tmp_path / "blank.txt").write_text("\n \n\n")
  fails("no text|no training rows|empty", input=str(tmp_path / "blank.txt"))
  # Non-UTF-8 bytes: an error when strict, else skipped and counted.
  _corpus(tmp_path / "mixed.txt")
  with open(tmp_path / "mixed.txt", "ab") as f:
    f.write("\nSch\xf6n ist es.\nNoch ein Satz hier.\n".encode("latin1"))
  fails("iconv", input=str(tmp_path / "mixed.txt"), strict=True)
  c = small_config(tmp_path, input=str(tmp_path / "mixed.txt"))
  assert _quiet(c, tmp_path / "lenient")["counts"]["invalid_utf8_lines"] == 1
  # A line longer than a row: truncated and counted.
  long_line = " ".join(["alpha beta gamma"] * 40) + "."
  with open(tmp_path / "long.txt", "w") as f:
    f.write((tmp_path / "corpus.txt").read_text() + "\n\n" + long_line + "\nShort end.\n")
  c = small_config(tmp_path, input=str(tmp_path / "long.txt"))
  assert _quiet(c, tmp_path / "long")["counts"]["truncated_sentences"] >= 1
  # An empty file is a unit (shard) with no tokens, not a crash.
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text((tmp_path / "corpus.txt").read_text())
  (tmp_path / "notes" / "b.txt").write_text("")
  c = small_config(tmp_path, input=str(tmp_path / "notes" / "*.txt"), num_shards=2)
  manifest = _quiet(c, tmp_path / "notes_data")
  assert manifest["counts"]["documents"] > 10
  assert manifest["splits"]["train"]["shards"][-1]["rows"] == 0  # b.txt
  c = small_config(tmp_path, input=str(tmp_path / "long.txt"))
  c.tokenizer.vocab_size = 100_000
  with pytest.raises(UserError, match="vocab_size"):
    _quiet(c, tmp_path / "vocab")
  assert not os.path.exists(tmp_path / "vocab" / prepare.MANIFEST)


_RSS_SCRIPT = """
import resource, sys
from tests.test_pipeline import small_config
from bert_jax.data import prepare
import pathlib
tmp = pathlib.Path(sys.argv[1])
c = small_config(tmp / "default")  # (which writes a small corpus there)
c.data.input = str(tmp / "corpus.txt")
c.data.num_shards = 2
c.tokenizer.input_sentence_size = 5_000  # the tokenizer's sample is capped: the same for both
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepare.prepare(c, str(tmp / "data"), log=lambda _: None, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_preparation_memory_does_not_grow_with_the_corpus(tmp_path):
  """Preparing 20,000 documents (2.8M tokens) raises the peak RSS by less than 16 MiB over
  the peak before it (the imports'): holding the corpus's tokens would take more than
  that (8 bytes a token as list references: 22 MB). The corpus is written by this process
  and the tokenizer trains on a capped sample, so that only the streaming is measured.
  """
  (tmp_path / "default").mkdir()
  _corpus(tmp_path / "corpus.txt", documents=20_000, seed=5)
  out = subprocess.run(
    [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
  )
  growth = int(out.stdout.split()[-1]) / 1024  # MiB
  manifest = json.loads((tmp_path / "data" / prepare.MANIFEST).read_text())
  assert manifest["counts"]["tokens"] > 2_500_000
  assert growth < 16, growth


def test_tokenizer_keeps_mask_whole(tmp_path):
  c = small_config(tmp_path)
  manifest = _quiet(c, tmp_path / "d")
  tok = tokenizer.load(str(tmp_path / "d" / manifest["tokenizer_file"]))
  encoded = tok.encode("river [MASK] stone")
  assert encoded.count(tokenizer.MASK_ID) == 1
  # No lone word-start piece before [MASK]: it stands for a whole "▁word" piece.
  assert tok.id_to_piece(encoded[encoded.index(tokenizer.MASK_ID) - 1]) != "\u2581"
  assert encoded[: encoded.index(tokenizer.MASK_ID)] == tok.encode("river")


def test_split_sentences():
  text = "First one. Second?  Yes!\n\nNew\n   paragraph e.g.here\n\n\n"
  assert corpus.split_sentences(text) == ["First one.", "Second?", "Yes!", "New paragraph e.g.here"]
  # Full-width ends take no space after them, a run of them ends once, and a quote ended
  # inside goes on as in English ("Good." he said.).
  text = "冬天非常寒冷。我们去了北京！你好吗？「好。」他说。本当？！すごい。。。終わり。"
  assert corpus.split_sentences(text) == [
    "冬天非常寒冷。",
    "我们去了北京！",
    "你好吗？",
    "「好。」他说。",
    "本当？！",
    "すごい。。。",
    "終わり。",
  ]
  assert corpus.split_sentences('"Good." he said. 「えっ！？」彼は驚いた。') == [
    '"Good." he said.',
    "「えっ！？」彼は驚いた。",
  ]


def test_python_docs_corpus():
  docs = corpus.python_docs_documents()
  assert len(docs) > 1000
  assert all(docs) and all(s and s == s.strip() for d in docs[:500] for s in d)


def test_synthetic_matches_the_pipeline_format(tmp_path):
  c = small_config(tmp_path)
  manifest = _quiet(c, tmp_path / "d")
  real = pipeline.Stream(
    str(tmp_path / "d"), manifest, "train", batch_size=6, seed=0, max_predictions=5
  ).batch_at(0)
  fake = next(
    synthetic.synthetic_batches(batch_size=6, max_seq_length=32, vocab_size=300, max_predictions=5)
  )
  assert {k: (v.dtype, v.shape) for k, v in fake.items()} == {
    k: (v.dtype, v.shape) for k, v in real.items()
  }


def test_a_random_next_sentence_comes_from_another_document(tmp_path):
  """Every "B is random" pair's B is of another document than its A, also where a work unit
  holds one document (a file per document: before, 10 tries within that document failed and
  B came from A's own document) and in the small eval chunks; and a split's rows hold only
  its own documents' text (the other units' documents a chunk draws from are of its split).
  """
  words = [[f"d{d}w{w}" for w in range(12)] for d in range(12)]
  rng = np.random.default_rng(0)
  for d, own in enumerate(words):  # one document per file, 30 sentences of its own words
    sentences = [" ".join(rng.choice(own, 6)) + " ." for _ in range(30)]
    (tmp_path / f"doc{d:02d}.txt").write_text(" ".join(sentences) + "\n")
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join([*tokenizer.SPECIAL_PIECES, ".", *sum(words, [])]) + "\n")
  c = small_config(tmp_path, input=f"{tmp_path}/doc*.txt", input_format="document")
  c.data.objective, c.data.eval_fraction, c.data.num_shards = "nsp", 0.5, 12
  c.tokenizer.path = str(vocab)
  manifest = _quiet(c, tmp_path / "d")
  assert len(manifest["splits"]["train"]["shards"]) == 12  # a unit, and a chunk, per document
  tok = tokenizer.load(str(vocab))
  document_of = {tok.encode(w)[0]: d for d, own in enumerate(words) for w in own}
  seen = {}
  for split in ("train", "eval"):
    rows = _read_split(str(tmp_path / "d"), manifest, split)
    randoms, seen[split] = 0, set()
    for ids, types, label in zip(
      rows["input_ids"], rows["token_type_ids"], rows["next_sentence_labels"]
    ):
      a = {document_of[t] for t in ids[types == 0] if t in document_of}
      b = {document_of[t] for t in ids[(types == 1)] if t in document_of}
      assert len(a) == len(b) == 1  # each segment is of one document
      assert (a != b) == (label == 1)
      randoms += label == 1
      seen[split] |= a | b
    assert randoms > 0
  assert seen["train"] and seen["eval"] and not seen["train"] & seen["eval"]
