"""Two benchmarks' own file formats, read as the rows `data.read` takes.

Their official files need no conversion:

  - SQuAD's JSON (v1.1 and v2.0): {"data": [{"title", "paragraphs": [{"context", "qas":
    [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]};
    a row per question: {"id", "title", "question", "context", "answers"} (an impossible
    question has no answers; its "plausible_answers" are not answers), and its place
    (`WHERE`: "FILE data[0].paragraphs[1].qas[2]") for the errors about it.
  - CoNLL's columns (CoNLL-2003, WNUT, ...): a word per line, its tag in the last column,
    a blank line between sentences, "-DOCSTART-" lines between documents; a row per
    sentence: {text_column: [words], label_column: [tags]}.
"""

import json

from bert_jax.errors import UserError

DOCUMENT_START = "-DOCSTART-"
WHERE = "_where"  # a SQuAD row's place in its file, for the errors about it


def whole_json(text: str):
  """The JSON document `text` is, or None when it is not one (JSON Lines: a line each)."""
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return None


def is_squad(document) -> bool:
  """Whether a JSON document is SQuAD's: an object with a "data" list."""
  return isinstance(document, dict) and isinstance(document.get("data"), list)


def squad_rows(document: dict, path: str) -> list[dict]:
  """A row per question of a SQuAD JSON document (the module docstring).

  Raises:
    UserError: an article, paragraph or question without SQuAD's fields, naming where.
  """
  rows = []
  for a, article in enumerate(document["data"]):
    where = f"{path} data[{a}]"
    for p, paragraph in enumerate(_field(article, "paragraphs", list, where)):
      at = f"{where}.paragraphs[{p}]"
      context = _field(paragraph, "context", str, at)
      for q, qa in enumerate(_field(paragraph, "qas", list, at)):
        question = _field(qa, "question", str, f"{at}.qas[{q}]")  # (an object, so)
        answers = [] if qa.get("is_impossible") else _field(qa, "answers", list, f"{at}.qas[{q}]")
        rows.append(
          {
            "id": str(qa.get("id", len(rows))),
            "title": article.get("title", ""),
            "question": question,
            "context": context,
            "answers": answers,
            WHERE: f"{at}.qas[{q}]",
          }
        )
  return rows


def _field(value, name, kind, where):
  if not isinstance(value, dict) or not isinstance(value.get(name), kind):
    raise UserError(
      f'{where} has no {name!r} {kind.__name__}; a SQuAD JSON file is {{"data": [{{'
      f'"paragraphs": [{{"context": ..., "qas": [{{"id", "question", "answers"}}]}}]}}]}}'
    )
  return value[name]


def conll_rows(lines, path: str, text_column: str, label_column: str) -> list[dict]:
  """A row per sentence of a CoNLL file's lines (the module docstring).

  Raises:
    UserError: a line of one column (a word without its tag), naming the line.
  """
  rows, words, tags = [], [], []
  for number, line in enumerate(lines, 1):
    cells = line.split()
    if cells and cells[0] == DOCUMENT_START:
      cells = []
    if not cells:
      if words:
        rows.append({text_column: words, label_column: tags})
        words, tags = [], []
      continue
    if len(cells) < 2:
      raise UserError(
        f"{path} line {number} is {line.strip()[:40]!r}, a word without its tag; a CoNLL file "
        f"has a word per line and its tag in the last column (EU NNP B-NP B-ORG), a blank "
        f"line between sentences"
      )
    words.append(cells[0])
    tags.append(cells[-1])
  if words:
    rows.append({text_column: words, label_column: tags})
  return rows
