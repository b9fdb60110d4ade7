"""launch/: the Cloud TPU launcher against a fake `gcloud`, the SLURM script under a fake
`srun` / `scontrol` (tests/fake_cloud/, first on PATH, recording every call).

The fake TPU workers are local processes (CPU JAX, jax.distributed over localhost) and the
workdir is a local path all of them see. The slow tests' run is a tiny BERT on a few of
CPython's doc topics, 20 steps with checkpoints every 10. The final numbers are checked
against an uninterrupted 2-process run of the same command. Every run shares one JAX
compilation cache, so only the first compiles. The fast tests of the launcher's own logic
run tests/fake_cloud/fake_pretrain on the workers instead (`--python`): it trains nothing,
notes each start in its workdir and exits as its FAKE_RUN_* variables say. Without
`--python` the workers install with tests/fake_cloud/uv, which makes ~/venv/bin/python
fake_pretrain (and can fail the install).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bert_jax import cli
from bert_jax.train import metrics as metrics_lib
from tests.conftest import (
  ROOT,
  TINY_TWO_LANES,
  distributed_processes,
  free_port,
  write_topics_corpus,
  xla_flags,
)

TPU = os.path.join(ROOT, "launch", "tpu.py")
FAKE = os.path.join(ROOT, "tests", "fake_cloud")
FAKE_PYTHON = os.path.join(FAKE, "fake_pretrain")


def _python_without_bert_jax():
  """The system's python3 when it lacks JAX (a laptop that only launches), else None."""
  bare = shutil.which("python3", path="/usr/bin:/bin")
  if (
    bare is None or subprocess.run([bare, "-c", "import jax"], capture_output=True).returncode == 0
  ):
    return None
  return bare


# The launcher's Python in the tests of watching, retrying and recreating: one without
# bert_jax, where `run` and `watch` leave the recipe check to the workers, instead of this
# Python, where each check imports JAX for 1.4 CPU-s (about 50 CPU-s of this file). The tests
# of the check itself, and of the lines a checked start prints, pass `python=sys.executable`.
# Without such a Python the launcher runs on this one, and these tests pass the same.
BARE_PYTHON = _python_without_bert_jax()
RUN = [
  *TINY_TWO_LANES,
  "--config.train.steps=20",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=1",
  "--config.train.log_every_steps=5",
  "--config.checkpoint.every_steps=10",
  "--config.eval.every_steps=20",
  "--config.eval.steps=1",
]
SLICE = ["--name", "bert", "--zone", "us-west4-a"]
V4 = [*SLICE, "--accelerator-type", "v4-16", "--poll", "0.1"]  # two workers
DOWN = "`launch/tpu.py down --name bert --zone us-west4-a` deletes it"
# `gcloud compute tpus queued-resources create`'s flags, from Google's reference
# (cloud.google.com/sdk/gcloud/reference/compute/tpus/queued-resources/create) plus the
# gcloud-wide --project; --best-effort is only in the alpha group.
CREATE_FLAGS = {
  "--accelerator-type", "--async", "--boot-disk", "--data-disk", "--description",
  "--guaranteed", "--internal-ips", "--labels", "--metadata", "--metadata-from-file",
  "--network", "--node-count", "--node-id", "--node-prefix", "--range", "--reserved",
  "--runtime-version", "--scopes", "--service-account", "--shielded-secure-boot", "--spot",
  "--subnetwork", "--tags", "--topology", "--type", "--valid-after-duration",
  "--valid-after-time", "--valid-until-duration", "--valid-until-time", "--zone", "--project",
}  # fmt: skip


@pytest.fixture(scope="module")
def run_args(tmp_path_factory):
  """The pretrain arguments: prepared data (made once, in process) and the short run."""
  root = tmp_path_factory.mktemp("data")
  write_topics_corpus(root / "corpus", 40)
  data = [f"--config.data.input={root}/corpus/*.txt", *RUN[:7]]
  assert cli.main(["prepare", "--workdir", str(root / "prep"), *data]) == 0
  return [
    *RUN,
    f"--config.data.input={root}/corpus/*.txt",
    f"--config.data.prepared_dir={root}/prep/data",
  ]


@pytest.fixture(scope="module")
def base_env(tmp_path_factory):
  """The fakes first on PATH (then this Python's bin, for `python3` and `bert-jax`); the
  runs share the session's JAX compilation cache (conftest).
  """
  return {
    **os.environ,
    "PATH": os.pathsep.join([FAKE, os.path.dirname(sys.executable), os.environ["PATH"]]),
  }


@pytest.fixture
def cloud(tmp_path, base_env):
  """The environment of one fake cloud, its state in a fresh folder."""
  state = tmp_path / "cloud"
  state.mkdir()
  return {**base_env, "FAKE_CLOUD_DIR": str(state)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, run_args, base_env):
  """Metrics of the run without a stop: 2 processes of 1 CPU device, as the fake workers."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  procs = distributed_processes(
    ["pretrain", "--config", "configs/demo.py", "--workdir", str(workdir)]
    + ["--config.distributed=True", *run_args],
    devices=1,
    env=base_env,
    stdout=subprocess.DEVNULL,
  )
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  return _records(workdir)


def _records(workdir):
  """metrics.jsonl by (step, split), without the timing (a resumed run repeats none)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {
    (r["step"], r["split"]): {k: v for k, v in r.items() if k not in metrics_lib.TIMING_KEYS}
    for r in records
  }


def _tpu(env, *args, timeout=600, python=BARE_PYTHON or sys.executable):
  return subprocess.run(
    [python, TPU, *args], env=env, capture_output=True, text=True, timeout=timeout
  )


def _job(workdir, *more):
  """`run` / `watch` flags of a fake_pretrain run in `workdir`."""
  job = ["--config", "configs/demo.py", "--workdir", str(workdir), "--shared-workdir"]
  return [*job, "--python", FAKE_PYTHON, *more]


