"""The exceptions a run ends with, and the exit statuses the CLI gives them.

The CLI prints a `UserError` as a single `error: ...` line (no traceback) and exits
with status 2. Its message names the problem and the fix.

`Preempted` is a run that stopped on SIGTERM (or Ctrl-C) after saving a checkpoint, and
`Terminated` one that SIGTERM stopped outside its training steps: the CLI prints one line
and exits with `PREEMPTED_EXIT_CODE`, which a launcher (SLURM `--requeue`, a TPU
babysitter) reads as "run the same command again".
"""

# EX_TEMPFAIL from sysexits.h: a temporary failure, the user is invited to retry.
PREEMPTED_EXIT_CODE = 75


def first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of `error`'s message, cut at `limit` characters ("..." at the cut), or
  its type's name when it has none: the reason a one-line error quotes from a library's.
  """
  text = (str(error).strip().splitlines() or [type(error).__name__])[0].strip()
  return text if len(text) <= limit else text[: limit - 3] + "..."


def summary(error: BaseException, limit: int = 200) -> str:
  """`Type: first line` of `error` (`first_line`), or its type alone without a message."""
  name, text = type(error).__name__, first_line(error, limit)
  return name if text == name else f"{name}: {text}"


class UserError(Exception):
  """Bad input from the user: a config value, a file, a workdir."""


class NonFiniteLoss(UserError):
  """The loss became NaN or inf: the run stops (status 2, not retried) and keeps the last
  good checkpoint.
  """


class Preempted(Exception):
  """A run stopped by SIGTERM / Ctrl-C after its checkpoint at `step` was committed."""

  def __init__(self, step: int, directory: str, signal_name: str = "SIGTERM"):
    how = (
      "interrupted at step {} (Ctrl-C)" if signal_name == "SIGINT" else "preempted at step {} ({})"
    )
    super().__init__(
      f"{how.format(step, signal_name)}: checkpoint saved in {directory}; "
      f"run the same command to resume"
    )
    self.step = step
    self.directory = directory


class Terminated(BaseException):
  """SIGTERM before or after the training steps (while data is prepared or read, or a
  program compiles): there is no step to save, and the same command picks up what was
  done (prepared shards, checkpoints). The CLI exits with `PREEMPTED_EXIT_CODE` as for
  `Preempted`. A BaseException, as KeyboardInterrupt is: code that turns a failure into
  bad input (`except Exception`) lets it through.
  """

  def __init__(self):
    super().__init__(
      "stopped by SIGTERM outside the training steps; run the same command to resume "
      "(what was finished is kept: prepared shards, saved checkpoints)"
    )
