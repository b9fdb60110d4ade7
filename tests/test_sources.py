"""Tests of corpus inputs: formats, byte-range partitions, errors, TFDS, sampling.

The truth is the documents each test generates and writes itself.
"""

import collections
import gzip
import json
import logging
import os
import pickle
import random
import sys

import pytest

from bert_jax.data import corpus, sources, tfds_source
from bert_jax.errors import UserError

BAD_LINE = b"caf\xe9 latin-1, not UTF-8"


def _documents(seed, n, max_sentences=6):
  """`n` documents of distinct sentences (each names its document)."""
  rng = random.Random(seed)
  words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
  return [
    [
      " ".join([f"d{d}s{s}", *rng.choices(words, k=rng.randint(0, 9))])
      for s in range(rng.randint(1, max_sentences))
    ]
    for d in range(n)
  ]


def _bert_bytes(documents, seed, bad_lines=0):
  """BERT format with the noise of real files.

  Spaces around sentences, CRLF, runs of (whitespace) blank lines, and
  `bad_lines` non-UTF-8 lines placed inside documents and between them.
  """
  rng = random.Random(seed)
  out = [b"\n" * rng.randint(0, 2)]
  lines = []
  for document in documents:
    lines.extend(s.encode() for s in document)
    lines.append(b"")
    lines.extend(b" \t" for _ in range(rng.randint(0, 2)))
  for _ in range(bad_lines):
    lines.insert(rng.randrange(len(lines) + 1), BAD_LINE)
  for line in lines:
    pad = b" " * rng.randint(0, 2) if line else b""
    out.append(pad + line + pad + rng.choice([b"\n", b"\r\n"]))
  return b"".join(out)


def _write(path, data):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(data)
  return str(path)


