"""Fine-tuning data: labelled examples from files (local or URLs, `gs://...`) or TFDS, the label map, and
fixed-length token arrays for each task.

Sources (`config.data.train` / `config.data.eval`):
  - `*.csv`, `*.tsv`: a header row names the columns;
  - `*.jsonl` (or `*.json`, one object per line);
  - `tfds:NAME:SPLIT`, e.g. `tfds:glue/mrpc:validation` (columns and label names from the
    registry in `tfds_tasks`).

Examples are plain dicts: classification / regression {"text", "text_pair", "label"},
tokens {"words", "tags"}, qa `squad.QAExample`, embedding {"text" (the anchor),
"text_pair" (its positive), "negative", "score"}. Rows whose text is empty are skipped and
counted (embedding: a pair with an empty side is an error); a source left with no rows at
all is an error that names it. Everything is tokenized once, in memory (GLUE's largest
task, MNLI, is 393k pairs).

Errors about a row (a label outside the label map, a regression label that is no number,
tags that do not match the words) name the source and the row: `Examples.where(i)`.
"""

import csv
import dataclasses
import io
import json
from collections.abc import Iterator

import numpy as np

from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.finetune import squad, tfds_tasks

IGNORE = -100  # label of positions that take no loss (tokens task: non-first sub-tokens)


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
  """

  rows: list
  skipped_empty: int = 0
  label_names: list | None = None
  source: str = "the data"
  numbers: list[int] | None = None

  def where(self, index: int) -> str:
    """`"SOURCE row N"`: where `rows[index]` is in its source, for error messages."""
    number = self.numbers[index] if self.numbers is not None else index + 1
    return f"{self.source} row {number}"


def is_tfds(spec: str) -> bool:
  """Whether a data spec names a TFDS dataset (`tfds:NAME:SPLIT`)."""
  return spec.startswith(tfds_tasks.TFDS_PREFIX)


def read(spec: str, config, *, labelled: bool = True) -> Examples:
  """The examples of a data spec for `config.task`.

  Args:
    spec: a .csv / .tsv / .jsonl file, or `tfds:NAME:SPLIT`; unlabelled, also a .txt
      file of one text per line (tasks of one text).
    config: a fine-tuning config (task, columns).
    labelled: whether the label column is required (False for predict).

  Returns:
    The examples; rows with empty text are skipped and counted.

  Raises:
    UserError: a missing or unreadable file, a missing column, or a source with no rows.
  """
  if is_tfds(spec):
    examples = _read_tfds(spec, config)
  elif storage.is_remote(spec) and (problem := storage.unreachable(spec)):
    raise UserError(f"data file {spec}: {problem}; check the bucket name and access")
  elif not storage.isfile(spec):
    raise UserError(
      f"data file {spec} does not exist; give a .csv, .tsv or .jsonl file or tfds:NAME:SPLIT"
    )
  else:
    one_text = None if labelled else _one_text_column(spec, config)
    examples = _from_records(read_records(spec, one_text), spec, config, labelled)
  if not examples.rows:
    raise UserError(_no_rows(spec, config, examples.skipped_empty))
  return examples


def _no_rows(spec, config, skipped_empty):
  """The error for a source with no rows to use."""
  if skipped_empty:
    columns = [c for c in (config.data.text_column, config.data.text_pair_column) if c]
    return (
      f"{spec} has no rows with text: all {skipped_empty} rows have an empty "
      f"{' or '.join(map(repr, columns))} (config.data.text_column, text_pair_column); "
      f"fill in the text"
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


def read_records(path, text_per_line=None):
  """A list of dicts, one per row of a .csv / .tsv file or line of a .jsonl file (of a .txt
  file, with `text_per_line`: {text_per_line: line}).

  Raises:
    UserError: a file that is not UTF-8, a line that is not JSON, an unknown file type.
  """
  lower = path.lower()
  try:
    with storage.open_file(path, "rb") as raw, io.TextIOWrapper(raw, "utf-8", newline="") as f:
      if text_per_line:
        return [{text_per_line: line.rstrip("\r\n")} for line in f if line.strip()]
      if lower.endswith((".csv", ".tsv")):
        return list(csv.DictReader(f, delimiter="\t" if lower.endswith(".tsv") else ","))
      if lower.endswith((".jsonl", ".json")):
        records = []
        for number, line in enumerate(f, 1):
          if line.strip():
            try:
              records.append(json.loads(line))
            except json.JSONDecodeError as e:
              raise UserError(
                f"{path} line {number} is not JSON ({e.msg}); JSON Lines files "
                f"hold one object per line"
              ) from None
        return records
  except UnicodeDecodeError as e:
    raise UserError(
      f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it"
    ) from None
  if lower.endswith(".txt"):
    raise UserError(f"{path}: a .txt file has no labels; give a .csv, .tsv or .jsonl file")
  raise UserError(f"{path}: unknown file type; give a .csv, .tsv or .jsonl file")


def _column(records, name, path, what):
  if records and name not in records[0]:
    raise UserError(
      f"{path} has no column {name!r} (config.data.{what}); its columns are "
      f"{', '.join(map(repr, records[0]))}"
    )


def _from_records(records, path, config, labelled):
  d, task = config.data, config.task
  if task == "qa":
    for name in ("question", "context") + (("answers",) if labelled else ()):
      _column(records, name, path, "(qa: question, context, answers)")
    return Examples([_qa_example(r, i) for i, r in enumerate(records)], source=path)
  if task == "embedding":
    return _pairs(records, path, config)
  _column(records, d.text_column, path, "text_column")
  if d.text_pair_column:
    _column(records, d.text_pair_column, path, "text_pair_column")
  if labelled:
    _column(records, d.label_column, path, "label_column")
  rows, numbers, empty = [], [], 0
  for number, r in enumerate(records, 1):
    text = r[d.text_column]
    if task == "tokens":
      words = text.split() if isinstance(text, str) else list(text or [])
      tags = r.get(d.label_column) if labelled else None
      tags = tags.split() if isinstance(tags, str) else tags
      if not words:
        empty += 1
        continue
      if labelled and tags is None:
        raise UserError(_no_label(path, number, d.label_column))
      if tags is not None and len(tags) != len(words):
        raise UserError(
          f"{path} row {number} has {len(words)} words but {len(tags)} tags "
          f"({' '.join(words[:8])} ...); give one tag per word"
        )
      rows.append({"words": words, "tags": tags})
    else:
      pair = r[d.text_pair_column] if d.text_pair_column else None
      if not (text or "").strip() or (d.text_pair_column and not (pair or "").strip()):
        empty += 1
        continue
      label = r.get(d.label_column)
      if labelled and (label is None or isinstance(label, str) and not label.strip()):
        raise UserError(_no_label(path, number, d.label_column))
      rows.append({"text": text, "text_pair": pair, "label": label})
    numbers.append(number)
  return Examples(rows, empty, source=path, numbers=numbers)


def _no_label(path, number, column):
  return (
    f"{path} row {number} has no label (an empty {column!r}, config.data.label_column); "
    f"fill it in or remove the row"
  )


def _pairs(records, path, config):
  """Embedding pairs: anchor (text_column), positive (text_pair_column), and the hard
  negative (negative_column) and score (score_column) when configured and in the file.
  """
  d = config.data
  _column(records, d.text_column, path, "text_column")
  if not d.text_pair_column:
    raise UserError(_NO_PAIR_COLUMN)
  _column(records, d.text_pair_column, path, "text_pair_column")
  sides = [("anchor", d.text_column), ("positive", d.text_pair_column)]
  present = set(records[0]) if records else set()
  if d.negative_column and d.negative_column in present:
    sides.append(("negative", d.negative_column))
  scored = bool(d.score_column) and d.score_column in present
  rows = []
  for number, r in enumerate(records, 1):
    texts = {}
    for side, column in sides:
      text = r.get(column)
      if not isinstance(text, str) or not text.strip():
        raise UserError(
          f"{path} row {number} has an empty {side} (column {column!r}); every pair "
          f"needs text on each side: fill it in or drop the row"
        )
      texts[side] = text
    score = _number(r.get(d.score_column), f"{path} row {number}") if scored else None
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


def _qa_example(record, index):
  """SQuAD-style answers: {"text": [...], "answer_start": [...]} or a list of such dicts."""
  answers = record.get("answers") or []
  if isinstance(answers, dict):
    answers = [
      {"text": t, "answer_start": s}
      for t, s in zip(answers.get("text", []), answers.get("answer_start", []))
    ]
  return squad.QAExample(
    id=str(record.get("id", index)),
    question=record["question"],
    context=record["context"],
    answers=[(int(a["answer_start"]), a["text"]) for a in answers],
  )


def _read_tfds(spec, config):
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
  else:
    rows = records
  return Examples(rows, 0, label_names, source=spec)


class LabelMap:
  """Label names <-> ids. Saved with the checkpoint, so predictions come back as names."""

  def __init__(self, names):
    self.names = [str(n) for n in names]
    self.ids = {n: i for i, n in enumerate(self.names)}

  @classmethod
  def infer(cls, examples: Examples, config) -> "LabelMap":
    """The label map of a train set.

    Returns:
      config.data.labels, else the source's label names (TFDS), else the sorted labels of
      the rows (numerically when they are all integers).
    """
    if config.data.labels:
      return cls([n.strip() for n in config.data.labels.split(",")])
    if examples.label_names:
      return cls(examples.label_names)
    key = "tags" if config.task == "tokens" else "label"
    values = set()
    for r in examples.rows:
      values.update(r[key] if config.task == "tokens" else [r[key]])
    values = {str(v) for v in values if v is not None}
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return cls(sorted(values, key=int if numeric else None))

  def encode(self, label, where: str) -> int:
    """The id of a label.

    Args:
      label: a name (JSON ints too: label 5 is the name "5"), else an int id (TFDS gives
        ids with its ClassLabel names).
      where: the source and row of the label (`Examples.where`), for the error.

    Raises:
      UserError: naming `where`, the label and the known labels.
    """
    if str(label) in self.ids:
      return self.ids[str(label)]
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
      if 0 <= label < len(self.names):
        return int(label)
    raise UserError(
      f"{where}: label {label!r} is not one of the {len(self.names)} labels the "
      f"model was trained with ({', '.join(self.names[:10])}"
      f"{' ...' if len(self.names) > 10 else ''}); fix the data or "
      f"fine-tune with it (config.data.labels)"
    )


def _truncate_pair(a, b, limit):
  """Original BERT's longest-first truncation of two token lists to `limit` tokens in all."""
  a, b = list(a), list(b)
  while len(a) + len(b) > limit:
    (a if len(a) > len(b) else b).pop()
  return a, b


