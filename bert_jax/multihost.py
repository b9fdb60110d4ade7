"""What the processes of a jax.distributed run share: the work process 0 does for every
process, and the outcome they all learn (the workdir's lock, preparing data on a shared
disk, setting a damaged checkpoint aside); host-side sums over the processes.

Without this, process 0 failing (bad input found while preparing data) left the others
waiting at the next barrier, and the run ended five minutes later when JAX's shutdown
barrier timed out, every process aborting with a stack trace. Now every process stops at
once with process 0's error line. With one process these run `run()` and nothing more.

An error met by one process alone (a damaged shard only its lane reads) is told to the
others through the coordination service: `watch_for_failures` (started with the cluster)
prints the failing process's line and exits with its status; `stop_all` is what the
failing process does after printing it.
"""

import atexit
import os
import sys
import threading
import time

import jax
import numpy as np

from bert_jax.errors import UserError

_TEXT_BYTES = 2048


class SharedFailure(UserError):
  """Process 0's failure, raised on every other process by `on_process_zero`: all of them
  end with it, so none tells the others (`stop_all`).
  """


def on_process_zero(run):
  """`run()` on process 0 only; returns its result there (None elsewhere).

  Raises:
    SharedFailure: on every other process, with process 0's error and "(on process 0)"
      (process 0 raises its own exception, traceback and all).
  """
  if jax.process_count() == 1:
    return run()
  result, error, failure = None, "", None
  if jax.process_index() == 0:
    try:
      result = run()
    except Exception as e:
      failure = e
      error = str(e) if isinstance(e, UserError) else f"process 0 failed: {type(e).__name__}: {e}"
      error = error or type(e).__name__
  error = broadcast_text(error)  # every process waits here for process 0's outcome
  if failure is not None:
    raise failure
  if error:
    raise SharedFailure(f"{error} (on process 0)")
  return result


def process_zero_first(run):
  """`run()` on process 0, then on the others (which reuse what it made); its result on
  every process. Raises as `on_process_zero` when process 0 fails.
  """
  result = on_process_zero(run)
  return run() if jax.process_index() != 0 else result


def summed(values: np.ndarray) -> np.ndarray:
  """`values` (a host array of the same shape on every process) summed over the processes."""
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def broadcast_text(text: str) -> str:
  """Process 0's `text` (its first 2048 bytes of UTF-8) on every process."""
  from jax.experimental import multihost_utils

  return _decoded(np.asarray(multihost_utils.broadcast_one_to_all(_encoded(text))))


def gathered_text(text: str) -> list[str]:
  """Every process's `text` (its first 2048 bytes of UTF-8), in process order."""
  from jax.experimental import multihost_utils

  rows = np.asarray(multihost_utils.process_allgather(_encoded(text)))
  return [_decoded(row) for row in rows.reshape(-1, _TEXT_BYTES)]


def _encoded(text: str) -> np.ndarray:
  """`text` as _TEXT_BYTES bytes of UTF-8, cut or zero-padded (what a collective moves)."""
  data = np.zeros(_TEXT_BYTES, np.uint8)
  raw = text.encode("utf-8")[:_TEXT_BYTES]
  data[: len(raw)] = np.frombuffer(raw, np.uint8)
  return data


def _decoded(data: np.ndarray) -> str:
  return data.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")


_FAILURE_KEY = "bert_jax/failure"  # "PROCESS STATUS LINE" of the first process to fail
_ACK_SECONDS = 10  # how long a failing process waits for the others to have read it


def _client():
  """The jax.distributed client of this process, or None outside a cluster."""
  if "jax" not in sys.modules:
    return None
  from jax._src import distributed

  return distributed.global_state.client


def in_cluster() -> bool:
  """Whether this process is one of several in a jax.distributed cluster."""
  return _client() is not None and jax.process_count() > 1


_ending = threading.Lock()  # held by the thread that ends this process on a failure


def watch_for_failures() -> None:
  """Starts a thread that ends this process when another fails (`stop_all`): it prints
  that process's error line and exits with its status. The main thread may be inside a
  collective the failed process will never join; without this it would wait there until
  JAX's shutdown barrier aborted every process, minutes later. The thread polls each
  second and is stopped at exit (a thread still inside the client's call when Python
  finalizes aborts the process).
  """
  if not in_cluster():
    return
  client, me = _client(), jax.process_index()
  stopped = threading.Event()

  def watch():
    while not stopped.is_set():
      try:
        value = client.blocking_key_value_get(_FAILURE_KEY, 1000)
      except Exception as e:  # a timeout: watch on; the service gone: the run is over
        if "DEADLINE_EXCEEDED" in str(e):
          continue
        return
      process, status, line = value.split(" ", 2)
      if int(process) == me or not _ending.acquire(blocking=False):
        return  # this process is failing too: its main thread prints and exits
      print(f"{line} (on process {process})", file=sys.stderr, flush=True)
      _mark(client, "read", me)
      _exit(client, me, int(status))

  watcher = threading.Thread(target=watch, name="bert_jax-failure-watch", daemon=True)
  watcher.start()

  def stop():
    stopped.set()
    watcher.join(timeout=5)

  atexit.register(stop)  # before JAX's own shutdown (atexit runs last-registered first)


def stop_all(status: int, text: str, tell: bool = True) -> None:
  """Ends a cluster's run on this process's failure: prints `text` (an error; its last
  line is the one told), tells the others (each prints that line and exits with
  `status`; not when `tell` is False: a failure every process shares), waits a few
  seconds for them to have read it, and exits at once, skipping JAX's shutdown barrier,
  which they will not reach. Outside a cluster: returns (the caller prints).
  """
  if not in_cluster():
    return
  if not _ending.acquire(blocking=False):  # another process's failure is ending this one
    threading.Event().wait()
  client, me = _client(), jax.process_index()
  print(text, file=sys.stderr, flush=True)
  line = text.strip().splitlines()[-1] if text.strip() else f"error: exit status {status}"
  if tell:
    try:
      client.key_value_set(_FAILURE_KEY, f"{me} {status} {line}")
    except Exception:  # another process failed first: it told the others
      pass
  _mark(client, "read", me)
  if tell:
    _wait_for_marks(client, "read", range(jax.process_count()))
  _exit(client, me, status)


def _mark(client, what: str, me: int) -> None:
  """Marks process `me` as having done `what` ("read" the failure, or "exiting")."""
  try:
    client.key_value_set(f"{_FAILURE_KEY}/{what}/{me}", "")
  except Exception:
    pass


def _wait_for_marks(client, what: str, processes) -> None:
  """Waits (at most _ACK_SECONDS in all) until each of `processes` has marked `what`."""
  deadline = time.monotonic() + _ACK_SECONDS
  for process in processes:
    left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
    try:
      client.blocking_key_value_get(f"{_FAILURE_KEY}/{what}/{process}", max(1, left_ms))
    except Exception:  # gone, or not answering: go on
      return


def _exit(client, me: int, status: int) -> None:
  """Exits now, process 0 last: it hosts the coordination service, whose end aborts every
  process still running (with a stack trace instead of its error line).
  """
  sys.stdout.flush()
  sys.stderr.flush()
  if me == 0:
    _wait_for_marks(client, "exiting", range(1, jax.process_count()))
    time.sleep(0.5)  # for the last of them to be gone
  else:
    _mark(client, "exiting", me)
  os._exit(status)
