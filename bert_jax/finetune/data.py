"""Fine-tuning data: labelled examples from files (local or URLs, `gs://...`) or TFDS.
`labels` maps their labels to ids, `encoding` makes token arrays of them, and `batching`
cuts those into batches.

Sources (`config.data.train` / `config.data.eval`), files in UTF-8 (a byte order mark is
dropped):
  - `*.csv`, `*.tsv`: a header row names the columns;
  - `*.jsonl` (or `*.json`: one object per line, or an array of them);
  - SQuAD's official `*.json` (qa) and CoNLL's columns, `*.conll` or a labelled `*.txt`
    (tokens), as `dataset_files` reads them;
  - `tfds:NAME:SPLIT`, e.g. `tfds:glue/mrpc:validation` (columns and label names from the
    registry in `tfds_tasks`; class ids are read as their names).

Examples are plain dicts: classification / regression {"text", "text_pair", "label"},
tokens {"words", "tags"}, qa `squad.QAExample`, embedding {"text" (the anchor),
"text_pair" (its positive), "negative", "score"}; a row's "id" column is kept as "id".
A label is a name, a JSON number too (1 and "1" are the label "1"). Rows whose text is
empty are skipped and counted, or kept for predict (`read(keep_blank=True)`; embedding: a
pair with an empty side is an error); a source left with no rows at all is an error that
names it. Everything is tokenized once, in memory (GLUE's largest task, MNLI, is 393k
pairs).

Errors about a row (no text field or no text in it, a label outside the label map, a
regression label that is no number, tags that do not match the words) name the source and
the row: `Examples.where(i)`.
"""

import csv
import dataclasses
import io
import json
import math

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.finetune import dataset_files, squad, tfds_tasks


@dataclasses.dataclass
class Examples:
  """Examples of one source, what was skipped, and the label names the source declares.

  Attributes:
    rows: the examples (dicts, or `squad.QAExample` for qa).
    skipped_empty: rows left out because their text is empty.
    label_names: the label names the source declares (TFDS ClassLabel names), or None.
    source: the data spec the rows come from (a file or `tfds:NAME:SPLIT`).
    numbers: each row's number in the source (1-based data rows: a CSV's header and a
      JSON Lines file's blank lines do not count), or None: the rows are the source's.
    blank: rows kept although their text is empty (`read(keep_blank=True)`; qa: an empty
      question or context).
  """

  rows: list
  skipped_empty: int = 0
  label_names: list | None = None
  source: str = "the data"
  numbers: list[int] | None = None
  blank: int = 0

  def where(self, index: int) -> str:
    """`"SOURCE row N"`: where `rows[index]` is in its source, for error messages."""
    number = self.numbers[index] if self.numbers is not None else index + 1
    return f"{self.source} row {number}"


def is_tfds(spec: str) -> bool:
  """Whether a data spec names a TFDS dataset (`tfds:NAME:SPLIT`)."""
  return spec.startswith(tfds_tasks.TFDS_PREFIX)


def accepted(labelled: bool = True, task: str | None = None) -> str:
  """The data specs `read` takes, for messages: a .txt too when unlabelled (predict), and
  the benchmark files of `task` (`dataset_files`).
  """
  files = ".csv, .tsv or .jsonl" if labelled else ".csv, .tsv, .jsonl or .txt"
  own = {"qa": ", SQuAD's .json", "tokens": ", CoNLL's .conll (or a .txt of its columns)"}
  return f"a {files} file{own.get(task, '')} or tfds:NAME:SPLIT"


