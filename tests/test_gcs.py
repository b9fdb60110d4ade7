"""Runs and data in a bucket (`gs://`), against the local GCS emulator of `gcs_bucket`.

The truth is always a second run: the same preparation into a local folder (the same shard
bytes and batches), the same files read locally (the same documents), the same tokenizer
file loaded from disk, and, end to end, a pretraining run in the bucket killed with SIGKILL
after its step-10 checkpoint and resumed, whose metrics equal an uninterrupted run's bit for
bit. No local folder named `gs:` may appear.
"""

import collections
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from bert_jax import cli, storage
from bert_jax import run as run_lib
from bert_jax.data import pipeline, prepare, sources, units
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.train import metrics as metrics_lib
from tests.conftest import FAST_COMPILE, TINY_TWO_LANES, write_topics_corpus
from tests.test_pipeline import _corpus, small_config

# A tiny BERT on 24 of CPython's doc topics: 20 steps, checkpoints every 10, one eval at the end.
RUN = [
  *TINY_TWO_LANES,
  "--config.data.num_workers=1",
  "--config.train.steps=20",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=2",
  "--config.train.log_every_steps=1",
  "--config.eval.steps=1",
  "--config.eval.every_steps=20",
  "--config.checkpoint.every_steps=10",
]


@pytest.fixture(scope="module")
def base(gcs_bucket):
  """A fresh folder of the bucket for this module."""
  return f"{gcs_bucket}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _in_tmp_path(no_gs_folder):
  """Each test runs in its own folder; no local `gs:` folder may appear (conftest)."""


def _upload(local_dir, remote_dir):
  for name in sorted(os.listdir(local_dir)):
    storage.copy(os.path.join(local_dir, name), storage.join(remote_dir, name))


def _records(workdir):
  """{(step, split): record} of a run's metrics.jsonl, local or remote."""
  lines = storage.read_text(storage.join(workdir, run_lib.METRICS)).splitlines()
  return {(r["step"], r["split"]): r for r in map(json.loads, lines)}


def test_input_globs_in_a_bucket_read_the_files(base, tmp_path):
  local = tmp_path / "in"
  local.mkdir()
  _corpus(local / "a.txt", documents=30, seed=1)
  _corpus(local / "b.txt", documents=20, seed=2)
  with gzip.open(local / "c.txt.gz", "wb") as f:
    f.write((local / "a.txt").read_bytes()[:2000])
  (local / "d.jsonl").write_text(
    "".join(json.dumps({"text": f"Record {i}. It has two sentences."}) + "\n" for i in range(9))
  )
  remote = f"{base}/in"
  _upload(local, remote)

  def documents(spec):
    units = sources.plan_units(spec, num_units=4)
    return [doc for unit in units for doc in sources.read_unit(unit, collections.Counter())]

  for pattern in ("*.txt", "*.t*t*", "*.jsonl"):
    got = documents(f"{remote}/{pattern}")
    assert got and got == documents(f"{local}/{pattern}"), pattern
  both = documents(f"{remote}/a.txt, {remote}/*.jsonl")
  assert both == documents(f"{local}/a.txt, {local}/*.jsonl")
  stamp = sources.stamp(f"{remote}/*.txt")
  assert [s[:2] for s in stamp] == [
    [f"{remote}/a.txt", (local / "a.txt").stat().st_size],
    [f"{remote}/b.txt", (local / "b.txt").stat().st_size],
  ]
  with pytest.raises(UserError, match="matches no file"):
    sources.plan_units(f"{remote}/*.nothing", num_units=1)
  with pytest.raises(UserError, match="matches no file"):
    sources.plan_units("gs://no-such-bucket-bert-jax/*.txt", num_units=1)


