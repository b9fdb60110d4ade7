"""`prepare` on input a new user gives: another corpus after a failure, binary files, skipped
lines, very long lines, Ctrl-C, failures that must leave no folders, and a small corpus
that must pretrain.
"""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.data import prepare, tokenizer
from bert_jax.errors import UserError
from tests.conftest import FAST_COMPILE, ROOT, write_topics_corpus
from tests.test_pipeline import _corpus, small_config


def _prepare(config, data_dir, lines=None):
  log = (lambda _: None) if lines is None else lines.append
  return prepare.prepare(config, str(data_dir), log=log, progress=False)


def _fingerprint(data_dir):
  return tokenizer.load(str(data_dir / "tokenizer.model")).fingerprint


def test_a_stop_while_sentencepiece_learns_keeps_its_pieces(tmp_path, monkeypatch):
  """Ctrl-C or SIGTERM while SentencePiece learns (C++) is taken when it returns: as here, an
  exception right after a whole training. Before, the model was dropped and its folder
  removed; now it is kept, with its stamp, and the rerun prepares on it, as if unstopped.
  """
  spm = tokenizer._spm()
  real = spm.SentencePieceTrainer.train

  def stopped(*args, **kwargs):
    real(*args, **kwargs)
    raise errors.Terminated()

  monkeypatch.setattr(spm.SentencePieceTrainer, "train", stopped)
  lines, config = [], small_config(tmp_path)  # (it writes the corpus: once)
  with pytest.raises(errors.Terminated) as raised:
    _prepare(config, tmp_path / "d", lines)
  assert raised.value.model_kept and any("learnt before the stop, kept" in x for x in lines)
  monkeypatch.setattr(spm.SentencePieceTrainer, "train", real)
  lines.clear()
  manifest = _prepare(config, tmp_path / "d", lines)
  assert not any("tokenizer: training" in x for x in lines)  # learnt once
  unstopped = _prepare(config, tmp_path / "fresh")
  assert manifest["tokenizer_fingerprint"] == unstopped["tokenizer_fingerprint"]


def test_another_input_after_a_failure_retrains_the_tokenizer(tmp_path):
  """A preparation that fails after training its tokenizer (here: no eval rows), rerun on
  another corpus, trains a tokenizer for that corpus (a fresh dir's, bit for bit).
  """
  first = small_config(tmp_path, eval_fraction=1e-9)  # every document trains: no eval rows
  with pytest.raises(UserError, match="no eval rows") as raised:
    _prepare(first, tmp_path / "d")
  documents = int(str(raised.value).split(" of the ")[1].split()[0])
  assert str(raised.value).startswith(
    f"no eval rows: 0 of the {documents} documents were held out at "
    f"config.data.eval_fraction=1e-09 (each document goes to eval with that chance); raise "
    f"it (e.g. --config.data.eval_fraction="
  )
  first_tokenizer = _fingerprint(tmp_path / "d")
  # The fraction it names holds documents out.
  suggested = float(str(raised.value).split("eval_fraction=")[2].split(")")[0])
  assert _prepare(small_config(tmp_path, eval_fraction=suggested), tmp_path / "e")["splits"][
    "eval"
  ]["rows"]

  # small_config writes its own corpus.txt: the other corpus has another name.
  _corpus(tmp_path / "other.txt", seed=7)
  text = (tmp_path / "other.txt").read_text()
  (tmp_path / "other.txt").write_text(text.replace("a", "o").replace("e", "u"))  # other pieces
  second = small_config(tmp_path, input=str(tmp_path / "other.txt"))
  manifest = _prepare(second, tmp_path / "d")
  _prepare(second, tmp_path / "fresh")
  assert _fingerprint(tmp_path / "d") == _fingerprint(tmp_path / "fresh") != first_tokenizer
  assert manifest["tokenizer_fingerprint"] == _fingerprint(tmp_path / "fresh")
  # The same input again, changed on disk (size and time): trained again too.
  with open(tmp_path / "other.txt", "a") as f:
    f.write("\nAnother line of text here.\n")
  _prepare(second, tmp_path / "fresh2")
  os.remove(tmp_path / "d" / prepare.MANIFEST)
  lines = []
  _prepare(second, tmp_path / "d", lines)
  said = [line for line in lines if line.startswith("tokenizer: ")]
  assert said[0].startswith("tokenizer: training 300 unigram pieces")  # said first
  assert re.fullmatch(
    r"tokenizer: read [\d,]+ sentences in [\d.]+ s; learning the pieces...", said[1]
  )
  assert said[2].startswith("tokenizer: trained 300 pieces")
  assert _fingerprint(tmp_path / "d") == _fingerprint(tmp_path / "fresh2")