def read(
  spec: str,
  config,
  *,
  labelled: bool = True,
  keep_blank: bool = False,
  flags: dict[str, str] | None = None,
  partly_labelled: bool = False,
) -> Examples:
  """The examples of a data spec for `config.task`.

  Files are UTF-8, with or without a byte order mark (Excel's "CSV UTF-8").

  Args:
    spec: a .csv / .tsv / .jsonl file, or `tfds:NAME:SPLIT`; unlabelled, also a .txt
      file of one text per line (tasks of one text).
    config: a fine-tuning config (task, columns).
    labelled: whether the label column is required (False for predict).
    keep_blank: keep the rows whose text is empty (predict: one prediction per row) and
      count them in `Examples.blank`, instead of skipping them.
    flags: how the command sets a column (`{"text_column": "--text-column"}`), for the
      messages; a column not in it is named by its config key (config.data.text_column).
    partly_labelled: the label column is required, but a row may leave it empty (label
      None: distillation's teacher labels such rows).

  Returns:
    The examples; rows with empty text are skipped and counted (unless `keep_blank`).

  Raises:
    UserError: a missing or unreadable file, a missing column, a row without text (or
      with a number, null or a list where the text should be), or a source with no rows.
  """
  if is_tfds(spec):
    examples = _read_tfds(spec, config, labelled)
  elif storage.is_remote(spec) and (problem := storage.unreachable(spec)):
    raise UserError(f"data file {spec}: {problem}; check the bucket name and access")
  elif not storage.isfile(spec):
    empty = " (to leave a file setting empty, give nothing: --config.data.eval=)"
    empty = empty if spec.lower() in ("none", "null") else ""
    raise UserError(
      f"data file {spec} does not exist; give {accepted(labelled, config.task)}{empty}"
    )
  else:
    conll = _conll_columns(spec, config, labelled)
    one_text = None if labelled or conll else _one_text_column(spec, config)
    records = read_records(spec, one_text, labelled=labelled, conll=conll, task=config.task)
    examples = _from_records(records, spec, config, labelled, keep_blank, flags, partly_labelled)
  if not examples.rows:
    raise UserError(_no_rows(spec, config, examples.skipped_empty, flags))
  return examples


def _setting(key: str, flags: dict[str, str] | None) -> str:
  """How the user names column `key` of config.data: a command's flag, or the config key
  (a command without a flag for it reads the run's: the file's column is to be renamed).
  """
  if flags is None:
    return f"config.data.{key}"
  return flags.get(key, f"the run's config.data.{key}: rename the file's column")


def _no_rows(spec, config, skipped_empty, flags):
  """The error for a source with no rows to use."""
  if skipped_empty:
    keys = [k for k in ("text_column", "text_pair_column") if config.data[k]]
    columns = " or ".join(repr(config.data[k]) for k in keys)
    settings = ", ".join(_setting(k, flags) for k in keys)
    return (
      f"{spec} has no rows with text: all {skipped_empty} rows have an empty {columns} "
      f"({settings}); fill in the text"
    )
  return f"{spec} has no rows (a header only, or an empty file); give a file with examples"


def _one_text_column(path, config):
  """The column a .txt file's lines fill (None for other files); refuses a .txt for a task
  whose rows hold more than one text.
  """
  if not path.lower().endswith(".txt"):
    return None
  d = config.data
  if config.task in ("qa", "embedding") or d.text_pair_column:
    columns = (
      "question, context" if config.task == "qa" else f"{d.text_column}, {d.text_pair_column}"
    )
    raise UserError(
      f"{path}: a .txt file holds one text per line, and this {config.task} run reads "
      f"{columns}; give a .jsonl or .csv file with those columns"
    )
  return d.text_column


def _conll_columns(path, config, labelled):
  """(text column, label column) when `path` is a CoNLL file of the tokens task: a .conll
  file, or a .txt file of labelled words (unlabelled, a .txt file is a sentence per line);
  else None.
  """
  lower = path.lower()
  if config.task == "tokens" and (lower.endswith(".conll") or labelled and lower.endswith(".txt")):
    return config.data.text_column, config.data.label_column
  return None


