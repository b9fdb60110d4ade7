#!/usr/bin/env python3
"""Pretrain on a Cloud TPU slice: provision it, run on every worker, follow, babysit, delete.

Standard library plus the `gcloud` CLI (no SDK). From a laptop, in this checkout:

    launch/tpu.py up    --name bert --zone us-west4-a --accelerator-type v5litepod-16 --spot
    launch/tpu.py run   --name bert --zone us-west4-a --config configs/bert_base.py:phase1 \\
                        --workdir gs://BUCKET/runs/base128 [--config.KEY=VALUE ...]
    launch/tpu.py logs  --name bert --zone us-west4-a [--worker 3] [--no-follow]
    launch/tpu.py watch --name bert --zone us-west4-a --accelerator-type v5litepod-16 --spot \\
                        --config configs/bert_base.py:phase1 --workdir gs://BUCKET/runs/base128 \\
                        --retries 10 --autodelete
    launch/tpu.py down  --name bert --zone us-west4-a

`up` creates a queued resource (a queued resource and its node share `--name`) and waits
for ACTIVE, printing each state. `run` ships this checkout (every file git tracks or would
track, uncommitted edits included) to every worker, installs `bert_jax[tpu]` into ~/venv
there (`--python PATH` skips the install and uses that interpreter), and starts
`bert-jax pretrain --config.distributed=True` detached on all workers. Each worker writes
~/bert_jax_run/log and, when the run ends, its exit status to ~/bert_jax_run/status.

`run` and `watch` first check here what would fail only on the workers, after the slice is
paid for: a --workdir that is not a bucket (each worker's disk goes with the slice;
`--shared-workdir` for a path every worker mounts), an --env that is not KEY=VALUE, a
recipe that is not in this checkout, and, when bert_jax is importable here, whatever
`bert-jax pretrain` refuses in the recipe and its overrides (an unknown key, a fine-tuning
recipe, a bad value).

`watch` polls the slice and the workers; a slice that does not exist yet is created and
the run started (that spends no retry). A PREEMPTED, SUSPENDED or FAILED slice, or a
worker that exited with status 75 (the run saved a checkpoint on SIGTERM), is deleted,
created again and rerun, and the run resumes from its workdir: up to `--retries` times.
Status 0 on every worker (given only after the final checkpoint is saved) ends the watch;
any other status is a real failure (bad config, non-finite loss): it prints the worker's
last log line and stops without retrying. `--autodelete` deletes the slice whenever the
watch ends, so nothing is left billing. `--dry-run` on any subcommand prints the gcloud
commands instead of running them (for `watch`: those of a slice not created yet), and no
state. Errors are one `error: ...` line and exit status 1.

`--best-effort` exists only in `gcloud alpha`; the other tiers use the GA command group.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

PREEMPTED_EXIT_CODE = 75  # bert_jax.errors.PREEMPTED_EXIT_CODE (this file needs no bert_jax)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_DIR = "~/bert_jax_run"  # on each worker: log, status, pid
TARBALL = "bert_jax.tar.gz"  # in each worker's home
# Queued-resource states after which the slice is gone (or never came) and is recreated.
LOST = {"PREEMPTED", "SUSPENDING", "SUSPENDED", "FAILED"}
# Accelerator families and the runtime (TPU VM image) each uses by default.
RUNTIMES = {
  "v4": "tpu-ubuntu2204-base",
  "v5litepod": "v2-alpha-tpuv5-lite",
  "v5p": "v2-alpha-tpuv5",
  "v6e": "v2-alpha-tpuv6e",
}
ACCELERATOR = re.compile(r"^(v4|v5litepod|v5p|v6e)-(\d+)$")


class Error(Exception):
  """A failure the user can act on: printed as one `error: ...` line, exit status 1."""


class Cloud:
  """The gcloud commands of one slice; `dry_run` prints them instead of running them."""

  def __init__(self, args):
    self.args = args
    self.dry_run = args.dry_run
    self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

  def gcloud(self, *words, capture=False, check=True):
    """Runs `gcloud WORDS` (or prints it); returns the CompletedProcess (None when dry)."""
    command = ["gcloud", *words]
    if self.dry_run:
      print(shlex.join(command), flush=True)
      return None
    try:
      result = subprocess.run(command, capture_output=capture, text=True)
    except FileNotFoundError:
      raise Error("gcloud is not on PATH: install the Google Cloud CLI") from None
    if check and result.returncode != 0:
      raise Error(f"{shlex.join(command[:5])} ... failed: {_last_line(result.stderr)}")
    return result

  # --- the queued resource ------------------------------------------------------------------

  def create(self):
    a = self.args
    match = ACCELERATOR.match(a.accelerator_type or "")
    if not match:
      raise Error(
        f"unknown --accelerator-type {a.accelerator_type!r}: use a name like v5litepod-16, "
        f"v4-32, v5p-16 or v6e-16 (`gcloud compute tpus accelerator-types list "
        f"--zone={a.zone}` lists the zone's)"
      )
    runtime = a.runtime_version or RUNTIMES[match[1]]
    group = ["alpha"] if a.tier == "best-effort" else []  # --best-effort is alpha-only
    tier = [f"--{a.tier}"] if a.tier else []
    result = self.gcloud(
      *group,
      *("compute", "tpus", "queued-resources", "create", a.name),
      f"--node-id={a.name}",
      f"--zone={a.zone}",
      f"--accelerator-type={a.accelerator_type}",
      f"--runtime-version={runtime}",
      *tier,
      *self.where[1:],
      capture=True,
      check=False,
    )
    if result is None or result.returncode == 0:
      return
    message = _last_line(result.stderr)
    if "quota" in result.stderr.lower():
      raise Error(
        f"no quota for {a.accelerator_type} in {a.zone} ({message}): request quota "
        f"(IAM & Admin > Quotas, Cloud TPU API), or try --spot or another --zone"
      )
    if "ALREADY_EXISTS" in result.stderr or "already exists" in result.stderr:
      raise Error(
        f"a queued resource {a.name} already exists in {a.zone}: `down` it or use another --name"
      )
    if "accelerator" in result.stderr.lower():
      raise Error(f"{a.accelerator_type} is not available in {a.zone}: {message}")
    raise Error(f"creating the queued resource {a.name} failed: {message}")

  def state(self):
    """The queued resource's state (e.g. ACTIVE), or None when it does not exist."""
    result = self.gcloud(
      *("compute", "tpus", "queued-resources", "describe", self.args.name),
      *self.where,
      "--format=value(state.state)",
      capture=True,
      check=False,
    )
    if result is None:
      return None  # dry run: nothing was asked
    if result.returncode != 0:
      if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
        return None
      raise Error(f"describing {self.args.name} failed: {_last_line(result.stderr)}")
    return result.stdout.strip() or "UNKNOWN"

  def wait_active(self):
    """Polls until ACTIVE, printing each state; FAILED (or the resource gone) is an error."""
    if self.dry_run:
      self.state()  # the command it polls with
      return
    start, last = time.time(), None
    while True:
      state = self.state()
      if state != last:
        print(f"{self.args.name}: {state} ({time.time() - start:.0f} s)", flush=True)
        last = state
      if state == "ACTIVE":
        return
      if state is None or state in LOST:
        raise Error(
          f"the queued resource {self.args.name} is {state or 'gone'}: see `gcloud compute tpus "
          f"queued-resources describe {self.args.name} --zone={self.args.zone}`; `down` it "
          f"and try another --zone, tier or --accelerator-type"
        )
      time.sleep(self.args.poll)

  def delete(self, wait=True):
    self.gcloud(
      *("compute", "tpus", "queued-resources", "delete", self.args.name),
      *self.where,
      "--force",  # deletes its node first
      "--async",
      "--quiet",
    )
    if self.dry_run:
      return
    while wait and self.state() is not None:
      time.sleep(self.args.poll)
    print(f"{self.args.name}: deleted", flush=True)

  # --- the workers ----------------------------------------------------------------------------

  def ssh(self, command, worker="all", capture=False, check=True):
    return self.gcloud(
      *("compute", "tpus", "tpu-vm", "ssh", self.args.name),
      *self.where,
      f"--worker={worker}",
      f"--command={command}",
      "--quiet",  # no prompts (ssh key creation) in an unattended watch
      capture=capture,
      check=check,
    )

  def start(self):
    """Ships the checkout and starts the run detached on every worker."""
    a = self.args
    with tempfile.TemporaryDirectory() as tmp:
      tarball = os.path.join(tmp, TARBALL)
      if not self.dry_run:
        _pack_checkout(tarball)
      self.gcloud(
        *("compute", "tpus", "tpu-vm", "scp", tarball, f"{a.name}:{TARBALL}"),
        *self.where,
        "--worker=all",
        "--quiet",
      )
    self.ssh(start_script(a))
    if not self.dry_run:
      print(f"{a.name}: started on every worker; logs in {RUN_DIR}/log", flush=True)

  def statuses(self):
    """[(status, last log line)] of each worker that answered, or None when ssh failed.
    status: an exit status, "running", "none" (never started) or "lost" (gone without one).
    """
    probe = (
      f"d={RUN_DIR}; if [ -f $d/status ]; then s=$(cat $d/status); "
      f"elif [ -f $d/pid ] && kill -0 $(cat $d/pid) 2>/dev/null; then s=running; "
      f"elif [ -f $d/pid ]; then s=lost; else s=none; fi; "
      f'echo "bert-jax-status $s $(tail -n 1 $d/log 2>/dev/null)"'
    )
    result = self.ssh(probe, capture=True, check=False)
    if result is None:
      return [("running", "")]
    if result.returncode != 0:
      print(f"{self.args.name}: workers did not answer ({_last_line(result.stderr)})", flush=True)
      return None
    found = []
    for line in result.stdout.splitlines():
      if line.startswith("bert-jax-status "):
        _, status, *rest = line.split(" ", 2)
        found.append((status, rest[0] if rest else ""))
    return found


