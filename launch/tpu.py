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
for ACTIVE, printing each state; a slice that is ACTIVE already is left as it is. `run`
ships this checkout (every file git tracks or would track, uncommitted edits included) to
every worker, installs `bert_jax[tpu]` into ~/venv there (`--python PATH` skips the install
and uses that interpreter), and starts `bert-jax pretrain --config.distributed=True`
detached on all workers. Each worker writes ~/bert_jax_run/log, the run's job (a hash of
its workdir and arguments) to ~/bert_jax_run/job and, when the run ends, its exit status to
~/bert_jax_run/status. `run` refuses a slice whose run is still alive; `--force` stops that
run (SIGTERM: it saves a checkpoint) and starts this one.

`run` and `watch` first check here what would fail only on the workers, after the slice is
paid for: a --workdir that is not a bucket (each worker's disk goes with the slice;
`--shared-workdir` for a path every worker mounts), an --env that is not KEY=VALUE, a
recipe that is not in this checkout (outside it, or ignored by git: the workers get only
the checkout), and, when bert_jax is importable here, whatever `bert-jax pretrain` refuses
in the recipe and its overrides (an unknown key, a fine-tuning recipe, a bad value).

`watch` packs the checkout once, then polls the slice and the workers, printing worker 0's
latest log line as it changes. A slice that does not exist yet is created and the run
started (that spends no retry); so is the run on a slice that holds nothing, or only an
ended run of another job. A live run of another job is refused. A PREEMPTED, SUSPENDED or
FAILED slice, or a worker that exited with status 75 (the run saved a checkpoint on
SIGTERM), is deleted, created again and rerun, and the run resumes from its workdir: up to
`--retries` times. Status 0 on every worker (given only after the final checkpoint is
saved) ends the watch; any other status is a real failure (bad config, non-finite loss): it
prints the worker's last log line and stops without retrying. Workers that miss
`--missed-polls` status polls in a row end the watch. `--autodelete` deletes the slice
whenever the watch ends (after printing a failed worker's last log lines), so nothing is
left billing; without it the watch's last line says how to delete it.

Every gcloud call has a time limit (`--timeout`, for a describe or a status poll; a create
may take 5 times as long, a copy or a start 15 times). A describe, copy, start or delete that
times out or loses its connection is tried again, waiting longer each time, 4 times in all.
`--dry-run` on any subcommand prints the gcloud commands instead of running them (for
`watch`: those of a slice not created yet), and no state. Errors are one `error: ...` line
and exit status 2.

`--best-effort` exists only in `gcloud alpha`; the other tiers use the GA command group.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

PREEMPTED_EXIT_CODE = 75  # bert_jax.errors.PREEMPTED_EXIT_CODE (this file needs no bert_jax)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_DIR = "~/bert_jax_run"  # on each worker: log, status, pid, job, start
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
NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")  # a GCP resource name
ATTEMPTS = 4  # tries of a describe, copy, start or delete before giving up
# Time limits, in multiples of --timeout (a describe or a status poll). "start" includes
# installing bert_jax[tpu] and stopping a --force'd run.
TIMEOUTS = {"describe": 1, "poll": 1, "create": 5, "logs": 5, "copy": 15, "start": 15}
STOP_GRACE_S = 300  # what `run --force` gives the old run to save its checkpoint
TAIL_LINES = 20  # of a failed worker's log, printed before --autodelete deletes the slice
# gcloud failures that another try does not mend.
PERMANENT = re.compile(
  r"NOT_FOUND|PERMISSION_DENIED|UNAUTHENTICATED|INVALID_ARGUMENT|active account", re.I
)
# Each worker's run, one line: "bert-jax-status KEY STATUS JOB LAST_LOG_LINE" (KEY tells the
# workers apart; STATUS an exit status, "running", "none" or "lost": gone without one; JOB
# the run's job_tag, "-" if none), then, after a failed run, its log's last lines, each as
# "bert-jax-log KEY LINE". A progress bar's \r-separated updates count as lines.
LAST_LINE = (
  "tail -c 4000 $d/log 2>/dev/null | tr '\\r' '\\n' | grep -v '^[[:space:]]*$' | tail -n 1"
)
STATUS_PROBE = (
  f"d={RUN_DIR}; k=$(hostname)-$$; if [ -f $d/status ]; then s=$(cat $d/status); "
  f"elif [ -f $d/pid ] && kill -0 $(cat $d/pid) 2>/dev/null; then s=running; "
  f"elif [ -f $d/pid ]; then s=lost; else s=none; fi; j=$(cat $d/job 2>/dev/null || echo -); "
  f'echo "bert-jax-status $k $s $j $({LAST_LINE})"; '
  f"case $s in running|none|lost|0|{PREEMPTED_EXIT_CODE}) ;; *) tail -n {TAIL_LINES} $d/log "
  f"2>/dev/null | tr '\\r' '\\n' | grep -v '^[[:space:]]*$' | tail -n {TAIL_LINES} | "
  f'sed "s/^/bert-jax-log $k /";; esac'
)


class Error(Exception):
  """A failure the user can act on: printed as one `error: ...` line, exit status 2."""


class Busy(Error):
  """The slice runs another run, alive: left as it is (no --autodelete either)."""


class Transient(Error):
  """A gcloud call that failed in a way another try may mend: a timeout, a lost connection."""


@dataclasses.dataclass
class Worker:
  """One worker's answer to the status probe."""

  status: str  # an exit status, "running", "none" (nothing started) or "lost"
  job: str  # job_tag of the run it holds, "-" when none is recorded
  line: str  # the last line of its log
  tail: list = dataclasses.field(default_factory=list)  # its log's last lines, if it failed


@dataclasses.dataclass
class Poll:
  """The workers that answered a status poll, and why the others did not (None: all did)."""

  workers: list
  failure: "Error | None"


class Cloud:
  """The gcloud commands of one slice; `dry_run` prints them instead of running them."""

  def __init__(self, args, scratch):
    self.args = args
    self.dry_run = args.dry_run
    self.scratch = scratch  # a folder for the packed checkout
    self.tarball = None
    self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])

  def say(self, text):
    print(f"{self.args.name}: {text}", flush=True)

  def slice_flags(self):
    """The flags naming this slice, for the commands the messages suggest."""
    project = f" --project {self.args.project}" if self.args.project else ""
    return f"--name {self.args.name} --zone {self.args.zone}{project}"

  # --- gcloud calls -------------------------------------------------------------------------

  def gcloud(self, *words, kind):
    """Runs `gcloud WORDS` (or prints it) within the time limit of its `kind` (TIMEOUTS),
    its output captured; returns the CompletedProcess, None when dry. Past the limit, the
    call and what it started are killed: Transient. Kind "follow": in the terminal, no limit.
    """
    command = ["gcloud", *words]
    if self.dry_run:
      print(shlex.join(command), flush=True)
      return None
    limit = None if kind == "follow" else self.args.timeout * TIMEOUTS[kind]
    try:
      return _run(command, limit)
    except FileNotFoundError:
      raise Error("gcloud is not on PATH: install the Google Cloud CLI") from None
    except subprocess.TimeoutExpired:
      raise Transient(f"`{_shown(command)}` timed out after {limit:g} s") from None

  def failure(self, result):
    """The Error of a failed call: Transient unless another try would fail the same way."""
    message = f"`{_shown(result.args)}` failed: {_gcloud_message(result.stderr)}"
    return Error(message) if PERMANENT.search(result.stderr or "") else Transient(message)

  def retried(self, call, *args):
    """call(*args), tried again after a Transient failure, waiting longer each time."""
    for attempt in range(1, ATTEMPTS + 1):
      try:
        return call(*args)
      except Transient as e:
        if attempt == ATTEMPTS:
          raise Error(f"{e} (tried {ATTEMPTS} times)") from None
        delay = min(self.args.poll, 10) * 2 ** (attempt - 1)
        self.say(f"{e} (trying again in {delay:g} s)")
        time.sleep(delay)

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
      kind="create",
    )
    if result is not None and result.returncode != 0:
      raise self.create_failure(result.stderr)

  def create_failure(self, stderr):
    """The Error of a failed create, with what to do about it."""
    a, message = self.args, _gcloud_message(stderr)
    if "quota" in stderr.lower():
      spot = "" if a.tier == "spot" else "--spot or "
      return Error(
        f"no quota for {a.accelerator_type} in {a.zone} ({message}): request quota "
        f"(IAM & Admin > Quotas, Cloud TPU API), or try {spot}another --zone"
      )
    if "ALREADY_EXISTS" in stderr or "already exists" in stderr:
      return Error(
        f"a queued resource {a.name} already exists in {a.zone}: `down` it or use another --name"
      )
    if "accelerator" in stderr.lower():
      return Error(f"{a.accelerator_type} is not available in {a.zone}: {message}")
    return Error(f"creating the queued resource {a.name} failed: {message}")

  def state(self):
    """The queued resource's state (e.g. ACTIVE), or None when it does not exist."""
    return self.retried(self._describe)

  def _describe(self):
    result = self.gcloud(
      *("compute", "tpus", "queued-resources", "describe", self.args.name),
      *self.where,
      "--format=value(state.state)",
      kind="describe",
    )
    if result is None:
      return None  # dry run: nothing was asked
    if result.returncode != 0:
      if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
        return None
      raise self.failure(result)
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
        self.say(f"{state} ({time.time() - start:.0f} s)")
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

  def delete(self):
    """Deletes the queued resource and its node and waits until they are gone; a resource
    that does not exist is left at that.
    """
    if not self.dry_run and self.state() is None:
      self.say("not found: nothing to delete")
      return
    self.retried(self._request_delete)
    if self.dry_run:
      return
    while self.state() is not None:
      time.sleep(self.args.poll)
    self.say("deleted")

  def _request_delete(self):
    result = self.gcloud(
      *("compute", "tpus", "queued-resources", "delete", self.args.name),
      *self.where,
      "--force",  # deletes its node first
      "--async",
      "--quiet",
      kind="describe",
    )
    if result is not None and result.returncode != 0 and "NOT_FOUND" not in result.stderr:
      raise self.failure(result)

  # --- the workers ----------------------------------------------------------------------------

  def ssh(self, command, worker="all", kind="poll"):
    return self.gcloud(
      *("compute", "tpus", "tpu-vm", "ssh", self.args.name),
      *self.where,
      f"--worker={worker}",
      f"--command={command}",
      "--quiet",  # no prompts (ssh key creation) in an unattended watch
      kind=kind,
    )

  def worker_count(self):
    """How many workers (hosts) the slice's node has."""
    return self.retried(self._describe_node)

  def _describe_node(self):
    result = self.gcloud(
      *("compute", "tpus", "tpu-vm", "describe", self.args.name),
      *self.where,
      "--format=json",
      kind="describe",
    )
    if result.returncode != 0:
      if "NOT_FOUND" in result.stderr:
        raise Error(f"{self.args.name} has no TPU node in {self.args.zone}: `up` creates it")
      raise self.failure(result)
    return len(json.loads(result.stdout).get("networkEndpoints", []))

  def pack(self):
    """Packs this checkout, once: every start of this command ships the same files."""
    if self.tarball is None and not self.dry_run:
      self.tarball = os.path.join(self.scratch, TARBALL)
      _pack_checkout(self.tarball)

  def start(self, force=False):
    """Ships the checkout and starts the run detached on every worker. A copy or start cut
    off (a timeout, a lost connection) is tried again; a worker this start already started
    is left running. A run still alive on a worker is stopped first (`force`) or refused.
    """
    self.pack()
    self.retried(self._copy, self.tarball or "<checkout tarball, packed at run time>")
    script = start_script(self.args, launch=uuid.uuid4().hex[:12], force=force)
    self.retried(self._start_once, script)
    if not self.dry_run:
      self.say(f"started on every worker; logs in {RUN_DIR}/log")

  def _copy(self, tarball):
    result = self.gcloud(
      *("compute", "tpus", "tpu-vm", "scp", tarball, f"{self.args.name}:{TARBALL}"),
      *self.where,
      "--worker=all",
      "--quiet",
      kind="copy",
    )
    if result is not None and result.returncode != 0:
      raise self.failure(result)

  def _start_once(self, script):
    result = self.ssh(script, kind="start")
    if result is None or result.returncode == 0:
      return
    if "bert-jax-busy" in result.stdout:
      raise Busy(self.busy_message("a run started since"))
    raise self.failure(result)

  def busy_message(self, which):
    return (
      f"{which} is still alive on {self.args.name}: wait for it to end, or `launch/tpu.py run "
      f"{self.slice_flags()} ... --force` stops it (it saves a checkpoint) and starts yours"
    )

  def statuses(self):
    """A Poll of the workers' runs (dry: of none)."""
    try:
      result = self.ssh(STATUS_PROBE)
    except Transient as e:
      return Poll([], e)
    if result is None:
      return Poll([], None)  # dry run
    workers = _parse_statuses(result.stdout)
    if result.returncode != 0:
      return Poll(workers, self.failure(result))
    if not workers:
      return Poll([], Transient(f"no worker of {self.args.name} answered the status poll"))
    return Poll(workers, None)

  def live_runs(self):
    """The workers whose run is alive; every worker must answer (tried again if not)."""
    return [w for w in self.retried(self._complete_poll).workers if w.status == "running"]

  def _complete_poll(self):
    poll = self.statuses()
    if poll.failure:
      raise poll.failure
    return poll

  def progress(self):
    """The latest line of worker 0's log ('' when it did not answer)."""
    try:
      result = self.ssh(f"d={RUN_DIR}; {LAST_LINE}", worker="0")
    except Transient:
      return ""
    return result.stdout.strip() if result and result.returncode == 0 else ""