def read_records(path, text_per_line=None, *, labelled=True, conll=None, task=None):
  """A list of dicts, one per row of a .csv / .tsv file or line of a .jsonl file (of a .txt
  file, with `text_per_line`: {text_per_line: line} for every line, blank ones too); of a
  SQuAD JSON file, one per question; with `conll` (text column, label column), one per
  sentence of a CoNLL file (`dataset_files`).

  The file is UTF-8; a byte order mark at its start is dropped. A CSV row shorter than the
  header has empty cells ("") for the columns it lacks. A .tsv file is one row per line,
  its cells split at tabs, without quoting (as GLUE's files and original BERT read them): a
  `"` in a text is text.

  Raises:
    UserError: a file that is not UTF-8, a line that is not JSON, a row with more cells
      than its header, an unknown file type (the kinds listed: a .txt too unless
      `labelled`).
  """
  lower = path.lower()
  try:
    with (
      storage.open_file(path, "rb") as raw,
      io.TextIOWrapper(raw, "utf-8-sig", newline="") as f,
    ):
      if text_per_line:
        return [{text_per_line: line.rstrip("\r\n")} for line in f]
      if conll:
        return dataset_files.conll_rows(f, path, *conll)
      if lower.endswith((".csv", ".tsv")):
        tsv = lower.endswith(".tsv")
        delimiter, quoting = ("\t", csv.QUOTE_NONE) if tsv else (",", csv.QUOTE_MINIMAL)
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting, restval="")
        _check_header(reader.fieldnames or [], path, delimiter)
        rows = list(reader)
        _check_cells(rows, reader.fieldnames, path, tsv)
        return rows
      if lower.endswith(".jsonl"):
        return _json_lines(f, path)
      if lower.endswith(".json"):
        text = f.read()
        document = dataset_files.whole_json(text)
        if dataset_files.is_squad(document):
          return dataset_files.squad_rows(document, path)
        if isinstance(document, list) and all(isinstance(r, dict) for r in document):
          return document  # a JSON array of row objects
        return _json_lines(io.StringIO(text), path)
  except UnicodeDecodeError:
    raise UserError(f"{path} {storage.not_utf8_problem(path)}") from None
  if lower.endswith(".txt") and labelled:
    raise UserError(f"{path}: a .txt file has no labels; give a .csv, .tsv or .jsonl file")
  raise UserError(f"{path}: unknown file type; give {accepted(labelled, task)}")


def _check_header(names: list[str], path: str, delimiter: str) -> None:
  """A UserError for a CSV / TSV header that names a column twice (the reader would keep
  the last), or a .csv file whose one column holds tabs (tab-separated).
  """
  twice = [n for i, n in enumerate(names) if n in names[:i]]
  if twice:
    raise UserError(
      f"{path}: its header names the column {twice[0]!r} twice; give each column its own name"
    )
  if delimiter == "," and len(names) == 1 and "\t" in names[0]:
    raise UserError(
      f"{path} is tab-separated (its header is {names[0]!r}); name it .tsv, or separate "
      f"its columns with commas"
    )
  if delimiter == "," and len(names) == 1 and ";" in names[0]:
    raise UserError(
      f"{path} is semicolon-separated (its header is {names[0]!r}); separate its columns "
      f'with commas (a spreadsheet\'s "CSV UTF-8" export does)'
    )


def _check_cells(rows: list[dict], names: list[str], path: str, tsv: bool) -> None:
  """A UserError for the first CSV / TSV row with more cells than the header names (the
  reader keeps the extra ones under None): a text with an unquoted comma, or a tab.
  """
  for number, row in enumerate(rows, 1):
    if None in row:
      cells = len(names) + len(row[None])
      fix = (
        "a text may not hold a tab; replace it with a space"
        if tsv
        else 'quote a text that holds a comma ("hello, world")'
      )
      raise UserError(
        f"{path} row {number} has {cells} cells but its header names {len(names)} "
        f"({', '.join(names)}); {fix}"
      )


def _json_lines(lines, path):
  """The objects of a JSON Lines file's lines (blank lines are no rows)."""
  records = []
  for number, line in enumerate(lines, 1):
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(
          f"{path} line {number} is not JSON ({e.msg}); JSON Lines files hold one object per line"
        ) from None
      if not isinstance(record, dict):
        raise UserError(
          f"{path} line {number} is {_shown(record)}, not an object; JSON Lines data "
          f'holds one object per line, e.g. {{"text": "..."}}'
        )
      records.append(record)
  return records