def start_script(a):
  """The shell command each worker runs (in its home) to unpack, install and start."""
  argv = ["pretrain", "--config", a.config, "--workdir", a.workdir, "--config.distributed=True"]
  argv += a.overrides
  env = "".join(f"export {shlex.quote(e)}; " for e in a.env)
  if a.python:
    python, install = shlex.quote(a.python), ""
  else:
    python = "~/venv/bin/python"
    install = "python3 -m venv ~/venv; ~/venv/bin/pip install -q './bert_jax[tpu]'; "
  # The run's own shell: a trapped TERM waits for pretrain to save and exit, then records it.
  inner = (
    f"trap : TERM; {env}cd ~/bert_jax && {python} -m bert_jax {shlex.join(argv)} "
    f"> {RUN_DIR}/log 2>&1; s=$?; echo $s > {RUN_DIR}/status.tmp && "
    f"mv {RUN_DIR}/status.tmp {RUN_DIR}/status"
  )
  return (
    f"set -e; cd ~; rm -rf bert_jax {RUN_DIR}; mkdir -p bert_jax {RUN_DIR}; "
    f"tar -xzf {TARBALL} -C bert_jax; {install}"
    f"setsid nohup bash -c {shlex.quote(inner)} < /dev/null > /dev/null 2>&1 & "
    f"echo $! > {RUN_DIR}/pid"
  )