def encode_sequences(
  examples: Examples, tokenizer, max_seq_length: int, labels=None, regression: bool = False
) -> tuple[dict[str, np.ndarray], int]:
  """Classification / regression rows: [CLS] text [SEP] (pair [SEP]), padded.

  Returns (arrays, truncated): input_ids, token_type_ids, attention_mask (n, length) int32,
  and "labels" (n,) int32 (float32 for regression) when `labels` (a LabelMap, or True for
  regression) is given; truncated counts the rows that did not fit.
  """
  rows = examples.rows
  n = len(rows)
  first = tokenizer.encode_batch([r["text"] for r in rows]) if rows else []
  pairs = [r["text_pair"] for r in rows]
  second = tokenizer.encode_batch(pairs) if any(p is not None for p in pairs) else [None] * n
  arrays = {
    k: np.zeros((n, max_seq_length), np.int32)
    for k in ("input_ids", "token_type_ids", "attention_mask")
  }
  arrays["input_ids"][:] = tokenizer.pad_id
  truncated = 0
  # Between the texts of a pair: [SEP] (BERT), or </s></s> (RoBERTa).
  middle = list(tokenizer.pair_separator)
  for i, (a, b) in enumerate(zip(first, second)):
    if b is None:
      ta, tb = a[: max_seq_length - 2], []
    else:
      ta, tb = _truncate_pair(a, b, max_seq_length - 2 - len(middle))
    truncated += len(ta) + len(tb) < len(a) + len(b or [])
    ids = [tokenizer.cls_id] + ta + (middle if b is not None else [tokenizer.sep_id])
    types = [0] * len(ids)
    if b is not None:
      ids += tb + [tokenizer.sep_id]
      types += [1] * (len(tb) + 1)
    arrays["input_ids"][i, : len(ids)] = ids
    arrays["token_type_ids"][i, : len(ids)] = types
    arrays["attention_mask"][i, : len(ids)] = 1
  if regression and labels:
    arrays["labels"] = np.array(
      [_number(r["label"], examples.where(i)) for i, r in enumerate(rows)], np.float32
    )
  elif labels:
    arrays["labels"] = np.array(
      [labels.encode(r["label"], examples.where(i)) for i, r in enumerate(rows)], np.int32
    )
  return arrays, truncated


