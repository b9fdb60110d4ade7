"""One writer per workdir: a second run started on a workdir in use is refused.

A local workdir is locked with `fcntl.flock` on WORKDIR/.lock: the kernel drops the lock
when its process ends, however it ends (even `kill -9`), so a crashed run never leaves
it behind. The file stays; it holds the holder's host and pid while the lock is held.

An object store (`gs://...`) has no such locks. There the lock is the object WORKDIR/.lock,
`{"host", "pid", "time", "token"}`, whose time a daemon thread refreshes every
`HEARTBEAT_S` seconds. Another run is refused while that heartbeat is fresh; it takes the
lock over when the heartbeat is older than `STALE_S` (its run was killed) or when the lock
names this host and a pid that is no longer running. A clean exit deletes the object. Two
runs starting within the same second could both see no lock; each reads the object back
after writing it, and the one whose token is not there gives way. With
`BERT_JAX_LOCK_WAIT_S=N` in the environment a run that finds the lock held waits up to N
seconds for it to be released or to lapse, instead of stopping at once: a Cloud TPU slice
recreated after a preemption (`launch/tpu.py watch` sets it) finds the lock of the slice
that vanished under its run, on a host that no longer exists.

Under jax.distributed only process 0 takes the lock; every process learns the outcome, so
all of them stop with the same line.
"""

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from bert_jax import multihost, storage
from bert_jax.errors import UserError

LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0  # how often a remote lock's time is refreshed
STALE_S = 120.0  # a remote lock not refreshed for this long belongs to a dead run
WAIT_ENV = "BERT_JAX_LOCK_WAIT_S"  # seconds a run waits for a held remote lock (default 0)


class WorkdirLock:
  """The lock of one workdir (local: flock; remote: a heartbeat object)."""

  def __init__(self, workdir, *, heartbeat_s=HEARTBEAT_S, stale_s=STALE_S, wait_s=None):
    self.workdir = workdir
    self.path = storage.join(workdir, LOCK_FILE)
    self._heartbeat_s, self._stale_s = heartbeat_s, stale_s
    self._wait_s = _wait_from_environment() if wait_s is None else wait_s
    self._fd = None
    self._record = None
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> None:
    """Takes the lock, or raises UserError naming the run that holds it."""
    storage.makedirs(self.workdir)
    if storage.is_remote(self.path):
      self._acquire_remote()
    else:
      self._acquire_local()

  def release(self) -> None:
    """Gives the lock up (a no-op when it is not held)."""
    if self._fd is not None:
      import fcntl

      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    if self._record is not None:
      self._stop.set()
      if self._thread:
        self._thread.join()
      if (_read(self.path) or {}).get("token") == self._record["token"]:
        storage.remove(self.path)
      self._record = None

  def abandon(self) -> None:
    """Stops refreshing a remote lock without touching the bucket (its connection is lost):
    the object lapses, and a rerun on this host takes it over at once (its pid is gone).
    """
    self._stop.set()
    self._record = None

  def _refusal(self, holder) -> UserError:
    who, lapse = "another run", ""
    if holder:
      who = f"the run of pid {holder.get('pid')} on {holder.get('host')}"
    if holder and not storage.is_remote(self.workdir):
      since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
      who += f" (lock time {since})"
    elif holder:  # a host preempted with its run cannot be stopped: the lock lapses alone
      age = max(0.0, time.time() - holder.get("time", 0))
      lapse = (
        f"; its heartbeat was {age:.0f} s ago: if that run is gone (its host preempted), the "
        f"lock lapses {self._stale_s:.0f} s after its heartbeat, so run this again in "
        f"{max(1.0, self._stale_s - age):.0f} s"
      )
    return UserError(
      f"--workdir {self.workdir} is in use by {who}; wait for it to finish or stop it, "
      f"or use another --workdir{lapse}"
    )

  def _acquire_local(self):
    import fcntl

    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise self._refusal(_read(self.path)) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(_record()).encode())
    self._fd = fd

  def _acquire_remote(self):
    deadline, waiting = time.monotonic() + self._wait_s, False
    while (holder := _read(self.path)) and not self._is_stale(holder):
      left = deadline - time.monotonic()
      if left <= 0:
        raise self._refusal(holder)
      if not waiting:
        age = max(0.0, time.time() - holder.get("time", 0))
        print(
          f"lock: --workdir {self.workdir} is held by the run of pid {holder.get('pid')} on "
          f"{holder.get('host')} (heartbeat {age:.0f} s ago); waiting up to {left:.0f} s "
          f"({WAIT_ENV}) for it to end or lapse",
          flush=True,
        )
        waiting = True
      time.sleep(min(left, max(1.0, self._heartbeat_s / 6)))
    record = _record()
    storage.write_json(self.path, record, indent=None)
    if (_read(self.path) or {}).get("token") != record["token"]:  # another run wrote last
      raise self._refusal(_read(self.path))
    self._record = record
    self._stop.clear()
    self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
    self._thread.start()

  def _is_stale(self, holder) -> bool:
    if time.time() - holder.get("time", 0) > self._stale_s:
      return True
    return holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid"))

  def _heartbeat(self):
    while not self._stop.wait(self._heartbeat_s):
      with contextlib.suppress(Exception):  # a missed beat is retried at the next one
        if (_read(self.path) or {}).get("token") != self._record["token"]:
          return  # taken over (this run looked dead): leave the new holder alone
        self._record["time"] = time.time()
        storage.write_json(self.path, self._record, indent=None)


