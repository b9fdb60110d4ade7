"""Corpus inputs for `prepare`: cut the input into units, stream their documents.

An input spec (`config.data.input`) is one of:

* `builtin:python_docs`: the docs that ship with CPython (see `corpus`);
* a glob, or comma-separated globs, of files in one of three formats: `bert`
  (one sentence per line, a blank line between documents), `document` (each
  file is one document) or `jsonl` (one JSON object per line, the text in one
  field); names ending in `.gz` are read through gzip; local or in a bucket
  (`gs://bucket/corpus/*.txt`, read through `storage`);
* `tfds:NAME`, a TensorFlow Datasets dataset such as `tfds:wikipedia/20230601.en` (read
  through `tfds_source`).

`plan_units` checks the whole input up front and cuts it into picklable `Unit`s:
byte ranges of large plain files, `index`-of-`count` parts of large gzip files (every
`count`-th document: a gzip stream cannot be entered mid-way, so each part decompresses
all of it) and of builtin and TFDS inputs, small files grouped. `read_unit` streams one unit's documents line by line,
in constant memory, so a pool of workers can prepare a corpus larger than RAM.

Byte ranges partition the documents exactly. A range owns the documents that
begin in it: in `jsonl`, the lines that start in it; in `bert`, the documents
whose separating blank line starts in it (the first document of a file belongs
to the range at offset 0). A range reads past its end to finish its last one.
"""

import collections
import contextlib
import dataclasses
import functools
import gzip
import itertools
import json
import math
import os
import platform
import random
import zlib
from collections.abc import Iterable, Iterator

from bert_jax import storage
from bert_jax.data import corpus, tfds_source
from bert_jax.errors import UserError

BUILTIN = corpus.BUILTIN_PYTHON_DOCS
TFDS_PREFIX = "tfds:"
INPUT_FORMATS = ("auto", "bert", "document", "jsonl")
# How much of each input file `plan_units` reads to tell text from binary.
_SNIFF_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class Unit:
  """One piece of preparation work; small and picklable for a process pool.

  Attributes:
    kind: "builtin", "text" (bert or document files), "jsonl" or "tfds".
    path: the file, the TFDS name, or `builtin:python_docs`.
    format: "bert", "document" or "jsonl" (builtin and TFDS: "document").
    start: first byte of the range (plain files).
    end: end of the range, exclusive; -1 reads to the end of the file.
    index: builtin, TFDS and gzip files: this unit is part `index` of `count`.
    count: the number of parts.
    text_field: jsonl and TFDS: the field holding the text.
    split: TFDS split, e.g. "train".
    data_dir: TFDS data directory; None for the TFDS default.
    more_paths: whole files read after `path`, in order: small files are grouped
      into units of about a unit's share of the bytes.
  """

  kind: str
  path: str
  format: str = "bert"
  start: int = 0
  end: int = -1
  index: int = 0
  count: int = 1
  text_field: str = "text"
  split: str = "train"
  data_dir: str | None = None
  more_paths: tuple[str, ...] = ()