# Run in a subprocess (this file imports no bert_jax): the recipe and its overrides read as
# `bert-jax pretrain` reads them on the workers, then validated. Exit 3: no bert_jax here.
_CHECK_RECIPE = """
import sys
try:
  from bert_jax import recipe_args
  from bert_jax.errors import UserError
  from bert_jax.train import pretrain
except ImportError:
  sys.exit(3)
try:
  argv = ["--config", sys.argv[1], *sys.argv[2:]]
  config, _ = recipe_args.parse_config("pretrain", argv, pretrain.DEFAULT_RECIPE, "", False)
  pretrain.validate(pretrain.lanes_for_the_batch(config, say=lambda _: None))
except UserError as e:
  print(e)
  sys.exit(2)
"""


def check_job(a):
  """Bad input of `run` and `watch`, found here before a slice is paid for: a workdir the
  workers cannot share, an --env that is not KEY=VALUE, a recipe that is not in this
  checkout, and (when bert_jax is importable here) what `bert-jax pretrain` would refuse.
  """
  if not a.workdir.startswith("gs://") and not a.shared_workdir:
    raise Error(
      f"--workdir {a.workdir} is not a bucket: each worker has its own disk, which goes "
      f"with the slice (a recreated one starts empty); give gs://BUCKET/runs/NAME, or "
      f"--shared-workdir for a path every worker mounts (e.g. Filestore)"
    )
  for setting in a.env:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", setting):
      raise Error(f"--env {setting!r} is not KEY=VALUE")
  recipe = a.config.partition(":")[0]
  if not os.path.isfile(os.path.join(REPO, recipe)):
    raise Error(
      f"--config {recipe} is not a file of this checkout ({REPO}); the workers run the "
      f"recipes of the checkout this ships, e.g. configs/bert_base.py:phase1"
    )
  checked = subprocess.run(
    [sys.executable, "-c", _CHECK_RECIPE, a.config, *a.overrides],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
  )
  if checked.returncode == 3:
    print("(bert_jax is not importable here: the workers check the recipe)", flush=True)
  elif checked.returncode:
    raise Error(_last_line(checked.stdout) or _last_line(checked.stderr))


