"""Progress of the work outside training steps (prepare, shard copies, predict, evaluate,
embed): a tqdm bar in a terminal; where stderr is a file or a pipe (SLURM's `.out`, a TPU
worker's log, `| tee`), a plain line at most every PLAIN_EVERY_S seconds instead of a bar's
carriage returns, as training's progress does (`train.metrics.Progress`).
"""

import os
import sys
import time

import tqdm

# Where stderr is no terminal: the seconds between two plain lines (work shorter than this
# prints none).
PLAIN_EVERY_S = 60.0


def is_terminal(stream) -> bool:
  """Whether `stream` is a terminal with a size, where a tqdm bar shows. A pseudo-terminal
  of 0 columns or 0 rows (some containers and CI runners give one) shows no bar at all
  (tqdm hides a bar below the last row): plain lines go there, as to a file.
  """
  try:
    size = os.get_terminal_size(stream.fileno())
    return stream.isatty() and size.columns > 0 and size.lines > 0
  except (AttributeError, ValueError, OSError):  # no isatty or fileno, closed, no size
    return False


def timing(elapsed: float, left: float) -> str:
  """`M:SS elapsed, about M:SS left`: the end of every plain progress line."""
  return (
    f"{tqdm.tqdm.format_interval(elapsed)} elapsed, about {tqdm.tqdm.format_interval(left)} left"
  )


def count(n: int, noun: str) -> str:
  """`n` and `noun`, plural unless `n` is 1: "1 row", "2 rows", "3 blank rows"."""
  return f"{n} {noun}{'s' * (n != 1)}"


def parameters(n: int) -> str:
  """`n` parameters to three significant digits, as every log line writes them: "1.55M
  parameters", "22.7M parameters", "336M parameters".
  """
  scale, unit = next((s, u) for s, u in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")) if n >= s)
  scaled = f"{n / scale:.3g}{unit}"
  return f"{scaled} parameters"


def size(n: float) -> str:
  """`n` bytes in GB, MB or kB, as the log lines write them ("1.2 MB")."""
  for unit, scale in (("GB", 1e9), ("MB", 1e6)):
    if n >= scale:
      return f"{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
  return f"{n / 1e3:.1f} kB"


class Bar:
  """`total` units of work, `update`d as they finish.

  Args:
    total: the units in all.
    desc: what is done ("prepare", "predict"), the start of each line.
    unit: the name of one unit ("shard", "batch", "B": bytes, shown scaled).
    shown: False: no bar and no lines (a caller that was asked for none).
    leave: keep the terminal's bar when done.
  """

  def __init__(self, total: int, desc: str, unit: str, shown: bool = True, leave: bool = True):
    self.total, self.desc, self.unit = total, desc, unit
    self.plain = shown and not is_terminal(sys.stderr)
    self.bar = tqdm.tqdm(
      total=total,
      desc=desc,
      unit=unit,
      unit_scale=unit == "B",
      disable=not shown or self.plain,
      dynamic_ncols=True,
      leave=leave,
    )
    self.done, self.note = 0, ""
    self.start = self.last = time.monotonic()

  def update(self, n: int = 1, note: str | None = None) -> None:
    """`n` more units done; `note` (e.g. "585k tokens/s") shown beside the count."""
    self.done += n
    if note is not None:
      self.note = note
      self.bar.set_postfix_str(note, refresh=False)
    self.bar.update(n)
    now = time.monotonic()
    if self.plain and now - self.last >= PLAIN_EVERY_S:
      self.last = now
      print(self.line(now - self.start), file=sys.stderr, flush=True)

  def line(self, elapsed: float) -> str:
    """The plain line after `elapsed` seconds: count, note, elapsed and time left."""
    count = (
      f"{size(self.done)} of {size(self.total)}"
      if self.unit == "B"
      else f"{self.done}/{self.total} {self.unit}s"
    )
    left = elapsed / max(self.done, 1e-9) * (self.total - self.done)
    note = f", {self.note}" if self.note else ""
    return f"{self.desc}: {count}{note}; {timing(elapsed, left)}"

  def close(self) -> None:
    self.bar.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def over(items, total: int, desc: str, unit: str, shown: bool = True, leave: bool = True):
  """Yields `items` (`total` of them) under a `Bar`, one unit each."""
  with Bar(total, desc, unit, shown, leave) as bar:
    for item in items:
      yield item
      bar.update()