def _starts(workdir):
  """The fake_pretrain processes started in `workdir` (one line each)."""
  try:
    with open(os.path.join(workdir, "started.jsonl")) as f:
      return len(f.readlines())
  except FileNotFoundError:
    return 0


def _on_workers(env, name):
  """~/bert_jax_run/NAME of each of the slice's two workers (None where it is missing)."""
  found = []
  for i in range(2):
    path = os.path.join(env["FAKE_CLOUD_DIR"], "nodes", "bert", f"worker{i}", "bert_jax_run", name)
    found.append(open(path).read().strip() if os.path.exists(path) else None)
  return found


def _wait_for(check, seconds=30):
  deadline = time.time() + seconds
  while not check():
    assert time.time() < deadline, "timed out waiting"
    time.sleep(0.1)


def _one_error(result, start):
  """The result is one `error:` line starting with `start`, and exit status 2."""
  assert result.returncode == 2, result.stdout + result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stderr.startswith(start), result.stderr
  return result.stderr.strip()


def _calls(env):
  with open(os.path.join(env["FAKE_CLOUD_DIR"], "calls.jsonl")) as f:
    return [json.loads(line) for line in f]


def _cycle(env):
  """The create / delete calls, in order."""
  return [
    c[c.index("queued-resources") + 1]
    for c in _calls(env)
    if "queued-resources" in c and c[c.index("queued-resources") + 1] in ("create", "delete")
  ]


def test_dry_run_of_up_prints_the_documented_create_command(cloud):
  result = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v5litepod-16", "--spot", "--dry-run")
  assert result.returncode == 0, result.stderr
  create, describe = result.stdout.splitlines()[:2]
  words = shlex.split(create)
  assert words[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "bert"]
  options = dict(w.partition("=")[::2] for w in words[6:])
  assert set(options) <= CREATE_FLAGS, set(options) - CREATE_FLAGS
  assert options == {
    "--node-id": "bert",
    "--zone": "us-west4-a",
    "--accelerator-type": "v5litepod-16",
    "--runtime-version": "v2-alpha-tpuv5-lite",
    "--spot": "",
  }
  assert shlex.split(describe)[:6] == [
    "gcloud",
    "compute",
    "tpus",
    "queued-resources",
    "describe",
    "bert",
  ]
  best = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v6e-16", "--best-effort", "--dry-run")
  assert shlex.split(best.stdout)[:2] == ["gcloud", "alpha"] and "--best-effort" in best.stdout
  job = ["--config", "configs/demo.py", "--workdir", "gs://b/run", "--config.train.steps=9"]
  checked = {"python": sys.executable}  # bert_jax checks the recipe: no line about it
  run = _tpu(cloud, "run", *SLICE, *job, "--dry-run", **checked).stdout.splitlines()
  assert [shlex.split(line)[:5] for line in run] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
    ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
  ]
  assert "--worker=all" in run[1] and "--config.train.steps=9" in run[1]
  assert shlex.split(run[0])[5] == "<checkout tarball, packed at run time>"  # no temp path
  assert "/tmp" not in run[0] and "bert_jax_launch_" not in run[0]
  logs = _tpu(cloud, "logs", *SLICE, "--worker", "3", "--dry-run").stdout
  assert "--worker=3" in logs
  watch = _tpu(cloud, "watch", *SLICE, *job, "--accelerator-type", "v4-16", "--dry-run", **checked)
  assert "queued-resources describe bert" in watch.stdout and "tpu-vm ssh" in watch.stdout
  down = _tpu(cloud, "down", *SLICE, "--dry-run").stdout
  assert down.startswith("gcloud compute tpus queued-resources delete bert --zone=us-west4-a")
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))  # ran none


@pytest.mark.parametrize(
  "change, message",
  [
    (["--config.train.stepz=3"], "error: unknown config key 'train.stepz'; did you mean"),
    (["--config", "configs/nope.py"], "error: --config configs/nope.py is not a file of this"),
    (
      ["--config", "configs/finetune/classify_csv.py"],
      "error: configs/finetune/classify_csv.py is a recipe for bert-jax finetune, not pretrain",
    ),
    (["--workdir", "runs/local"], "error: --workdir runs/local is not a bucket: each worker"),
    (  # the recipe's own local paths, as bert-jax resolves them: each worker's own copy
      ["--config", "configs/bert_base.py:phase1"],
      "error: config.data.input=data/corpus/*.txt and config.data.prepared_dir="
      "data/prepared128 are local: each worker would prepare its own copy",
    ),
    (
      ["--config.data.input=gs://b/corpus/*.txt,more/*.txt"],
      "error: config.data.input=gs://b/corpus/*.txt,more/*.txt is local: each worker",
    ),
    (["--config.data.prepared_dir=/mnt/prep"], "error: config.data.prepared_dir=/mnt/prep is"),
    (  # phase 2 reads phase 1's tokenizer and run from the recipe's local paths
      ["--config", "configs/bert_base.py:phase2", "--config.data.input=gs://b/corpus/*.txt"],
      "error: config.tokenizer.path=data/prepared128/tokenizer.model and config.init_from="
      "runs/base128 are local, and no worker has it",
    ),
    (["--env", "NOEQUALS"], "error: --env 'NOEQUALS' is not KEY=VALUE"),
    (  # before: refused only on the workers, the slice paid for
      ["--config.train.batch_size=7"],
      "error: on the 8 chips of v4-16: the micro-batch of 7 sequences (config.train.batch_size=7",
    ),
  ],
)
def test_run_and_watch_refuse_bad_input_before_any_gcloud_call(cloud, change, message):
  job = ["--config", "configs/demo.py", "--workdir", "gs://b/run", *change]
  for command in ("run", "watch") if "--env" in change else ("run",):  # one check for both
    result = _tpu(
      cloud, command, *SLICE, "--accelerator-type", "v4-16", *job, python=sys.executable
    )
    _one_error(result, message)
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))


