"""Preemption-safe runs: SIGTERM on two jax.distributed processes and Ctrl-C on one save a
checkpoint at one agreed step, exit 75 and resume to the uninterrupted run's numbers; an
unreadable latest checkpoint is set aside and the run falls back to the one before; a NaN
loss stops the run (not 75) with the last good checkpoint kept; a second run on a workdir
in use is refused; the workdir lock, local and on a GCS emulator.

The runs are a tiny BERT on a few of CPython's doc topics, 8 steps, checkpoints every 3.
In-process runs take one device of the eight (`ONE_DEVICE`); the 2-process runs are
subprocesses of 2 CPU devices each, as in tests/test_pretrain.py.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from bert_jax import checkpoint as ckpt_lib
from bert_jax import cli, errors, storage
from bert_jax import lock as lock_lib
from bert_jax.train import loop
from bert_jax.train import metrics as metrics_lib
from tests.conftest import (
  FAST_COMPILE,
  ONE_DEVICE,
  ROOT,
  TINY_TWO_LANES,
  distributed_processes,
  write_topics_corpus,
)

DATA = TINY_TWO_LANES
RUN = [
  "--config.train.steps=8",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=1",
  "--config.train.log_every_steps=1",
  "--config.checkpoint.every_steps=3",
  "--config.eval.every_steps=8",
  "--config.eval.steps=1",
]
PREEMPTED = re.compile(
  r"(?:preempted at step (\d+) \(SIGTERM\)|interrupted at step (\d+) \(Ctrl-C\)): "
  r"checkpoint saved in "
)


@pytest.fixture(scope="module")
def data_args(tmp_path_factory):
  """The arguments that read the prepared data (made once, in process)."""
  root = tmp_path_factory.mktemp("data")
  write_topics_corpus(root / "corpus", 40)
  args = [f"--config.data.input={root}/corpus/*.txt", *DATA]
  assert cli.main(["prepare", "--workdir", str(root / "prep"), *args]) == 0
  return [*args, f"--config.data.prepared_dir={root}/prep/data"]


def _pretrain(workdir, data_args, *extra):
  return cli.main(["pretrain", "--workdir", str(workdir), *data_args, *RUN, ONE_DEVICE, *extra])


def _records(workdir):
  """metrics.jsonl by (step, split), without the timing."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {
    (r["step"], r["split"]): {k: v for k, v in r.items() if k not in metrics_lib.TIMING_KEYS}
    for r in records
  }