def _number(label, where):
  try:
    return float(label)
  except (TypeError, ValueError):
    raise UserError(f"{where}: regression label {label!r} is not a number") from None


def encode_tokens(
  examples: Examples, tokenizer, max_seq_length: int, labels=None
) -> tuple[dict[str, np.ndarray], int]:
  """Token classification rows: each word's sub-tokens; the label sits on a word's first
  sub-token and the others get IGNORE (as Hugging Face's run_ner.py).

  Returns (arrays, truncated): input_ids, token_type_ids, attention_mask, word_index
  (n, length) int32 (word_index: the word a first sub-token starts, else -1), and "labels"
  when `labels` is given; truncated counts rows with words cut off.
  """
  rows = examples.rows
  vocab = sorted({w for r in rows for w in r["words"]})
  pieces = dict(zip(vocab, tokenizer.encode_batch(vocab))) if vocab else {}
  n = len(rows)
  arrays = {
    k: np.zeros((n, max_seq_length), np.int32)
    for k in ("input_ids", "token_type_ids", "attention_mask")
  }
  arrays["input_ids"][:] = tokenizer.pad_id
  arrays["word_index"] = np.full((n, max_seq_length), -1, np.int32)
  if labels:
    arrays["labels"] = np.full((n, max_seq_length), IGNORE, np.int32)
  truncated = 0
  for i, r in enumerate(rows):
    ids, position = [tokenizer.cls_id], 1
    for w, word in enumerate(r["words"]):
      sub = pieces[word] or [tokenizer.unk_id]
      if position + len(sub) > max_seq_length - 1:
        truncated += 1
        break
      arrays["word_index"][i, position] = w
      if labels:
        arrays["labels"][i, position] = labels.encode(
          r["tags"][w], f"{examples.where(i)} word {w + 1}"
        )
      ids += sub
      position += len(sub)
    ids.append(tokenizer.sep_id)
    arrays["input_ids"][i, : len(ids)] = ids
    arrays["attention_mask"][i, : len(ids)] = 1
  return arrays, truncated