def test_data_in_the_bucket_or_on_a_shared_path_is_accepted(cloud):
  """Before: a recipe's local corpus and prepared_dir went to every worker unchecked."""
  bucket = ["--config.data.input=gs://b/corpus/*.txt", "--config.data.prepared_dir=gs://b/p"]
  phase1 = ["--config", "configs/bert_base.py:phase1", "--workdir", "gs://b/run"]
  demo = ["--config", "configs/demo.py", "--workdir", "gs://b/run"]
  phase2 = ["--config", "configs/bert_base.py:phase2", "--workdir", "gs://b/run512"]
  phase1_run = ["--config.init_from=gs://b/run", "--config.tokenizer.path=gs://b/p/tokenizer.model"]
  for job in (
    [*phase1, *bucket],
    [*phase2, *bucket, *phase1_run],
    [*demo, "--config.data.input=tfds:wikipedia/20230601.en"],  # prepared_dir: WORKDIR/data
    ["--config", "configs/bert_base.py:phase1", "--workdir", "/mnt/run", "--shared-workdir"],
  ):
    result = _tpu(
      cloud, "run", *SLICE, "--accelerator-type", "v4-16", *job, "--dry-run", python=sys.executable
    )
    assert result.returncode == 0, (job, result.stderr)
  # Without bert_jax here (a Python that lacks it), only the overrides can be checked.
  if BARE_PYTHON is None:
    return
  line = _tpu(cloud, "run", *SLICE, *demo, "--config.data.prepared_dir=prep", "--dry-run")
  _one_error(line, "error: config.data.prepared_dir=prep is local: each worker would prepare")


def test_bad_numbers_are_refused_before_any_gcloud_call(cloud):
  """Before: --poll -1 raised a traceback once the slice was created; --retries -1 went."""
  job = ["--config", "configs/demo.py", "--workdir", "gs://b/run"]
  for command, flags, message in [
    ("up", ["--poll", "-1"], "error: --poll -1 must be above 0 seconds"),
    ("up", ["--poll", "0"], "error: --poll 0 must be above 0 seconds"),
    ("down", ["--poll", "nan"], "error: --poll nan must be above 0 seconds"),
    ("watch", ["--retries", "-1", *job], "error: --retries -1 must be 0 or more"),
    ("watch", ["--missed-polls", "0", *job], "error: --missed-polls 0 must be 1 or more"),
  ]:
    result = _tpu(cloud, command, *SLICE, "--accelerator-type", "v4-16", *flags, timeout=30)
    _one_error(result, message)
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))


def test_a_recipe_outside_the_checkout_or_ignored_by_git_is_refused(tmp_path, cloud):
  outside = tmp_path / "recipe.py"
  shutil.copy(os.path.join(ROOT, "configs", "demo.py"), outside)
  ignored = os.path.join(ROOT, ".pytest_cache", f"launch_recipe_{os.getpid()}.py")
  shutil.copy(outside, ignored)
  try:
    for recipe, message in [
      (str(outside), f"error: --config {outside} is outside this checkout, and the workers"),
      (os.path.relpath(outside, ROOT), "error: --config ../"),
      (os.path.relpath(ignored, ROOT), "error: --config .pytest_cache/launch_recipe_"),
    ]:
      job = ["--config", recipe, "--workdir", "gs://b/run"]
      line = _one_error(_tpu(cloud, "run", *SLICE, *job), message)
      assert "outside this checkout" in line or "is ignored by git, so it is not shipped" in line
  finally:
    os.remove(ignored)
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))


def test_up_prints_each_state_and_errors_are_one_line(cloud):
  result = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-16", "--poll", "0.01")
  assert result.returncode == 0, result.stderr
  states = [line.split()[1] for line in result.stdout.splitlines()]
  assert states == ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
  again = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-16")
  assert again.returncode == 0, again.stderr
  assert again.stdout == "bert: ACTIVE already: nothing to create\n"
  unknown = _tpu(cloud, "up", "--name", "x", "--zone", "z", "--accelerator-type", "v5e-16")
  _one_error(unknown, "error: unknown --accelerator-type 'v5e-16': use a name like")
  quota = ["up", "--name", "q", "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16"]
  line = _one_error(
    _tpu({**cloud, "FAKE_TPU_CREATE_ERROR": "quota"}, *quota),
    "error: no quota for v5litepod-16 in us-west4-a (ERROR:",
  )
  assert line.endswith("or try --spot or another --zone")
  spot = _tpu({**cloud, "FAKE_TPU_CREATE_ERROR": "quota"}, *quota, "--spot")
  assert _one_error(spot, "error: no quota").endswith("Cloud TPU API), or try another --zone")
  denied = _tpu({**cloud, "FAKE_TPU_CREATE_ERROR": "denied"}, *quota)  # details follow ERROR:
  assert _one_error(denied, "error: creating the queued resource q failed: ").endswith(
    "failed: ERROR: (gcloud) PERMISSION_DENIED: Permission 'tpu.queuedResources.create' "
    "denied on resource"
  )
  assert _tpu(cloud, "down", *SLICE, "--poll", "0.01").returncode == 0
  assert _cycle(cloud) == ["create", "create", "create", "create", "delete"]
  calls = len(_calls(cloud))
  for name in ("Bert", "bert_1", "1bert", "bert-", "b" * 64):
    bad = _tpu(cloud, "up", "--name", name, "--zone", "z", "--accelerator-type", "v4-16")
    _one_error(bad, f"error: --name {name!r} is not a valid slice name: lowercase letters")
  assert len(_calls(cloud)) == calls  # refused before any call
  assert _tpu(cloud, "down", "--name", "b" * 63, "--zone", "z", "--dry-run").returncode == 0


