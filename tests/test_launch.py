"""launch/: the Cloud TPU launcher against a fake `gcloud`, the SLURM script under a fake
`srun` / `scontrol` (tests/fake_cloud/, first on PATH, recording every call).

The fake TPU workers are local processes (CPU JAX, jax.distributed over localhost) and the
workdir is a local path all of them see. The run is a tiny BERT on a few of CPython's doc
topics, 20 steps with checkpoints every 10. The final numbers are checked against an
uninterrupted 2-process run of the same command. Every run shares one JAX compilation
cache, so only the first compiles.
"""

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from bert_jax import cli
from bert_jax.train import metrics as metrics_lib
from tests.conftest import (
  FAST_COMPILE,
  ROOT,
  TINY_TWO_LANES,
  distributed_processes,
  free_port,
  write_topics_corpus,
)

TPU = os.path.join(ROOT, "launch", "tpu.py")
FAKE = os.path.join(ROOT, "tests", "fake_cloud")
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


def _tpu(env, *args):
  return subprocess.run(
    [sys.executable, TPU, *args], env=env, capture_output=True, text=True, timeout=600
  )


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
  run = _tpu(cloud, "run", *SLICE, *job, "--dry-run").stdout.splitlines()
  assert [shlex.split(line)[:5] for line in run] == [
    ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
    ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
  ]
  assert "--worker=all" in run[1] and "--config.train.steps=9" in run[1]
  logs = _tpu(cloud, "logs", *SLICE, "--worker", "3", "--dry-run").stdout
  assert "--worker=3" in logs
  watch = _tpu(cloud, "watch", *SLICE, *job, "--accelerator-type", "v4-16", "--dry-run")
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
    (["--env", "NOEQUALS"], "error: --env 'NOEQUALS' is not KEY=VALUE"),
  ],
)
def test_run_and_watch_refuse_bad_input_before_any_gcloud_call(cloud, change, message):
  job = ["--config", "configs/demo.py", "--workdir", "gs://b/run", *change]
  for command in ("run", "watch") if "--env" in change else ("run",):  # one check for both
    result = _tpu(cloud, command, *SLICE, "--accelerator-type", "v4-16", *job)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr
  assert not os.path.exists(os.path.join(cloud["FAKE_CLOUD_DIR"], "calls.jsonl"))


def test_up_prints_each_state_and_errors_are_one_line(cloud):
  result = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-16", "--poll", "0")
  assert result.returncode == 0, result.stderr
  states = [line.split()[1] for line in result.stdout.splitlines()]
  assert states == ["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
  again = _tpu(cloud, "up", *SLICE, "--accelerator-type", "v4-16")
  assert again.returncode == 1
  assert again.stderr.splitlines() == [
    "error: a queued resource bert already exists in us-west4-a: `down` it or use another --name"
  ]
  unknown = _tpu(cloud, "up", "--name", "x", "--zone", "z", "--accelerator-type", "v5e-16")
  assert unknown.returncode == 1 and len(unknown.stderr.splitlines()) == 1
  assert unknown.stderr.startswith("error: unknown --accelerator-type 'v5e-16': use a name like")
  quota = _tpu(
    {**cloud, "FAKE_TPU_CREATE_ERROR": "quota"}, "up", "--name", "q", "--zone", "us-west4-a",
    "--accelerator-type", "v5litepod-16",
  )  # fmt: skip
  assert quota.returncode == 1 and len(quota.stderr.splitlines()) == 1
  assert quota.stderr.startswith("error: no quota for v5litepod-16 in us-west4-a (ERROR:")
  assert _tpu(cloud, "down", *SLICE, "--poll", "0").returncode == 0
  assert _cycle(cloud) == ["create", "create", "create", "delete"]


@pytest.mark.slow
def test_preempted_slice_is_recreated_and_the_run_resumes(tmp_path, cloud, run_args, uninterrupted):
  workdir = tmp_path / "run"
  env = {**cloud, "FAKE_TPU_PREEMPT_AFTER": str(workdir / "checkpoints" / "10")}
  tier = [*SLICE, "--accelerator-type", "v4-16", "--spot", "--poll", "0.2"]
  job = ["--config", "configs/demo.py", "--workdir", str(workdir), "--shared-workdir"]
  job += ["--python", sys.executable, "--env", "BERT_JAX_DEBUG_STEP_SLEEP=0.2", *run_args]
  # No `up` or `run` first: the watch creates the slice (no retry spent) and starts the run.
  watched = _tpu(env, "watch", *tier, *job, "--retries", "2", "--autodelete")
  assert watched.returncode == 0, watched.stdout + watched.stderr
  assert watched.stdout.startswith("bert: not found\nbert: creating it\n")
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
  assert watched.returncode == 1
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
    "XLA_FLAGS": f"{FAST_COMPILE} --xla_force_host_platform_device_count=1",
  }
  command = ["bash", "launch/slurm.sbatch", "configs/demo.py", str(workdir), *run_args]
  first = subprocess.run(
    command,
    cwd=ROOT,
    env={
      **env,
      "FAKE_SLURM_SIGNAL_AFTER": str(workdir / "checkpoints" / "10"),
      "BERT_JAX_DEBUG_STEP_SLEEP": "0.2",
    },
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert first.returncode == 0, first.stderr[-3000:]
  assert "preempted at step" in first.stderr
  assert ["scontrol", "requeue", "4242"] in _calls(env)
  second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from" in second.stdout
  assert [c for c in _calls(env) if c[:2] == ["scontrol", "requeue"]] == [
    ["scontrol", "requeue", "4242"]
  ]
  assert _records(workdir) == uninterrupted