def pretrain_argv(a):
  """The `bert-jax` arguments every worker runs."""
  argv = ["pretrain", "--config", a.config, "--workdir", a.workdir, "--config.distributed=True"]
  return argv + a.overrides


def job_tag(a):
  """Names the job (its workdir and arguments): a slice's run is this job's when equal."""
  return hashlib.sha256("\0".join(pretrain_argv(a)).encode()).hexdigest()[:12]


def start_script(a, launch, force=False):
  """The shell command each worker runs (in its home) to unpack, install and start the run.
  `launch` names this start: a worker that holds it already was started by an earlier try.
  A live run there is stopped first when `force` (SIGTERM to its process group: it saves a
  checkpoint), else refused (exit 3) and left running.
  """
  env = "".join(f"export {shlex.quote(e)}; " for e in a.env)
  if a.python:
    python, install = shlex.quote(a.python), ""
  else:
    python = "~/venv/bin/python"
    install = "python3 -m venv ~/venv; ~/venv/bin/pip install -q './bert_jax[tpu]'; "
  # The run's own shell: a trapped TERM waits for pretrain to save and exit, then records it.
  inner = (
    f"trap : TERM; {env}cd ~/bert_jax && {python} -m bert_jax {shlex.join(pretrain_argv(a))} "
    f"> {RUN_DIR}/log 2>&1; s=$?; echo $s > {RUN_DIR}/status.tmp && "
    f"mv {RUN_DIR}/status.tmp {RUN_DIR}/status"
  )
  d = RUN_DIR
  live = f"[ -f {d}/pid ] && [ ! -f {d}/status ] && kill -0 $(cat {d}/pid) 2>/dev/null"
  if force:
    stop = (
      f"p=$(cat {d}/pid); kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null || true; "
      f"n=0; while {live} && [ $n -lt {STOP_GRACE_S} ]; do sleep 1; n=$((n + 1)); done; "
      f"kill -KILL -- -$p 2>/dev/null || true; "
    )
  else:
    stop = "echo bert-jax-busy; exit 3; "
  return (
    f'set -e; cd ~; if [ "$(cat {d}/start 2>/dev/null)" = {launch} ]; then exit 0; fi; '
    f"if {live}; then {stop}fi; "
    f"rm -rf bert_jax {d}; mkdir -p bert_jax {d}; tar -xzf {TARBALL} -C bert_jax; "
    f"echo {job_tag(a)} > {d}/job; {install}"
    f"setsid nohup bash -c {shlex.quote(inner)} < /dev/null > /dev/null 2>&1 & "
    f"echo $! > {d}/pid; echo {launch} > {d}/start"
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
  check_recipe_is_shipped(a.config.partition(":")[0])
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


def check_recipe_is_shipped(recipe):
  """The workers run `recipe` from the root of the checkout shipped to them: it must be a
  file of this checkout, named from its root, that git does not ignore.
  """
  if os.path.isabs(recipe) or os.path.normpath(recipe).split(os.sep)[0] == "..":
    raise Error(
      f"--config {recipe} is outside this checkout, and the workers get only the checkout "
      f"({REPO}): copy the recipe into it (e.g. configs/) and give its path from there"
    )
  if not os.path.isfile(os.path.join(REPO, recipe)):
    raise Error(
      f"--config {recipe} is not a file of this checkout ({REPO}); the workers run the "
      f"recipes of the checkout this ships, e.g. configs/bert_base.py:phase1"
    )
  if os.path.normpath(recipe) not in _checkout_files():
    raise Error(
      f"--config {recipe} is ignored by git, so it is not shipped (the workers get the files "
      f"git tracks or would track): move it, or `git add -f` it"
    )


def _checkout_files():
  """The files of this checkout that git tracks or would track (its .gitignore applied)."""
  try:
    listed = subprocess.run(
      ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      cwd=REPO,
      capture_output=True,
      check=True,
    ).stdout
  except (OSError, subprocess.CalledProcessError):
    raise Error(f"{REPO} is not a git checkout: `run` ships the files git lists") from None
  return set(listed.decode().split("\0")) - {""}


def _pack_checkout(path):
  """A tar.gz of the files of this checkout that git tracks or would track."""
  with tarfile.open(path, "w:gz") as tar:
    for name in sorted(_checkout_files()):
      if os.path.isfile(os.path.join(REPO, name)):  # not a deleted one
        tar.add(os.path.join(REPO, name), arcname=name)


def _run(command, limit):
  """subprocess.run of `command`, its output captured; past `limit` seconds it and all it
  started (an ssh under gcloud) are killed: TimeoutExpired. Ctrl-C kills them too. With no
  `limit`, it runs in the terminal (its process group: Ctrl-C reaches it).
  """
  if limit is None:
    return subprocess.run(command, text=True)
  with subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
  ) as process:
    try:
      out, err = process.communicate(timeout=limit)
    except BaseException:
      try:
        os.killpg(process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      raise
  return subprocess.CompletedProcess(command, process.returncode, out, err)


def _parse_statuses(text):
  """[Worker] of the status probe's output (STATUS_PROBE)."""
  workers, tails = {}, {}
  for line in text.splitlines():
    kind, _, rest = line.partition(" ")
    if kind == "bert-jax-status" and len(rest.split(" ")) >= 3:
      key, status, job, *last = rest.split(" ", 3)
      workers[key] = Worker(status, job, last[0].strip() if last else "")
    elif kind == "bert-jax-log":
      key, _, logged = rest.partition(" ")
      tails.setdefault(key, []).append(logged)
  for key, worker in workers.items():
    worker.tail = tails.get(key, [])
  return list(workers.values())


def _shown(command):
  """A gcloud command up to its first flag (what it does to what), for messages."""
  words = []
  for word in command:
    if word.startswith("--"):
      break
    words.append(word)
  return shlex.join(words)


def _gcloud_message(stderr):
  """A gcloud call's error on one line: its ERROR: line (after a failed ssh, with ssh's own
  line before it), else the last line.
  """
  lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
  errors = [i for i, line in enumerate(lines) if line.startswith("ERROR:")]
  if not errors:
    return _last_line(stderr)
  i = errors[0]
  if i > 0 and "exited with return code" in lines[i]:
    return f"{lines[i - 1]}; {lines[i]}"
  return lines[i]


def _last_line(text):
  lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
  return lines[-1] if lines else "no message"


# --- subcommands -------------------------------------------------------------------------------


def up(cloud):
  """Creates the queued resource and waits for ACTIVE; one that exists is waited for."""
  state = None if cloud.dry_run else cloud.state()
  if state == "ACTIVE":
    cloud.say("ACTIVE already: nothing to create")
    return
  if state in LOST:
    raise Error(
      f"the queued resource {cloud.args.name} exists but is {state}: `launch/tpu.py down "
      f"{cloud.slice_flags()}` it, then `up` again"
    )
  if state is None:
    cloud.create()
  else:
    cloud.say(f"exists ({state}): waiting for ACTIVE")
  cloud.wait_active()


def run(cloud):
  """Ships the checkout and starts the run on every worker, unless a run is alive there
  (`--force`: stopped first).
  """
  a = cloud.args
  if not cloud.dry_run and cloud.live_runs():
    if not a.force:
      raise Busy(cloud.busy_message("a run"))
    cloud.say("stopping the run alive on it (--force): it saves a checkpoint first")
  cloud.start(force=a.force)


def logs(cloud):
  """Follows (or prints) one worker's log."""
  a = cloud.args
  if not cloud.dry_run:
    count = cloud.worker_count()
    if not 0 <= a.worker < count:
      raise Error(f"--worker {a.worker}: {a.name} has {count} workers, 0 to {count - 1}")
  if not a.no_follow:  # until Ctrl-C; gcloud's own messages go to the terminal
    result = cloud.ssh(f"tail -n +1 -F {RUN_DIR}/log", worker=str(a.worker), kind="follow")
    if result is not None and result.returncode not in (0, 130):
      raise Error(f"`{_shown(result.args)}` exited with status {result.returncode}")
    return
  result = cloud.ssh(f"cat {RUN_DIR}/log", worker=str(a.worker), kind="logs")
  if result is not None and result.returncode != 0:
    raise cloud.failure(result)
  if result is not None:
    print(result.stdout, end="", flush=True)


def down(cloud):
  """Deletes the queued resource and its node."""
  cloud.delete()


NOT_SEEN = "not seen"  # the state of a slice not described yet


class Watch:
  """One `watch`: the slice's state as last seen, the retries spent, the polls missed."""

  def __init__(self, cloud):
    self.cloud, self.args = cloud, cloud.args
    self.job = job_tag(cloud.args)
    self.state = NOT_SEEN  # None: it does not exist
    self.retries = 0
    self.missed = 0  # status polls in a row that some worker did not answer
    self.progress = ""

  def run(self):
    """Polls until the run ends: 0 when it finished; an Error when it failed."""
    first = True
    while True:
      state = self.observe()
      if first and state is None:  # never created: not a preemption, so no retry is spent
        self.cloud.say("creating it")
        self.bring_up()
      elif state is None or state in LOST:
        self.recreate(f"the slice is {state or 'gone'}")
      elif state == "ACTIVE" and (outcome := self.check_workers()):
        if outcome == "finished":
          return 0
        self.recreate(outcome)
      else:
        time.sleep(self.args.poll * 2 ** min(self.missed, 3))
      first = False

  def observe(self):
    """The slice's state, printed when it changed."""
    state = self.cloud.state()
    if state != self.state:
      self.cloud.say(state or "not found")
      self.state = state
    return state

  def bring_up(self):
    """Creates the slice, waits for ACTIVE and starts the run."""
    self.cloud.create()
    self.state = "CREATED"  # it exists, whatever its state
    self.cloud.wait_active()
    self.state = "ACTIVE"
    self.cloud.start()
    self.progress = ""

  def recreate(self, verdict):
    """Deletes the slice (if it exists), creates it again and reruns: one retry."""
    a = self.args
    if self.retries >= a.retries:
      raise Error(f"{verdict} and --retries {a.retries} are used up: not recreating it")
    self.retries += 1
    self.cloud.say(f"{verdict}: recreating it (retry {self.retries} of {a.retries})")
    if self.state is not None:
      self.cloud.delete()
      self.state = None
    self.bring_up()

  def check_workers(self):
    """Polls the workers of an ACTIVE slice: "finished", a reason to recreate the slice,
    or None (running; or started now). A failed run is an Error.
    """
    poll = self.cloud.statuses()
    self.note_answers(poll)
    workers = [self.as_ours(w) for w in poll.workers]
    if outcome := self.outcome(workers, complete=poll.failure is None):
      return outcome
    if poll.failure is None and all(w.status == "none" for w in workers):
      self.cloud.start()  # nothing of this job on the slice yet
      self.progress = ""
    elif poll.failure is not None and self.missed >= self.args.missed_polls:
      raise Error(
        f"a worker of {self.args.name} did not answer {self.missed} status polls in a row "
        f"({poll.failure}): check it (`gcloud compute tpus tpu-vm ssh {self.args.name} "
        f"--zone={self.args.zone} --worker=all`), then watch again or `down` it"
      )
    elif any(w.status == "running" for w in workers):
      self.show_progress()
    return None

  def note_answers(self, poll):
    """Counts the polls missed in a row; says so once per streak."""
    if poll.failure is None:
      if self.missed:
        self.cloud.say("every worker answers again")
      self.missed = 0
      return
    self.missed += 1
    if self.missed == 1:
      self.cloud.say(
        f"a worker did not answer ({poll.failure}); polling on, up to "
        f"--missed-polls {self.args.missed_polls} in a row"
      )

  def as_ours(self, worker):
    """The worker's run as one of this job: another job's ended run counts as none."""
    if worker.job == self.job:
      return worker
    if worker.status == "running":
      raise Busy(self.cloud.busy_message("another job's run"))
    return Worker("none", worker.job, worker.line)

  def outcome(self, workers, complete):
    """What the answering workers' runs say: "finished", a reason to recreate, or None."""
    codes = {w.status for w in workers}
    failed = [w for w in workers if w.status.isdigit() and int(w.status) not in (0, 75)]
    if failed:
      self.fail(failed)
    if workers and codes == {"0"}:
      which = "every worker" if complete else "every worker that answered"
      self.cloud.say(f"the run finished (status 0 on {which})")
      return "finished"
    if str(PREEMPTED_EXIT_CODE) in codes:
      return "a worker was preempted (status 75)"
    if "lost" in codes:
      return "a run was lost"
    return None

  def fail(self, failed):
    """Raises the failure of a worker's run; before --autodelete, prints its log's end."""
    worker = sorted(failed, key=lambda w: not w.line.startswith("error:"))[0]  # says why
    if self.args.autodelete and worker.tail:
      self.cloud.say("the failed worker's last log lines (--autodelete deletes the slice):")
      for line in worker.tail:
        print(f"  {line}", flush=True)
      hint = "its log's last lines are above"
    else:
      hint = f"`launch/tpu.py logs {self.cloud.slice_flags()} --no-follow` shows the whole log"
    raise Error(
      f"the run failed on a worker with exit status {worker.status} (not retried): "
      f"{worker.line}; {hint}"
    )

  def show_progress(self):
    """Prints worker 0's latest log line when it changed."""
    line = self.cloud.progress()
    if line and line != self.progress:
      self.cloud.say(f"worker 0: {line}")
      self.progress = line

  def finish(self, ended):
    """Deletes the slice (--autodelete), else says it is still up. `ended`: the watch ended
    as it should; otherwise a failure to delete is printed, not raised over the first error.
    """
    if not self.args.autodelete:
      if self.state not in (None, NOT_SEEN):
        self.cloud.say(
          f"the slice is still up, and billed: `launch/tpu.py down {self.cloud.slice_flags()}` "
          f"deletes it"
        )
      return
    try:
      self.cloud.delete()
    except Error as e:
      if ended:
        raise
      self.cloud.say(
        f"deleting it failed too ({e}): `launch/tpu.py down {self.cloud.slice_flags()}`"
      )


def watch(cloud):
  """Babysits the run until it ends; returns the exit status."""
  if cloud.dry_run:  # what a watch runs for a slice that does not exist yet
    cloud.state()
    cloud.create()
    cloud.start()
    return 0
  cloud.pack()  # now: later edits of the checkout are not shipped to a recreated slice
  watching = Watch(cloud)
  try:
    status = watching.run()
  except Busy:
    raise  # not this watch's slice to delete
  except BaseException:
    watching.finish(ended=False)
    raise
  watching.finish(ended=True)
  return status


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
    c.add_argument(
      "--timeout",
      type=float,
      default=120.0,
      help="seconds a describe or status poll may take (a create 5 times, a copy or start 15)",
    )
    if name in ("run", "watch"):
      add_job_flags(c)
    if name == "run":
      c.add_argument(
        "--force", action="store_true", help="stop a run alive on the slice, then start this"
      )
    if name == "watch":
      c.add_argument("--retries", type=int, default=5, help="recreations after preemption")
      c.add_argument("--autodelete", action="store_true", help="delete the slice when done")
      c.add_argument(
        "--missed-polls",
        type=int,
        default=10,
        help="give up after this many status polls in a row that a worker did not answer",
      )
    if name == "logs":
      c.add_argument("--worker", type=int, default=0)
      c.add_argument("--no-follow", action="store_true", help="print the log and return")
  return p


def add_job_flags(c):
  """The flags of the run itself (`run` and `watch`)."""
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


def check_args(args):
  """What the command line alone shows wrong."""
  if args.overrides and args.command not in ("run", "watch"):
    raise Error(f"--config.KEY=VALUE overrides go with run or watch, not {args.command}")
  if not NAME.fullmatch(args.name):
    raise Error(
      f"--name {args.name!r} is not a valid slice name: lowercase letters, digits and "
      f"hyphens, starting with a letter, not ending with a hyphen, at most 63 characters"
    )
  if args.command in ("up", "watch") and not args.accelerator_type:
    raise Error(f"{args.command} needs --accelerator-type (e.g. v5litepod-16)")
  if args.timeout <= 0:
    raise Error(f"--timeout {args.timeout:g} must be above 0 seconds")


def main(argv=None):
  """Runs one subcommand; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  # --config.KEY=VALUE overrides go to bert-jax pretrain untouched.
  args = parser().parse_args([x for x in argv if not x.startswith("--config.")])
  args.overrides = [x for x in argv if x.startswith("--config.")]
  command = {"up": up, "run": run, "logs": logs, "watch": watch, "down": down}[args.command]
  try:
    check_args(args)
    if args.command in ("run", "watch"):
      check_job(args)
    with tempfile.TemporaryDirectory(prefix="bert_jax_launch_") as scratch:
      status = command(Cloud(args, scratch))
  except Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    return 130
  return status or 0


if __name__ == "__main__":
  sys.exit(main())