def encode_qa(examples: Examples, tokenizer, config, train: bool) -> tuple[dict, int]:
  """SQuAD windows (`squad.make_features`); returns (arrays, 0)."""
  d = config.data
  try:
    features = squad.make_features(
      examples.rows,
      tokenizer.encode_batch,
      cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id,
      pad_id=tokenizer.pad_id,
      max_seq_length=d.max_seq_length,
      doc_stride=d.doc_stride,
      max_query_length=d.max_query_length,
      train=train,
    )
  except ValueError as e:  # lengths that leave no room for the context, or a bad answer
    raise UserError(
      f"qa: {e} (config.data.max_seq_length={d.max_seq_length}, "
      f"max_query_length={d.max_query_length}, doc_stride={d.doc_stride})"
    ) from None
  return features, 0


def encode_texts(texts: list[str], tokenizer, max_seq_length: int) -> tuple[dict, int]:
  """Single texts as [CLS] text [SEP], cut to `max_seq_length` tokens and padded.

  Returns (arrays, truncated): input_ids, token_type_ids (zeros), attention_mask (n,
  length) int32; truncated counts the texts that did not fit.
  """
  encoded = tokenizer.encode_batch(list(texts)) if texts else []
  arrays = {
    k: np.zeros((len(encoded), max_seq_length), np.int32)
    for k in ("input_ids", "token_type_ids", "attention_mask")
  }
  arrays["input_ids"][:] = tokenizer.pad_id
  for i, ids in enumerate(encoded):
    row = [tokenizer.cls_id] + ids[: max_seq_length - 2] + [tokenizer.sep_id]
    arrays["input_ids"][i, : len(row)] = row
    arrays["attention_mask"][i, : len(row)] = 1
  return arrays, sum(len(ids) > max_seq_length - 2 for ids in encoded)


