"""Metric sinks: `metrics.jsonl`, TensorBoard event files and the progress bar.

Only process 0 writes. On resume the JSONL file is cut back to the restored step, so it
reads as if the run had never stopped.
"""

import json
import os
import sys
import time

import jax
from tqdm import tqdm

from bert_jax import storage


def log(message):
  """Prints a line from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def truncate_jsonl(path: str, last_step: int, *, log=log) -> None:
  """Cuts `path` back to the records of steps up to `last_step`, for a resumed run.

  Drops the lines logged after `last_step` (left by a run killed after its checkpoint) and
  lines that are not a whole record (a run killed while writing one): those are reported
  in one line naming the file. Rewrites the file atomically; a missing file is left so.

  Args:
    path: the metrics.jsonl of a run.
    last_step: the step the run resumes from.
    log: prints the one-line notice about incomplete lines.
  """
  if not os.path.exists(path):
    return
  kept, broken = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.strip():
        continue
      step = _step_of(line)
      if step is None:
        broken += 1
      elif step <= last_step:
        kept.append(line if line.endswith("\n") else line + "\n")
  if broken:
    log(
      f"{path}: dropped {broken} incomplete line{'s' if broken > 1 else ''} (cut off "
      f"when the run stopped); kept its {len(kept)} records up to step {last_step}"
    )
  storage.write_lines(path, kept)


def _step_of(line: str) -> int | None:
  """The step of one metrics.jsonl line, or None when it is not a whole record."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  step = record.get("step") if isinstance(record, dict) else None
  return step if isinstance(step, int) and not isinstance(step, bool) else None


class MetricWriter:
  """Appends `{"step", "split", ...}` records to JSONL and TensorBoard."""

  def __init__(self, workdir, start_step):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    truncate_jsonl(self.path, start_step)
    try:
      from tensorboardX import SummaryWriter  # optional: absent on some GPU images

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)
    except ImportError:
      pass

  def write(self, step, split, metrics):
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A tqdm bar over steps showing loss, MLM accuracy, sequences/s and the ETA."""

  def __init__(self, start_step, total_steps, batch_size):
    self.batch_size = batch_size
    self._bar = tqdm(
      total=total_steps,
      initial=start_step,
      unit="step",
      dynamic_ncols=True,
      file=sys.stderr,
      disable=jax.process_index() != 0,
      mininterval=1.0,
    )
    self._last_step, self._last_time = start_step, time.perf_counter()

  def throughput(self, step):
    """Sequences per second since the previous call (and resets the window)."""
    now = time.perf_counter()
    rate = (step - self._last_step) * self.batch_size / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return rate

  def update(self, step, metrics=None):
    self._bar.update(step - self._bar.n)
    if metrics:
      self._bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()}, refresh=False)

  def write(self, line):
    self._bar.write(line, file=sys.stderr)

  def close(self):
    self._bar.close()