def test_one_document_says_to_split_it(tmp_path):
  """A corpus of one document (a huge line) cannot hold a document out at any fraction:
  the error says to split it (before: to raise a fraction that could not help).
  """
  (tmp_path / "one.txt").write_text(" ".join(f"Sentence {i} is here." for i in range(400)))
  config = small_config(tmp_path, input=str(tmp_path / "one.txt"), eval_fraction=0.5)
  with pytest.raises(UserError) as raised:
    _prepare(config, tmp_path / "d")
  assert str(raised.value).startswith(
    "no eval rows: the input is 1 document, and eval holds out whole documents; split it "
    "into several (original BERT's format: a blank line between documents; "
    "config.data.input_format=document: one per file)"
  )


def test_json_lines_with_the_text_under_another_key_name_the_keys(tmp_path):
  rows = [{"id": i, "content": f"Sentence number {i} of the corpus."} for i in range(50)]
  (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(UserError) as raised:
    _prepare(small_config(tmp_path, input=str(tmp_path / "c.jsonl")), tmp_path / "w" / "data")
  assert str(raised.value) == (
    f"config.data.input={str(tmp_path / 'c.jsonl')!r} has no text; its JSON objects have no "
    f"text under config.data.text_field='text' but have the keys ['content', 'id']: set "
    f"--config.data.text_field to the one with the text"
  )
  assert not (tmp_path / "w").exists()
  # With a tokenizer given (none trained), the same line, before anything is written.
  _prepare(small_config(tmp_path), tmp_path / "good")
  given = small_config(tmp_path, input=str(tmp_path / "c.jsonl"))
  given.tokenizer.path = str(tmp_path / "good" / "tokenizer.model")
  with pytest.raises(UserError) as raised_given:
    _prepare(given, tmp_path / "w2")
  assert str(raised_given.value) == str(raised.value)
  assert not (tmp_path / "w2").exists()


@pytest.mark.parametrize(
  "content,expected",
  [
    (np.random.default_rng(0).bytes(200_000), "is not text (it holds NUL bytes"),
    ("Some text here.\nAnd more.\n".encode("utf-16"), "is not text (it holds NUL bytes"),
    ("Ça a été très élevé.\n".encode("latin1") * 9 + b"Plain ASCII.\n", "9 of its first 10"),
    (bytes(range(128, 256)) * 20, "1 of its first 1 lines are not UTF-8"),
  ],
  ids=["random bytes", "UTF-16", "Latin-1", "one line"],
)
def test_a_binary_file_is_not_text(tmp_path, content, expected):
  (tmp_path / "good.txt").write_text("A good line.\nAnother one.\n")
  (tmp_path / "data.bin").write_bytes(content)
  c = small_config(tmp_path, input=f"{tmp_path}/good.txt,{tmp_path}/data.bin")
  with pytest.raises(UserError) as raised:
    _prepare(c, tmp_path / "w" / "data")
  message = str(raised.value)
  assert message.startswith(f"{tmp_path}/data.bin is not text") and expected in message
  assert "give UTF-8 text files" in message and "\n" not in message
  assert not (tmp_path / "w").exists()


def test_skipped_lines_are_counted_and_said(tmp_path):
  c = small_config(tmp_path)
  with open(tmp_path / "corpus.txt", "ab") as f:
    f.write(b"\n" + "Schön ist es.\nNoch ein Satz für dich.\nGrüße.\n".encode("latin1"))
  lines = []
  manifest = _prepare(c, tmp_path / "d", lines)
  assert manifest["counts"]["invalid_utf8_lines"] == 3
  assert "data: skipped 3 non-UTF-8 lines (config.data.strict=True names the first)" in lines


def test_empty_documents_are_counted_and_said(tmp_path):
  """A file per document: an empty file is a document without text, skipped and said."""
  for i in range(12):
    _corpus(tmp_path / f"doc{i}.txt", documents=1, seed=i)
  (tmp_path / "doc12.txt").write_text("\n \n")
  c = small_config(tmp_path, input=f"{tmp_path}/doc*.txt", input_format="document")
  c.data.eval_fraction = 0.4
  lines = []
  manifest = _prepare(c, tmp_path / "d", lines)
  assert manifest["counts"]["empty_documents"] == 1 and manifest["counts"]["documents"] == 12
  assert "data: skipped 1 empty document (a file, JSON line or TFDS record without text)" in lines


def test_a_corpus_of_very_long_lines_prepares(tmp_path):
  """Documents as single lines of 5-8 KB (over SentencePiece's 4192-byte limit): the
  tokenizer trains on them, and the note says how to keep more than a row of each.
  """
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "garden"]
  lines = [" ".join(rng.choice(words, size=rng.integers(900, 1300))) + "." for _ in range(80)]
  assert min(len(line) for line in lines) > tokenizer.MAX_SENTENCE_BYTES
  (tmp_path / "long.txt").write_text("\n\n".join(lines) + "\n")
  c = small_config(tmp_path, input=str(tmp_path / "long.txt"), eval_fraction=0.2)
  c.tokenizer.vocab_size = 280
  notes = []
  manifest = _prepare(c, tmp_path / "d", notes)
  assert manifest["counts"]["truncated_sentences"] == manifest["counts"]["sentences"] == 80
  tok = tokenizer.load(str(tmp_path / "d" / "tokenizer.model"))
  # Whole words are pieces (280 leaves room for a few): it learned from the long lines.
  assert sum(len(tok.encode(word)) == 1 for word in words) >= 2
  assert any("input_format=document" in line for line in notes)