@pytest.mark.slow  # up, watch and run end to end on the fake cloud
def test_a_slice_of_another_accelerator_type_is_refused_before_anything_starts(tmp_path, cloud):
  assert _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-8", "--poll", "0.01").returncode == 0
  other = [*SLICE, "--accelerator-type", "v4-32", "--poll", "0.01"]
  refused = (
    "error: the queued resource bert is v4-8, not --accelerator-type v4-32: "
    "`launch/tpu.py down --name bert --zone us-west4-a` it first, or use another --name\n"
  )
  job, calls = _job(tmp_path / "w"), len(_calls(cloud))
  for command in (["up"], ["watch", *job, "--autodelete"], ["run", *job]):
    result = _tpu(cloud, *command[:1], *other, *command[1:], python=sys.executable)
    assert (result.returncode, result.stderr, result.stdout) == (2, refused, ""), command
  # One describe each (state and type at once); nothing created, shipped, started or deleted.
  assert [c[2:4] for c in _calls(cloud)[calls:]] == [["queued-resources", "describe"]] * 3
  assert _cycle(cloud) == ["create"] and _starts(tmp_path / "w") == 0
  same = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-8")
  assert same.stdout == "bert: ACTIVE already: nothing to create\n", same.stderr
  # A type gcloud does not say (a node asked for by topology) is no reason to refuse.
  path = os.path.join(cloud["FAKE_CLOUD_DIR"], "qr", "bert.json")
  with open(path) as f:
    qr = json.load(f)
  with open(path, "w") as f:
    json.dump({**qr, "accelerator": None}, f)
  assert _tpu(cloud, "up", *other).stdout == "bert: ACTIVE already: nothing to create\n"
  # `run` without --accelerator-type (optional there) checks none: it starts the run.
  calls = len(_calls(cloud))
  assert _tpu(cloud, "run", *SLICE, *job).returncode == 0
  assert ["queued-resources", "describe"] not in [c[2:4] for c in _calls(cloud)[calls:]]
  _wait_for(lambda: _starts(tmp_path / "w") == 1)  # v4-8: one worker


def _unstamped(stdout):
  """A watch's stdout lines without their date and time, which each `bert:` line has (a
  watch's log spans days).
  """
  stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?=bert: )")
  lines = stdout.splitlines()
  assert all(stamp.match(line) for line in lines if "bert: " in line and not line.startswith("  "))
  return [stamp.sub("", line, count=1) for line in lines]


@pytest.mark.slow
def test_watch_starts_the_job_it_is_given_not_an_earlier_one(tmp_path, cloud):
  assert _tpu(cloud, "up", *V4).returncode == 0
  assert _tpu(cloud, "run", *V4, *_job(tmp_path / "w1")).returncode == 0
  _wait_for(lambda: None not in _on_workers(cloud, "status"))  # w1's run ended, status 0
  slow = {**cloud, "FAKE_RUN_SECONDS": "1.5"}
  watched = _tpu(slow, "watch", *V4, *_job(tmp_path / "w2"), timeout=120, python=sys.executable)
  assert watched.returncode == 0, watched.stdout + watched.stderr
  assert _starts(tmp_path / "w2") == 2  # the job asked for, on both workers
  lines = _unstamped(watched.stdout)
  assert lines[:2] == ["bert: ACTIVE", "bert: started on every worker; logs in ~/bert_jax_run/log"]
  progress = [line for line in lines if line.startswith("bert: worker 0: step ")]
  assert progress and len(set(progress)) == len(progress), lines  # printed when it changes
  assert lines[-2:] == [
    "bert: the run finished (status 0 on every worker)",
    f"bert: the slice is still up, and billed: {DOWN}",
  ]
  again = _tpu(cloud, "watch", *V4, *_job(tmp_path / "w2"))  # its own ended run: reported
  assert again.returncode == 0 and "the run finished" in again.stdout, again.stderr
  assert _starts(tmp_path / "w2") == 2
  failing = {**cloud, "FAKE_RUN_STATUS": "2", "FAKE_RUN_ERROR": "lanes=1 is bad"}
  assert _tpu(failing, "run", *V4, *_job(tmp_path / "w3")).returncode == 0
  _wait_for(lambda: _on_workers(cloud, "status") == ["2", "2"])
  failed = _tpu(cloud, "watch", *V4, *_job(tmp_path / "w3"))  # the same job's failure
  line = _one_error(failed, "error: the run failed on a worker with exit status 2 (not ")
  assert line.endswith(
    "error: lanes=1 is bad; `launch/tpu.py logs --name bert --zone us-west4-a --no-follow` "
    "shows the whole log"
  )
  assert _starts(tmp_path / "w3") == 2  # not started again
  assert _tpu(cloud, "logs", *V4, "--worker", "1", "--no-follow").stdout.endswith(
    "error: lanes=1 is bad\n"
  )
  no_worker = _tpu(cloud, "logs", *V4, "--worker", "2")
  _one_error(no_worker, "error: --worker 2: bert has 2 workers, 0 to 1")
  assert _cycle(cloud) == ["create"]


@pytest.mark.slow
def test_a_live_run_is_refused_unless_forced(tmp_path, cloud):
  long = {**cloud, "FAKE_RUN_SECONDS": "60"}
  assert _tpu(cloud, "up", *V4).returncode == 0
  assert _tpu(long, "run", *V4, *_job(tmp_path / "w1")).returncode == 0
  _wait_for(lambda: _starts(tmp_path / "w1") == 2)
  pids = _on_workers(cloud, "pid")
  busy = "is still alive on bert: wait for it to end, or `launch/tpu.py run --name bert"
  _one_error(_tpu(cloud, "run", *V4, *_job(tmp_path / "w2")), f"error: a run {busy}")
  watched = _tpu(cloud, "watch", *V4, *_job(tmp_path / "w2"), "--autodelete")
  _one_error(watched, f"error: another job's run {busy}")
  assert "deleted" not in watched.stdout  # not the watch's slice to delete
  assert _on_workers(cloud, "pid") == pids and _on_workers(cloud, "status") == [None, None]
  assert _starts(tmp_path / "w2") == 0
  forced = _tpu(cloud, "run", *V4, *_job(tmp_path / "w2"), "--force", timeout=60)
  assert forced.returncode == 0, forced.stderr
  assert "stopping the run alive on it (--force)" in forced.stdout
  assert len(open(tmp_path / "w1" / "stopped").readlines()) == 2  # SIGTERM: a checkpoint
  _wait_for(lambda: _on_workers(cloud, "status") == ["0", "0"])
  assert _starts(tmp_path / "w2") == 2 and _cycle(cloud) == ["create"]