def _pack_checkout(path):
  """A tar.gz of the files of this checkout that git tracks or would track."""
  try:
    listed = subprocess.run(
      ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      cwd=REPO,
      capture_output=True,
      check=True,
    ).stdout
  except (OSError, subprocess.CalledProcessError):
    raise Error(f"{REPO} is not a git checkout: `run` ships the files git lists") from None
  with tarfile.open(path, "w:gz") as tar:
    for name in sorted(set(listed.decode().split("\0")) - {""}):
      if os.path.isfile(os.path.join(REPO, name)):  # not a deleted one
        tar.add(os.path.join(REPO, name), arcname=name)


def _last_line(text):
  lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
  return lines[-1] if lines else "no message"


# --- subcommands -------------------------------------------------------------------------------


def up(cloud):
  """Creates the queued resource and waits for ACTIVE."""
  cloud.create()
  cloud.wait_active()


def run(cloud):
  """Ships the checkout and starts the run on every worker."""
  cloud.start()


def logs(cloud):
  """Follows (or prints) one worker's log."""
  a = cloud.args
  command = f"cat {RUN_DIR}/log" if a.no_follow else f"tail -n +1 -F {RUN_DIR}/log"
  cloud.ssh(command, worker=str(a.worker))


def down(cloud):
  """Deletes the queued resource and its node."""
  cloud.delete()


def watch(cloud):
  """Babysits the run until it ends; returns the exit status."""
  a = cloud.args
  if cloud.dry_run:  # what a watch runs for a slice that does not exist yet
    cloud.state()
    cloud.create()
    cloud.start()
    return 0
  retries, last, first = 0, "", True
  try:
    while True:
      state = cloud.state()
      if state != last:
        print(f"{a.name}: {state or 'not found'}", flush=True)
        last = state
      if first and state is None:  # never created: not a preemption, so no retry is spent
        print(f"{a.name}: creating it", flush=True)
        cloud.create()
        cloud.wait_active()
        cloud.start()
        first, last = False, "ACTIVE"
        continue
      first = False
      verdict = None
      if state is None or state in LOST:
        verdict = f"the slice is {state or 'gone'}"
      elif state == "ACTIVE":
        found = cloud.statuses() or []
        codes = {s for s, _ in found}
        failed = [(s, line) for s, line in found if s.isdigit() and int(s) not in (0, 75)]
        failed.sort(key=lambda f: not f[1].startswith("error:"))  # the worker that says why
        if failed:
          status, line = failed[0]
          raise Error(
            f"the run failed on a worker with exit status {status} (not retried): {line}; "
            f"`launch/tpu.py logs --no-follow` shows the whole log"
          )
        if found and codes == {"0"}:
          print(f"{a.name}: the run finished (status 0 on every worker)", flush=True)
          return 0
        if str(PREEMPTED_EXIT_CODE) in codes or "lost" in codes:
          verdict = "a worker was preempted (status 75)" if "75" in codes else "a run was lost"
        elif found and codes == {"none"}:
          cloud.start()  # an ACTIVE slice with nothing run yet
      if verdict:
        if retries >= a.retries:
          raise Error(f"{verdict} and --retries {a.retries} are used up: not recreating it")
        retries += 1
        print(f"{a.name}: {verdict}: recreating it (retry {retries} of {a.retries})", flush=True)
        if state is not None:
          cloud.delete()
        cloud.create()
        cloud.wait_active()
        cloud.start()
        last = "ACTIVE"
        continue
      time.sleep(a.poll)
  finally:
    if a.autodelete:
      cloud.delete()


