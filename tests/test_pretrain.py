"""End to end through the CLI: the demo recipe for a few steps, kill -9 and resume equal
to an uninterrupted run, fill-mask, every config file, and one-line errors for bad input.
"""

import functools
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import cli, fill_mask
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax.data import pipeline
from bert_jax.train import flops, metrics, pretrain
from configs import demo
from tests.conftest import FAST_COMPILE, ROOT, compile_threads, compiled_ahead_once

# A short demo: seq 128 as the recipe, a small batch, checkpoints every 10 steps.
FAST = [
  "--config.train.steps=40",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=10",
  "--config.checkpoint.every_steps=10",
  "--config.eval.every_steps=20",
  "--config.eval.steps=2",
  "--config.train.log_every_steps=10",
]


def _run_cli(args, env=None, cwd=ROOT, **kwargs):
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, **(env or {})}  # one CPU device, as a user has
  return subprocess.Popen(
    [sys.executable, "-m", "bert_jax"] + args,
    cwd=cwd,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    **kwargs,
  )


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The demo's prepared data (tokenizer + instances), made once by a 2-step run with a
  relative --workdir, as in the README.
  """
  workdir = tmp_path_factory.mktemp("prepare")
  proc = _run_cli(
    ["pretrain", "--workdir", "runs/demo"]
    + FAST[1:]
    + [
      "--config.train.steps=2",
      "--config.train.warmup_steps=1",
      "--config.checkpoint.every_steps=1",
    ],
    cwd=workdir,
  )
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert sorted(os.listdir(workdir / "runs/demo/checkpoints")) == ["1", "2"]
  return str(workdir / "runs/demo/data")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  proc = _run_cli(
    ["pretrain", "--workdir", workdir, f"--config.data.prepared_dir={data_dir}"] + FAST
  )
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  with open(workdir + ".stdout", "w") as f:  # beside the workdir, which other tests list
    f.write(out)
  return workdir


@pytest.mark.slow
def test_a_command_reading_an_unfinished_run_says_so(uninterrupted, tmp_path, capsys):
  """The run without its last checkpoint is one stopped at step 30 of 40: export-hf (as
  predict, evaluate and embed, through `run.load`) says so; the finished run gets no note.
  """
  stopped = str(tmp_path / "stopped")
  shutil.copytree(uninterrupted, stopped)
  shutil.rmtree(os.path.join(stopped, "checkpoints", "40"))
  for workdir, note in ((uninterrupted, None), (stopped, 30)):
    capsys.readouterr()
    assert cli.main(["export-hf", "--workdir", workdir, "--out", f"{workdir}.hf"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == (
      [
        f"note: {stopped} stopped at step 30 of the 40 it was started for (or is still "
        f"training); this uses its step 30: rerun its training command to finish it"
      ]
      if note
      else []
    )


def _model_flops_per_row(workdir):
  """Model FLOPs of one training row of the run in `workdir`, from its saved model and
  data config by `flops.flops_per_seq`.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    data = json.load(f)["data"]
  (last,) = sorted(glob.glob(os.path.join(workdir, "checkpoints", "*", "meta", "metadata")))[-1:]
  with open(last) as f:
    model = types.SimpleNamespace(**json.load(f)["model"])
  return flops.flops_per_seq(model, data["max_seq_length"], data["max_predictions_per_seq"])