def encode_pairs(examples: Examples, tokenizer, max_seq_length: int) -> tuple[dict, int]:
  """Embedding pairs: each side's texts (`encode_texts`) as `{side}_input_ids` and
  `{side}_attention_mask`, sides anchor, positive and (when the rows have one) negative.

  Returns (arrays, truncated): truncated counts the texts of all sides that did not fit.
  """
  rows = examples.rows
  sides = {"anchor": "text", "positive": "text_pair"}
  if rows and rows[0].get("negative") is not None:
    sides["negative"] = "negative"
  arrays, truncated = {}, 0
  for side, key in sides.items():
    encoded, cut = encode_texts([r[key] for r in rows], tokenizer, max_seq_length)
    arrays[f"{side}_input_ids"] = encoded["input_ids"]
    arrays[f"{side}_attention_mask"] = encoded["attention_mask"]
    truncated += cut
  return arrays, truncated


def encode(examples: Examples, tokenizer, config, labels, *, train: bool = False):
  """Arrays of `examples` for config.task.

  Args:
    examples: from `read`.
    tokenizer: the run's tokenizer.
    config: the fine-tuning config (task, lengths).
    labels: the `LabelMap` (classification, tokens), or None: no "labels" array.
    train: qa only: windows of training (answer positions, windows without the answer).

  Returns:
    (arrays, truncated): see `encode_sequences`, `encode_tokens`, `encode_qa`.
  """
  task, length = config.task, config.data.max_seq_length
  if task == "qa":
    return encode_qa(examples, tokenizer, config, train)
  if task == "tokens":
    return encode_tokens(examples, tokenizer, length, labels)
  if task == "embedding":
    return encode_pairs(examples, tokenizer, length)
  if task == "regression":  # no label map: the values are the labels, when the rows have them
    labels = any(r["label"] is not None for r in examples.rows)
  return encode_sequences(examples, tokenizer, length, labels, regression=task == "regression")


def train_batch(
  arrays: dict[str, np.ndarray],
  step: int,
  *,
  batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> dict[str, np.ndarray]:
  """This process's rows of global batch `step`: a pure function of (seed, step).

  Each epoch visits the examples in a fresh order (a permutation seeded by (seed, epoch));
  the rows that do not fill a last batch are left out of that epoch.
  """
  n = len(next(iter(arrays.values())))
  per_epoch = n // batch_size
  epoch, index = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(n)
  rows = order[index * batch_size : (index + 1) * batch_size]
  local = batch_size // process_count
  rows = rows[process_index * local : (process_index + 1) * local]
  return {k: v[rows] for k, v in arrays.items()}


def eval_batches(
  arrays: dict[str, np.ndarray], batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """Every row once, in order, in batches padded with rows of weight 0 ("weight")."""
  n = len(next(iter(arrays.values())))
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    weight = (rows < n).astype(np.float32)
    rows = np.minimum(rows, n - 1)[process_index * local : (process_index + 1) * local]
    batch = {k: v[rows] for k, v in arrays.items()}
    batch["weight"] = weight[process_index * local : (process_index + 1) * local]
    yield batch
