"""Every file bert_jax reads or writes, local or remote, goes through here.

Paths are strings: local paths, or URLs that etils.epath (fsspec underneath) handles:
`gs://bucket/run`, `s3://...`. `gs://` goes through gcsfs, the client that honours
`STORAGE_EMULATOR_HOST` (a local emulator, in tests) as Orbax's tensorstore honours
`TENSORSTORE_GCS_HTTP_URL`; credentials are Google's application defaults.

Whole files are written atomically: locally to a `.tmp` sibling renamed into place; on an
object store an upload becomes visible whole when it completes. A crash leaves the old
file or the new one, never half of either.

Libraries that need a local file (ArrayRecord) get one from `checked_copy`, which copies a
remote file into a local cache once and checks the copy's size and SHA-256. gcsfs caches
folder listings; `invalidate_cache` makes a listing see what other processes wrote since.
"""

import codecs
import contextlib
import glob as glob_lib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import urllib.parse

# gs:// through gcsfs rather than TensorFlow's GCS client: one client for every path, and
# the emulator variable works (read by etils when it first resolves a gs:// path).
os.environ.setdefault("EPATH_USE_TF", "false")
# gcsfs warns on every bucket when it cannot ask for the bucket's type (no credentials for
# the storage-control API, e.g. against an emulator); it then uses the plain client. Its
# errors are logged with their tracebacks ("out of retries") before they are raised, and the
# raised error is what the CLI reports, in one line (`connection_lost`).
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)

from etils import epath  # noqa: E402  (after EPATH_USE_TF)

from bert_jax import errors  # noqa: E402
from bert_jax.errors import UserError  # noqa: E402

# A URL short of a slash or its colon (`gs:/bucket`, `gs:bucket`, `gs//bucket`): a local
# folder named `gs:` or `gs` otherwise, where a run would train and be lost.
_MANGLED_URL = re.compile(r"(gs|gcs|s3|az|abfs|hf|https?)(:/?(?!/)|//)", re.IGNORECASE)


def is_remote(path) -> bool:
  """Whether `path` is a URL (`gs://...`) rather than a local path.

  Raises:
    UserError: `path` is a URL short of a slash (`gs:/bucket`).
  """
  text = os.fspath(path)
  if text.lower().startswith("gcs://"):  # gcsfs's alias, which orbax and tensorstore lack
    raise UserError(f"{text!r}: write gs://{text[len('gcs://') :]} (Cloud Storage's scheme)")
  if "://" in text:
    scheme, _, rest = text.partition("://")
    if scheme != scheme.lower() and _MANGLED_URL.match(f"{scheme.lower()}//"):
      raise UserError(f"{text!r}: write {scheme.lower()}://{rest} (a URL's scheme is lowercase)")
    return True
  if mangled := _MANGLED_URL.match(text):
    scheme = "gs" if mangled[1].lower() == "gcs" else mangled[1]
    raise UserError(f"{text!r} is not a URL: write {scheme}://{text[mangled.end() :]}")
  return False


def check_local(path, setting: str) -> None:
  """A UserError when `path`, the value of `setting`, is a URL (or one short of a slash):
  a folder that must be on this host's disk.
  """
  text = os.fspath(path)
  if "://" in text or _MANGLED_URL.match(text):
    raise UserError(
      f"{setting}={text!r} must be a folder on this host's disk, not a bucket; leave it unset "
      f"or give a local path"
    )


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


def folders_to_make(path: str) -> list[str]:
  """The local folders that `os.makedirs(path)` would create, deepest first."""
  missing, path = [], os.path.abspath(path)
  while not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def unwritable_folder(path: str) -> str | None:
  """The local folder that writing `path` (a file, or a folder made with its parents)
  needs and this user may not write to: its nearest existing folder. None when writable,
  and for URLs (the bucket says at the first write).
  """
  if is_remote(path):
    return None
  missing = folders_to_make(path)
  folder = os.path.dirname(missing[-1]) if missing else os.path.abspath(path)
  while not os.path.isdir(folder):  # an existing file (the output, or one above it)
    folder = os.path.dirname(folder)
  return None if os.access(folder, os.W_OK | os.X_OK) else folder


def remove_empty(folders, *, disposable=lambda name: False) -> None:
  """Removes each of the local `folders` (deepest first) that holds nothing, or only files
  whose names `disposable` accepts (removed with it); stops at the first that holds more.
  """
  for folder in folders:
    try:
      names = os.listdir(folder)
      if not all(disposable(n) for n in names):
        return
      for n in names:
        os.remove(os.path.join(folder, n))
      os.rmdir(folder)
    except OSError:
      return


def listdir(p) -> list[str]:
  """The names in folder `p`, sorted."""
  return sorted(child.name for child in path(p).iterdir())