@pytest.mark.slow
def test_demo_runs_and_logs(uninterrupted):
  records = _metrics(uninterrupted)
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  assert [r["step"] for r in train] == [10, 20, 30, 40]
  assert [r["step"] for r in evals] == [20, 40]
  for r in train:
    assert {"loss", "mlm_accuracy", "learning_rate", "seq_per_s", "mfu"} <= r.keys()
    assert r["mfu"] > 0
  for r in evals:  # the held-out accuracy beside its most-frequent-token baseline
    assert 0 < r["mlm_baseline_accuracy"] < 1 and 0 <= r["mlm_accuracy"] <= 1
  assert not any(k.startswith("nsp") for r in records for k in r)  # the demo is MLM alone
  # Both from one timing: mfu / seq_per_s is the model's FLOPs per row over the peak that
  # the run printed (on CPU a matmul it timed, so other tests on the cores can push mfu
  # past 1; the ratio holds regardless).
  with open(uninterrupted + ".stdout") as f:
    (peak,) = re.findall(
      r"mfu is of a peak of ([0-9.e+]+) FLOP/s \(a 1024\^3 float32 matmul", f.read()
    )
  per_row = [r["mfu"] / r["seq_per_s"] for r in train]
  expected = _model_flops_per_row(uninterrupted) / float(peak)
  assert per_row == pytest.approx([expected] * len(per_row), rel=1e-4)
  assert train[-1]["loss"] < train[0]["loss"]
  steps = sorted(
    int(d) for d in os.listdir(os.path.join(uninterrupted, "checkpoints")) if d.isdigit()
  )
  assert steps == [20, 30, 40]  # keep=3, final save included
  assert glob.glob(os.path.join(uninterrupted, "tensorboard", "events.*"))


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path, data_dir, uninterrupted):
  workdir = str(tmp_path / "killed")
  args = ["pretrain", "--workdir", workdir, f"--config.data.prepared_dir={data_dir}"] + FAST
  # The threads loader: no TensorFlow import (a run starts ~4 s sooner). The uninterrupted
  # run reads under tf.data, so the equality below also holds the two loaders to one stream.
  args.append("--config.data.loader=threads")
  # Slow the steps down so that the kill lands between the step-30 and step-40 saves.
  proc = _run_cli(args, env={"BERT_JAX_DEBUG_STEP_SLEEP": "0.15"})
  deadline = time.time() + 600
  while not os.path.isdir(os.path.join(workdir, "checkpoints", "30")):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.isdir(os.path.join(workdir, "checkpoints", "40"))
  resumed = _run_cli(args)
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  assert "resumed from" in out

  def by_step(records):
    return {(r["step"], r["split"]): r for r in records}

  a, b = by_step(_metrics(uninterrupted)), by_step(_metrics(workdir))
  assert a.keys() == b.keys()
  assert a[(40, "train")]["loss"] == b[(40, "train")]["loss"]
  for key in a:  # bit-exact on CPU: the same batches, masks, dropout and optimizer state
    timing = metrics.TIMING_KEYS
    assert {k: v for k, v in a[key].items() if k not in timing} == {
      k: v for k, v in b[key].items() if k not in timing
    }, key


@pytest.mark.slow
def test_fill_mask_json(uninterrupted, capsys):
  assert (
    cli.main(["fill-mask", "--workdir", uninterrupted, "--json", "Return the [MASK] of the list."])
    == 0
  )
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(result) == 5 and {"token", "token_str", "score"} == result[0].keys()
  scores = [r["score"] for r in result]
  assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6


@pytest.mark.slow
def test_fill_mask_pads_to_its_buckets_without_changing_a_score(uninterrupted):
  """Two [MASK]s in a text padded from its length to LENGTH_BUCKET tokens (and its masks to
  MASK_BUCKET): the scores of the model run on the bare row, softmaxed here.
  """
  run = run_lib.load(uninterrupted)
  text = "Return the [MASK] of the [MASK] list."
  result = fill_mask.fill_mask(run.model, run.params, run.tokenizer, text, top_k=3)
  ids = [run.tokenizer.cls_id] + run.tokenizer.encode(text) + [run.tokenizer.sep_id]
  assert len(ids) % fill_mask.LENGTH_BUCKET  # so the row was padded
  positions = [i for i, t in enumerate(ids) if t == run.tokenizer.mask_id]
  row = jnp.asarray([ids])
  logits, _ = run.model.apply(
    {"params": run.params}, row, jnp.zeros_like(row), jnp.ones_like(row), jnp.asarray([positions])
  )
  probs = np.asarray(jax.nn.softmax(logits[0, :, : run.tokenizer.vocab_size], axis=-1))
  assert len(result) == len(positions) == 2
  for predictions, expected in zip(result, probs):
    for p in predictions:
      assert p["score"] == pytest.approx(float(expected[p["token"]]), rel=1e-5, abs=1e-7)
    assert [p["token"] for p in predictions] == list(np.argsort(-expected, kind="stable")[:3])