def text_of(record: dict, column: str, where: str, setting: str | None, *, words: bool = False):
  """The text in `column` of a row: a string (with `words`, also a list of strings).

  Args:
    record: the row, as `read_records` gives it.
    column: the column (field) with the text.
    where: the source and row (`"FILE row N"`), for the error.
    setting: how the user names another column (`--text-column`,
      `config.data.text_column`), for the error; None: the column is fixed (qa).
    words: a list of words is text too (the tokens task).

  Raises:
    UserError: one line naming `where`, the column and `setting`, when the row has no
      such field or holds no text there (a number, null, a list, an object).
  """
  value = record.get(column)
  if isinstance(value, str):
    return value
  if words and isinstance(value, list) and all(isinstance(w, str) for w in value):
    return value
  other = f", or name the field that holds the texts with {setting}" if setting else ""
  if column not in record:
    fields = ", ".join(repr(k) for k in record if isinstance(k, str))
    raise UserError(
      f"{where} has no {column!r} field (it has {fields or 'none'}); add it to the row{other}"
    )
  kinds = "a string or a list of words" if words else "a string"
  raise UserError(f"{where}: {column!r} is {_shown(value)}, not text; give {kinds} there{other}")


_KINDS = ((bool, "a boolean"), ((int, float), "a number"), (list, "a list"), (dict, "an object"))


def _shown(value) -> str:
  """A JSON value and its kind, short, for messages: `42 (a number)`, `null`."""
  if value is None:
    return "null"
  kind = next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)
  text = json.dumps(value, ensure_ascii=False)
  return f"{text if len(text) <= 40 else text[:37] + '...'} ({kind})"


def _column(records, name, path, setting):
  """A UserError when no row of `records` has the column `name`; `setting` says how the
  column is chosen.
  """
  if records and not any(name in r for r in records):
    found = dict.fromkeys(k for r in records for k in r if isinstance(k, str))
    raise UserError(
      f"{path} has no column {name!r} ({setting}); its columns are {', '.join(map(repr, found))}"
    )


def _from_records(records, path, config, labelled, keep_blank, flags, partly_labelled=False):
  """The examples of a file's records (`read`)."""
  d, task = config.data, config.task
  if task == "qa":
    return _qa_examples(records, path, labelled)
  if task == "embedding":
    return _pairs(records, path, config, flags)
  _column(records, d.text_column, path, _setting("text_column", flags))
  if d.text_pair_column:
    _column(records, d.text_pair_column, path, _setting("text_pair_column", flags))
  if labelled:
    _column(records, d.label_column, path, _setting("label_column", flags))
  rows, numbers, empty = [], [], 0
  for number, record in enumerate(records, 1):
    where = f"{path} row {number}"
    if task == "tokens":
      row = _tokens_row(record, where, d, flags, labelled)
    else:
      row = _sequence_row(record, where, d, flags)
    if is_blank(row) and not keep_blank:
      empty += 1
      continue
    if partly_labelled and isinstance(row.get("label"), str) and not row["label"].strip():
      row["label"] = None  # an empty cell: a row without a label
    _check_label(row, where, d.label_column, labelled and not partly_labelled)
    rows.append(row)
    numbers.append(number)
  blank = sum(map(is_blank, rows))
  return Examples(rows, empty, source=path, numbers=numbers, blank=blank)


def _sequence_row(record, where, d, flags):
  """A classification / regression row: {"text", "text_pair", "label"} (and "id"); the
  label is kept when there is one, labelled or not (predict checks it against the map).
  """
  text = text_of(record, d.text_column, where, _setting("text_column", flags))
  pair = None
  if d.text_pair_column:
    pair = text_of(record, d.text_pair_column, where, _setting("text_pair_column", flags))
  return _with_id({"text": text, "text_pair": pair, "label": record.get(d.label_column)}, record)


def _tokens_row(record, where, d, flags, labelled):
  """A tokens row: {"words", "tags"} (and "id"); a text is split at whitespace, and so is
  a string of tags.
  """
  text = text_of(record, d.text_column, where, _setting("text_column", flags), words=True)
  tags = record.get(d.label_column) if labelled else None
  return _with_id(
    {
      "words": text.split() if isinstance(text, str) else list(text),
      "tags": tags.split() if isinstance(tags, str) else tags,
    },
    record,
  )


def _with_id(row, record):
  """`row` with the record's "id", when it has one (predict copies it to its output)."""
  if "id" in record:
    row["id"] = record["id"]
  return row


def is_blank(row) -> bool:
  """Whether a row's text is empty: no words, or an empty (or whitespace) text or pair."""
  if "words" in row:
    return not row["words"]
  return not row["text"].strip() or (row["text_pair"] is not None and not row["text_pair"].strip())