@pytest.mark.parametrize("given_tokenizer", [False, True], ids=["trained", "given tokenizer"])
@pytest.mark.parametrize("kind", ["empty", "binary", "missing", "no match", "cut gzip"])
def test_a_failed_preparation_leaves_no_folder_it_made(tmp_path, kind, given_tokenizer):
  tokenizer_path = None
  if given_tokenizer:  # not trained, so nothing reads the corpus before the shards
    _prepare(small_config(tmp_path), tmp_path / "tok")
    tokenizer_path = str(tmp_path / "tok" / "tokenizer.model")
  corpus = tmp_path / "input.txt"  # "missing": never written
  spec = str(corpus)
  if kind == "empty":
    corpus.write_text("\n  \n")
  elif kind == "binary":
    corpus.write_bytes(bytes(range(256)) * 100)
  elif kind == "no match":
    spec = str(tmp_path / "nothing*.txt")
  elif kind == "cut gzip":  # cut past the first 64 KiB read to check it: found by a reader
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 5000, 60_000)]
    text = "\n".join(" ".join(words[i : i + 12]) + "." for i in range(0, len(words), 12))
    whole = gzip.compress(text.encode())
    spec = str(tmp_path / "input.txt.gz")
    (tmp_path / "input.txt.gz").write_bytes(whole[: len(whole) // 2])
  c = small_config(tmp_path, input=spec)
  c.tokenizer.path = tokenizer_path
  # A new workdir: nothing of it is left.
  with pytest.raises(UserError, match="cut-short gzip" if kind == "cut gzip" else None):
    _prepare(c, tmp_path / "new" / "data")
  assert not (tmp_path / "new").exists()
  # A workdir that existed (with a file) stays as it was.
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "notes.txt").write_text("mine")
  with pytest.raises(UserError):
    _prepare(c, tmp_path / "run" / "data")
  assert sorted(os.listdir(tmp_path / "run")) == ["notes.txt"]
  # An existing empty data dir stays.
  (tmp_path / "run" / "data").mkdir()
  with pytest.raises(UserError):
    _prepare(c, tmp_path / "run" / "data")
  assert os.listdir(tmp_path / "run" / "data") == []


def _prepare_command(workdir, corpus):
  return [
    sys.executable,
    "-m",
    "bert_jax.cli",
    "prepare",
    "--workdir",
    str(workdir),
    f"--config.data.input={corpus}",
    "--config.data.num_shards=4",
    "--config.data.num_workers=2",
    "--config.data.max_seq_length=32",
    "--config.tokenizer.vocab_size=300",
  ]


@pytest.mark.slow
@pytest.mark.parametrize(
  "signum, status, line",
  [
    (signal.SIGINT, 130, "interrupted; run the same command again to resume"),
    (signal.SIGTERM, 75, str(errors.Terminated())),
  ],
  ids=["ctrl-c", "sigterm"],
)
def test_a_stopped_preparation_is_one_line_and_the_rerun_finishes(tmp_path, signum, status, line):
  """Ctrl-C in a terminal reaches the whole process group: the pool's workers as well as
  the parent, as SLURM's SIGTERM does. One line says so, no traceback: exit 130 for Ctrl-C,
  75 (a launcher's "run again") for SIGTERM. The same command then finishes (checked after
  Ctrl-C).
  """
  _corpus(tmp_path / "corpus.txt", documents=24_000, seed=3)  # seconds of work to stop
  workdir = tmp_path / "w"
  shards = workdir / "data" / prepare.SHARDS
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
  proc = subprocess.Popen(
    _prepare_command(workdir, tmp_path / "corpus.txt"),
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,  # its own process group, as a terminal gives a command
    # Ctrl-C's default action, as in a terminal: a test run started in the background (`&`)
    # ignores SIGINT, and Python keeps an ignored SIGINT ignored.
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )
  deadline = time.time() + 120
  while not (shards.is_dir() and any(n.endswith(".tmp") for n in os.listdir(shards))):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.05)
  time.sleep(0.5)  # the workers are writing shards
  assert proc.poll() is None
  os.killpg(proc.pid, signum)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == status, err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert "leaked" not in err  # semaphores of workers killed under the parent
  assert [text for text in err.splitlines() if text.startswith(line[:10])] == [line]
  assert not (workdir / "data" / prepare.MANIFEST).exists()
  if signum != signal.SIGINT:
    return  # the rerun resumes as after Ctrl-C (checked there): the same code path

  again = subprocess.run(
    _prepare_command(workdir, tmp_path / "corpus.txt"),
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert again.returncode == 0, again.stderr
  assert (workdir / "data" / prepare.MANIFEST).exists()
  assert "tokenizer: trained" not in again.stdout  # the first run's tokenizer, reused


@pytest.mark.slow
def test_a_small_corpus_pretrains(tmp_path):
  """Some 80 documents, one file each, the recipe's num_shards and lanes (8 each): the eval
  split holds 2 documents, so fewer non-empty shards than lanes; it is read in fewer.
  """
  assert write_topics_corpus(tmp_path / "docs") > 70
  workdir = tmp_path / "run"
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "bert_jax",
      "pretrain",
      "--workdir",
      str(workdir),
      f"--config.data.input={tmp_path}/docs/*.txt",
      "--config.data.input_format=document",
      "--config.data.objective=mlm",
      "--config.tokenizer.vocab_size=2000",
      "--config.train.steps=2",
      "--config.train.batch_size=8",
      "--config.train.warmup_steps=1",
      "--config.train.log_every_steps=1",
      "--config.eval.every_steps=2",
      "--config.eval.steps=1",
      "--config.checkpoint.every_steps=2",
    ],
    cwd=ROOT,
    env={**os.environ, "XLA_FLAGS": FAST_COMPILE},
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  manifest = prepare.read_manifest(str(workdir / "data"))
  eval_shards = [s for s in manifest["splits"]["eval"]["shards"] if s["rows"]]
  assert len(eval_shards) < 8  # the lanes of the recipe (demo: 8 shards, 8 lanes)
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [2] and np.isfinite(evals[0]["loss"])
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]


