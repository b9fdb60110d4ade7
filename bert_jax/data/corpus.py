"""Text corpora as documents of sentences.

A corpus is `list[list[str]]`: documents, each a list of sentences, the layout
of Google's original `create_pretraining_data.py`. Two sources:

* `builtin:python_docs` -- text that ships with CPython (the `pydoc_data` topics
  and the standard library's docstrings, read with `ast`, never imported), so a
  smoke run needs no download;
* a glob (or comma-separated globs) of UTF-8 files, one sentence per line and a
  blank line between documents.
"""

import ast
import glob
import os
import re
import sysconfig

from bert_jax.errors import UserError

BUILTIN_PYTHON_DOCS = "builtin:python_docs"

# Directories of the standard library that hold tests or third-party code.
_SKIP_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idle_test",
    "__pycache__", "__phello__",
})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# reST heading underlines ("*****", "=====") in the pydoc topics.
_UNDERLINE = re.compile(r"^[ \t]*([*=\-~^#])\1{3,}[ \t]*$", re.MULTILINE)
_MIN_DOC_CHARS = 100


def split_sentences(text: str) -> list[str]:
  """Splits text into sentences: paragraphs at blank lines, then after `.!?`.

  Args:
    text: free text, possibly with hard line breaks.

  Returns:
    Non-empty sentences with whitespace collapsed.
  """
  sentences = []
  text = _UNDERLINE.sub("", text)
  for paragraph in re.split(r"\n\s*\n", text):
    paragraph = " ".join(paragraph.split())
    sentences.extend(s for s in _SENTENCE_END.split(paragraph) if s)
  return sentences


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _docstrings(node: ast.AST):
  """Yields module, class and function docstrings in source order.

  Descends through statement blocks only (definitions inside `if`, `try`, ...
  included), not expressions: 5x faster than `ast.walk`.
  """
  if isinstance(node, _DOC_NODES):
    doc = ast.get_docstring(node)
    if doc:
      yield doc
  for field in _BLOCKS:
    for child in getattr(node, field, ()):
      if isinstance(child, ast.AST):
        yield from _docstrings(child)


def _stdlib_files(root: str) -> list[str]:
  """Sorted *.py files of the standard library, minus tests and vendored."""
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    files.extend(os.path.join(dirpath, f) for f in filenames
                 if f.endswith(".py"))
  return sorted(files)


def _add_document(documents: list[list[str]], text: str) -> None:
  sentences = split_sentences(text)
  if len(sentences) >= 2 or sum(map(len, sentences)) >= _MIN_DOC_CHARS:
    documents.append(sentences)


def python_docs_documents() -> list[list[str]]:
  """The built-in corpus: CPython's pydoc topics and stdlib docstrings.

  Modules are parsed with `ast`, never imported. The walk is sorted, so the
  result is the same on every run of the same Python build.

  Returns:
    Documents, each a list of sentences.
  """
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top

  documents = []
  for name in sorted(topics.topics):
    _add_document(documents, topics.topics[name])
  for path in _stdlib_files(sysconfig.get_paths()["stdlib"]):
    try:
      with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
      continue
    for doc in _docstrings(tree):
      _add_document(documents, doc)
  return documents


def _expand(pattern: str) -> list[str]:
  """Files matched by comma-separated globs; each glob must match a file."""
  paths = []
  for part in (p.strip() for p in pattern.split(",")):
    if not part:
      continue
    matched = sorted(p for p in glob.glob(os.path.expanduser(part))
                     if os.path.isfile(p))
    if not matched:
      raise UserError(
          f"corpus pattern {part!r} matches no file; check the path in "
          f"config.data.input (a glob or comma-separated globs of text files, "
          f"or {BUILTIN_PYTHON_DOCS!r})")
    paths.extend(matched)
  if not paths:
    raise UserError(f"corpus pattern {pattern!r} is empty; set "
                    f"config.data.input to a glob of text files or "
                    f"{BUILTIN_PYTHON_DOCS!r}")
  return paths


def _read_utf8(path: str) -> str:
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8").removeprefix("\ufeff")  # BOM of Notepad
  except UnicodeDecodeError as e:
    raise UserError(
        f"corpus file {path} has non-UTF-8 bytes at offset {e.start}; convert "
        f"it to UTF-8 (e.g. iconv -f latin1 -t utf-8 {path} > out.txt)"
    ) from None


def read_text_documents(pattern: str) -> list[list[str]]:
  """Reads text files in original-BERT format.

  One sentence per line; a blank line ends a document (so does the end of a
  file).

  Args:
    pattern: a glob, or comma-separated globs, of UTF-8 text files.

  Returns:
    Documents, each a list of sentences, in file order.

  Raises:
    UserError: a glob matches no file, a file is not UTF-8, or the files hold no
      text at all.
  """
  paths = _expand(pattern)
  documents = []
  for path in paths:
    document = []
    for line in _read_utf8(path).splitlines():
      line = line.strip()
      if line:
        document.append(line)
      elif document:
        documents.append(document)
        document = []
    if document:
      documents.append(document)
  if not documents:
    raise UserError(
        f"corpus {pattern!r} ({len(paths)} file(s)) has no text; give files "
        f"with one sentence per line and a blank line between documents")
  return documents


def load_documents(spec: str) -> list[list[str]]:
  """Loads `builtin:python_docs` or the text files matched by `spec`."""
  if spec == BUILTIN_PYTHON_DOCS:
    return python_docs_documents()
  return read_text_documents(spec)