def glob(pattern) -> list[str]:
  """The paths matching `pattern` (`*`, `?`, `[...]`, `**` across folders), sorted."""
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(glob_lib.glob(pattern, recursive=True))
  scheme, stripped = pattern.split("://", 1)
  matches = _fs(pattern).glob(stripped, detail=True)
  return sorted(f"{scheme}://{m}" for m, info in matches.items() if info.get("type") != "directory")


def _fs(url):
  """The fsspec filesystem of a URL: the very instance etils.epath uses, so a listing cached
  by one is the listing of the other (and `invalidate_cache` reaches both).
  """
  return epath.backend.fsspec_backend.fs(url)


def invalidate_cache(p) -> None:
  """Forgets the listings cached for remote `p` and its parents (gcsfs caches them): files
  that another process wrote or deleted since show up as they are. A no-op locally.
  """
  if is_remote(p):
    _fs(p).invalidate_cache(os.fspath(p).split("://", 1)[1])


def expanduser(p) -> str:
  """`~` expanded in a local path; URLs as they are."""
  return os.fspath(p) if is_remote(p) else os.path.expanduser(p)


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


def mtime_ns(p) -> int:
  """When file `p` last changed, in nanoseconds since the epoch (an object store: to the
  second).
  """
  if not is_remote(p):
    return os.stat(p).st_mtime_ns
  return int(path(p).stat().mtime * 1e9)


def sha256(p) -> str:
  """The SHA-256 of file `p` (hex), read in blocks."""
  digest = hashlib.sha256()
  with open_file(p, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def open_file(p, mode="r"):
  """`open` for local paths and URLs (text modes are UTF-8)."""
  return path(p).open(mode)


def not_utf8(p) -> str:
  """Where file `p` is first not UTF-8, for messages: "invalid start byte at byte 15533"
  (counted from the file's start: a text stream's error counts from its chunk's).
  """
  decoder = codecs.getincrementaldecoder("utf-8")()
  offset = 0
  with open_file(p, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      pending = len(decoder.getstate()[0])  # bytes of a character the last chunk began
      try:
        decoder.decode(chunk)
      except UnicodeDecodeError as e:
        return f"{e.reason} at byte {offset - pending + e.start}"
      offset += len(chunk)
    try:
      decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
      return f"{e.reason} at byte {offset - len(e.object) + e.start}"
  return "UTF-8 now"


def not_utf8_problem(p) -> str:
  """What a message says after the name of file `p`, which is not UTF-8: where, and how to
  convert it.
  """
  return (
    f"is not UTF-8 text ({not_utf8(p)}); convert it, e.g. iconv -f latin1 -t utf-8 {p} > "
    f"NEW_FILE for Latin-1"
  )


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


def _cache_path(url: str, cache_dir) -> str:
  digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
  return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), digest, name(url))


def _copy_matches(target: str, expected_size: int, expected_sha256: str | None) -> bool:
  """Whether the copy at `target` has the size, and the SHA-256 its stamp recorded."""
  if not (os.path.exists(target) and os.path.getsize(target) == expected_size):
    return False
  if expected_sha256 is None:
    return True
  with contextlib.suppress(OSError):
    with open(f"{target}.sha256") as f:
      return f.read().strip() == expected_sha256
  return False


def has_checked_copy(p, cache_dir, *, expected_size: int, expected_sha256: str | None) -> bool:
  """Whether `checked_copy` of the remote file `p` would find its copy made (a stat)."""
  return _copy_matches(_cache_path(os.fspath(p), cache_dir), expected_size, expected_sha256)


def dangling_link(path) -> str | None:
  """The first symbolic link to nothing on the way to the local `path` (`os.makedirs`
  through one fails with "file exists", a write under one with "no such file"), else None.
  """
  if not isinstance(path, str) or is_remote(path):
    return None
  path = os.path.abspath(path)
  while path != os.path.dirname(path):
    if os.path.islink(path) and not os.path.exists(path):
      return path
    path = os.path.dirname(path)
  return None


def dangling_link_problem(link: str) -> str:
  """What is wrong with `dangling_link`'s `link`, and the fix."""
  return (
    f"{link} is a link to {os.readlink(link)}, which does not exist; remove the link, or "
    f"make the folder it points to"
  )


def free_bytes(folder) -> int:
  """Bytes free on the disk of local `folder` (or of its nearest existing parent)."""
  folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  return shutil.disk_usage(folder).free