def test_watch_autodelete_keeps_the_create_error(cloud):
  quota = {**cloud, "FAKE_TPU_CREATE_ERROR": "quota"}
  job = ["--config", "configs/demo.py", "--workdir", "gs://b/x", "--autodelete", "--spot"]
  watched = _tpu(quota, "watch", *SLICE, "--accelerator-type", "v5litepod-4", *job, timeout=60)
  line = _one_error(watched, "error: no quota for v5litepod-4 in us-west4-a (ERROR: (gcloud) ")
  assert line.endswith("or try another --zone")  # not --spot: it was given
  assert _unstamped(watched.stdout)[-1] == "bert: not found: nothing to delete"
  assert _cycle(quota) == ["create"]


def test_a_hanging_describe_times_out_and_is_tried_again(cloud):
  hangs = {**cloud, "FAKE_TPU_DESCRIBE_HANG": "1"}
  up = _tpu(hangs, "up", *V4, "--poll", "0.01", "--timeout", "1", timeout=60)
  assert up.returncode == 0, up.stderr
  assert up.stdout.startswith(
    "bert: `gcloud compute tpus queued-resources describe bert` timed out after 1 s "
    "(trying again in 0.01 s)\nbert: WAITING_FOR_RESOURCES"
  )
  hangs = {**cloud, "FAKE_TPU_DESCRIBE_HANG": "99"}
  down = _tpu(hangs, "down", *SLICE, "--poll", "0.01", "--timeout", "0.5", timeout=60)
  assert _one_error(down, "error: `gcloud compute tpus queued-resources describe bert` timed ")
  assert down.stderr.endswith("timed out after 0.5 s (tried 4 times)\n")
  waits = re.findall(r"timed out after 0\.5 s \(trying again in ([\d.]+) s\)", down.stdout)
  assert waits == ["0.01", "0.02", "0.04"], down.stdout  # longer each time
  assert _cycle(cloud) == ["create"]  # nothing deleted


def _uv_calls(env):
  """The fake uv's calls on the workers, without the workers' homes."""
  homes = os.path.join(env["FAKE_CLOUD_DIR"], "nodes", "bert")
  return [
    [re.sub(rf"^{re.escape(homes)}/worker\d", "~", word) for word in c[1:]]
    for c in _calls(env)
    if c[0] == "uv"
  ]