@pytest.mark.parametrize("objective", ["mlm", "nsp"])
def test_a_sentence_longer_than_a_row_is_split_by_mlm_and_cut_by_pairs(tmp_path, objective):
  # Truth: the tokenizer's own pieces of each line. mlm keeps every token (the long line
  # continues across rows); a pair objective keeps max_seq_length - 3 of it and says what
  # share of the corpus that lost.
  c = small_config(tmp_path, objective=objective)
  long_line = " ".join(["alpha beta gamma"] * 40) + "."
  with open(tmp_path / "corpus.txt", "a") as f:
    f.write("\n\n" + long_line + "\nShort end.\n")
  notes = []
  manifest = _prepare(c, tmp_path / "d", notes)
  tok = tokenizer.load(str(tmp_path / "d" / "tokenizer.model"))
  lengths = [len(tok.encode(line)) for line in (tmp_path / "corpus.txt").read_text().split("\n")]
  capacity = c.data.max_seq_length - 3
  counts = manifest["counts"]
  if objective == "mlm":
    assert counts["tokens"] == sum(lengths)
    assert counts["truncated_sentences"] == counts["cut_tokens"] == 0
    assert not any("cut to fit" in line for line in notes)
  else:
    cut = sum(max(0, n - capacity) for n in lengths)
    assert cut > 0.01 * sum(lengths)
    assert counts["cut_tokens"] == cut and counts["tokens"] == sum(lengths) - cut
    assert counts["truncated_sentences"] == sum(n > capacity for n in lengths)
    (note,) = [line for line in notes if "cut to fit" in line]
    assert f"losing {cut / sum(lengths):.0%} of the tokens" in note
    assert "objective=mlm splits" in note


def test_a_byte_level_vocabulary_below_its_alphabet_says_so_not_no_text(tmp_path):
  # The tokenizer refuses the size before it reads a sentence: its own line, not "no text".
  c = small_config(tmp_path)
  c.tokenizer.model_type, c.tokenizer.vocab_size = "bytelevel_bpe", 256
  with pytest.raises(UserError, match=r"too small for byte-level BPE: .* need 261"):
    _prepare(c, tmp_path / "w" / "data")
  assert not (tmp_path / "w").exists()
