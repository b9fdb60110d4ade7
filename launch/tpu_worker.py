"""What runs on each worker of a Cloud TPU slice: the script that starts the run, the probe
that reports on it, and reading the probe's answers.

Each worker keeps its run in RUN_DIR: `log`, `job` (the run's job: a hash of its workdir
and arguments), `pid`, `start` (which start launched it) and, when the run ends, `status`
(its exit status). The checkout arrives as TARBALL in the worker's home.

Without `--python`, the start installs `bert_jax[tpu]` into ~/venv with uv: the TPU VM
images are Ubuntu 22.04, whose python3 (3.10) is older than bert_jax needs (3.11) and may
lack the venv module; uv uses a system Python >= 3.11 when there is one, else downloads
one. The install's output goes to the worker's log; a failed install ends the start with
INSTALL_FAILED_EXIT_CODE and the log's last lines (INSTALL_FAILED marks them).
"""

import dataclasses
import hashlib
import shlex

from tpu_errors import Error

PREEMPTED_EXIT_CODE = 75  # bert_jax.errors.PREEMPTED_EXIT_CODE (the launcher needs no bert_jax)
RUN_DIR = "~/bert_jax_run"  # on each worker: log, status, pid, job, start
TARBALL = "bert_jax.tar.gz"  # in each worker's home
STOP_GRACE_S = 300  # what `run --force` gives the old run to save its checkpoint
TAIL_LINES = 20  # of a failed worker's log, printed before --autodelete deletes the slice
# What a run that finds its bucket workdir locked by another host (a stale lock: a deleted
# slice's run) waits for the lock to lapse, unless --env sets it (bert_jax/lock.py).
LOCK_WAIT_ENV, LOCK_WAIT_S = "BERT_JAX_LOCK_WAIT_S", 300
INSTALL_FAILED_EXIT_CODE = 4  # the start script's status when the install failed
INSTALL_FAILED = "bert-jax-install-failed"  # marks its log's last lines, "MARK KEY LINE"
INSTALL_LINES = 3  # of the install's output, in the error
PYTHON_NEEDED = "3.11"  # pyproject.toml's requires-python
# A log's lines: a progress bar's \r-separated updates count as lines; blank ones do not.
LOG_LINES = "tr '\\r' '\\n' | grep -v '^[[:space:]]*$'"
# Each worker's run, one line: "bert-jax-status KEY STATUS JOB LAST_LOG_LINE" (KEY tells the
# workers apart; STATUS an exit status, "running", "none" or "lost": gone without one; JOB
# the run's job_tag, "-" if none), then, after a failed run, its log's last lines, each as
# "bert-jax-log KEY LINE".
LAST_LINE = f"tail -c 4000 $d/log 2>/dev/null | {LOG_LINES} | tail -n 1"
STATUS_PROBE = (
  f"d={RUN_DIR}; k=$(hostname)-$$; if [ -f $d/status ]; then s=$(cat $d/status); "
  f"elif [ -f $d/pid ] && kill -0 $(cat $d/pid) 2>/dev/null; then s=running; "
  f"elif [ -f $d/pid ]; then s=lost; else s=none; fi; j=$(cat $d/job 2>/dev/null || echo -); "
  f'echo "bert-jax-status $k $s $j $({LAST_LINE})"; '
  f"case $s in running|none|lost|0|{PREEMPTED_EXIT_CODE}) ;; *) tail -n {TAIL_LINES} $d/log "
  f"2>/dev/null | {LOG_LINES} | tail -n {TAIL_LINES} | "
  f'sed "s/^/bert-jax-log $k /";; esac'
)


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
  failure: Error | None


def parse_statuses(text):
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


def pretrain_argv(a):
  """The `bert-jax` arguments every worker runs."""
  argv = ["pretrain", "--config", a.config, "--workdir", a.workdir, "--config.distributed=True"]
  return argv + a.overrides


def job_tag(a):
  """Names the job (its workdir and arguments): a slice's run is this job's when equal."""
  return hashlib.sha256("\0".join(pretrain_argv(a)).encode()).hexdigest()[:12]


def install_script():
  """Installs uv (pip --user, else its installer), a venv of Python >= 3.11 in ~/venv (kept
  when it has one) and bert_jax[tpu] into it; exits INSTALL_FAILED_EXIT_CODE with the last
  lines of its output (in the log) when any step fails.
  """
  major, minor = PYTHON_NEEDED.split(".")
  new_enough = f"import sys; sys.exit(sys.version_info < ({major}, {minor}))"
  steps = (
    "{ command -v uv || python3 -m pip install --user -q uv || "
    "curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh; } && "
    f"{{ ~/venv/bin/python -c {shlex.quote(new_enough)} || "
    f"{{ rm -rf ~/venv && uv venv -q --python '>={PYTHON_NEEDED}' ~/venv; }}; }} && "
    "uv pip install -q --python ~/venv/bin/python './bert_jax[tpu]'"
  )
  d = RUN_DIR
  return (
    'export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"; '  # where uv's installs put it
    f"if ! {{ {steps}; }} > {d}/log 2>&1 < /dev/null; then "
    f"k=$(hostname)-$$; tail -n {TAIL_LINES} {d}/log | {LOG_LINES} | tail -n {INSTALL_LINES} | "
    f'sed "s/^/{INSTALL_FAILED} $k /"; exit {INSTALL_FAILED_EXIT_CODE}; fi; '
  )


def install_failure(text):
  """The last lines of the first failed install in a start's output, joined: "" if none."""
  lines = {}
  for line in text.splitlines():
    _, mark, rest = line.partition(f"{INSTALL_FAILED} ")  # wherever ssh puts it in the line
    if mark:
      key, _, logged = rest.partition(" ")
      lines.setdefault(key, []).append(logged.strip())
  return " / ".join(next(iter(lines.values()), []))


def run_env(a):
  """The --env settings of the run, after the launcher's defaults (LOCK_WAIT_ENV)."""
  given = {e.partition("=")[0] for e in a.env}
  defaults = [] if LOCK_WAIT_ENV in given else [f"{LOCK_WAIT_ENV}={LOCK_WAIT_S}"]
  return [*defaults, *a.env]


def start_script(a, launch, force=False):
  """The shell command each worker runs (in its home) to unpack, install and start the run.
  `launch` names this start: a worker that holds it already was started by an earlier try.
  A live run there is stopped first when `force` (SIGTERM to its process group: it saves a
  checkpoint), else refused (exit 3) and left running.
  """
  env = "".join(f"export {shlex.quote(e)}; " for e in run_env(a))
  if a.python:
    python, install = shlex.quote(a.python), ""
  else:
    python, install = "~/venv/bin/python", install_script()
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