def parser():
  """The command line: five subcommands sharing the slice flags."""
  p = argparse.ArgumentParser(
    prog="launch/tpu.py",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  commands = p.add_subparsers(dest="command", required=True)
  summaries = {
    "up": "create the slice (a queued resource) and wait until it is ACTIVE",
    "run": "ship this checkout to every worker and start bert-jax pretrain there",
    "logs": "follow (or print) one worker's log",
    "watch": "babysit the run: create, recreate after preemption, rerun, until it ends",
    "down": "delete the slice",
  }
  for name, summary in summaries.items():
    c = commands.add_parser(name, help=summary, description=summary)
    c.add_argument("--name", required=True, help="the queued resource and its node")
    c.add_argument("--zone", required=True)
    c.add_argument("--project", help="default: gcloud's core/project")
    c.add_argument("--accelerator-type", help="e.g. v5litepod-16, v4-32, v5p-16, v6e-16")
    c.add_argument("--runtime-version", help="default: the TPU VM image of the accelerator")
    tiers = c.add_mutually_exclusive_group()
    for tier in ("spot", "reserved", "best-effort"):
      tiers.add_argument(f"--{tier}", dest="tier", action="store_const", const=tier)
    c.add_argument("--dry-run", action="store_true", help="print the gcloud commands only")
    c.add_argument("--poll", type=float, default=30.0, help="seconds between state checks")
    if name in ("run", "watch"):
      c.add_argument(
        "--config",
        required=True,
        help="a recipe in this checkout, e.g. configs/bert_base.py:phase1",
      )
      c.add_argument("--workdir", required=True, help="gs://BUCKET/runs/NAME, seen by all workers")
      c.add_argument(
        "--shared-workdir",
        action="store_true",
        help="--workdir is a path every worker mounts (e.g. Filestore), not a bucket",
      )
      c.add_argument("--python", help="a Python on the workers with bert_jax: skips the install")
      c.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="set on the workers"
      )
    if name == "watch":
      c.add_argument("--retries", type=int, default=5, help="recreations after preemption")
      c.add_argument("--autodelete", action="store_true", help="delete the slice when done")
    if name == "logs":
      c.add_argument("--worker", type=int, default=0)
      c.add_argument("--no-follow", action="store_true", help="print the log and return")
  return p


def main(argv=None):
  """Runs one subcommand; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  # --config.KEY=VALUE overrides go to bert-jax pretrain untouched.
  overrides = [x for x in argv if x.startswith("--config.")]
  args = parser().parse_args([x for x in argv if not x.startswith("--config.")])
  args.overrides = overrides
  if overrides and args.command not in ("run", "watch"):
    print(
      f"error: --config.KEY=VALUE overrides go with run or watch, not {args.command}",
      file=sys.stderr,
    )
    return 1
  if args.command in ("up", "watch") and not args.accelerator_type:
    print(f"error: {args.command} needs --accelerator-type (e.g. v5litepod-16)", file=sys.stderr)
    return 1
  try:
    if args.command in ("run", "watch"):
      check_job(args)
    status = {"up": up, "run": run, "logs": logs, "watch": watch, "down": down}[args.command](
      Cloud(args)
    )
  except Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    return 130
  return status or 0


if __name__ == "__main__":
  sys.exit(main())