def checked_copy(p, cache_dir, *, expected_size: int, expected_sha256: str | None = None) -> str:
  """A local path holding file `p`: `p` itself when local, else a copy in `cache_dir`,
  checked: its size, and its SHA-256 when given.

  A copy is checked once, when it is made: the SHA-256 it matched is kept beside it
  (`NAME.sha256`), so a later call reuses it at the cost of a stat. A copy that does not
  match (a file changed in the bucket since the manifest was written, or a transfer cut
  short) is fetched again, once. Processes sharing `cache_dir` may copy the same file at
  once: each writes a temporary file of its own and renames it into place.

  Args:
    p: a file, local (returned as is, unchecked) or remote.
    cache_dir: the local cache folder (made if missing; `~` expanded).
    expected_size: the size the file must have, in bytes.
    expected_sha256: its SHA-256 (hex), or None to check the size only.

  Returns:
    The local path.

  Raises:
    ValueError: the remote file does not match, fetched twice (the message names it).
  """
  p = os.fspath(p)
  if not is_remote(p):
    return p
  target = _cache_path(p, cache_dir)
  stamp = f"{target}.sha256"
  if _copy_matches(target, expected_size, expected_sha256):
    return target
  os.makedirs(os.path.dirname(target), exist_ok=True)
  for _ in range(2):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{name(p)}.")
    try:
      with os.fdopen(fd, "wb") as out, open_file(p, "rb") as f:
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 22), b""):  # noqa: B023
          digest.update(block)
          out.write(block)
      got_size, got_sha256 = os.path.getsize(tmp), digest.hexdigest()
      if got_size == expected_size and expected_sha256 in (None, got_sha256):
        os.replace(tmp, target)
        with open(f"{stamp}.{os.getpid()}.tmp", "w") as f:
          f.write(got_sha256 + "\n")
        os.replace(f"{stamp}.{os.getpid()}.tmp", stamp)
        return target
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
  raise ValueError(
    f"{p} does not match its manifest: {got_size} bytes (sha256 {got_sha256[:12]}...), "
    f"expected {expected_size}"
    + (f" (sha256 {expected_sha256[:12]}...)" if expected_sha256 else "")
  )


def unreachable(url) -> str | None:
  """Why the bucket of `url` cannot be used, in a few words, or None when it can be listed.

  Fast where gcsfs would retry for a minute: the endpoint (`STORAGE_EMULATOR_HOST` for an
  emulator, else Google's) is first probed with one TCP connection.
  """
  url = os.fspath(url)
  scheme, rest = url.split("://", 1)
  bucket = rest.split("/", 1)[0]
  if scheme in ("gs", "gcs"):
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    endpoint = emulator or "https://storage.googleapis.com"
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
      socket.create_connection((parsed.hostname, port), timeout=10).close()
    except OSError as e:
      where = f"STORAGE_EMULATOR_HOST={emulator}" if emulator else endpoint
      return f"cannot reach {where} ({e.strerror or e})"
  try:
    _fs(url).ls(bucket, detail=False)  # an empty bucket lists as []; a missing one raises
    _fs(url).invalidate_cache(bucket)  # this listing is not to be served later
  except FileNotFoundError:
    return f"bucket {scheme}://{bucket} does not exist"
  except Exception as e:  # credentials, permissions, the network: one line of it
    return f"cannot list bucket {scheme}://{bucket} ({errors.summary(e)})"
  return None


# An object store's answers that mean "not now" (gcsfs raises them after its retries), and
# TensorStore's status codes for a connection that failed or timed out (Orbax's writes).
_LATER_HTTP_CODES = (408, 429, 500, 502, 503, 504)
_LATER_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def error_chain(error: BaseException | None) -> list[BaseException]:
  """`error` and the errors that caused it (`raise ... from`, or raised while handling it),
  outermost first.
  """
  seen = []
  while error is not None and error not in seen:
    seen.append(error)
    error = error.__cause__ or error.__context__
  return seen


def connection_lost(error: BaseException) -> str | None:
  """The reason, in a few words, when `error` (or an error that caused it) says the
  connection to an object store was lost or timed out, after the clients' own retries;
  otherwise None (a bug, bad input, or a closed stdout pipe, which keep their own reports).
  """
  for e in error_chain(error):
    module = type(e).__module__ or ""
    network = module.startswith(("aiohttp", "requests", "urllib3")) and "Connect" in "".join(
      c.__name__ for c in type(e).__mro__
    )
    code = getattr(e, "code", None)
    answered_later = module.startswith("gcsfs") and code in _LATER_HTTP_CODES
    reset = isinstance(e, ConnectionError) and not isinstance(e, BrokenPipeError)
    if network or answered_later or reset:
      return errors.summary(e, 160)
    if any(f"{status}:" in str(e) for status in _LATER_STATUSES):
      return errors.first_line(e, 160)
  return None


def move(source, target) -> None:
  """Moves file or folder `source` to `target`, both local or both on one object store:
  a rename locally; on an object store (no rename) a server-side copy of every object, then
  the delete of the originals.
  """
  if not is_remote(source) and not is_remote(target):
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    os.rename(source, target)
    return
  fs = _fs(source)  # epath's own instance: its cached listings are updated too
  src, dst = (os.fspath(p).split("://", 1)[1].rstrip("/") for p in (source, target))
  fs.invalidate_cache()
  fs.copy(src, dst, recursive=True)  # not fs.mv: gcsfs tries a moveTo call first, which
  fs.rm(src, recursive=True)  # GCS emulators answer 501 to, after retries
  fs.invalidate_cache()