def test_tokenizer_files_in_a_bucket(base, tmp_path):
  config = small_config(tmp_path, num_shards=1)  # its corpus trains the SentencePiece model
  spm = str(tmp_path / "tokenizer.model")
  with open(config.data.input) as f:
    tokenizer_lib.train_sentencepiece(f, spm, vocab_size=config.tokenizer.vocab_size)
  vocab = tmp_path / "vocab.txt"
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab.write_text("\n".join([*specials, "river", "##s", "stone", "light", "a", "b"]) + "\n")
  uploads = {spm: f"{base}/tok/tokenizer.model", str(vocab): f"{base}/tok/vocab.txt"}
  text = "Rivers, stones and light [MASK] a b"
  for local, remote in uploads.items():
    storage.copy(local, remote)
    a, b = tokenizer_lib.load(local), tokenizer_lib.load(remote)
    assert type(a) is type(b) and a.fingerprint == b.fingerprint and b.model_path == remote
    assert a.encode(text) == b.encode(text) and a.vocab_size == b.vocab_size
  with pytest.raises(UserError, match="does not exist"):
    tokenizer_lib.load(f"{base}/tok/missing.model")

  # config.tokenizer.path in the bucket: the prepared data holds a copy of that file.
  config.tokenizer.path = uploads[spm]
  manifest = prepare.prepare(config, str(tmp_path / "data"), log=lambda _: None, progress=False)
  assert manifest["tokenizer_fingerprint"] == tokenizer_lib.load(spm).fingerprint
  assert (tmp_path / "data" / "tokenizer.model").read_bytes() == storage.read_bytes(spm)


def test_prepare_into_a_bucket_equals_a_local_prepare(base, tmp_path, monkeypatch):
  config = small_config(tmp_path, num_shards=3)
  remote, local = f"{base}/prepared", str(tmp_path / "prepared")
  quiet = dict(log=lambda _: None, progress=False)
  manifest = prepare.prepare(config, remote, **quiet)
  assert {k: v for k, v in manifest.items() if k != "seconds"} == {
    k: v for k, v in prepare.prepare(config, local, **quiet).items() if k != "seconds"
  }
  shards = [s for split in prepare.SPLITS for s in manifest["splits"][split]["shards"]]
  for shard in shards:
    data = storage.read_bytes(storage.join(remote, shard["file"]))
    assert data == storage.read_bytes(os.path.join(local, shard["file"]))
    assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()

  # Batches from the bucket (through checked local copies) are the local dir's.
  cache = tmp_path / "cache"
  kwargs = dict(batch_size=4, seed=3, max_predictions=5, lanes=2, process_count=2)
  for process in (0, 1):
    a = pipeline.Stream(
      remote, manifest, "train", process_index=process, cache_dir=str(cache), **kwargs
    )
    b = pipeline.Stream(local, manifest, "train", process_index=process, **kwargs)
    for step in (0, 7):
      for key, value in a.batch_at(step).items():
        np.testing.assert_array_equal(value, b.batch_at(step)[key])
  copied = sorted(n for _, _, names in os.walk(cache) for n in names if n.endswith(".array_record"))
  assert copied == sorted(
    storage.name(s["file"]) for s in manifest["splits"]["train"]["shards"] if s["rows"]
  )

  # Each process copies only its own lanes' shards, saying so; a second time, nothing.
  only, lines = tmp_path / "only", []
  for _ in range(2):
    pipeline.Stream(
      remote, manifest, "train", process_index=1, cache_dir=str(only), log=lines.append, **kwargs
    )
  mine = [s for s in manifest["splits"]["train"]["shards"] if s["rows"]][1::2]
  assert sorted(
    n for _, _, names in os.walk(only) for n in names if n.endswith(".array_record")
  ) == sorted(storage.name(s["file"]) for s in mine)
  size = sum(s["bytes"] for s in mine) / 1e3  # a few kB
  assert lines[0] == (
    f"data: copying the train split's {len(mine)} shard{'s' * (len(mine) != 1)} ({size:.1f} kB) "
    f"of {remote} into {only}"
  )
  assert len(lines) == 2 and lines[1].startswith(f"data: copied {size:.1f} kB in ")

  # A disk without room for them: one line with the sizes, before anything is copied.
  monkeypatch.setattr(storage, "free_bytes", lambda folder: 900)
  full = tmp_path / "full"
  with pytest.raises(UserError) as caught:
    pipeline.Stream(remote, manifest, "train", process_index=1, cache_dir=str(full), **kwargs)
  assert str(caught.value) == (
    f"config.data.cache_dir={str(full)!r} has 0.9 kB free, and this process's {len(mine)} "
    f"shards of {remote} need {size:.1f} kB there; free room, give a cache_dir on a larger "
    f"disk, or read on more hosts (each copies its own lanes' shards)"
  )
  assert not full.exists()
  monkeypatch.undo()

  # A shard that changed in the bucket after the manifest: refused, naming it and the
  # files whose removal makes `prepare` rewrite its unit alone (as for a local shard).
  changed = storage.join(remote, mine[0]["file"])
  storage.write_bytes(changed, b"x" * mine[0]["bytes"])
  unit = int(mine[0]["file"].rsplit("-", 1)[1].split(".")[0])
  with pytest.raises(UserError) as caught:
    pipeline.Stream(
      remote, manifest, "train", process_index=1, cache_dir=str(tmp_path / "c2"), **kwargs
    )
  assert f"the shard {changed} is damaged (does not match its manifest: " in str(caught.value)
  assert f"delete it, shards/unit-{unit:05d}.json and manifest.json in {remote}" in str(
    caught.value
  )

  # Following that advice (as after a crash before the manifest, too): the unit whose done
  # file is missing is done again, rewriting its shard; the others are kept.
  storage.remove(changed)
  storage.remove(storage.join(remote, prepare.MANIFEST))
  storage.remove(storage.join(remote, prepare.SHARDS, f"unit-{unit:05d}.json"))
  done = []
  real = units.process_unit
  monkeypatch.setattr(units, "process_unit", lambda args: done.append(args[0]) or real(args))
  again = prepare.prepare(config, remote, **quiet)
  assert done == [unit] and again["splits"] == manifest["splits"]
  assert storage.read_bytes(changed) == storage.read_bytes(os.path.join(local, mine[0]["file"]))


