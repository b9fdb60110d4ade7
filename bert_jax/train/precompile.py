"""Compiling a run's programs on a background thread while its state is restored.

The train step, the finiteness check and the eval programs of a run are known before its
parameters are: their shapes, dtypes and shardings come from the abstract state and one
batch's spec. `Precompiler` lowers and compiles them on one worker thread (XLA compiles
with the GIL released) while the main thread reads the checkpoint or initialises the
state; then the first call of each finds its executable in JAX's own cache. A call whose
arguments differ from the spec (another dtype, shape or sharding) compiles again, as it
would have without this: the spec only saves time, it never changes what runs.

Tracing depends on context (the mesh, the logical axis rules, the dropout RNG flavour),
which JAX and Flax keep per thread: the worker enters the same contexts as the loop.
"""

import concurrent.futures
import contextlib
from collections.abc import Callable

import jax
import numpy as np


class Precompiler:
  """Compiles programs in the background; `wait` before running any of them.

  Args:
    contexts: makes the context manager (or stack) that the loop traces its programs in.
  """

  def __init__(self, contexts: Callable[[], contextlib.AbstractContextManager]):
    self._contexts = contexts
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bert_jax_compile")
    self._futures = []

  def submit(self, jitted, *args) -> concurrent.futures.Future:
    """Queues `jitted.lower(*args).compile()`; args may be ShapeDtypeStructs with shardings."""
    future = self._pool.submit(self._compile, jitted, args)
    self._futures.append(future)
    return future

  def _compile(self, jitted, args):
    with self._contexts():
      jitted.lower(*args).compile()

  def wait(self, futures=None) -> None:
    """Blocks until the programs of `futures` (those `submit` returned; None: all queued)
    compiled. Call it before the first call of any of them: a call while its program
    still compiles would compile it a second time. A failure is dropped here: the
    program's first call compiles it again and raises the error where it belongs.
    """
    waited = list(self._futures if futures is None else futures)
    for future in waited:
      with contextlib.suppress(Exception):
        future.result()
    self._futures = [future for future in self._futures if future not in waited]

  def close(self) -> None:
    """Drops the programs not yet started and waits for the one compiling."""
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def batch_spec(local_batch: dict, global_rows: int, sharding) -> dict:
  """ShapeDtypeStructs of the global batch that `sharding.global_batch` makes of batches
  like `local_batch` (numpy arrays or anything with shape and dtype): `global_rows` rows,
  the rest of each shape as in `local_batch`, dtypes as JAX stores them (int64 -> int32).
  """
  return {
    key: jax.ShapeDtypeStruct(
      (global_rows, *np.shape(value)[1:]),
      jax.dtypes.canonicalize_dtype(value.dtype),
      sharding=sharding,
    )
    for key, value in local_batch.items()
  }
