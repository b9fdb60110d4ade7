"""Progress outside training steps: where stderr is no terminal, plain lines at most every
PLAIN_EVERY_S seconds (count, elapsed, time left) instead of a bar's carriage returns.
"""

import os

from bert_jax import progress


def _clock(monkeypatch, *times):
  """`time.monotonic` giving `times` in turn (the first: the bar's start)."""
  ticks = iter(times)
  monkeypatch.setattr(progress.time, "monotonic", lambda: next(ticks))


def test_plain_lines_where_stderr_is_no_terminal(capsys, monkeypatch):
  monkeypatch.setattr(progress, "PLAIN_EVERY_S", 20.0)
  _clock(monkeypatch, 0.0, 10.0, 30.0, 40.0)
  with progress.Bar(4, "prepare", "shard") as bar:  # pytest's stderr is no terminal
    bar.update(note="5k tokens/s")  # 10 s: under 20 s since the start, no line
    bar.update()  # 30 s: 2 of 4 in 30 s, 30 s left
    bar.update(note="6k tokens/s")  # 40 s: 10 s since the last line, none
  assert capsys.readouterr().err.splitlines() == [
    "prepare: 2/4 shards, 5k tokens/s; 00:30 elapsed, about 00:30 left"
  ]


def test_bytes_are_scaled_and_a_hidden_bar_prints_nothing(capsys, monkeypatch):
  monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
  _clock(monkeypatch, 0.0, 5.0)
  with progress.Bar(3_000_000, "copy", "B") as bar:
    bar.update(1_000_000)  # a third in 5 s: 10 s left
  assert capsys.readouterr().err.splitlines() == [
    "copy: 1.0 MB of 3.0 MB; 00:05 elapsed, about 00:10 left"
  ]
  _clock(monkeypatch, 0.0, 5.0, 6.0)
  assert list(progress.over(["a", "b"], 2, "predict", "batch", shown=False)) == ["a", "b"]
  assert capsys.readouterr().err == ""


def test_counts_are_singular_for_one():
  assert [progress.count(n, "blank row") for n in (0, 1, 2)] == [
    "0 blank rows",
    "1 blank row",
    "2 blank rows",
  ]


def test_parameter_counts_have_three_significant_digits():
  """One format for `pretrain`'s model line and `compile`'s report (before: 1.6M and 2M
  for the same 1,552,898).
  """
  counts = (1_552_898, 22_713_216, 335_141_888, 4_012_000_000, 512)
  assert [progress.parameters(n) for n in counts] == [
    "1.55M parameters",
    "22.7M parameters",
    "335M parameters",
    "4.01B parameters",
    "512 parameters",
  ]


def test_a_terminal_of_no_width_takes_plain_lines(tmp_path):
  """A pseudo-terminal of 0 columns or 0 rows (as `pty.openpty()` makes it, and some
  containers give) showed no tqdm bar and no step lines at all; it takes the plain lines a
  file does.
  """
  import fcntl
  import pty
  import struct
  import termios

  leader, follower = pty.openpty()
  with open(follower, "w", closefd=True) as stream, open(leader, "rb", closefd=True):
    assert stream.isatty() and os.get_terminal_size(follower).columns == 0
    assert not progress.is_terminal(stream)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 100, 0, 0))
    assert not progress.is_terminal(stream)  # 0 rows (`stty cols 100`): tqdm hid its bar
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    assert progress.is_terminal(stream)  # 80 columns: the bar
  with open(tmp_path / "log", "w") as f:
    assert not progress.is_terminal(f)
  assert not progress.is_terminal(object())