@pytest.mark.parametrize(
  "path",
  sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not p.endswith(("__init__.py", "distill.py"))  # distill.py: tests/test_distill.py
  ),
)
def test_every_config_loads(path):
  spec = importlib.util.spec_from_file_location("recipe", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  args = {
    "bert_base.py": ("phase1", "phase2"),
    "bert_large.py": ("phase1", "phase2"),
    "modernbert_base.py": ("base", "large,phase2"),
    "demo.py": (None, "modernbert"),
    "electra.py": ("small", "base", "large"),
    "albert.py": ("base", "large", "xlarge", "xxlarge"),
  }.get(os.path.basename(path), (None,))
  for arg in args:
    c = module.get_config() if arg is None else module.get_config(arg)
    init_model = None
    if c.model.size == "checkpoint":  # the architecture of config.init_from (e.g. imported)
      c.init_from = "runs/imported"
      init_model = config_lib.model_dict(config_lib.model_config(config_lib.base_config(), 30522))
    pretrain.validate(c)
    config_lib.model_config(c, c.tokenizer.vocab_size, init_model)
    for key in (
      "seed",
      "model.size",
      "train.steps",
      "train.batch_size",
      "train.learning_rate",
      "train.warmup_steps",
      "checkpoint.every_steps",
      "eval.every_steps",
      "mesh.data",
      "mesh.fsdp",
      "mesh.tensor",
      "data.max_seq_length",
    ):
      node = c
      for part in key.split("."):
        node = node[part]
    assert module.__doc__ and "bert-jax pretrain" in module.__doc__


def _error_line(capsys, args):
  assert cli.main(args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ")
  return err[-1]


def test_unknown_config_key_is_an_error(capsys, tmp_path):
  line = _error_line(capsys, ["pretrain", "--workdir", str(tmp_path), "--config.train.stepz=5"])
  assert "stepz" in line and "steps" in line
  assert not os.listdir(tmp_path)


def test_a_row_too_short_for_any_objective_is_an_error(capsys, tmp_path):
  line = _error_line(
    capsys, ["pretrain", "--workdir", str(tmp_path), "--config.data.max_seq_length=4"]
  )
  assert "config.data.max_seq_length=4 must be at least 5 tokens" in line
  assert not os.listdir(tmp_path)


def test_max_ngram_below_one_is_an_error(capsys, tmp_path):
  line = _error_line(capsys, ["pretrain", "--workdir", str(tmp_path), "--config.data.max_ngram=0"])
  assert "config.data.max_ngram must be at least 1, got 0" in line
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
  "content,expected",
  [(None, "no file"), (b"\n\n", "has no text"), (b"caf\xe9 au lait.\n", "UTF-8")],
)
def test_bad_corpus_is_an_error(capsys, tmp_path, content, expected):
  corpus = tmp_path / "corpus.txt"
  if content is not None:
    corpus.write_bytes(content)
  workdir = tmp_path / "run"
  line = _error_line(
    capsys, ["pretrain", "--workdir", str(workdir), f"--config.data.input={corpus}"]
  )
  assert expected.lower() in line.lower()
  assert not glob.glob(str(workdir / "data" / "manifest.json"))


@pytest.mark.slow
def test_batch_the_mesh_cannot_divide(capsys, tmp_path, data_dir):
  line = _error_line(
    capsys,
    [
      "pretrain",
      "--workdir",
      str(tmp_path),  # 8 fake devices
      f"--config.data.prepared_dir={data_dir}",
      "--config.train.batch_size=12",
    ],
  )
  assert "batch" in line and "8" in line


@pytest.mark.slow
def test_workdir_with_another_model_size(capsys, tmp_path, data_dir, uninterrupted):
  before = _metrics(uninterrupted)
  steps = sorted(os.listdir(os.path.join(uninterrupted, "checkpoints")))
  line = _error_line(
    capsys,
    [
      "pretrain",
      "--workdir",
      uninterrupted,
      f"--config.data.prepared_dir={data_dir}",
      "--config.model.size=mini",
    ]
    + FAST,
  )
  assert "another model" in line and "hidden_size" in line
  assert _metrics(uninterrupted) == before
  assert sorted(os.listdir(os.path.join(uninterrupted, "checkpoints"))) == steps


@pytest.mark.slow
def test_a_run_whose_data_is_gone_resumes_only_with_its_tokenizer(capsys, tmp_path, data_dir):
  """The demo run of `data_dir` without its data/: another tokenizer (here a new vocabulary
  size) is refused before any data is prepared; the command it started with prepares the
  same data again (the tokenizer trains the same) and resumes.
  """
  workdir = tmp_path / "demo"
  shutil.copytree(os.path.dirname(data_dir), workdir, ignore=shutil.ignore_patterns("data"))
  args = ["pretrain", "--workdir", str(workdir), *FAST[1:], "--config.train.warmup_steps=1"]
  line = _error_line(capsys, [*args, "--config.train.steps=3", "--config.tokenizer.vocab_size=700"])
  assert "holds a run trained with another tokenizer, and this command would train" in line
  assert not (workdir / "data").exists()
  proc = _run_cli([*args, "--config.train.steps=3"])
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert "resum" in out + err
  assert sorted(os.listdir(workdir / "checkpoints"))[-1] == "3"


@pytest.mark.parametrize("lanes, batch, read", [(8, 2, 2), (8, 12, 4), (8, 16, 8), (6, 4, 2)])
def test_lanes_that_do_not_divide_a_small_batch_are_lowered(lanes, batch, read):
  config = demo.get_config()
  config.data.lanes, config.train.batch_size = lanes, batch
  lines = []
  out = pretrain.lanes_for_the_batch(config, say=lines.append)
  assert out.data.lanes == read and batch % read == 0 and lanes % read == 0
  assert config.data.lanes == lanes  # the recipe's own config is left as it was
  if read == lanes:
    assert out is config and lines == []
  else:
    assert lines == [
      f"data: config.data.lanes={lanes} does not divide config.train.batch_size={batch}; "
      f"reading {read} lanes"
    ]


def test_help_lists_the_config(capsys):
  assert cli.main(["pretrain", "--help", "--config.train.steps=7"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: bert-jax pretrain") and "\ntrain.steps = 7\n" in out
  assert "\nmesh.rules = (('vocab', 'tensor'), " in out  # Python, as an override takes it


@pytest.mark.slow
def test_fill_mask_errors(capsys, tmp_path, uninterrupted):
  line = _error_line(capsys, ["fill-mask", "--workdir", str(tmp_path), "a [MASK] b"])
  assert "no checkpoints" in line and "bert-jax pretrain" in line
  line = _error_line(capsys, ["fill-mask", "--workdir", uninterrupted, "no mask here"])
  assert "no [MASK]" in line
  # Every text is checked first: nothing is predicted (before, the first text was).
  argv = ["fill-mask", "--workdir", uninterrupted, "a [MASK] b", "no mask", "c [MASK]"]
  assert cli.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == "" and "no [MASK] in 'no mask'" in captured.err


@pytest.mark.slow
def test_init_from_takes_parameters_of_another_run(capsys, tmp_path, data_dir, uninterrupted):
  common = [
    f"--config.data.prepared_dir={data_dir}",
    "--config.train.batch_size=8",
    "--config.train.steps=2",
    "--config.train.warmup_steps=1",
    "--config.train.log_every_steps=1",
    "--config.eval.steps=2",
  ]
  line = _error_line(
    capsys,
    ["pretrain", "--workdir", str(tmp_path / "a"), f"--config.init_from={tmp_path / 'nowhere'}"]
    + common,
  )
  assert f"{tmp_path / 'nowhere'} does not exist; give a run directory" in line
  line = _error_line(
    capsys,
    [
      "pretrain",
      "--workdir",
      str(tmp_path / "b"),
      f"--config.init_from={uninterrupted}",
      "--config.model.size=mini",
    ]
    + common,
  )
  assert "another model" in line and "set config.model.size='checkpoint'" in line
  # Data not prepared yet: a tokenizer would be trained, never init_from's. Said first.
  fresh = f"--config.data.prepared_dir={tmp_path / 'fresh'}"
  argv = ["pretrain", "--workdir", str(tmp_path / "d"), f"--config.init_from={uninterrupted}"]
  line = _error_line(capsys, argv + common[1:] + [fresh])
  assert "was trained with its own tokenizer, and this run would train a new one" in line
  assert not (tmp_path / "d").exists() and not (tmp_path / "fresh").exists()
  assert (
    cli.main(
      ["pretrain", "--workdir", str(tmp_path / "c"), f"--config.init_from={uninterrupted}"] + common
    )
    == 0
  )
  assert f"init_from: parameters of {uninterrupted}/checkpoints step 40" in capsys.readouterr().out
  # Resumed with another init_from, which a resumed run would ignore: one line.
  elsewhere = tmp_path / "elsewhere"
  argv = ["pretrain", "--workdir", str(tmp_path / "c"), f"--config.init_from={elsewhere}"]
  line = _error_line(capsys, argv + common[:2] + ["--config.train.steps=4"] + common[3:])
  assert line == (
    f"error: {tmp_path / 'c'} holds a run started from config.init_from={str(uninterrupted)!r}, "
    f"and resuming it goes on from its own checkpoint: config.init_from={str(elsewhere)!r} "
    f"would be ignored; use a new --workdir to start from it (or resume with the init_from "
    f"the run started with)"
  )
  source_loss = [r for r in _metrics(uninterrupted) if r["split"] == "train"][-1]["loss"]
  first = _metrics(tmp_path / "c")[0]
  assert first["step"] == 1
  # A fresh tiny BERT starts near ln(8192) = 9.0 (the demo is MLM alone); this one where the
  # source ended (one batch of 8 apart, so within a nat).
  assert abs(first["loss"] - source_loss) < 1.0 and first["loss"] < math.log(8192) - 1.0


@pytest.mark.slow
def test_phase2_reads_its_own_shards_and_continues_from_phase1(
  capsys, caplog, tmp_path, data_dir, uninterrupted
):
  """As configs/bert_base.py:phase2, scaled down: longer rows prepared into their own dir
  with phase 1's tokenizer, parameters from phase 1's last checkpoint. Its train and eval
  steps compile while the parameters load, once each (`loop.Job.example_batch`).
  """
  phase2_data = tmp_path / "prepared256"
  args = [
    "--workdir",
    str(tmp_path / "phase2"),
    f"--config.data.prepared_dir={phase2_data}",
    f"--config.tokenizer.path={data_dir}/tokenizer.model",
    f"--config.init_from={uninterrupted}",
    "--config.data.max_seq_length=256",
    "--config.data.max_predictions_per_seq=40",
    "--config.train.batch_size=8",
    "--config.train.steps=2",
    "--config.train.warmup_steps=1",
    "--config.train.log_every_steps=1",
    "--config.eval.steps=1",
  ]
  assert cli.main(["prepare"] + args) == 0
  manifest = json.loads((phase2_data / "manifest.json").read_text())
  phase1 = json.loads(open(os.path.join(data_dir, "manifest.json")).read())
  assert manifest["max_seq_length"] == 256 and phase1["max_seq_length"] == 128
  assert manifest["tokenizer_fingerprint"] == phase1["tokenizer_fingerprint"]
  with compile_threads(caplog) as found:
    assert cli.main(["pretrain"] + args) == 0
  for program in ("train_step", "eval_step", "_all_finite"):
    assert compiled_ahead_once(found, program), (program, found[program])
  out = capsys.readouterr().out
  assert f"init_from: parameters of {uninterrupted}/checkpoints step 40" in out
  assert "is prepared" in out  # pretrain reads the shards prepared above
  first = _metrics(tmp_path / "phase2")[0]
  assert first["loss"] < math.log(8192) - 1.0  # not a fresh model's ln(8192)
  # Shards of another tokenizer are refused.
  from bert_jax.data import tokenizer

  other = str(tmp_path / "other.model")
  words = "river stone light north table garden silver window market forest".split()
  tokenizer.train_sentencepiece(
    (" ".join(words[i:] + words[:i]) for i in range(10)), other, vocab_size=280
  )
  another = [f"--config.tokenizer.path={other}", "--config.tokenizer.vocab_size=280"]
  line = _error_line(capsys, ["pretrain"] + args + another)  # init_from's tokenizer: first
  assert "was trained with its own tokenizer, and this run would use another" in line
  without_init = [a for a in args if not a.startswith("--config.init_from")]
  line = _error_line(capsys, ["pretrain"] + without_init + another)
  assert "tokenizer.sha256" in line and "prepared_dir" in line


@pytest.mark.slow
def test_checkpoint_holds_the_data_position(uninterrupted):

  checkpoints, step = run_lib.open_checkpoints(uninterrupted)
  position = checkpoints.meta(step)["data_position"]
  assert position["step"] == step == 40
  assert position["process_count"] == 1 and position["rows_per_process"] == 8
  assert position["lanes"] == 8 and len(position["epochs"]) == 8


@pytest.mark.slow
def test_the_eval_rows_mask_at_the_eval_rate(data_dir):
  """config.eval.mask_rate masks the held-out rows at its rate whatever the training rate
  (unset: the training rate), so runs that train at 30 % still compare at BERT's 15 %.
  """
  with open(os.path.join(data_dir, "manifest.json")) as f:
    manifest = json.load(f)
  config = demo.get_config()
  config.data.mask_rate, config.data.max_predictions_per_seq = 0.3, 48
  config.train.batch_size, config.eval.steps = 8, 2
  stream = functools.partial(
    pipeline.Stream, data_dir, manifest, batch_size=8, seed=0, max_predictions=48, log=len
  )

  def masked_share(eval_rate):
    config.eval.mask_rate = eval_rate
    batches = pretrain._eval_batches(config, manifest, stream)
    masked = sum(b["masked_lm_weights"].sum() for b in batches)
    return masked / sum((b["attention_mask"] > 0).sum() for b in batches)

  assert masked_share(0.15) == pytest.approx(0.15, abs=0.02)
  assert masked_share(None) == pytest.approx(0.3, abs=0.03)
  assert 0.3 < masked_share(0.5) <= 48 / 120  # capped at max_predictions_per_seq=48 a row