def test_the_install_makes_a_venv_of_python_3_11_with_uv_and_fails_once(tmp_path, cloud):
  """Before: `python3 -m venv`, which the TPU VM images' Python 3.10 cannot use for
  bert_jax (it needs 3.11), and a failed install was tried 4 times.
  """
  offline = {**cloud, "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}  # no real install, ever
  assert _tpu(offline, "up", *V4).returncode == 0
  job = ["--config", "configs/demo.py", "--shared-workdir"]  # no --python: installed
  ran = _tpu(offline, "run", *V4, *job, "--workdir", str(tmp_path / "w1"), timeout=60)
  assert ran.returncode == 0, ran.stdout + ran.stderr
  _wait_for(lambda: _on_workers(cloud, "status") == ["0", "0"])
  pip = ["pip", "install", "-q", "--python", "~/venv/bin/python", "./bert_jax[tpu]"]
  venv = ["venv", "-q", "--python", ">=3.11", "~/venv"]
  assert sorted(_uv_calls(cloud)) == [pip, pip, venv, venv]  # on each worker
  assert _starts(tmp_path / "w1") == 2  # ~/venv/bin/python ran the job
  failing = {**offline, "FAKE_UV_FAIL": "no wheel of jax[tpu] for this platform"}
  failed = _tpu(failing, "run", *V4, *job, "--workdir", str(tmp_path / "w2"), timeout=60)
  line = _one_error(failed, "error: installing bert_jax[tpu] on the workers failed (exit ")
  assert line.startswith(
    "error: installing bert_jax[tpu] on the workers failed (exit status 4, not retried): "
    "Resolved 60 packages / x Failed to build the wheel / error: no wheel of jax[tpu] for "
    "this platform; `launch/tpu.py logs --name bert --zone us-west4-a --no-follow` shows"
  )
  assert "trying again" not in failed.stdout
  starts = [c for c in _calls(cloud) if "ssh" in c and any("tar -xzf" in w for w in c)]
  assert len(starts) == 2  # one each: the failed install was not tried again
  logged = _tpu(cloud, "logs", *V4, "--no-follow").stdout  # the install's output
  assert logged.endswith("error: no wheel of jax[tpu] for this platform\n"), logged
  assert _starts(tmp_path / "w2") == 0


def _lock_waits(workdir):
  """BERT_JAX_LOCK_WAIT_S of each fake_pretrain run in `workdir`."""
  with open(os.path.join(workdir, "env.jsonl")) as f:
    return [json.loads(line).get("BERT_JAX_LOCK_WAIT_S") for line in f]


def test_the_run_waits_out_a_stale_lock_unless_env_says_otherwise(tmp_path, cloud):
  """Before: a recreated slice's run found the deleted slice's lock and failed at once."""
  env = {k: v for k, v in cloud.items() if k != "BERT_JAX_LOCK_WAIT_S"}
  assert _tpu(env, "up", *V4).returncode == 0
  assert _tpu(env, "run", *V4, *_job(tmp_path / "w1")).returncode == 0
  _wait_for(lambda: _on_workers(env, "status") == ["0", "0"])
  assert _lock_waits(tmp_path / "w1") == ["300", "300"]
  given = _job(tmp_path / "w2", "--env", "BERT_JAX_LOCK_WAIT_S=5")
  assert _tpu(env, "run", *V4, *given).returncode == 0
  _wait_for(lambda: _starts(tmp_path / "w2") == 2)
  assert _lock_waits(tmp_path / "w2") == ["5", "5"]


def _watch_to_the_end(tmp_path, cloud, event, **more):
  """(env, result) of a `watch --autodelete` of a long run whose slice the fake cloud
  `event`s (PREEMPT, SUSPEND) once its run has begun; the watch must end with status 0.
  """
  workdir = tmp_path / "w1"
  env = {
    **cloud,
    f"FAKE_TPU_{event}_AFTER": str(workdir / "marked"),
    "FAKE_RUN_SECONDS": "30",
    "FAKE_RUN_MARK_AFTER": "0.3",
    **more,
  }
  watched = _tpu(env, "watch", *V4, "--spot", *_job(workdir), "--autodelete", timeout=60)
  assert watched.returncode == 0, watched.stdout + watched.stderr
  return env, watched


@pytest.mark.slow  # waits out the launcher's time limits
def test_a_suspending_slice_is_left_to_save_its_checkpoint_before_it_is_recreated(tmp_path, cloud):
  """Before: SUSPENDING was deleted at once, its workers killed in their checkpoint save."""
  # FAKE_RUN_SAVE_SECONDS: what the checkpoint takes after SIGTERM.
  env, watched = _watch_to_the_end(tmp_path, cloud, "SUSPEND", FAKE_RUN_SAVE_SECONDS="1.5")
  workdir = tmp_path / "w1"
  lines = _unstamped(watched.stdout)
  assert lines.count("bert: SUSPENDING") == 1, lines  # said once, however long it lasts
  waiting = lines.index("bert: SUSPENDING") + 1
  assert lines[waiting : waiting + 3] == [
    "bert: waiting up to 300 s for the workers to save a checkpoint before recreating it",
    "bert: SUSPENDED",
    "bert: the slice is SUSPENDED: recreating it (retry 1 of 5)",
  ]
  assert len(open(workdir / "stopped").readlines()) == 2  # both saved, then exited 75
  assert _cycle(env) == ["create", "delete", "create", "delete"]


@pytest.mark.slow  # waits out the launcher's time limits
def test_a_delete_stuck_in_deleting_is_given_up_on_in_one_line(tmp_path, cloud):
  """Before: `down` and a watch's recreation waited for it forever, saying nothing."""
  stuck = {**cloud, "FAKE_TPU_DELETE_STUCK": "1", "FAKE_RUN_STATUS": "75"}
  quick = [*V4, "--timeout", "0.3"]  # gives up 15 x 0.3 s after the delete
  watched = _tpu(stuck, "watch", *quick, *_job(tmp_path / "w1"), "--autodelete", timeout=30)
  message = (
    "error: the queued resource bert is still DELETING 4.5 s after its delete was asked for: "
    "check it in the Cloud console (Compute Engine > TPUs), or `launch/tpu.py down --name "
    "bert --zone us-west4-a` again"
  )
  assert _one_error(watched, "error: ") == message
  lines = _unstamped(watched.stdout)
  assert lines[-2:] == [
    "bert: a worker was preempted (status 75): recreating it (retry 1 of 5)",
    "bert: DELETING (0 s)",
  ]
  assert _cycle(stuck) == ["create", "delete"]  # not deleted again on the way out
  down = _tpu(stuck, "down", *quick, timeout=30)
  assert _one_error(down, "error: ") == message
  assert down.stdout == "bert: DELETING (0 s)\n"  # each state once
  assert _cycle(stuck) == ["create", "delete", "delete"]


@pytest.mark.slow  # waits out the launcher's time limits
def test_a_watch_that_gives_up_says_last_what_is_left_of_the_slice(tmp_path, cloud):
  """Before: the slice-is-up line came before the error line (the README says last), and
  after --autodelete the error still said to check the slice it had just deleted.
  """
  assert _tpu(cloud, "up", *V4).returncode == 0
  long = {**cloud, "FAKE_RUN_SECONDS": "60"}
  assert _tpu(long, "run", *V4, *_job(tmp_path / "w1")).returncode == 0
  silent = {**cloud, "FAKE_TPU_UNREACHABLE": "1"}
  watch = [sys.executable, TPU, "watch", *V4, "--missed-polls", "2", *_job(tmp_path / "w1")]
  kept = subprocess.run(
    watch, env=silent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
  )
  assert kept.returncode == 2, kept.stdout
  error, last = _unstamped(kept.stdout)[-2:]
  assert error.startswith("error: a worker of bert did not answer 2 status polls in a row (")
  assert error.endswith(
    "check it (`gcloud compute tpus tpu-vm ssh bert --zone=us-west4-a --worker=all`), then "
    "watch again or `down` it"
  )
  assert last == f"bert: the slice is still up, and billed: {DOWN}"
  deleted = _tpu(silent, *watch[2:], "--autodelete", timeout=60)
  line = _one_error(deleted, "error: a worker of bert did not answer 2 status polls in a row")
  assert line.endswith(": --autodelete deletes the slice; watch again to recreate it and resume")
  assert _unstamped(deleted.stdout)[-1] == "bert: deleted"
  assert _cycle(cloud) == ["create", "delete"]


@pytest.mark.slow
def test_a_start_cut_off_is_tried_again_and_starts_once(tmp_path, cloud):
  assert _tpu(cloud, "up", *V4).returncode == 0
  dropped = {**cloud, "FAKE_TPU_SSH_FAIL": "1", "FAKE_TPU_SSH_DROP": "1"}
  dropped["FAKE_TPU_SSH_FAIL_IF"] = "tar -xzf"  # the start: fails, then runs but drops
  watched = _tpu(dropped, "watch", *V4, *_job(tmp_path / "w1"), timeout=60)
  assert watched.returncode == 0, watched.stdout + watched.stderr
  assert watched.stdout.count("ssh: connect to host 10.0.0.2 port 22: Connection timed out") == 2
  assert "the run finished (status 0 on every worker)" in watched.stdout
  assert _starts(tmp_path / "w1") == 2  # once per worker: the third try left them running


@pytest.mark.slow
def test_watch_gives_up_on_a_silent_worker_and_reads_the_others(tmp_path, cloud):
  assert _tpu(cloud, "up", *V4).returncode == 0
  long = {**cloud, "FAKE_RUN_SECONDS": "60"}
  assert _tpu(long, "run", *V4, *_job(tmp_path / "w1")).returncode == 0
  silent = {**cloud, "FAKE_TPU_UNREACHABLE": "1"}
  watch = ["watch", *V4, "--missed-polls", "3"]
  given_up = _tpu(silent, *watch, *_job(tmp_path / "w1"), timeout=60)
  line = _one_error(given_up, "error: a worker of bert did not answer 3 status polls in a row")
  assert "Connection timed out" in line
  assert given_up.stdout.count("did not answer") == 1, given_up.stdout  # said once
  assert _tpu(cloud, "run", *V4, *_job(tmp_path / "w2"), "--force").returncode == 0
  _wait_for(lambda: _on_workers(cloud, "status") == ["0", "0"])
  answered = _tpu(silent, *watch, *_job(tmp_path / "w2"), timeout=60)
  assert answered.returncode == 0, answered.stderr
  assert "bert: the run finished (status 0 on every worker that answered)" in answered.stdout


# The line JAX logged (then aborted, status 134) on process 0 of two when process 1 was
# killed with -9 (jax 0.10, two local processes under jax.distributed).
JAX_ABORT = (
  "F1130 15:39:55.296810   25833 client.h:80] Terminating process because the JAX distributed "
  "service detected fatal errors. This most likely indicates that another task died; see the "
  "other task logs for more details."
)


@pytest.mark.slow
def test_a_run_jax_stopped_for_a_lost_process_is_rerun(tmp_path, cloud):
  """Before: status 134 was the run's own failure, never retried."""
  aborted = {**cloud, "FAKE_RUN_STATUS": "134", "FAKE_RUN_ERROR": JAX_ABORT}
  watched = _tpu(aborted, "watch", *V4, *_job(tmp_path / "w1"), "--retries", "1", timeout=60)
  reason = "a process of the run died, and JAX stopped the others (status 134)"
  _one_error(watched, f"error: {reason} and --retries 1 are used up: not recreating it")
  assert f"bert: {reason}: recreating it (retry 1 of 1)" in _unstamped(watched.stdout)
  assert _cycle(aborted) == ["create", "delete", "create"]


@pytest.mark.slow
def test_a_failure_under_autodelete_prints_the_log_before_deleting(tmp_path, cloud):
  failing = {**cloud, "FAKE_RUN_STATUS": "2", "FAKE_RUN_ERROR": "a non-finite loss"}
  watched = _tpu(failing, "watch", *V4, *_job(tmp_path / "w1"), "--autodelete", timeout=60)
  line = _one_error(watched, "error: the run failed on a worker with exit status 2 (not ")
  assert line.endswith("error: a non-finite loss; its log's last lines are above")
  tail = "\n".join(_unstamped(watched.stdout)).split(
    "bert: the failed worker's last log lines (--autodelete deletes"
  )[1]
  assert tail.splitlines()[1:] == [
    *[f"  step {i}/5" for i in range(1, 6)],
    "  error: a non-finite loss",
    "bert: deleted",
  ]
  assert _cycle(cloud) == ["create", "delete"]


@pytest.mark.slow
def test_a_preempted_slice_is_recreated_with_the_checkout_packed_once(tmp_path, cloud):
  env, watched = _watch_to_the_end(tmp_path, cloud, "PREEMPT")
  workdir = tmp_path / "w1"
  assert "bert: the slice is PREEMPTED: recreating it (retry 1 of 5)" in watched.stdout
  assert _cycle(env) == ["create", "delete", "create", "delete"]
  assert len(open(workdir / "stopped").readlines()) == 2 and _starts(workdir) == 4
  with open(os.path.join(env["FAKE_CLOUD_DIR"], "copied.jsonl")) as f:
    first, second = [json.loads(line) for line in f]
  assert first == second  # the same tarball (path, size, mtime): packed when the watch began


@pytest.mark.slow
def test_ctrl_c_on_watch_says_the_slice_is_still_up(tmp_path, cloud):
  env = {**cloud, "FAKE_RUN_SECONDS": "60"}
  watch = subprocess.Popen(
    [sys.executable, TPU, "watch", *V4, *_job(tmp_path / "w1")],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in watch.stdout:
    if "started on every worker" in line:
      break
  watch.send_signal(signal.SIGINT)
  out, err = watch.communicate(timeout=60)
  assert watch.returncode == 130, err
  assert _unstamped(out)[-1] == f"bert: the slice is still up, and billed: {DOWN}"
  assert _tpu(cloud, "down", *V4).returncode == 0


@pytest.mark.slow
def test_preempted_slice_is_recreated_and_the_run_resumes(tmp_path, cloud, run_args, uninterrupted):
  workdir = tmp_path / "run"
  env = {**cloud, "FAKE_TPU_PREEMPT_AFTER": str(workdir / "checkpoints" / "10")}
  tier = [*SLICE, "--accelerator-type", "v4-16", "--spot", "--poll", "0.2"]
  job = ["--config", "configs/demo.py", "--workdir", str(workdir), "--shared-workdir"]
  job += ["--python", sys.executable, "--env", "BERT_JAX_DEBUG_STEP_SLEEP=0.2", *run_args]
  # No `up` or `run` first: the watch creates the slice (no retry spent) and starts the run.
  watched = _tpu(env, "watch", *tier, *job, "--retries", "2", "--autodelete", python=sys.executable)
  assert watched.returncode == 0, watched.stdout + watched.stderr
  assert _unstamped(watched.stdout)[:2] == ["bert: not found", "bert: creating it"]
  assert "bert: PREEMPTED" in watched.stdout
  assert "recreating it (retry 1 of 2)" in watched.stdout
  assert "the run finished (status 0 on every worker)" in watched.stdout
  assert _cycle(env) == ["create", "delete", "create", "delete"]  # one cycle, a final delete
  logs = sorted(os.listdir(workdir / "checkpoints"))
  assert "20" in logs
  assert _records(workdir) == uninterrupted  # the final loss too, bit for bit


@pytest.mark.slow
def test_a_real_failure_is_not_retried(tmp_path, cloud, run_args):
  tier = [*SLICE, "--accelerator-type", "v4-16", "--poll", "0.2"]
  job = ["--config", "configs/demo.py", "--workdir", str(tmp_path / "run"), "--shared-workdir"]
  # A setting only the workers can refuse (one lane for 2 processes): a recipe's own errors
  # are refused here first.
  job += ["--python", sys.executable, *run_args, "--config.data.lanes=1"]
  assert _tpu(cloud, "up", *tier).returncode == 0
  assert _tpu(cloud, "run", *tier, *job).returncode == 0
  watched = _tpu(cloud, "watch", *tier, *job, "--retries", "3")
  assert watched.returncode == 2
  (line,) = watched.stderr.splitlines()
  assert line.startswith(
    "error: the run failed on a worker with exit status 2 (not retried): error:"
  )
  assert "config.data.lanes=1 must be a multiple of the 2 processes" in line
  assert _cycle(cloud) == ["create"]  # nothing deleted or recreated
  # The watch returns at the first failed worker; worker 1 may still be writing its log.
  deadline = time.time() + 60
  while True:
    lines = _tpu(cloud, "logs", *tier, "--worker", "1", "--no-follow").stdout.splitlines()
    if lines and "data.lanes=1" in lines[-1] or time.time() > deadline:
      break
    time.sleep(0.2)
  assert lines and "data.lanes=1" in lines[-1], lines
  assert _tpu(cloud, "down", *tier).returncode == 0
  assert _cycle(cloud) == ["create", "delete"]


def test_slurm_script_without_its_arguments_or_an_allocation_is_one_line(base_env):
  env = {k: v for k, v in base_env.items() if not k.startswith("SLURM_")}
  script = ["bash", "launch/slurm.sbatch"]
  bare = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True)
  assert bare.returncode == 2 and bare.stderr.startswith("usage: sbatch [--nodes=N] launch/")
  outside = subprocess.run(
    [*script, "configs/demo.py", "/shared/run"], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert outside.returncode == 2
  assert outside.stderr == (
    "error: no SLURM allocation here; submit the script: sbatch launch/slurm.sbatch "
    "configs/demo.py /shared/run\n"
  )


def _slurm(env, *more):
  """The SLURM script in a fake 2-node allocation, with a fake_pretrain run in `more`."""
  allocation = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost"}
  command = ["bash", "launch/slurm.sbatch", "configs/demo.py", *more]
  env = {k: v for k, v in {**allocation, **env}.items() if v is not None}
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_slurm_script_needs_bert_jax_and_its_tasks_in_one_line(tmp_path, cloud):
  bare = {**cloud, "PATH": os.pathsep.join([FAKE, "/usr/bin", "/bin"])}  # no venv
  missing = _slurm(bare, str(tmp_path / "run"))
  _one_error(missing, "error: bert-jax is not on PATH on ")
  assert missing.stderr.strip().endswith(
    ": activate bert_jax's venv before sbatch, or set BERT_JAX_PYTHON=/path/to/venv/bin/python"
  )
  no_tasks = _slurm({**cloud, "SLURM_NTASKS": None}, str(tmp_path / "run"))
  assert no_tasks.stderr == (
    "error: SLURM_NTASKS is not set: give the job its tasks, one per node "
    "(sbatch --nodes=N --ntasks-per-node=1)\n"
  )
  not_python = _slurm({**bare, "BERT_JAX_PYTHON": "/nope/python"}, str(tmp_path / "run"))
  _one_error(not_python, "error: BERT_JAX_PYTHON=/nope/python is not an executable here")
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))  # no srun
  given = _slurm({**bare, "BERT_JAX_PYTHON": FAKE_PYTHON}, str(tmp_path / "run"))
  assert given.returncode == 0, given.stderr
  (srun,) = [c for c in _calls(cloud) if c[0] == "srun"]
  assert srun[srun.index(FAKE_PYTHON) :][:4] == [FAKE_PYTHON, "-m", "bert_jax", "pretrain"]
  assert _starts(tmp_path / "run") == 2  # one task per node