# The workdirs this process holds, each with how many `held` bodies are inside it: a command
# takes its workdir's lock before it prepares data, and the training loop's `held` inside
# it then holds it already.
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def held(workdir, *, keep_empty=True):
  """Holds the workdir's lock for the body (process 0 takes it; all processes agree).

  Re-entrant in one process. A local workdir the lock had to create is removed again when
  the body fails and has left nothing else in it (bad input leaves no folder behind), and
  also when it succeeds unless `keep_empty` (`prepare` into another prepared_dir).

  Raises:
    UserError: on every process, when another run holds the lock.
  """
  import jax

  key = storage.absolute(workdir)
  if key in _HELD:
    _HELD[key] += 1
    try:
      yield
    finally:
      _HELD[key] -= 1
    return
  lock = WorkdirLock(workdir)
  first = jax.process_index() == 0
  made = first and not storage.is_remote(workdir) and not os.path.exists(workdir)

  def acquire():
    try:
      lock.acquire()
    except OSError as e:
      if link := storage.dangling_link(lock.path):
        raise UserError(storage.dangling_link_problem(link)) from None
      raise UserError(f"cannot lock {lock.path}: {e}") from None

  multihost.on_process_zero(acquire)
  _HELD[key] = 1
  try:
    yield
  except BaseException as e:
    if storage.connection_lost(e) and storage.is_remote(lock.path):
      del _HELD[key]
      lock.abandon()
      raise
    _release(key, lock)
    if made:
      _remove_if_only_locked(workdir)
    raise
  _release(key, lock)
  if made and not keep_empty:
    _remove_if_only_locked(workdir)


def _remove_if_only_locked(workdir):
  """Removes `workdir` when it holds nothing but its lock file."""
  storage.remove_empty([workdir], disposable=lambda name: name == LOCK_FILE)


def _release(key, lock):
  del _HELD[key]
  lock.release()


def _wait_from_environment() -> float:
  """BERT_JAX_LOCK_WAIT_S as seconds (0 when unset).

  Raises:
    UserError: a value that is not a number of seconds >= 0.
  """
  value = os.environ.get(WAIT_ENV, "").strip()
  try:
    seconds = float(value or 0)
  except ValueError:
    seconds = -1.0
  if not seconds >= 0:
    raise UserError(f"{WAIT_ENV}={value!r} is not a number of seconds >= 0; e.g. {WAIT_ENV}=300")
  return seconds


def _record() -> dict:
  return {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "time": time.time(),
    "token": uuid.uuid4().hex,
  }


def _read(path) -> dict | None:
  """The lock record at `path`, or None (no lock, or an empty or garbled one)."""
  try:
    record = json.loads(storage.read_bytes(path) or b"null")
  except (FileNotFoundError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _pid_alive(pid) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True