def _steps(workdir, folder="checkpoints"):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, folder)) if n.isdigit())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_args):
  """A workdir of the 8 steps run without a stop (in process, one device)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  assert _pretrain(workdir, data_args) == 0
  assert _steps(workdir) == [3, 6, 8]
  return workdir


def _when_logged(workdir, step, action):
  """Runs `action` in a thread once metrics.jsonl shows `step`."""

  def watch():
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline:
      if os.path.exists(path) and any(s >= step for s, _ in _records(workdir)):
        action()
        return
      time.sleep(0.05)

  thread = threading.Thread(target=watch, daemon=True)
  thread.start()
  return thread


@pytest.mark.slow
def test_ctrl_c_saves_at_the_next_step_exits_75_and_resumes(
  tmp_path, data_args, uninterrupted, capsys, monkeypatch
):
  monkeypatch.setattr(loop, "_STEP_SLEEP", 0.2)
  watcher = _when_logged(tmp_path, 4, lambda: os.kill(os.getpid(), signal.SIGINT))
  assert _pretrain(tmp_path, data_args) == errors.PREEMPTED_EXIT_CODE == 75
  watcher.join()
  err = capsys.readouterr().err.strip().splitlines()
  match = PREEMPTED.match(err[-1])
  assert match and match[2], err[-1]  # Ctrl-C is said so, not called a preemption
  step = int(match[2])
  assert 4 < step < 8 and step in _steps(tmp_path)  # saved at the step it stopped at
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
  monkeypatch.setattr(loop, "_STEP_SLEEP", 0)
  assert _pretrain(tmp_path, data_args) == 0
  out = capsys.readouterr().out
  assert f"resumed from {tmp_path}/checkpoints/{step}" in out
  assert "changed settings" not in out  # the same command
  assert "mesh: {'data': 1, 'fsdp': 1, 'tensor': 1} uses 1 of the 8 devices (set one" in out
  assert "\nmodel: bert L2 H128 A2, " in out  # the family and size trained, in one line
  assert _records(tmp_path) == _records(uninterrupted)  # bit-exact, every logged step
  assert _steps(tmp_path) == _steps(uninterrupted)  # the preemption save made way, not step 3


def test_a_second_ctrl_c_stops_at_once():
  """The second Ctrl-C, while the first one's checkpoint is saved, ends the process by the
  signal itself (a shell's status 130), whatever Python was running: an exception raised in
  the handler could land in a garbage-collection callback, which swallows it.
  """
  code = (
    "import os, signal, time\n"
    "from bert_jax.train import loop\n"
    "with loop._StopSignals(handle_sigterm=True) as stop:\n"
    "  os.kill(os.getpid(), signal.SIGTERM)\n"
    "  print(stop.signal, flush=True)\n"
    "  os.kill(os.getpid(), signal.SIGINT)\n"
    "  time.sleep(30)\n"
    "print('not reached')\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == -signal.SIGINT, proc.stderr
  assert proc.stdout == "SIGTERM\n"
  assert proc.stderr.strip() == (  # before: "to resume", where no checkpoint was saved yet
    "interrupted before the save finished; run the same command again to resume from the "
    "last checkpoint (or to start over, if none was saved yet)"
  )
  with loop._StopSignals(handle_sigterm=True):
    pass
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_second_sigterm_finds_the_run_stopping():
  """Spot shutdowns, SLURM and `run --force` may send SIGTERM twice: the second, after the
  loop has stopped (or after the one outside it), is ignored; before, it raised Terminated
  in the unwinding and printed a traceback after the one line.
  """
  code = (
    "import os, signal, time\n"
    "from bert_jax import cli, errors\n"
    "from bert_jax.train import loop\n"
    "with cli._sigterm_stops():\n"
    "  with loop._StopSignals(handle_sigterm=True) as stop:\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "  os.kill(os.getpid(), signal.SIGTERM)\n"
    "  time.sleep(0.2)\n"
    "  print(stop.signal, flush=True)\n"
    "with cli._sigterm_stops():\n"
    "  try:\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    time.sleep(5)\n"
    "  except errors.Terminated:\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    time.sleep(0.2)\n"
    "    print('terminated once', flush=True)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "with cli._sigterm_stops(to_the_end=True):\n"  # Ctrl-C stops the loop, then SIGTERM
    "  with loop._StopSignals(handle_sigterm=True) as stop:\n"
    "    os.kill(os.getpid(), signal.SIGINT)\n"
    "  os.kill(os.getpid(), signal.SIGTERM)\n"
    "  time.sleep(0.2)\n"
    "  print(stop.signal, flush=True)\n"
    "os.kill(os.getpid(), signal.SIGTERM)\n"  # the teardown: still stopping
    "time.sleep(0.2)\n"
    "print('ended', flush=True)\n"
  )
  proc = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  expected = "SIGTERM\nterminated once\nSIGINT\nended\n"
  assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, "")
  # Outside a command's own process (a notebook, a library, these tests) the handler found
  # is restored.
  with loop._StopSignals(handle_sigterm=True) as stop:
    stop.signal = "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  with cli._sigterm_stops(), loop._StopSignals(handle_sigterm=True) as stop:
    stop.signal = "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_preempted_is_one_line_and_status_75(capsys):
  def preempted():
    raise errors.Preempted(7, "gs://b/run/checkpoints")

  assert cli.report_errors(preempted) == 75
  assert capsys.readouterr().err.strip().splitlines() == [
    "preempted at step 7 (SIGTERM): checkpoint saved in gs://b/run/checkpoints; "
    "run the same command to resume"
  ]


def _two_processes(workdir, data_args, env):
  return distributed_processes(
    ["pretrain", "--workdir", str(workdir), *data_args, *RUN]
    + ["--config.mesh.fsdp=2", "--config.distributed=True"],
    devices=2,
    env={**os.environ, **env},
  )


def _finish(procs, code=0):
  errs = []
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == code, err[-3000:]
    errs.append(err)
  return errs


@pytest.mark.slow
def test_sigterm_on_two_processes_saves_one_agreed_step_and_resumes(tmp_path, data_args):
  workdir = tmp_path / "stopped"
  slow = {"BERT_JAX_DEBUG_STEP_SLEEP": "0.5"}
  procs = _two_processes(workdir, data_args, slow)
  deadline = time.time() + 300
  while not (workdir / "metrics.jsonl").exists() or max(_records(workdir))[0] < 4:
    assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  for p in procs:  # past the step-3 checkpoint, before the step-6 one (if in time)
    p.send_signal(signal.SIGTERM)
  errs = _finish(procs, errors.PREEMPTED_EXIT_CODE)
  steps = {int(PREEMPTED.search(err)[1]) for err in errs}  # SIGTERM: preempted
  assert len(steps) == 1, errs  # both processes name the same step
  (step,) = steps
  assert 4 < step < 8 and step in _steps(workdir)
  _finish(_two_processes(workdir, data_args, {}))
  assert _steps(workdir) == [3, 6, 8]  # a preemption save at 4 or 5 gave way to 8
  # Stopped and resumed on 2 processes == uninterrupted on 1 process of the same mesh.
  _matches_one_process(tmp_path, data_args, _records(workdir))


def _both_fail(tmp_path, args):
  """The last stderr lines of two processes of one run that must both exit 2 within 120 s."""
  procs = _two_processes(tmp_path / "run", args, {})
  try:
    errs = [p.communicate(timeout=120)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [2, 2], [e[-2000:] for e in errs]
  return [e.strip().splitlines()[-1] for e in errs]


@pytest.mark.slow
def test_bad_input_found_by_process_0_stops_every_process_at_once(tmp_path, data_args):
  """Process 0 prepares (checks) the data first; before, process 1 waited at the barrier
  until JAX's shutdown timed out five minutes later and both aborted with stack traces.
  """
  lines = _both_fail(tmp_path, [*data_args, "--config.data.max_seq_length=64"])
  assert "prepared with other settings (max_seq_length: 32" in lines[0]
  assert lines[1] == f"{lines[0]} (on process 0)"


@pytest.mark.slow
def test_bad_input_found_by_process_1_alone_stops_every_process_at_once(tmp_path, data_args):
  """A damaged shard that only process 1's lane reads: process 1 fails while process 0
  goes on to the next collective. Before, process 0 waited there until JAX's shutdown
  barrier aborted both (exit 134) five minutes later; now it prints process 1's line.
  """
  prepared = data_args[-1].split("=", 1)[1]
  damaged = tmp_path / "data"
  shutil.copytree(prepared, damaged)
  shard = damaged / "shards" / "train-00001.array_record"  # lane 1: process 1's
  shard.write_bytes(shard.read_bytes()[:1000])
  lines = _both_fail(tmp_path, [*data_args, f"--config.data.prepared_dir={damaged}"])
  assert lines[1].startswith(f"error: the shard {shard} is damaged"), lines
  assert lines[0] == f"{lines[1]} (on process 1)"


@pytest.mark.slow
def test_lanes_lowered_for_the_batch_on_a_cluster(tmp_path, data_args):
  """Lowering the lanes to divide the batch is said after the cluster is joined: said
  before, its line started JAX's backends and jax.distributed.initialize() then failed.
  """
  (proc,) = distributed_processes(
    ["pretrain", "--workdir", str(tmp_path / "run"), *data_args, *RUN, "--config.data.lanes=8"]
    + ["--config.train.batch_size=12", "--config.train.steps=1", "--config.distributed=True"],
    devices=1,
    env=os.environ,
    count=1,
  )
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "config.data.lanes=8 does not divide config.train.batch_size=12; reading 4" in out


def _matches_one_process(tmp_path, data_args, two):
  """jax.distributed with 2 processes x 2 CPU devices == 1 process x 4 devices (the same
  (data 2, fsdp 2) mesh), to float rounding.
  """
  mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=2"]
  assert _pretrain(tmp_path / "one", data_args, *mesh) == 0
  one = _records(tmp_path / "one")
  assert one.keys() == two.keys()
  for key in one:
    for name in ("loss", "mlm_accuracy", "nsp_accuracy", "mlm_baseline_accuracy"):
      if name in one[key]:
        a, b = one[key][name], two[key][name]
        assert abs(a - b) <= 1e-5 * abs(a) + 1e-6, (key, name, a, b)


@pytest.mark.slow
def test_unreadable_latest_checkpoint_is_set_aside(tmp_path, data_args, uninterrupted, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted, workdir)
  data = workdir / "checkpoints" / "8" / "params" / "ocdbt.process_0" / "d"
  biggest = max(data.iterdir(), key=lambda f: f.stat().st_size)
  os.truncate(biggest, 100)  # a write cut short
  assert _pretrain(workdir, data_args) == 0
  captured = capsys.readouterr()
  lines = [line for line in captured.out.splitlines() if "is unreadable" in line]
  assert len(lines) == 1, captured.out
  assert f"checkpoint {workdir}/checkpoints/8 is unreadable (" in lines[0]
  assert f"moved it to {workdir}/checkpoints_unreadable/8" in lines[0]
  assert "Traceback" not in captured.err and "TensorStore" not in captured.err
  assert f"resumed from {workdir}/checkpoints/6" in captured.out
  assert _steps(workdir) == [3, 6, 8]  # step 8 saved again, in its place
  aside = workdir / "checkpoints_unreadable" / "8" / biggest.relative_to(workdir / "checkpoints/8")
  assert os.path.getsize(aside) == 100  # kept as it was, for a look
  assert _records(workdir) == _records(uninterrupted)


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
  tmp_path, data_args, capsys, monkeypatch
):
  monkeypatch.setattr(loop, "_NAN_AT_STEP", 5)
  status = _pretrain(tmp_path, data_args, "--config.train.log_every_steps=2")
  assert status == 2 and status != errors.PREEMPTED_EXIT_CODE
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: the loss is nan at step 5: stopped without saving it")
  assert f"step 3 in {tmp_path}/checkpoints, is kept" in err[-1]
  assert _steps(tmp_path) == [3]  # not 6, although step 6 was a checkpoint step
  checkpoints = ckpt_lib.Checkpoints(tmp_path / "checkpoints", read_only=True)
  params, _ = checkpoints.restore(3, None)
  import jax

  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert max(s for s, _ in _records(tmp_path)) == 4  # no record of a NaN loss


@pytest.mark.slow
def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path, data_args, capsys):
  first = subprocess.Popen(
    [sys.executable, "-m", "bert_jax", "pretrain", "--workdir", str(tmp_path)] + [*data_args, *RUN],
    cwd=ROOT,
    env={**os.environ, "XLA_FLAGS": FAST_COMPILE, "BERT_JAX_DEBUG_STEP_SLEEP": "5"},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    lock_file = tmp_path / lock_lib.LOCK_FILE
    deadline = time.time() + 300
    while not (lock_file.exists() and lock_file.read_text()):
      assert first.poll() is None, first.communicate()[1][-3000:]
      assert time.time() < deadline
      time.sleep(0.05)
    before = sorted(os.listdir(tmp_path))
    assert _pretrain(tmp_path, data_args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
      f"error: --workdir {tmp_path} is in use by the run of pid {first.pid} on "
      f"{socket.gethostname()} (lock time {_lock_time(lock_file)}); wait for it to finish "
      f"or stop it, or use another --workdir"
    )
    assert sorted(os.listdir(tmp_path)) == before
  finally:
    first.kill()
    first.communicate()


def _lock_time(lock_file):
  held = json.loads(lock_file.read_text())
  return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held["time"]))


# --- the lock and the checkpoint mechanics, local and on the GCS emulator -----------------------


def test_local_lock_refuses_a_second_holder_until_released(tmp_path):
  first = lock_lib.WorkdirLock(str(tmp_path / "run"))
  first.acquire()
  with pytest.raises(errors.UserError, match=f"pid {os.getpid()}"):
    lock_lib.WorkdirLock(str(tmp_path / "run")).acquire()
  first.release()
  second = lock_lib.WorkdirLock(str(tmp_path / "run"))
  second.acquire()
  second.release()


def test_the_lock_is_taken_before_data_is_prepared(tmp_path, capsys):
  corpus, workdir = tmp_path / "corpus", tmp_path / "run"
  write_topics_corpus(corpus, 10)
  holder = lock_lib.WorkdirLock(str(workdir))
  holder.acquire()
  try:
    argv = ["prepare", "--workdir", str(workdir), f"--config.data.input={corpus}/*.txt"]
    assert cli.main([*argv, "--config.tokenizer.vocab_size=300"]) == 2
    assert "is in use by the run of pid" in capsys.readouterr().err
    assert os.listdir(workdir) == [lock_lib.LOCK_FILE]  # no tokenizer, no shards
  finally:
    holder.release()


def test_held_is_reentrant_and_a_failed_body_leaves_no_workdir_it_made(tmp_path):
  new, old = tmp_path / "new", tmp_path / "old"
  old.mkdir()
  for workdir in (new, old):
    with pytest.raises(errors.UserError, match="bad input"):
      with lock_lib.held(str(workdir)):
        with lock_lib.held(str(workdir)):  # the loop inside a command that holds it
          raise errors.UserError("bad input")
  assert not new.exists()
  assert os.listdir(old) == [lock_lib.LOCK_FILE]  # there before: kept
  with lock_lib.held(str(new)):
    (new / "result").write_text("kept")
  assert sorted(os.listdir(new)) == [lock_lib.LOCK_FILE, "result"]
  again = lock_lib.WorkdirLock(str(new))
  again.acquire()  # released
  again.release()
  only_locked = tmp_path / "only_locked"  # `prepare` into another prepared_dir
  with lock_lib.held(str(only_locked), keep_empty=False):
    assert os.listdir(only_locked) == [lock_lib.LOCK_FILE]
  assert not only_locked.exists()


def test_remote_lock_heartbeat_refusal_and_takeover(gcs_bucket):
  workdir = f"{gcs_bucket}/lock-{os.getpid()}-{time.time_ns()}"
  path = storage.join(workdir, lock_lib.LOCK_FILE)
  first = lock_lib.WorkdirLock(workdir, heartbeat_s=0.2)
  first.acquire()
  beat = storage.read_json(path)["time"]
  time.sleep(0.8)
  assert storage.read_json(path)["time"] > beat  # the heartbeat refreshes it
  with pytest.raises(errors.UserError) as refused:
    lock_lib.WorkdirLock(workdir).acquire()
  assert re.fullmatch(  # when a preempted host's lock lapses (it cannot be stopped)
    rf"--workdir {workdir} is in use by the run of pid {os.getpid()} on {socket.gethostname()}; "
    r"wait for it to finish or stop it, or use another --workdir; its heartbeat was [01] s "
    r"ago: if that run is gone \(its host preempted\), the lock lapses 120 s after its "
    r"heartbeat, so run this again in 1[12]\d s",
    str(refused.value),
  ), str(refused.value)
  first.release()
  assert not storage.exists(path)  # a clean exit deletes it

  def held_by(**record):
    storage.write_json(path, {"host": "elsewhere", "pid": 1, "time": time.time(), **record})

  held_by(time=time.time() - 1000)  # a run killed long ago
  taker = lock_lib.WorkdirLock(workdir)
  taker.acquire()
  assert storage.read_json(path)["pid"] == os.getpid()
  taker.release()
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
  )
  held_by(host=socket.gethostname(), pid=int(dead.stdout))  # fresh, but its process is gone
  taker = lock_lib.WorkdirLock(workdir)
  taker.acquire()
  taker.release()
  held_by()  # fresh, another host's
  with pytest.raises(errors.UserError, match="on elsewhere"):
    lock_lib.WorkdirLock(workdir).acquire()


def test_a_remote_lock_of_a_vanished_host_is_waited_out(gcs_bucket, capsys, monkeypatch):
  """BERT_JAX_LOCK_WAIT_S: a recreated slice's run waits for the lock its preempted
  predecessor left (a host that no longer exists) to lapse, then takes it; a lock that does
  not lapse in the wait is refused as without it.
  """
  workdir = f"{gcs_bucket}/wait-{os.getpid()}-{time.time_ns()}"
  path = storage.join(workdir, lock_lib.LOCK_FILE)
  storage.write_json(path, {"host": "gone-w-0", "pid": 7, "time": time.time(), "token": "x"})
  monkeypatch.setenv(lock_lib.WAIT_ENV, "30")
  t = time.monotonic()
  taker = lock_lib.WorkdirLock(workdir, stale_s=1.5, heartbeat_s=0.6)
  taker.acquire()
  assert 1.0 < time.monotonic() - t < 10 and storage.read_json(path)["pid"] == os.getpid()
  taker.release()
  out = capsys.readouterr().out
  assert out.count("waiting up to") == 1 and "pid 7 on gone-w-0" in out
  storage.write_json(path, {"host": "gone-w-0", "pid": 7, "time": time.time(), "token": "x"})
  with pytest.raises(errors.UserError, match="is in use by the run of pid 7 on gone-w-0"):
    lock_lib.WorkdirLock(workdir, wait_s=0.5).acquire()
  monkeypatch.setenv(lock_lib.WAIT_ENV, "soon")
  with pytest.raises(errors.UserError, match="BERT_JAX_LOCK_WAIT_S='soon' is not a number"):
    lock_lib.WorkdirLock(workdir)


def _state(value):
  # Random (incompressible) arrays above Orbax's 1 KiB inline limit: they get data files.
  rng = np.random.default_rng(value)
  params = {
    "w": rng.standard_normal((64, 64), np.float32),
    "b": rng.standard_normal(512, np.float32),
  }
  return types.SimpleNamespace(params=params, opt_state={"m": np.zeros((3,), np.float32)})


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_unreadable_step_is_set_aside_and_can_be_saved_again(where, tmp_path, request):
  root = str(tmp_path) if where == "local" else request.getfixturevalue("gcs_bucket")
  directory = storage.join(root, f"ck-{os.getpid()}-{time.time_ns()}", "checkpoints")
  checkpoints = ckpt_lib.Checkpoints(directory, async_save=False)
  for step in (1, 2):
    checkpoints.save(step, _state(step), {"step": step})
  params_dir = storage.join(directory, "2", "params")
  data = storage.glob(storage.join(params_dir, "ocdbt.process_0", "d", "*"))
  assert data
  for p in data:
    storage.write_bytes(p, b"")  # cut short
  checkpoints.close()
  checkpoints = ckpt_lib.Checkpoints(directory, async_save=False)  # a new run
  with pytest.raises(ckpt_lib.Unreadable, match=f"{directory}/2 is unreadable"):
    checkpoints.restore(2, None)
  moved = checkpoints.set_aside(2)
  assert moved == storage.join(f"{directory}_unreadable", "2")
  assert storage.exists(storage.join(moved, "params"))
  assert checkpoints.all_steps() == [1] and checkpoints.latest_step() == 1
  np.testing.assert_array_equal(checkpoints.restore(1, None)[0]["w"], _state(1).params["w"])
  checkpoints.save(2, _state(5), {"step": 2})  # the step, saved again in its place
  np.testing.assert_array_equal(checkpoints.restore(2, None)[0]["b"], _state(5).params["b"])
  checkpoints.close()


def test_the_best_params_of_a_step_trained_again_replace_its_old_ones(tmp_path):
  """A run resumed from step 18 (step 24 unreadable) trains step 24 again, whose eval may be
  the best again: best/24 is replaced (before, Orbax's StepAlreadyExistsError, a traceback).
  """
  best = ckpt_lib.Checkpoints(str(tmp_path / "best"), keep=1, async_save=False)
  best.save_params(24, _state(1).params, {"step": 24})
  best.save_params(24, _state(2).params, {"step": 24, "again": True})
  assert best.all_steps() == [24] and best.meta(24)["again"]
  np.testing.assert_array_equal(best.restore(24, None)[0]["w"], _state(2).params["w"])
  best.close()


def test_an_unreadable_best_checkpoint_is_set_aside_when_a_run_resumes(tmp_path, capsys):
  """Before, a damaged best/ stopped the resume with "choose another step", which finetune
  has no flag for.
  """
  best = ckpt_lib.Checkpoints(str(tmp_path / "best"), keep=1, async_save=False)
  values = {"accuracy": 0.5, "loss": 1.0}
  best.save_params(18, _state(1).params, {"best": {"value": 0.5, "metrics": values}})
  best.close()
  os.remove(tmp_path / "best" / "18" / "meta" / "metadata")
  tracker = loop._Best(str(tmp_path), "accuracy")
  assert tracker.step is None and tracker.value is None
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith(f"the best eval's checkpoint {tmp_path}/best/18 is unreadable (")
  assert line.endswith(
    f"moved it to {tmp_path}/best_unreadable/18: the next eval starts best/ again"
  )
  tracker.update(20, _state(2).params, {"accuracy": 0.25, "loss": 2.0}, {})  # the best now
  tracker.close()
  assert ckpt_lib.Checkpoints(str(tmp_path / "best")).all_steps() == [20]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_an_uncommitted_save_is_not_resumed(where, tmp_path, request):
  """What kill -9 during a save leaves is not a step: locally Orbax's temporary folder, on
  GCS a step folder without its commit_success.txt. Saving that step again works.
  """
  root = str(tmp_path) if where == "local" else request.getfixturevalue("gcs_bucket")
  directory = storage.join(root, f"ck-{os.getpid()}-{time.time_ns()}", "checkpoints")
  checkpoints = ckpt_lib.Checkpoints(directory, async_save=False)
  checkpoints.save(1, _state(1), {"step": 1})
  checkpoints.save(2, _state(2), {"step": 2})
  checkpoints.close()
  if where == "local":
    os.rename(f"{directory}/2", f"{directory}/2.orbax-checkpoint-tmp-1234")
  else:
    storage.remove(storage.join(directory, "2", "commit_success.txt"))
    storage.invalidate_cache(directory)
  reopened = ckpt_lib.Checkpoints(directory, async_save=False)
  assert reopened.latest_step() == 1
  reopened.save(2, _state(3), {"step": 2})
  np.testing.assert_array_equal(reopened.restore(2, None)[0]["w"], _state(3).params["w"])
  reopened.close()
