"""The gcloud calls of one Cloud TPU slice: its queued resource (create, describe, wait,
delete) and its workers (ship the checkout, start the run, poll it), with their time limits,
retries and errors. No SDK: each call runs the `gcloud` CLI.

Every gcloud call has a time limit (`--timeout`, for a describe or a status poll; a create
may take 5 times as long, a copy or a start 15 times). A describe, copy, start or delete that
times out or loses its connection is tried again, waiting longer each time, 4 times in all.
A failed install of bert_jax on the workers is not: it is one error, with its last lines. A
delete is waited for up to 15 times `--timeout`, printing each state, then given up on.
A dry run prints each command instead of running it.

`--best-effort` exists only in `gcloud alpha`; the other tiers use the GA command group.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
import uuid

from tpu_checkout import pack_checkout
from tpu_errors import Busy, DeleteStuck, Error, Mismatch, Transient, last_line, message_lines
from tpu_worker import (
  INSTALL_FAILED_EXIT_CODE,
  LAST_LINE,
  RUN_DIR,
  STATUS_PROBE,
  TARBALL,
  Poll,
  install_failure,
  parse_statuses,
  start_script,
)

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
ATTEMPTS = 4  # tries of a describe, copy, start or delete before giving up
# Time limits, in multiples of --timeout (a describe or a status poll). "start" includes
# installing bert_jax[tpu] and stopping a --force'd run.
TIMEOUTS = {"describe": 1, "poll": 1, "create": 5, "logs": 5, "copy": 15, "start": 15}
DELETE_WAIT = 15  # a delete not done after this many --timeout is given up on (DeleteStuck)
# What a describe asks for: the state and the accelerator type, one line, tab-separated.
DESCRIBED = "value(state.state,tpu.nodeSpec[0].node.acceleratorType)"
# gcloud failures that another try does not mend.
PERMANENT = re.compile(
  r"NOT_FOUND|PERMISSION_DENIED|UNAUTHENTICATED|INVALID_ARGUMENT|active account", re.I
)


class Cloud:
  """The gcloud commands of one slice; `dry_run` prints them instead of running them."""

  def __init__(self, args, scratch):
    self.args = args
    self.dry_run = args.dry_run
    self.scratch = scratch  # a folder for the packed checkout
    self.tarball = None
    self.where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
    self.stamped = False  # `say` dates its lines (watch)

  def say(self, text):
    """Prints `NAME: text` (see `line`)."""
    print(self.line(text), flush=True)

  def line(self, text):
    """`NAME: text`; under `watch` (`stamped`), the date and time first: a watch's log spans
    days of polls, preemptions and restarts.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M:%S ") if self.stamped else ""
    return f"{stamp}{self.args.name}: {text}"

  def command_line(self, subcommand, *more):
    """`launch/tpu.py SUBCOMMAND` on this slice, then `more`: for the messages to suggest."""
    project = f" --project {self.args.project}" if self.args.project else ""
    flags = f"--name {self.args.name} --zone {self.args.zone}{project}"
    return " ".join([f"launch/tpu.py {subcommand} {flags}", *more])

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
      return run_command(command, limit)
    except FileNotFoundError:
      raise Error("gcloud is not on PATH: install the Google Cloud CLI") from None
    except subprocess.TimeoutExpired:
      raise Transient(f"`{shown(command)}` timed out after {limit:g} s") from None

  def tpus(self, group, verb, *flags, kind, operands=None):
    """`gcloud compute tpus GROUP VERB OPERANDS --zone=... [--project=...] FLAGS` (see
    gcloud); OPERANDS: this slice's name unless given.
    """
    operands = operands or [self.args.name]
    return self.gcloud("compute", "tpus", group, verb, *operands, *self.where, *flags, kind=kind)

  def failure(self, result):
    """The Error of a failed call: Transient unless another try would fail the same way."""
    message = f"`{shown(result.args)}` failed: {gcloud_message(result.stderr)}"
    return Error(message) if PERMANENT.search(result.stderr or "") else Transient(message)

  def check(self, result):
    """Raises the failure of a call that failed; returns its result (None when dry)."""
    if result is not None and result.returncode != 0:
      raise self.failure(result)
    return result

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
    a, message = self.args, gcloud_message(stderr)
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
    return self.describe()[0]

  def describe(self):
    """(state, accelerator type) of the queued resource: (None, None) when it does not
    exist (or dry); its type is "" where gcloud does not say (a node given by topology).
    """
    return self.retried(self._describe)

  def _describe(self):
    result = self.tpus("queued-resources", "describe", f"--format={DESCRIBED}", kind="describe")
    if result is None:
      return None, None  # dry run: nothing was asked
    if result.returncode != 0:
      if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
        return None, None
      raise self.failure(result)
    fields = result.stdout.strip("\r\n").split("\t")
    accelerator = fields[1].strip() if len(fields) > 1 else ""
    return fields[0].strip() or "UNKNOWN", accelerator

  def existing(self):
    """The queued resource's state (None: it does not exist), once its accelerator type
    is checked against --accelerator-type (when given): another is a Mismatch.
    """
    state, accelerator = self.describe()
    wanted = self.args.accelerator_type
    if wanted and accelerator and accelerator.lower() != wanted.lower():
      raise Mismatch(
        f"the queued resource {self.args.name} is {accelerator}, not --accelerator-type "
        f"{wanted}: `{self.command_line('down')}` it first, or use another --name"
      )
    return state

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
    self.wait_deleted()
    self.say("deleted")

  def wait_deleted(self):
    """Polls until the queued resource is gone, printing each state it is in; one still
    there DELETE_WAIT times --timeout after its delete was asked for is DeleteStuck.
    """
    start, last, limit = time.time(), None, self.args.timeout * DELETE_WAIT
    while (state := self.state()) is not None:
      if state != last:
        self.say(f"{state} ({time.time() - start:.0f} s)")
        last = state
      if time.time() - start >= limit:
        raise DeleteStuck(
          f"the queued resource {self.args.name} is still {state} {limit:g} s after its "
          f"delete was asked for: check it in the Cloud console (Compute Engine > TPUs), "
          f"or `{self.command_line('down')}` again"
        )
      time.sleep(self.args.poll)

  def _request_delete(self):
    # --force deletes its node first.
    result = self.tpus(
      "queued-resources", "delete", "--force", "--async", "--quiet", kind="describe"
    )
    if result is not None and result.returncode != 0 and "NOT_FOUND" not in result.stderr:
      raise self.failure(result)

  # --- the workers ----------------------------------------------------------------------------

  def ssh(self, command, worker="all", kind="poll"):
    # --quiet: no prompts (ssh key creation) in an unattended watch.
    flags = (f"--worker={worker}", f"--command={command}", "--quiet")
    return self.tpus("tpu-vm", "ssh", *flags, kind=kind)

  def worker_count(self):
    """How many workers (hosts) the slice's node has."""
    return self.retried(self._describe_node)

  def _describe_node(self):
    result = self.tpus("tpu-vm", "describe", "--format=json", kind="describe")
    if result.returncode != 0:
      if "NOT_FOUND" in result.stderr:
        raise Error(f"{self.args.name} has no TPU node in {self.args.zone}: `up` creates it")
      raise self.failure(result)
    return len(json.loads(result.stdout).get("networkEndpoints", []))

  def pack(self):
    """Packs this checkout, once: every start of this command ships the same files."""
    if self.tarball is None and not self.dry_run:
      self.tarball = os.path.join(self.scratch, TARBALL)
      pack_checkout(self.tarball)

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
    operands = [tarball, f"{self.args.name}:{TARBALL}"]
    result = self.tpus("tpu-vm", "scp", "--worker=all", "--quiet", kind="copy", operands=operands)
    self.check(result)

  def _start_once(self, script):
    result = self.ssh(script, kind="start")
    if result is None or result.returncode == 0:
      return
    if "bert-jax-busy" in result.stdout:
      raise Busy(self.busy_message("a run started since"))
    if failed := install_failure(result.stdout):
      raise Error(self.install_message(failed))
    raise self.failure(result)

  def install_message(self, failed):
    """What a failed install (its last lines: `failed`) says: the same on another try."""
    logs = self.command_line("logs", "--no-follow")
    return (
      f"installing bert_jax[tpu] on the workers failed (exit status "
      f"{INSTALL_FAILED_EXIT_CODE}, not retried): {failed}; `{logs}` shows its output; "
      f"fix that, or give --python, a Python on the workers that has bert_jax"
    )

  def busy_message(self, which):
    return (
      f"{which} is still alive on {self.args.name}: wait for it to end, or "
      f"`{self.command_line('run', '...', '--force')}` stops it (it saves a checkpoint) and "
      f"starts yours"
    )

  def statuses(self):
    """A Poll of the workers' runs (dry: of none)."""
    try:
      result = self.ssh(STATUS_PROBE)
    except Transient as e:
      return Poll([], e)
    if result is None:
      return Poll([], None)  # dry run
    workers = parse_statuses(result.stdout)
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


def run_command(command, limit):
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


def shown(command):
  """A gcloud command up to its first flag (what it does to what), for messages."""
  words = []
  for word in command:
    if word.startswith("--"):
      break
    words.append(word)
  return shlex.join(words)


def gcloud_message(stderr):
  """A gcloud call's error on one line: its ERROR: line (after a failed ssh, with ssh's own
  line before it), else the last line.
  """
  lines = message_lines(stderr)
  errors = [i for i, line in enumerate(lines) if line.startswith("ERROR:")]
  if not errors:
    return last_line(stderr)
  i = errors[0]
  if i > 0 and "exited with return code" in lines[i]:
    return f"{lines[i - 1]}; {lines[i]}"
  return lines[i]
