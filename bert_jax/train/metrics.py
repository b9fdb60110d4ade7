"""Metric sinks: `metrics.jsonl`, TensorBoard event files and the progress bar.

Only process 0 writes. On resume the JSONL file is cut back to the restored step, so it
reads as if the run had never stopped.

In a remote workdir (`gs://...`) nothing is appended: an object store has no append. The
writer keeps the file's lines and uploads the whole file at each write (a record every
`config.train.log_every_steps`, so a kill loses nothing that was logged); TensorBoard
writes its event files to a local temporary folder, uploaded to WORKDIR/tensorboard/ at
each write and at close (tensorboardX's own gs:// writer goes through another client).
"""

import atexit
import io
import json
import os
import shutil
import sys
import tempfile
import time

import jax
from tqdm import tqdm

from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.train import flops

# The train-record keys that measure time, so differ between two runs of the same steps.
TIMING_KEYS = ("seq_per_s", "mfu")


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
  kept = _kept_lines(path, last_step, log)
  if kept is not None:
    storage.write_lines(path, kept)


def _kept_lines(path: str, last_step: int, log) -> list[str] | None:
  """The whole records of steps up to `last_step` in `path` (see `truncate_jsonl`), each
  ending in a newline; None when there is no such file.
  """
  if not storage.exists(path):
    return None
  kept, broken = [], 0
  text = storage.read_bytes(path).decode("utf-8", errors="replace")
  for line in io.StringIO(text, newline=None):  # as a text-mode open() reads lines
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
  return kept


