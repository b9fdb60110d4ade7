"""The one exception type for bad user input.

The CLI prints a `UserError` as a single `error: ...` line (no traceback) and exits
with status 2. Its message names the problem and the fix.
"""


class UserError(Exception):
  """Bad input from the user: a config value, a file, a workdir."""
