"""What the processes of a jax.distributed run share: the work process 0 does for every
process, and the outcome they all learn (the workdir's lock, preparing data on a shared
disk, setting a damaged checkpoint aside); host-side sums over the processes.

Without this, process 0 failing (bad input found while preparing data) left the others
waiting at the next barrier, and the run ended five minutes later when JAX's shutdown
barrier timed out, every process aborting with a stack trace. Now every process stops at
once with process 0's error line. With one process these run `run()` and nothing more.
"""

import jax
import numpy as np

from bert_jax.errors import UserError

_TEXT_BYTES = 2048


def on_process_zero(run):
  """`run()` on process 0 only; returns its result there (None elsewhere).

  Raises:
    UserError: on every other process, with process 0's error (process 0 raises its own
      exception, traceback and all).
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
    raise UserError(error)
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

  data = np.zeros(_TEXT_BYTES, np.uint8)
  raw = text.encode("utf-8")[:_TEXT_BYTES]
  data[: len(raw)] = np.frombuffer(raw, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return out.tobytes().rstrip(b"\0").decode("utf-8", errors="replace")
