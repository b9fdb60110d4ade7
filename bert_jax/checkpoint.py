"""A thin wrapper over Orbax's CheckpointManager.

Each step folder `checkpoints/<step>/` holds three items: `params`, `opt_state` (both
sharded arrays, restored straight into the layout of whatever mesh asks) and `meta` (JSON:
the step, the data position, the model config and the tokenizer fingerprint). Keeping the
parameters apart lets export, `fill-mask` and `init_from` read them without the optimizer
state.

Orbax commits a step atomically: locally it writes `<step>.orbax-checkpoint-tmp-*/` and
renames it, on an object store it writes `commit_success.txt` last; a step a kill -9 cut
short is not listed, so the run resumes from the one before. A committed step whose files
were damaged later (truncated, deleted) raises `Unreadable`; `set_aside` moves it into
`<directory>_unreadable/` (never deleted), out of the way of a later save of that step.

Which steps stay (`_LatestAndLasting`): the newest, and the newest `keep` of the others that
were not preemption saves. A preemption save (its meta says `"preemption": true`) lives only
while it is the newest: the run resumes from it, and the next save supersedes it. So a spot
run stopped five times between two periodic saves still keeps its periodic ones.
"""

import contextlib
import dataclasses
import json
import logging as py_logging
import re
import sys
import threading

import orbax.checkpoint as ocp
from absl import logging

from bert_jax import errors, multihost, storage
from bert_jax.errors import UserError

# Status codes and exceptions of a storage that may answer later: such a checkpoint is not
# unreadable, the error is raised as it is.
_TRANSIENT = (
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "RESOURCE_EXHAUSTED",
  "ABORTED",
  "CANCELLED",
  "UNAUTHENTICATED",
  "PERMISSION_DENIED",
)
_TRANSIENT_TYPES = (ConnectionError, TimeoutError, PermissionError, MemoryError)
# What damaged files look like from Orbax and TensorStore (a bug elsewhere, such as a restore
# target of the wrong shape, is none of these and keeps its traceback).
_DAMAGE = (
  "NOT_FOUND",
  "OUT_OF_RANGE",
  "DATA_LOSS",
  "FAILED_PRECONDITION",
  "was not found in the checkpoint",
)
_DAMAGE_TYPES = (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, EOFError)


# Orbax warns when a save waits for the one before it over a second: on a bucket, with
# saves close together, a line every save. Waits under QUIET_WAIT_S are dropped; a longer
# one (saves slower than their interval) is still said.
QUIET_WAIT_S = 10.0
_WAITED = re.compile(r"Waiting for previous save to complete took ([\d.]+) seconds")


class _ShortWaits(py_logging.Filter):
  def filter(self, record):
    waited = _WAITED.match(record.getMessage())
    return not waited or float(waited[1]) >= QUIET_WAIT_S


py_logging.getLogger("absl").addFilter(_ShortWaits())


class Unreadable(UserError):
  """A committed checkpoint step whose files cannot be read (truncated, partial)."""

  def __init__(self, directory, step, reason):
    super().__init__(f"checkpoint {directory}/{step} is unreadable ({reason}); choose another step")
    self.step, self.reason = step, reason