def _line(step, loss):
  return json.dumps({"step": step, "split": "train", "loss": loss}) + "\n"


def test_metrics_in_a_bucket_resume_after_a_cut_line(base, capsys):
  workdir = f"{base}/metrics"
  before = _line(1, 1.0) + _line(2, 0.75)
  storage.write_text(f"{workdir}/metrics.jsonl", before + _line(3, 0.6) + '{"step": 4, "sp')
  writer = metrics_lib.MetricWriter(workdir, 2)
  writer.write(3, "train", {"loss": 0.5})
  assert storage.read_text(f"{workdir}/metrics.jsonl") == before + _line(3, 0.5)
  writer.write(4, "train", {"loss": 0.25})
  writer.close()
  records = [json.loads(x) for x in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3, 4] and records[3]["loss"] == 0.25
  assert [n for n in storage.listdir(f"{workdir}/tensorboard") if n.startswith("events.")]
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and "dropped 1 incomplete line" in out[0]


def test_workdir_in_a_missing_or_unreachable_bucket_is_one_error(capsys, monkeypatch):
  assert cli.main(["pretrain", "--workdir", "gs://no-such-bucket-bert-jax/run"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "gs://no-such-bucket-bert-jax does not exist" in err[0]
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://localhost:9")  # nothing listens there
  t0 = time.time()
  with pytest.raises(UserError, match="cannot reach STORAGE_EMULATOR_HOST=http://localhost:9"):
    run_lib.check_workdir("gs://bert-jax-test/run")
  assert time.time() - t0 < 5


def _cli(args, cwd, env=None):
  """`bert-jax ARGS` in a subprocess; its temporary files (the TensorBoard folder a bucket
  workdir writes through) go under `cwd`, so a killed run leaves none in /tmp.
  """
  tmp = os.path.join(cwd, "tmp")
  os.makedirs(tmp, exist_ok=True)
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "TMPDIR": tmp, **(env or {})}  # one CPU device
  return subprocess.Popen(
    [sys.executable, "-m", "bert_jax", *args],
    cwd=cwd,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finished(workdir, step):
  marker = storage.join(workdir, run_lib.CHECKPOINTS, str(step), "commit_success.txt")
  storage.invalidate_cache(marker)
  return storage.exists(marker)


def _wait_past_step_10(proc, run):
  """Waits until the run `proc` trains in `run` has committed its step-10 checkpoint and
  logged a later step (failing if it exits first or takes over 300 s).
  """
  deadline = time.time() + 300
  while not (_finished(run, 10) and max(_records(run))[0] > 10):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.2)


@pytest.mark.slow
def test_kill_and_resume_in_a_bucket_equals_uninterrupted(base, tmp_path):
  corpus = tmp_path / "corpus"
  write_topics_corpus(corpus, 24)
  _upload(corpus, f"{base}/corpus")
  run, whole = f"{base}/run", f"{base}/whole"
  data = [f"--config.data.input={base}/corpus/*.txt", *RUN]
  assert cli.main(["prepare", "--workdir", run, *data]) == 0
  assert storage.exists(f"{run}/data/{prepare.MANIFEST}")

  # The uninterrupted run reads the same prepared data from the bucket; it runs while the
  # other one sleeps between its steps.
  cache = f"--config.data.cache_dir={tmp_path / 'cache'}"
  uninterrupted = _cli(
    ["pretrain", "--workdir", whole, *data, cache, f"--config.data.prepared_dir={run}/data"],
    tmp_path,
  )
  killed = _cli(
    ["pretrain", "--workdir", run, *data, cache], tmp_path, {"BERT_JAX_DEBUG_STEP_SLEEP": "0.3"}
  )
  # Killed once its step-10 checkpoint is committed and a later step is logged (a record
  # the resumed run must drop); the step-20 checkpoint is 10 slowed-down steps away.
  _wait_past_step_10(killed, run)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not _finished(run, 20)
  resumed = _cli(["pretrain", "--workdir", run, *data, cache], tmp_path)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err[-3000:]
  assert "resumed from" in out
  _, err = uninterrupted.communicate(timeout=300)
  assert uninterrupted.returncode == 0, err[-3000:]

  a, b = _records(whole), _records(run)
  assert a.keys() == b.keys() and (20, "train") in a
  assert a[(20, "train")]["loss"] == b[(20, "train")]["loss"]
  for key in a:  # bit-exact on CPU: the same batches, masks, dropout and optimizer state
    assert {k: v for k, v in a[key].items() if k not in metrics_lib.TIMING_KEYS} == {
      k: v for k, v in b[key].items() if k not in metrics_lib.TIMING_KEYS
    }, key
  assert [n for n in storage.listdir(f"{run}/tensorboard") if n.startswith("events.")]
  # The bucket's run reads like a local one: its checkpoints, tokenizer and workdir.
  checkpoints, step = run_lib.open_checkpoints(f"{run}/checkpoints")
  assert step == 20 and checkpoints.meta(20)["step"] == 20
  assert run_lib.tokenizer(run).fingerprint == checkpoints.meta(20)["tokenizer_fingerprint"]

  # export-hf from the bucket writes the files a local export of the same run writes.
  import fsspec

  local_run = tmp_path / "local_run"
  fs, remote = fsspec.core.url_to_fs(run)
  fs.get(remote, str(local_run), recursive=True)
  assert cli.main(["export-hf", "--workdir", run, "--out", f"{base}/hf"]) == 0
  assert cli.main(["export-hf", "--workdir", str(local_run), "--out", str(tmp_path / "hf")]) == 0
  names = sorted(os.listdir(tmp_path / "hf"))
  assert "model.safetensors" in names and storage.listdir(f"{base}/hf") == names
  for name in names:
    assert storage.read_bytes(f"{base}/hf/{name}") == (tmp_path / "hf" / name).read_bytes(), name


@pytest.mark.slow
def test_a_run_that_loses_the_bucket_stops_in_one_line_and_resumes(base, tmp_path, gcs_outage):
  """The network to the bucket goes away after the step-10 checkpoint: once gcsfs's retries
  are spent the run stops with one line and status 75 (a launcher reruns it); the rerun,
  once the bucket is back, resumes from step 10 and finishes.
  """
  corpus = tmp_path / "corpus"
  write_topics_corpus(corpus, 24)
  _upload(corpus, f"{base}/lost/corpus")
  run = f"{base}/lost/run"
  data = [f"--config.data.input={base}/lost/corpus/*.txt", *RUN]
  data.append(f"--config.data.cache_dir={tmp_path / 'cache'}")
  lost = _cli(["pretrain", "--workdir", run, *data], tmp_path, {"BERT_JAX_DEBUG_STEP_SLEEP": "0.3"})
  _wait_past_step_10(lost, run)
  gcs_outage(True)
  t0 = time.time()
  _, err = lost.communicate(timeout=600)
  stopped_after = time.time() - t0
  print("STOPPED_AFTER", stopped_after)
  print(err[-2500:])
  gcs_outage(False)
  assert lost.returncode == 75, err[-3000:]
  lines = [line for line in err.splitlines() if line.startswith(("error", "Traceback"))]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert lines[0].startswith("error: lost the connection to the storage (")
  assert lines[0].endswith("run the same command again to resume from its last saved checkpoint")
  assert not _finished(run, 20)
  assert stopped_after < 80, stopped_after  # a close or lock release would each add ~31 s

  resumed = _cli(["pretrain", "--workdir", run, *data], tmp_path)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err[-3000:]
  assert f"resumed from {run}/checkpoints/10" in out + err
  assert _finished(run, 20)
  steps = [step for step, split in _records(run) if split == "train"]
  assert steps == list(range(1, 21))