def _check_label(row, where, column, labelled):
  """A UserError for a row without a label (when `labelled`), or with tags that do not
  match its words.
  """
  if "words" in row:
    words, tags = row["words"], row["tags"]
    if labelled and tags is None:
      raise UserError(_no_label(where, column))
    if tags is not None and len(tags) != len(words):
      raise UserError(
        f"{where} has {len(words)} words but {len(tags)} tags "
        f"({' '.join(words[:8])} ...); give one tag per word"
      )
    if tags is not None and not all(isinstance(t, str) for t in tags):
      raise UserError(
        f"{where}: the tags ({column!r}) are {_shown(tags)}; give the tag names (B-PER, "
        f"I-LOC, O, ...), not their ids (a Hugging Face dataset's ClassLabel names them: "
        f"`features[{column!r}].feature.int2str`)"
      )
    return
  label = row["label"]
  if labelled and (label is None or isinstance(label, str) and not label.strip()):
    raise UserError(_no_label(where, column))
  if isinstance(label, (list, dict)):
    raise UserError(
      f"{where}: the label ({column!r}) is {_shown(label)}; give one label per row, a "
      f"string or a number"
    )
  if isinstance(label, float) and not math.isfinite(label):  # JSON's NaN, Infinity
    raise UserError(
      f"{where}: the label ({column!r}) is {_shown(label)}, not a label; give a label name "
      f"or a finite number, or remove the row"
    )


def _no_label(where, column):
  return (
    f"{where} has no label (an empty {column!r}, config.data.label_column); "
    f"fill it in or remove the row"
  )


def _pairs(records, path, config, flags):
  """Embedding pairs: anchor (text_column), positive (text_pair_column), and the hard
  negative (negative_column) and score (score_column) when configured and in the file.
  """
  d = config.data
  _column(records, d.text_column, path, _setting("text_column", flags))
  if not d.text_pair_column:
    raise UserError(_NO_PAIR_COLUMN)
  _column(records, d.text_pair_column, path, _setting("text_pair_column", flags))
  sides = [
    ("anchor", d.text_column, _setting("text_column", flags)),
    ("positive", d.text_pair_column, _setting("text_pair_column", flags)),
  ]
  present = set(records[0]) if records else set()
  if d.negative_column and d.negative_column in present:
    sides.append(("negative", d.negative_column, _setting("negative_column", flags)))
  scored = bool(d.score_column) and d.score_column in present
  rows = []
  for number, r in enumerate(records, 1):
    where = f"{path} row {number}"
    texts = {side: text_of(r, column, where, setting) for side, column, setting in sides}
    for (side, column, _), text in zip(sides, texts.values()):
      if not text.strip():
        raise UserError(
          f"{where} has an empty {side} (column {column!r}); every pair needs text on "
          f"each side: fill it in or drop the row"
        )
    score = label_number(r.get(d.score_column), where) if scored else None
    rows.append(
      {
        "text": texts["anchor"],
        "text_pair": texts["positive"],
        "negative": texts.get("negative"),
        "score": score,
      }
    )
  return Examples(rows, 0, source=path, numbers=list(range(1, len(rows) + 1)))


_NO_PAIR_COLUMN = (
  "config.task='embedding' needs config.data.text_pair_column: the column of each "
  "anchor's positive text (e.g. --config.data.text_pair_column=positive)"
)
_QA_COLUMNS = "a qa run reads question, context and, to train or evaluate, answers"


def _qa_examples(records, path, labelled):
  """QA examples of a file's records; rows with an empty question or context are kept
  (and counted in `Examples.blank`).
  """
  for name in ("question", "context") + (("answers",) if labelled else ()):
    _column(records, name, path, _QA_COLUMNS)
  rows = [
    _qa_example(r, i, r.get(dataset_files.WHERE) or f"{path} row {i + 1}", labelled)
    for i, r in enumerate(records)
  ]
  blank = sum(not (e.question.strip() and e.context.strip()) for e in rows)
  return Examples(rows, source=path, numbers=list(range(1, len(rows) + 1)), blank=blank)