def _step_of(line: str) -> int | None:
  """The step of one metrics.jsonl line, or None when it is not a whole record."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  step = record.get("step") if isinstance(record, dict) else None
  return step if isinstance(step, int) and not isinstance(step, bool) else None


def _summary_writer_class():
  """TensorboardX's `SummaryWriter`, or None where tensorboardX is not installed (some GPU
  images lack it).

  tensorboardX imports torch, if it can, only to accept torch tensors (about 1.5 s of every
  run's start); the writer here logs floats, so unless torch is loaded already it is imported
  with torch hidden (a None entry in sys.modules makes `import torch` fail), then unhidden.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return None
  finally:
    if hide and sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Appends `{"step", "split", ...}` records to JSONL and TensorBoard (see the module
  docstring for a remote workdir).
  """

  def __init__(self, workdir, start_step):
    self.enabled = jax.process_index() == 0
    self.path = run_lib.path(workdir, run_lib.METRICS)
    self._tb = None
    self._lines = None  # remote: the file's lines, uploaded whole at each write
    self._tb_local = self._tb_remote = None
    if not self.enabled:
      return
    kept = _kept_lines(self.path, start_step, log)  # `truncate_jsonl`, keeping the lines
    if kept is not None:
      storage.write_lines(self.path, kept)
    if storage.is_remote(self.path):
      self._lines = kept or []
    summary_writer = _summary_writer_class()
    if summary_writer is None:
      return
    tb_dir = run_lib.path(workdir, run_lib.TENSORBOARD)
    if storage.is_remote(tb_dir):
      self._tb_local, self._tb_remote = tempfile.mkdtemp(prefix="bert_jax_tb_"), tb_dir
      tb_dir = self._tb_local
      # Gone at exit even when `close` is not reached (a second Ctrl-C stops at once).
      atexit.register(shutil.rmtree, self._tb_local, ignore_errors=True)
    self._tb = summary_writer(tb_dir, purge_step=start_step + 1)

  def write(self, step, split, metrics):
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in metrics.items()})
    line = json.dumps(record) + "\n"
    if self._lines is None:
      with open(self.path, "a") as f:
        f.write(line)
    else:
      self._lines.append(line)
      storage.write_lines(self.path, self._lines)
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()
      self._upload_tensorboard()

  def _upload_tensorboard(self):
    """Copies the local event files of a remote workdir into WORKDIR/tensorboard/."""
    if self._tb_remote is None:
      return
    for name in sorted(os.listdir(self._tb_local)):
      local = os.path.join(self._tb_local, name)
      if os.path.isfile(local):
        storage.copy(local, storage.join(self._tb_remote, name))

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._upload_tensorboard()
      if self._tb_local is not None:
        shutil.rmtree(self._tb_local, ignore_errors=True)
        self._tb_local = self._tb_remote = None


class Progress:
  """A tqdm bar over steps showing the job's train metrics (loss, accuracy, sequences/s,
  MFU) and the ETA, and the step timing behind `seq_per_s` and `mfu`.

  Where stderr is not a terminal (a log file: SLURM's .out, a TPU worker's log, a pipe) a
  bar would be one line of carriage returns; there each metrics update is a plain line
  instead: `step 200/1000: loss 5.12, ...; 3:20 elapsed, about 13:20 left`.

  The timing runs from `start_timing` (the loop calls it after the first step's call, which
  compiles the step, and after each eval and checkpoint save, which the device has finished
  by then) to each `rates` call, which restarts it: it measures training steps only, from
  the syncs the loop makes anyway (fetching the logged metrics).
  """

  def __init__(
    self, start_step, total_steps, batch_size, flops_per_seq=None, peak_flops=None, plain=None
  ):
    """`flops_per_seq` (model FLOPs of a training row) and `peak_flops` (of every device of
    the run, `flops.peak_flops`): both given, `rates` includes MFU. `plain`: lines instead
    of a bar (None: when stderr is not a terminal).
    """
    self.batch_size, self.flops_per_seq, self.peak_flops = batch_size, flops_per_seq, peak_flops
    self._plain = not progress_lib.is_terminal(sys.stderr) if plain is None else plain
    self._shown = jax.process_index() == 0
    self._bar = tqdm(
      total=total_steps,
      initial=start_step,
      unit="step",
      dynamic_ncols=True,
      file=sys.stderr,
      disable=not self._shown or self._plain,
      mininterval=1.0,
    )
    self._total = total_steps
    self._last_step = self._last_time = None  # no timing before `start_timing`
    self._first = None  # (step, time) of the first `start_timing`: the plain lines' ETA
    self._paused = 0.0  # seconds of evals and saves since then, left out of the ETA

  def start_timing(self, step):
    """Times the steps after `step` from now. The first call (after the step compiled, and
    a resumed run restored its state) also restarts the bar's clock from there, so that
    its rate and ETA leave the compile out.
    """
    now = time.perf_counter()
    if self._last_time is None:
      self._bar.unpause()
      self._first = (step, now)
    elif self._last_step == step:  # an eval or a save since the last timed step
      self._paused += now - self._last_time
    self._last_step, self._last_time = step, now

  def rates(self, step):
    """{"seq_per_s", "mfu"} over the steps timed up to `step` (restarting the timing);
    {} when none was (the run's first step); no "mfu" without FLOPs and peak.
    """
    if self._last_time is None or step <= self._last_step:
      return {}
    now = time.perf_counter()
    seconds_per_step = max(now - self._last_time, 1e-9) / (step - self._last_step)
    self._last_step, self._last_time = step, now
    rates = {"seq_per_s": self.batch_size / seconds_per_step}
    if self.flops_per_seq and self.peak_flops:
      step_flops = self.flops_per_seq * self.batch_size
      rates["mfu"] = flops.mfu(step_flops, seconds_per_step, self.peak_flops)
    return rates

  def update(self, step, metrics=None):
    self._bar.update(step - self._bar.n)
    if metrics:
      self._bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()}, refresh=False)
      if self._plain and self._shown:
        print(self._plain_line(step, metrics), file=sys.stderr, flush=True)

  def _plain_line(self, step, metrics):
    """`step N/TOTAL: key value, ...; M:SS elapsed, about M:SS left` (no time before the
    timing starts, after the first step).
    """
    values = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    line = f"step {step}/{self._total}: {values}"
    if self._first is None or step <= self._first[0]:
      return line
    first_step, first_time = self._first
    elapsed = time.perf_counter() - first_time
    per_step = max(elapsed - self._paused, 0.0) / (step - first_step)
    return f"{line}; {progress_lib.timing(elapsed, per_step * (self._total - step))}"

  def write(self, line):
    """Prints `line` (an eval, a save) under the bar, from process 0 only."""
    if not self._shown:
      return
    if self._plain:
      print(line, file=sys.stderr, flush=True)
    else:
      self._bar.write(line, file=sys.stderr)

  def close(self):
    self._bar.close()