class Checkpoints:
  """Async, keep-last-N checkpoints in `directory`."""

  def __init__(self, directory, *, keep=3, async_save=True, read_only=False):
    self.directory = storage.absolute(directory)  # tensorstore wants absolute paths
    self._preemption_steps = set()  # of the steps in the directory: filled at the first save
    self._scanned = read_only
    level = logging.get_verbosity()
    if read_only:  # Orbax warns that a read-only manager neither saves nor deletes
      logging.set_verbosity(logging.ERROR)
    try:
      options = ocp.CheckpointManagerOptions(
        preservation_policy=None if read_only else _LatestAndLasting(keep, self._preemption_steps),
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
        # A save a second Ctrl-C or a kill cut short left `<step>.orbax-checkpoint-tmp*`;
        # the run that resumes removes it (one writer per workdir: the lock).
        cleanup_tmp_directories=not read_only,
      )
      self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("params", "opt_state", "meta")
      )
    finally:
      logging.set_verbosity(level)

  def latest_step(self):
    return self._manager.latest_step()

  def reached_preemption(self, step):
    """Whether every process has reached the step they agreed to stop at after a SIGTERM
    (JAX's preemption sync point under jax.distributed; always False without it).
    """
    return self._manager.reached_preemption(step)

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state, meta, *, preemption=False):
    """Starts saving `state` (a TrainState) and `meta` at `step` (returns at once).

    A `preemption` save is kept only until the next save (module docstring).
    """
    self._scan_preemption_saves()
    if preemption:
      meta = dict(meta, preemption=True)
      self._preemption_steps.add(step)
    self._manager.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave(meta),
      ),
      force=True,
    )

  def _scan_preemption_saves(self):
    """Reads which steps already in the directory were preemption saves (once: a resumed
    run's newest step often is one). A step whose meta cannot be read counts as lasting.
    """
    if self._scanned:
      return
    self._scanned = True
    for step in self.all_steps():
      try:
        if self.meta(step).get("preemption"):
          self._preemption_steps.add(step)
      except Unreadable:
        pass

  def save_params(self, step, params, meta):
    """Saves parameters and `meta` only: a checkpoint to start from (`import-hf`, the best
    eval's), not to resume (it has no optimizer state). A step already saved is replaced:
    a run resumed from before it (its later checkpoint unreadable) trains it again.
    """
    if step in self._manager.all_steps():
      self._manager.delete(step)
    self._manager.save(
      step,
      args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def meta(self, step):
    """The JSON meta of `step`. Raises Unreadable when its file is damaged."""
    with self._reading(step):
      args = ocp.args.Composite(meta=ocp.args.JsonRestore())
      return self._manager.restore(step, args=args)["meta"]

  def restore(self, step, abstract_params, abstract_opt_state=None):
    """Restores params (and the optimizer state when its target is given) at `step`.

    Raises:
      Unreadable: a file of the step is truncated, missing or garbled.
    """
    items = {"params": ocp.args.StandardRestore(abstract_params)}
    if abstract_opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["params"], restored.get("opt_state") if abstract_opt_state is not None else None

  def set_aside(self, step):
    """Moves step folder `step` into `<directory>_unreadable/` (process 0; every process
    then sees the steps without it). Returns where it went.
    """
    aside = f"{self.directory.rstrip('/')}_unreadable"
    target, n = storage.join(aside, str(step)), 1
    while storage.exists(target):  # set aside before: keep both
      target, n = storage.join(aside, f"{step}-{n}"), n + 1
    multihost.on_process_zero(lambda: storage.move(storage.join(self.directory, str(step)), target))
    self._manager.reload()
    return target

  @contextlib.contextmanager
  def _reading(self, step):
    """Turns the errors of damaged files into Unreadable (transient ones pass through)."""
    try:
      yield
    except Exception as e:
      if isinstance(e, UserError) or _is_transient(e) or not _damage(e):
        raise
      _quiet_failed_reads()
      raise Unreadable(self.directory, step, _reason(e)) from e

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


@dataclasses.dataclass
class _LatestAndLasting:
  """An Orbax preservation policy: the newest checkpoint, and the newest `keep` of the rest
  that are not in `preemption_steps`.
  """

  keep: int
  preemption_steps: set

  def should_preserve(self, checkpoints, *, context):
    del context
    steps = [c.step for c in checkpoints]
    lasting = [s for s in steps if s not in self.preemption_steps]
    kept = set(lasting[max(len(lasting) - self.keep, 0) :]) | set(steps[-1:])
    return [s in kept for s in steps]


def _is_transient(error) -> bool:
  return any(
    isinstance(e, _TRANSIENT_TYPES) or any(code in str(e) for code in _TRANSIENT)
    for e in storage.error_chain(error)
  )


def _damage(error) -> list:
  """The errors in `error`'s chain that tell of damaged files."""
  return [
    e
    for e in storage.error_chain(error)
    if isinstance(e, _DAMAGE_TYPES) or any(mark in str(e) for mark in _DAMAGE)
  ]


def _reason(error) -> str:
  """The innermost damage's first line, short: what is wrong with which file."""
  inner = _damage(error)[-1]
  return errors.first_line(inner)


_LEFTOVERS = ("Encountered error while reading array index", "Event loop is closed")
_quieted = False


def _is_leftover(error) -> bool:
  return any(mark in str(e) for e in storage.error_chain(error) for mark in _LEFTOVERS)


def _quiet_failed_reads():
  """Drops the tracebacks a failed Orbax read leaves behind: its other pending reads fail
  later, in threads and at exit, each printing a long TensorStore spec. The one line about
  the unreadable step says it all. Other errors are reported as before.
  """
  global _quieted
  if _quieted:
    return
  _quieted = True
  unraisable, excepthook = sys.unraisablehook, threading.excepthook

  def on_unraisable(info):
    if not _is_leftover(info.exc_value):
      unraisable(info)

  def on_thread_error(args):
    if not _is_leftover(args.exc_value):
      excepthook(args)

  class _Filter(py_logging.Filter):
    def filter(self, record):
      error = record.exc_info[1] if record.exc_info else None
      return not (_is_leftover(error) or any(m in record.getMessage() for m in _LEFTOVERS))

  sys.unraisablehook, threading.excepthook = on_unraisable, on_thread_error
  py_logging.getLogger("asyncio").addFilter(_Filter())
