"""Files a run writes whole: written to a temporary name beside the target, then renamed
into place, so a crash leaves either the old file or the new one, never half of either.
"""

import json
import os


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (a `.tmp` sibling, then `os.replace`)."""
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 `text` to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def write_lines(path: str, lines) -> None:
  """Writes an iterable of lines (each ending in a newline) to `path` atomically, streaming."""
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(lines)
  os.replace(tmp, path)


def write_json(path: str, value, indent: int | None = 2) -> None:
  """Writes `value` as JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=indent))


def read_json(path: str):
  """The JSON value in `path`."""
  with open(path, encoding="utf-8") as f:
    return json.load(f)
