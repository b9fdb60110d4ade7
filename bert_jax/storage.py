"""Every file bert_jax reads or writes, local or remote, goes through here.

Paths are strings: local paths, or URLs that etils.epath (fsspec underneath) handles:
`gs://bucket/run`, `s3://...`. `gs://` goes through gcsfs, the client that honours
`STORAGE_EMULATOR_HOST` (a local emulator, in tests) as Orbax's tensorstore honours
`TENSORSTORE_GCS_HTTP_URL`; credentials are Google's application defaults.

Whole files are written atomically: locally to a `.tmp` sibling renamed into place; on an
object store an upload becomes visible whole when it completes. A crash leaves the old
file or the new one, never half of either.

Libraries that need a local file (ArrayRecord, the SentencePiece C++ trainer) get one from
`local_copy`, which copies a remote file into a local cache once.
"""

import contextlib
import glob as glob_lib
import hashlib
import json
import logging
import os
import shutil

# gs:// through gcsfs rather than TensorFlow's GCS client: one client for every path, and
# the emulator variable works (read by etils when it first resolves a gs:// path).
os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs warns on every bucket when it cannot ask for the bucket's type (no credentials for
# the storage-control API, e.g. against an emulator); it then uses the plain client.
logging.getLogger("gcsfs").setLevel(logging.ERROR)

from etils import epath  # noqa: E402  (after EPATH_USE_TF)


def is_remote(path) -> bool:
  """Whether `path` is a URL (`gs://...`) rather than a local path."""
  return "://" in os.fspath(path)


def path(p) -> epath.Path:
  """`p` as an etils Path (local or remote)."""
  return epath.Path(p)


def join(base, *parts) -> str:
  """`base/part/...` for local paths and URLs alike."""
  if is_remote(base):
    return "/".join([os.fspath(base).rstrip("/"), *(os.fspath(p).strip("/") for p in parts)])
  return os.path.join(base, *parts)


def absolute(p) -> str:
  """`p` made absolute when it is local (tensorstore wants absolute paths); URLs as is."""
  return os.fspath(p) if is_remote(p) else os.path.abspath(p)


def name(p) -> str:
  """The last part of `p` (a file or folder name)."""
  return os.fspath(p).rstrip("/").rsplit("/", 1)[-1]


def parent(p) -> str:
  """The folder holding `p`."""
  if is_remote(p):
    return os.fspath(p).rstrip("/").rsplit("/", 1)[0]
  return os.path.dirname(os.path.abspath(p))


def exists(p) -> bool:
  """Whether file or folder `p` exists."""
  return path(p).exists()


def isdir(p) -> bool:
  """Whether `p` is a folder."""
  return path(p).is_dir()


def isfile(p) -> bool:
  """Whether `p` is a file."""
  q = path(p)
  return q.exists() and not q.is_dir()


def makedirs(p) -> None:
  """Creates folder `p` and its parents (a no-op on object stores without folders)."""
  path(p).mkdir(parents=True, exist_ok=True)


def listdir(p) -> list[str]:
  """The names in folder `p`, sorted."""
  return sorted(child.name for child in path(p).iterdir())


def glob(pattern) -> list[str]:
  """The paths matching `pattern` (`*`, `?`, `[...]` in the last parts), sorted."""
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(glob_lib.glob(pattern))
  scheme = pattern.split("://", 1)[0]
  import fsspec

  fs, stripped = fsspec.core.url_to_fs(pattern)
  return sorted(f"{scheme}://{match}" for match in fs.glob(stripped))


def remove(p) -> None:
  """Deletes file `p` if it exists."""
  with contextlib.suppress(FileNotFoundError):
    path(p).unlink()


def rmtree(p) -> None:
  """Deletes folder `p` and everything in it, if it exists."""
  q = path(p)
  if q.exists():
    q.rmtree()


def size(p) -> int:
  """The size of file `p` in bytes."""
  return path(p).stat().length


def open_file(p, mode="r"):
  """`open` for local paths and URLs (text modes are UTF-8)."""
  return path(p).open(mode)


def read_bytes(p) -> bytes:
  """The bytes of file `p`."""
  return path(p).read_bytes()


def read_text(p) -> str:
  """The UTF-8 text of file `p`."""
  return read_bytes(p).decode("utf-8")


def read_json(p):
  """The JSON value in `p`."""
  return json.loads(read_text(p))


def write_bytes(p, data: bytes) -> None:
  """Writes `data` to `p` atomically."""
  if is_remote(p):
    path(p).write_bytes(data)  # an object upload is visible whole or not at all
    return
  tmp = f"{p}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, p)


def write_text(p, text: str) -> None:
  """Writes UTF-8 `text` to `p` atomically."""
  write_bytes(p, text.encode("utf-8"))


def write_lines(p, lines) -> None:
  """Writes an iterable of lines (each ending in a newline) to `p` atomically, streaming."""
  target = os.fspath(p)
  tmp = target if is_remote(target) else f"{target}.tmp"
  with open_file(tmp, "w") as f:
    f.writelines(lines)
  if tmp != target:
    os.replace(tmp, target)


def write_json(p, value, indent: int | None = 2) -> None:
  """Writes `value` as JSON to `p` atomically."""
  write_text(p, json.dumps(value, indent=indent))


def copy(source, target) -> None:
  """Copies file `source` to `target` (either may be remote), atomically at the target."""
  if not is_remote(source) and not is_remote(target):
    tmp = f"{target}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return
  if not is_remote(target):
    tmp = f"{target}.tmp"
    path(source).copy(tmp, overwrite=True)
    os.replace(tmp, target)
    return
  path(source).copy(target, overwrite=True)


def local_copy(p, cache_dir, expected_size: int | None = None) -> str:
  """A local path holding file `p`: `p` itself when local, else a copy in `cache_dir`
  (made once, and again when its size differs from `expected_size` or the remote file's).

  The copy's name keeps the file name behind a hash of the whole URL, so files of two
  buckets never collide.
  """
  p = os.fspath(p)
  if not is_remote(p):
    return p
  digest = hashlib.sha1(p.encode("utf-8")).hexdigest()[:16]
  target = os.path.join(os.path.abspath(cache_dir), digest, name(p))
  want = size(p) if expected_size is None else expected_size
  if not (os.path.exists(target) and os.path.getsize(target) == want):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    copy(p, target)
  return target
