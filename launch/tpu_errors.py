"""The Cloud TPU launcher's errors (launch/tpu.py prints each as one `error: ...` line and
exits 2), and the one-line messages they are made of.
"""


class Error(Exception):
  """A failure the user can act on: printed as one `error: ...` line, exit status 2. Its
  `afterword`, when set, is printed (to stdout) after that line: what is left to do.
  """

  afterword = None


class Busy(Error):
  """The slice runs another run, alive: left as it is (no --autodelete either)."""


class Mismatch(Error):
  """The slice exists with another accelerator type than asked: left as it is."""


class DeleteStuck(Error):
  """A delete that did not finish in time: the slice is left as it is (not deleted again)."""


class Transient(Error):
  """A gcloud call that failed in a way another try may mend: a timeout, a lost connection."""


def message_lines(text):
  """The non-blank lines of a command's output, stripped."""
  return [line.strip() for line in (text or "").splitlines() if line.strip()]


def last_line(text):
  """The last non-blank line of a command's output; "no message" when there is none."""
  lines = message_lines(text)
  return lines[-1] if lines else "no message"