def plan_units(
  spec: str,
  *,
  input_format: str = "auto",
  num_units: int,
  text_field: str = "text",
  tfds_split: str = "train",
  tfds_data_dir: str | None = None,
) -> list[Unit]:
  """Checks the input and cuts it into about `num_units` units.

  A TFDS dataset that is not prepared yet is downloaded and prepared here, once,
  before any worker reads it.

  Args:
    spec: `builtin:python_docs`, comma-separated globs, or `tfds:NAME`.
    input_format: files only: "auto" (`.jsonl`/`.json`, gzipped or not, are
      jsonl, other files bert), "bert", "document" or "jsonl".
    num_units: the number of parts to aim for (files larger than their share of
      all bytes are split: plain ones into byte ranges, gzip ones into every-`count`-th
      document parts; a `document` file is one unit).
    text_field: jsonl and TFDS: the field holding the text.
    tfds_split: TFDS split to read, e.g. "train" or "train[:10%]".
    tfds_data_dir: TFDS data directory; None for the TFDS default.

  Returns:
    Units in a deterministic order.

  Raises:
    UserError: an unknown format, a glob with no file, an unreadable file, a
      file that is not text (binary, or mostly not UTF-8), an unknown TFDS
      dataset, split or field, or a TFDS dataset that cannot be prepared.
  """
  if input_format not in INPUT_FORMATS:
    raise UserError(f"unknown input format {input_format!r}; use one of {', '.join(INPUT_FORMATS)}")
  if num_units < 1:
    raise UserError(f"num_units is {num_units}; it must be at least 1")
  spec = spec.strip()
  if spec == BUILTIN:
    return [Unit("builtin", spec, "document", index=i, count=num_units) for i in range(num_units)]
  if spec.startswith(TFDS_PREFIX):
    name = spec[len(TFDS_PREFIX) :]
    count = tfds_source.parts(name, tfds_data_dir, tfds_split, text_field, num_units)
    return [
      Unit(
        "tfds",
        name,
        "document",
        index=i,
        count=count,
        text_field=text_field,
        split=tfds_split,
        data_dir=tfds_data_dir,
      )
      for i in range(count)
    ]
  paths = _expand(spec)
  for path in paths:
    _check_text(path)
  sizes = [storage.size(path) for path in paths]
  share = max(1, math.ceil(sum(sizes) / num_units))
  units, group, group_bytes = [], [], 0

  def close_group():
    nonlocal group, group_bytes
    if group:
      units.append(dataclasses.replace(group[0], more_paths=tuple(u.path for u in group[1:])))
    group, group_bytes = [], 0

  for path, size in zip(paths, sizes):
    file_format = _file_format(path, input_format)
    kind = "jsonl" if file_format == "jsonl" else "text"
    parts = 1 if file_format == "document" else max(1, math.ceil(size / share))
    if parts > 1 and path.endswith(".gz"):
      close_group()
      units.extend(
        Unit(kind, path, file_format, index=i, count=parts, text_field=text_field)
        for i in range(parts)
      )
      continue
    if parts > 1:
      close_group()
      for i in range(parts):
        end = -1 if i == parts - 1 else size * (i + 1) // parts
        units.append(
          Unit(kind, path, file_format, start=size * i // parts, end=end, text_field=text_field)
        )
      continue
    # Whole files: consecutive files of one kind share a unit up to `share` bytes.
    unit = Unit(kind, path, file_format, text_field=text_field)
    if group and (group[0].format != file_format or group_bytes + size > share):
      close_group()
    group.append(unit)
    group_bytes += size
  close_group()
  return units


def read_unit(unit: Unit, stats: collections.Counter, strict: bool = False) -> Iterator[list[str]]:
  """Streams the documents of one unit.

  Args:
    unit: from `plan_units`.
    stats: counts `documents`, `empty_documents` (no text: skipped),
      `invalid_utf8_lines` (a line, or a TFDS text, that is not UTF-8: skipped)
      and `bad_json_lines` (not JSON, or no string in the text field: skipped).
    strict: raise on text that is not UTF-8 instead of skipping it.

  Yields:
    Documents, each a non-empty list of sentences.

  Raises:
    UserError: `strict` and a line is not UTF-8; TFDS cannot be read.
  """
  if unit.kind == "builtin":
    documents = (list(d) for d in _python_docs()[unit.index :: unit.count])
  elif unit.kind == "tfds":
    documents = tfds_source.documents(unit, stats, strict)
  else:
    read = {"bert": _bert_documents, "document": _whole_file_document, "jsonl": _jsonl_documents}[
      unit.format
    ]
    files = [unit] + [dataclasses.replace(unit, path=p, more_paths=()) for p in unit.more_paths]
    if unit.count > 1:  # a part of a gzip file: its lines are counted once, by part 0
      seen = stats if unit.index == 0 else collections.Counter()
      documents = _part(read(unit, seen, strict), unit.index, unit.count)
    else:
      documents = _one_after_another(read(f, stats, strict) for f in files)
  with contextlib.closing(documents):
    for document in documents:
      if document:
        stats["documents"] += 1
        yield document
      else:
        stats["empty_documents"] += 1


def sample_sentences(
  units: Iterable[Unit], *, max_sentences: int, seed: int, strict: bool = False
) -> Iterator[str]:
  """Sentences for tokenizer training, spread over the units.

  The units are visited in a seeded order; each gives the first sentences of
  its documents, up to an equal share of what is still wanted, so a large
  corpus is sampled everywhere but only `max_sentences` sentences are read.

  Args:
    units: from `plan_units`.
    max_sentences: the most sentences to yield.
    seed: the order in which units are visited.
    strict: raise on text that is not UTF-8 instead of skipping it.

  Yields:
    At most `max_sentences` sentences.

  Raises:
    UserError: as `read_unit`.
  """
  order = list(units)
  random.Random(seed).shuffle(order)
  remaining = max_sentences
  for visited, unit in enumerate(order):
    if remaining <= 0:
      return
    quota = math.ceil(remaining / (len(order) - visited))
    with contextlib.closing(read_unit(unit, collections.Counter(), strict)) as docs:
      for document in docs:
        yield from document[:quota]
        taken = min(quota, len(document))
        quota -= taken
        remaining -= taken
        if quota <= 0:
          break


def stamp(spec: str, *, tfds_data_dir: str | None = None) -> list:
  """What identifies the input without reading it, for the manifest.

  Args:
    spec: as for `plan_units`.
    tfds_data_dir: TFDS data directory; None for the TFDS default.

  Returns:
    JSON-ready: `["python", version]` for builtin, `["tfds", name/config/
    version]` for TFDS, else `[path, size, mtime_ns]` per file.
  """
  spec = spec.strip()
  if spec == BUILTIN:
    return ["python", platform.python_version()]
  if spec.startswith(TFDS_PREFIX):
    builder = tfds_source.builder(spec[len(TFDS_PREFIX) :], tfds_data_dir, prepare=False)
    return ["tfds", builder.info.full_name]
  return [[path, storage.size(path), storage.mtime_ns(path)] for path in _expand(spec)]


# Files.


def _expand(spec: str) -> list[str]:
  """Files matched by comma-separated globs, each glob matching at least one."""
  paths = []
  for pattern in (p.strip() for p in spec.split(",")):
    if not pattern:
      continue
    try:
      matched = [  # remote matches are files already (storage.glob)
        p
        for p in storage.glob(storage.expanduser(pattern))
        if storage.is_remote(p) or os.path.isfile(p)
      ]
    except FileNotFoundError:  # a bucket that does not exist
      matched = []
    if not matched:
      folder = not any(c in pattern for c in "*?[") and storage.isdir(pattern)
      raise UserError(
        f"input {pattern!r} is a folder; give a glob of its files, e.g. "
        f"{storage.join(pattern, '*.txt')!r}"
        if folder
        else f"input pattern {pattern!r} matches no file; fix config.data.input "
        f"(globs of text files, {BUILTIN!r} or tfds:NAME)"
      )
    paths.extend(matched)
  if not paths:
    raise UserError(
      f"input {spec!r} names no file; set config.data.input to "
      f"globs of text files, {BUILTIN!r} or tfds:NAME"
    )
  return list(dict.fromkeys(paths))  # A file matched twice is read once.


@contextlib.contextmanager
def _open(path: str):
  """The bytes of a local or remote input file (through gzip for a `.gz` name).

  Raises:
    UserError: a .gz file cut short or damaged, found where it is read.
  """
  with storage.open_file(path, "rb") if storage.is_remote(path) else open(path, "rb") as raw:
    if not path.endswith(".gz"):
      yield raw
      return
    try:
      with gzip.GzipFile(fileobj=raw, mode="rb") as f:
        yield f
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
      raise UserError(
        f"cannot read input file {path} ({e}): a damaged or cut-short gzip file; fetch it "
        f"again, or leave it out of config.data.input"
      ) from None


def _check_text(path: str) -> None:
  """Bad input: a file that cannot be read, or whose first 64 KiB are not text.

  Not text: NUL bytes (a binary file, or UTF-16), or more than half of the lines
  not UTF-8. A few bad lines are left to `read_unit` (skipped and counted, or an
  error with `config.data.strict`).
  """
  try:
    with _open(path) as f:
      head = f.read(_SNIFF_BYTES)
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(
      f"cannot read input file {path} ({e}); fix its permissions "
      f"or contents, or leave it out of config.data.input"
    ) from None
  if b"\0" in head:
    raise UserError(
      f"{path} is not text (it holds NUL bytes: a binary file, or UTF-16 text); give UTF-8 "
      f"text files in config.data.input"
    )
  lines = head.split(b"\n")
  if len(head) == _SNIFF_BYTES:  # the last line is cut short: judge what was read of it
    if len(lines) > 1:
      lines.pop()
    else:
      lines[0] = _without_partial_character(lines[0])
  lines = [line for line in lines if line.strip()]
  bad = sum(not _is_utf8(line) for line in lines)
  if 2 * bad > len(lines):
    raise UserError(
      f"{path} is not text ({bad} of its first {len(lines)} lines are not UTF-8); give UTF-8 "
      f"text files in config.data.input (iconv -f latin1 -t utf-8 converts Latin-1 text)"
    )


def _is_utf8(data: bytes) -> bool:
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return True


def _without_partial_character(data: bytes) -> bytes:
  """`data` less the bytes of a UTF-8 character that may have been cut at its end."""
  end = len(data)
  while end and len(data) - end < 3 and data[end - 1] & 0xC0 == 0x80:  # continuation bytes
    end -= 1
  if end and data[end - 1] >= 0xC0:  # the lead byte of that character
    end -= 1
  return data[:end]


def _file_format(path: str, input_format: str) -> str:
  if input_format != "auto":
    return input_format
  name = path.removesuffix(".gz")
  return "jsonl" if name.endswith((".jsonl", ".json")) else "bert"


def _lines(
  unit: Unit, stats: collections.Counter, strict: bool
) -> Iterator[tuple[int, str | None]]:
  """(byte offset, text) of each line from the first line start >= unit.start.

  A line that is not UTF-8 comes as None. It is counted only by the range it
  starts in, so counts add up exactly over the ranges of a file.
  """
  end = math.inf if unit.end < 0 else unit.end
  with _open(unit.path) as f:
    offset = 0
    if unit.start > 0:
      f.seek(unit.start - 1)  # The line that holds byte start-1 is not ours.
      offset = unit.start - 1 + len(f.readline())
    for raw in f:
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        if strict:
          raise UserError(
            f"{unit.path}: byte {offset + e.start} (uncompressed) is not "
            f"UTF-8; convert the file (iconv -f latin1 -t utf-8 {unit.path}) "
            f"or set config.data.strict=False to skip such lines"
          ) from None
        if unit.start <= offset < end:
          stats["invalid_utf8_lines"] += 1
        line = None
      else:
        if offset == 0:
          line = line.removeprefix("\ufeff")  # The BOM of Notepad.
      yield offset, line
      offset += len(raw)


def _part(documents, index, count):
  """Every `count`-th of `documents` from `index`; closing it closes them."""
  with contextlib.closing(documents):
    yield from itertools.islice(documents, index, None, count)


def _one_after_another(generators):
  """The items of each generator in turn; closing it closes the one being read."""
  for generator in generators:
    with contextlib.closing(generator):
      yield from generator


def _bert_documents(unit, stats, strict) -> Iterator[list[str]]:
  """One sentence per line; blank lines end documents."""
  end = math.inf if unit.end < 0 else unit.end
  document = []
  # A range that starts mid-file lands inside a document of the range before.
  owned = unit.start == 0
  for offset, line in _lines(unit, stats, strict):
    if line is None:
      continue
    line = line.strip()
    if line:
      if owned:
        document.append(line)
      continue
    if document:
      yield document
      document = []
    if offset >= end:
      return
    owned = True  # The document after this blank line is ours.
  if document:
    yield document


def _whole_file_document(unit, stats, strict) -> Iterator[list[str]]:
  """The file is one document, split into sentences paragraph by paragraph."""
  document, paragraph = [], []
  for _, line in _lines(unit, stats, strict):
    if line is None:
      continue
    if line.strip():
      paragraph.append(line)
    elif paragraph:
      document.extend(corpus.split_sentences("".join(paragraph)))
      paragraph = []
  document.extend(corpus.split_sentences("".join(paragraph)))
  yield document


def _jsonl_documents(unit, stats, strict) -> Iterator[list[str]]:
  """One JSON object per line, the document's text in `unit.text_field`."""
  end = math.inf if unit.end < 0 else unit.end
  for offset, line in _lines(unit, stats, strict):
    if offset >= end:
      return
    if line is None or not line.strip():
      continue
    try:
      text = json.loads(line)[unit.text_field]
    except (ValueError, KeyError, TypeError, IndexError):
      text = None
    if not isinstance(text, str):
      stats["bad_json_lines"] += 1
      continue
    yield corpus.split_sentences(text)


def text_field_hint(units: Iterable[Unit]) -> str:
  """For a JSON Lines input that gave no text: the keys its first object has, and the
  setting to point at the text (`text_field`); "" for other inputs.
  """
  unit = next((u for u in units if u.kind == "jsonl"), None)
  if unit is None:
    return ""
  for _, line in _lines(dataclasses.replace(unit, start=0, end=-1), collections.Counter(), False):
    if line and line.strip():
      try:
        keys = sorted(json.loads(line))
      except (ValueError, TypeError):
        return f"; {unit.path} does not hold a JSON object per line"
      return (
        f"; its JSON objects have no text under config.data.text_field={unit.text_field!r} "
        f"but have the keys {keys}: set --config.data.text_field to the one with the text"
      )
  return ""


@functools.lru_cache(maxsize=1)
def _python_docs() -> list[list[str]]:
  return corpus.python_docs_documents()  # Once per worker process.