def _qa_example(record, index, where, labelled=True):
  """SQuAD-style answers: {"text": [...], "answer_start": [...]} or a list of such dicts;
  when `labelled`, the first must be where its answer_start says (`_check_answer_place`).
  """
  answers = record.get("answers") or []
  if isinstance(answers, dict):
    answers = [
      {"text": t, "answer_start": s}
      for t, s in zip(answers.get("text", []), answers.get("answer_start", []))
    ]
  example = squad.QAExample(
    id=str(record.get("id", index)),
    question=text_of(record, "question", where, None),
    context=text_of(record, "context", where, None),
    answers=[_answer(a, where) for a in answers],
  )
  if labelled and example.answers and example.context.strip():  # a blank row is counted
    _check_answer_place(example, where)
  return example


def _answer(answer, where) -> tuple[int, str]:
  """(answer_start, text) of a SQuAD answer {"text": str, "answer_start": int}.

  Raises:
    UserError: an answer of another shape, naming `where`.
  """
  start = answer.get("answer_start") if isinstance(answer, dict) else None
  text = answer.get("text") if isinstance(answer, dict) else None
  whole = isinstance(start, float) and start.is_integer()
  if not isinstance(text, str) or isinstance(start, bool) or not (isinstance(start, int) or whole):
    raise UserError(
      f'{where}: an answer is {_shown(answer)}; give {{"text": ..., "answer_start": N}}, N '
      f"the index of the answer's first character in the context"
    )
  return int(start), text


def _check_answer_place(example, where):
  """Bad input: the first answer's text is not in the context at its answer_start, whitespace
  aside (google-research/bert skips such examples; a file's are an error naming the row).
  """
  start, text = example.answers[0]
  context, end = example.context, start + len(text)
  if not text.strip():
    return  # no answer (SQuAD 2.0's empty text)
  if start < 0 or end > len(context):
    raise UserError(
      f"{where}: the answer {text[:40]!r} at answer_start {start} lies outside its context of "
      f"{len(context)} characters; answer_start is the index of the answer's first "
      f"character in the context: fix it or the text"
    )
  # Whitespace aside: the context from answer_start reads the answer's words.
  reads = " ".join(context[start : start + 2 * len(text) + 1].split())
  if not reads.startswith(" ".join(text.split())):
    raise UserError(
      f"{where}: the answer {text[:40]!r} is not at answer_start {start} of its context "
      f"(which reads {context[start:end][:40]!r} there); answer_start is the index of the "
      f"answer's first character in the context: fix it or the text"
    )


def _read_tfds(spec, config, labelled):
  """The examples of `tfds:NAME:SPLIT`; class ids become their ClassLabel names (-1, no
  label, becomes None: such rows can be predicted, not trained on).
  """
  name, split = tfds_tasks.parse(spec)
  task = tfds_tasks.task_of(name)
  if task.task != config.task:
    raise UserError(
      f"{spec} is a {task.task} dataset but config.task={config.task!r}; "
      f"set --config.task={task.task}"
    )
  records, label_names = tfds_tasks.read(
    name, split or task.train_split, data_dir=config.data.tfds_data_dir
  )
  if config.task == "qa":
    rows = [
      squad.QAExample(
        id=r["id"], question=r["question"], context=r["context"], answers=list(r["answers"])
      )
      for r in records
    ]
  elif config.task == "classification" and label_names:
    rows = [{**r, "label": _name_of(r["label"], label_names)} for r in records]
  else:
    rows = records
  examples = Examples(rows, 0, label_names, source=spec)
  if labelled and config.task == "classification":
    unlabelled = next((i for i, r in enumerate(rows) if r["label"] is None), None)
    if unlabelled is not None:
      raise UserError(
        f"{examples.where(unlabelled)} has no label: {spec} is unlabelled (as GLUE's test "
        f"splits are); train and evaluate on a labelled split, predict on this one"
      )
  return examples


def _name_of(label, names):
  """The name of class id `label` among `names`; None for TFDS's -1 (an unlabelled row:
  GLUE's test splits), `label` itself when it is no id.
  """
  if label == -1:
    return None
  return names[label] if 0 <= label < len(names) else label


def label_number(label, where: str) -> float:
  """A regression label (or score) as a finite float; a UserError naming `where` if not."""
  try:
    value = float(label)
  except (TypeError, ValueError):
    raise UserError(f"{where}: regression label {label!r} is not a number") from None
  if not math.isfinite(value):
    raise UserError(f"{where}: regression label {label!r} is not a finite number; fix the row")
  return value