def _sbatch(command, env, timeout=300):
  """The SLURM script run as a job (its own process group); past `timeout` seconds the
  whole job (srun's tasks too, which would be left running) is killed, and the test fails
  with the ends of both tasks' output.
  """
  with subprocess.Popen(
    command,
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  ) as job:
    try:
      out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(job.pid, signal.SIGKILL)
      out, err = job.communicate()
      pytest.fail(f"the job ran past {timeout} s; stdout:\n{out[-3000:]}\nstderr:\n{err[-6000:]}")
  return subprocess.CompletedProcess(command, job.returncode, out, err)


@pytest.mark.slow
def test_slurm_script_requeues_on_sigterm_and_the_next_run_resumes(
  tmp_path, cloud, run_args, uninterrupted
):
  workdir = tmp_path / "run"
  env = {
    **cloud,
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NODELIST": "localhost",
    "COORDINATOR_PORT": str(free_port()),
    "XLA_FLAGS": xla_flags(1),
  }
  command = ["bash", "launch/slurm.sbatch", "configs/demo.py", str(workdir), *run_args]
  first = _sbatch(
    command,
    {
      **env,
      "FAKE_SLURM_SIGNAL_AFTER": str(workdir / "checkpoints" / "10"),
      "BERT_JAX_DEBUG_STEP_SLEEP": "0.2",
    },
  )
  assert first.returncode == 0, first.stderr[-3000:]
  assert "preempted at step" in first.stderr
  assert ["scontrol", "requeue", "4242"] in _calls(env)
  second = _sbatch(command, env)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from" in second.stdout
  assert [c for c in _calls(env) if c[:2] == ["scontrol", "requeue"]] == [
    ["scontrol", "requeue", "4242"]
  ]
  assert _records(workdir) == uninterrupted