def _read_all(units, strict=False):
  stats = collections.Counter()
  documents = [d for unit in units for d in sources.read_unit(unit, stats, strict)]
  return documents, stats


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.txt.gz"])
def test_bert_format_reads_the_documents_written(tmp_path, name):
  documents = _documents(0, 40)
  path = _write(tmp_path / name, b"\xef\xbb\xbf" + _bert_bytes(documents, 1))
  units = sources.plan_units(path, num_units=4)
  assert all(u.format == "bert" for u in units)
  read, stats = _read_all(units)
  if name.endswith(".gz"):  # parts of every 4th document: the same documents, interleaved
    assert [u.count for u in units] == [4] * 4
    read = [d for i in range(len(read)) for d in [read[(i % 4) * 10 + i // 4]]]
  assert read == documents  # The BOM is gone from the first sentence.
  assert stats == {"documents": len(documents)}


def test_two_ranges_split_at_every_byte_partition_documents(tmp_path):
  documents = _documents(2, 12, max_sentences=3)
  data = _bert_bytes(documents, 3, bad_lines=4)
  path = _write(tmp_path / "small.txt", data)
  for k in range(1, len(data)):
    halves = [sources.Unit("text", path, "bert", 0, k), sources.Unit("text", path, "bert", k, -1)]
    read, stats = _read_all(halves)
    assert read == documents, k
    assert stats["invalid_utf8_lines"] == 4, k


@pytest.mark.parametrize("input_format", ["bert", "jsonl"])
def test_many_byte_ranges_partition_documents(tmp_path, input_format):
  documents = _documents(4, 400)
  if input_format == "bert":
    data = _bert_bytes(documents, 5, bad_lines=9)
  else:
    lines = [json.dumps({"text": " ".join(d)}).encode() for d in documents]
    for i in range(9):
      lines.insert(i * 40, BAD_LINE)
    data = b"\n".join(lines) + b"\n"
  path = _write(tmp_path / f"big.{input_format}", data)
  units = sources.plan_units(path, input_format=input_format, num_units=37)
  assert len(units) == 37
  assert [u.start for u in units] == sorted(u.start for u in units)
  read, stats = _read_all(units)
  if input_format == "jsonl":  # The JSON text is re-split into sentences.
    documents = [corpus.split_sentences(" ".join(d)) for d in documents]
  assert read == documents
  assert stats == {"documents": len(documents), "invalid_utf8_lines": 9}


def test_large_files_are_cut_by_their_share_of_all_bytes(tmp_path):
  big = _write(tmp_path / "a_big.txt", _bert_bytes(_documents(6, 300), 6))
  small = _write(tmp_path / "b_small.txt", _bert_bytes(_documents(7, 3), 7))
  packed = _write(tmp_path / "c.txt.gz", _bert_bytes(_documents(8, 300), 8))
  units = sources.plan_units(str(tmp_path / "*"), num_units=8)
  per_file = collections.Counter(u.path for u in units)
  assert per_file[small] == 1 and per_file[big] >= 4
  parts = [(u.index, u.count) for u in units if u.path == packed]  # gzip: every n-th document
  assert len(parts) >= 2 and parts == [(i, len(parts)) for i in range(len(parts))]
  assert units == sources.plan_units(str(tmp_path / "*"), num_units=8)
  assert sorted(set(u.path for u in units)) == [big, small, packed]


def test_document_format_is_one_document_per_file(tmp_path):
  texts = [
    "Heading\n=======\n\nFirst sentence. Second one!\nStill the "
    "second paragraph?\n\n\n  Third\tparagraph here.\n",
    "Only one line without a full stop",
    "\n \n",
  ]
  paths = [_write(tmp_path / f"doc{i}.txt", t.encode()) for i, t in enumerate(texts)]
  paths.append(_write(tmp_path / "doc3.txt.gz", texts[0].encode()))
  units = sources.plan_units(str(tmp_path / "doc*"), input_format="document", num_units=50)
  assert len(units) == 4  # Never cut into byte ranges.
  read, stats = _read_all(units)
  expected = [corpus.split_sentences(t) for t in texts + texts[:1]]
  assert read == [d for d in expected if d]
  assert stats == {"documents": 3, "empty_documents": 1}


def test_many_small_files_are_grouped_into_units(tmp_path):
  """Many notes of one document each make about num_units units, not a shard per file;
  every file is read once, in order; empty files are fine.
  """
  texts = [f"Note {i}. Patient {i % 7} was seen." if i % 97 else "" for i in range(300)]
  for i, text in enumerate(texts):
    _write(tmp_path / f"note{i:04d}.txt", text.encode())
  units = sources.plan_units(str(tmp_path / "note*"), input_format="document", num_units=8)
  assert 8 <= len(units) <= 9
  read, stats = _read_all(units)
  assert read == [corpus.split_sentences(t) for t in texts if t]
  assert stats == {"documents": 296, "empty_documents": 4}


@pytest.mark.parametrize("name", ["records.jsonl", "records.json.gz"])
def test_jsonl_counts_bad_lines(tmp_path, name):
  lines = [
    json.dumps({"body": "One. Two sentences."}),
    "{not json",
    json.dumps({"title": "no body"}),
    json.dumps({"body": 7}),
    json.dumps(["a list"]),
    "",
    json.dumps({"body": "   "}),
    json.dumps({"body": "Last\n\nparagraphs."}),
  ]
  path = _write(tmp_path / name, "\n".join(lines).encode())
  units = sources.plan_units(path, num_units=1, text_field="body")
  assert [u.format for u in units] == ["jsonl"]
  read, stats = _read_all(units)
  assert read == [["One.", "Two sentences."], ["Last", "paragraphs."]]
  assert stats == {"documents": 2, "bad_json_lines": 4, "empty_documents": 1}


@pytest.mark.parametrize("name", ["corpus.txt.gz", "records.jsonl.gz"])
def test_a_large_gzip_file_is_cut_into_parts_that_partition_its_documents(tmp_path, name):
  documents = _documents(3, 60)
  if name.startswith("records"):
    lines = [json.dumps({"text": " ".join(d)}) for d in documents]
    lines[7:7] = ["{not json", json.dumps({"title": "no text"})]
    data = "\n".join(lines).encode()
  else:
    data = _bert_bytes(documents, 3, bad_lines=3)
  path = _write(tmp_path / name, data)
  whole, whole_stats = _read_all(sources.plan_units(path, num_units=1))
  units = sources.plan_units(path, num_units=4)
  assert [(u.index, u.count) for u in units] == [(i, 4) for i in range(4)]
  parts = [_read_all([u])[0] for u in units]
  assert [d for i in range(len(whole)) for d in [parts[i % 4][i // 4]]] == whole
  assert sum(map(len, parts)) == len(whole) == 60
  _, stats = _read_all(units)  # bad lines counted once, by part 0
  assert stats == whole_stats and stats["invalid_utf8_lines"] + stats["bad_json_lines"] in (2, 3)


def test_invalid_utf8_is_skipped_or_strict_error(tmp_path):
  head = b"Good sentence.\n"
  path = _write(tmp_path / "mixed.txt", head + BAD_LINE + b"\nAfter.\n")
  read, stats = _read_all(sources.plan_units(path, num_units=1))
  assert read == [["Good sentence.", "After."]]
  assert stats["invalid_utf8_lines"] == 1
  with pytest.raises(
    UserError,
    match=rf"mixed.txt: byte {len(head) + 3} .*"
    r"iconv",
  ):
    _read_all(sources.plan_units(path, num_units=1), strict=True)


def test_builtin_parts_partition_the_python_docs(monkeypatch):
  whole = _documents(9, 10) + [[]]
  monkeypatch.setattr(sources, "_python_docs", lambda: whole)  # Fast.
  units = sources.plan_units(sources.BUILTIN, num_units=3)
  assert [(u.kind, u.index, u.count) for u in units] == [
    ("builtin", 0, 3),
    ("builtin", 1, 3),
    ("builtin", 2, 3),
  ]
  read, stats = _read_all(units)
  assert sorted(read) == sorted(whole[:-1])
  assert stats == {"documents": 10, "empty_documents": 1}


def test_input_errors_name_the_problem(tmp_path):
  (tmp_path / "folder.txt").mkdir()
  good = _write(tmp_path / "good.txt", b"Text.\n")
  cases = [
    (str(tmp_path / "missing.txt"), "missing.txt' matches no file"),
    (f"{good},{tmp_path}/nothing*", "nothing\\*' matches no file"),
    (
      str(tmp_path / "folder.txt"),
      r"folder.txt' is a folder; give a glob of its files, e.g. '.*folder.txt/\*.txt'",
    ),
    (" , ", "names no file"),
  ]
  for spec, message in cases:
    with pytest.raises(UserError, match=message):
      sources.plan_units(spec, num_units=2)
  not_gzip = _write(tmp_path / "fake.txt.gz", b"")
  with open(not_gzip, "wb") as f:
    f.write(b"plain text, not gzip")
  with pytest.raises(UserError, match="cannot read input file .*fake.txt.gz"):
    sources.plan_units(not_gzip, num_units=2)
  with pytest.raises(UserError, match="unknown input format 'csv'"):
    sources.plan_units(good, input_format="csv", num_units=2)


def test_unreadable_file_is_an_error(tmp_path):
  path = _write(tmp_path / "secret.txt", b"Text.\n")
  os.chmod(path, 0)
  if os.access(path, os.R_OK):
    pytest.skip("running as root: chmod 000 does not stop reading")
  with pytest.raises(UserError, match="cannot read input file .*secret.txt"):
    sources.plan_units(path, num_units=1)


def test_sample_sentences_is_bounded_spread_and_seeded(tmp_path):
  for i in range(10):
    _write(
      tmp_path / f"part{i}.txt",
      _bert_bytes([[f"f{i} {s}" for s in d] for d in _documents(i, 50)], i),
    )
  units = sources.plan_units(str(tmp_path / "*.txt"), num_units=10)
  sample = list(sources.sample_sentences(units, max_sentences=100, seed=1))
  assert len(sample) == 100
  assert {s.split()[0] for s in sample} == {f"f{i}" for i in range(10)}
  assert sample == list(sources.sample_sentences(units, max_sentences=100, seed=1))
  assert sample != list(sources.sample_sentences(units, max_sentences=100, seed=2))
  everything, _ = _read_all(units)
  total = sum(map(len, everything))
  assert sorted(sources.sample_sentences(units, max_sentences=10**9, seed=0)) == sorted(
    s for d in everything for s in d
  )
  assert total > 100


def test_stamp_and_units_pickle(tmp_path):
  path = _write(tmp_path / "a.txt", b"Text.\n")
  size, mtime = os.path.getsize(path), os.stat(path).st_mtime_ns
  assert sources.stamp(path) == [[path, size, mtime]]
  assert sources.stamp(sources.BUILTIN)[0] == "python"
  unit = sources.plan_units(path, num_units=1)[0]
  assert pickle.loads(pickle.dumps(unit)) == unit


# TensorFlow Datasets, mocked: no network.


def test_tfds_mocked_dataset_reads_its_texts(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    units = sources.plan_units("tfds:imdb_reviews", num_units=2, tfds_data_dir=str(tmp_path))
    assert [(u.kind, u.path, u.index, u.count, u.split) for u in units] == [
      ("tfds", "imdb_reviews", 0, 2, "train"),
      ("tfds", "imdb_reviews", 1, 2, "train"),
    ]
    stats = collections.Counter()
    read = list(sources.read_unit(units[0], stats))
    # The mock serves the same examples to every sub-split.
    dataset = tfds.load("imdb_reviews", split="train", data_dir=str(tmp_path))
    texts = [ex["text"].decode() for ex in tfds.as_numpy(dataset)]
    expected = [corpus.split_sentences(t) for t in texts]
    assert read == [d for d in expected if d]
    assert stats["documents"] + stats["empty_documents"] == 5
    assert sources.stamp("tfds:imdb_reviews", tfds_data_dir=str(tmp_path)) == [
      "tfds",
      "imdb_reviews/plain_text/1.0.0",
    ]
    with pytest.raises(UserError, match="no field 'body'.*text"):
      sources.plan_units(
        "tfds:imdb_reviews", num_units=2, text_field="body", tfds_data_dir=str(tmp_path)
      )


def test_tfds_offline_tries_a_download_once_instead_of_minutes_of_retries(
  tmp_path, monkeypatch, capsys
):
  tfds = pytest.importorskip("tensorflow_datasets")
  import socket

  from tensorflow_datasets.core.download import downloader

  with socket.socket() as closed:  # a port nothing listens on: refused at once
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
  monkeypatch.setattr(tfds_source, "_DOWNLOAD_PROBE", ("127.0.0.1", port))
  for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    monkeypatch.delenv(name, raising=False)
  retries = []

  def download(*args, **kwargs):
    retries.append(downloader.MAX_RETRIES)
    print("Dl Completed...: 0 url", file=sys.stderr)  # TFDS's bars, its clients' warnings
    logging.getLogger("urllib3.connectionpool").warning("Retrying (Retry(total=0))")
    raise ConnectionError("Max retries exceeded")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
  with pytest.raises(UserError, match=r"this host cannot reach 127.0.0.1 either") as raised:
    tfds_source.builder("glue/mrpc", str(tmp_path))
  assert "(ConnectionError: Max retries exceeded)" in str(raised.value)
  assert "--config.data.train=FILE --config.data.eval=FILE" in str(raised.value)
  assert retries == [1] and downloader.MAX_RETRIES == 10  # once, then TFDS's again
  # The announcement alone: the attempt's own output says what the error line says.
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("TFDS: glue/mrpc is not prepared in"), err


def test_tfds_errors(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match="no dataset 'no_such_corpus'.*list_builders"):
    sources.plan_units("tfds:no_such_corpus", num_units=1)

  def offline(*args, **kwargs):
    raise ConnectionError("network is unreachable")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  monkeypatch.setattr(
    tfds_source, "_unreachable", lambda *_: ""
  )  # past the probe: a failed download
  with pytest.raises(UserError, match="not prepared.*unreachable.*tfds build"):
    sources.plan_units("tfds:imdb_reviews", num_units=1, tfds_data_dir=str(tmp_path))


def test_tfds_prepared_dataset_parts_partition_the_split(tmp_path):
  """A real (tiny, local) TFDS dataset: no mock, so splits are real."""
  tfds = pytest.importorskip("tensorflow_datasets")
  # TFDS 4.9.10 prepares datasets with it but declares it for Python < 3.9 only.
  pytest.importorskip("importlib_resources")
  texts = [f"Text {i}. It has two sentences." for i in range(7)]

  class TinyTexts(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, text in enumerate(texts):
        yield i, {"text": text}

  del TinyTexts  # Registered by its definition, as tfds:tiny_texts.
  data_dir = str(tmp_path)
  units = sources.plan_units("tfds:tiny_texts", num_units=3, tfds_data_dir=data_dir)
  read, stats = _read_all(units)
  assert sorted(read) == sorted(corpus.split_sentences(t) for t in texts)
  assert stats == {"documents": 7}
  many = sources.plan_units("tfds:tiny_texts", num_units=50, tfds_data_dir=data_dir)
  assert len(many) == 7  # No empty parts: TFDS refuses them.
  assert sorted(_read_all(many)[0]) == sorted(read)
  with pytest.raises(UserError, match="no split 'dev'.*train"):
    sources.plan_units("tfds:tiny_texts", num_units=1, tfds_split="dev", tfds_data_dir=data_dir)
