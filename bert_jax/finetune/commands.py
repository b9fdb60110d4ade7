"""`bert-jax evaluate` and `bert-jax predict`: a fine-tuned run on a dataset or a file.

Both load the run's best eval checkpoint (or `--step`) on one device with its tokenizer,
label map and data settings (the run's `config.json`), so the columns and the maximum
length are the ones it was trained with.

Both read the run's text columns, or those `--text-column` / `--text-pair-column` name.
`predict` writes one JSON line per input row, in order (a blank text is predicted as an
empty one; a qa row without question or context gets an "error"), with the row's "id"
when it has one; atomically, into a folder it makes if needed, or to stdout with `--output
-`; never over an existing file without `--overwrite`, and never over a run's own files
(metrics, config, checkpoints). The workdir, the data files and --output may be URLs
(`gs://...`).
"""

import dataclasses
import json
import os
import sys

import ml_collections

from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import evaluate as evaluate_lib
from bert_jax.finetune import labels as labels_lib

BATCH_SIZE = 32
# Rows `predict` encodes and runs at a time: the host holds one chunk's ids and logits, not
# the whole input's (a million texts at 512 tokens would be 6 GB of ids, a tagger's logits
# several times that).
CHUNK_ROWS = 8192
STDOUT = "-"  # `predict --output -`: the JSON Lines on stdout, the summary on stderr
# The flags of predict and evaluate that name the run's columns in other data.
COLUMN_FLAGS = {
  "text_column": "--text-column",
  "text_pair_column": "--text-pair-column",
  "label_column": "--label-column",
}


def load(workdir: str, step: int | None = None) -> tuple[run_lib.Run, ml_collections.ConfigDict]:
  """A fine-tuned run and its config.

  Args:
    workdir: the run directory of a `bert-jax finetune`.
    step: a checkpoint step; None: the best eval's (else the latest).

  Returns:
    (the run on one device, its resolved config from config.json).

  Raises:
    UserError: `workdir` holds no fine-tuned run.
  """
  run = run_lib.load(workdir, step)
  if "task" not in run.meta:
    raise UserError(
      f"{workdir} is not a fine-tuned run (it has no task head); fine-tune it "
      f"first: bert-jax finetune --config.init_from={workdir} --workdir NEW_DIR"
    )
  config = ml_collections.ConfigDict(run_lib.read_config(workdir, required=True))
  return run, config


def _labels(run):
  return labels_lib.LabelMap(run.meta["labels"]) if run.meta.get("labels") else None


def evaluate_main(
  workdir: str,
  *,
  data: str | None = None,
  step: int | None = None,
  text_column: str | None = None,
  text_pair_column: str | None = None,
  label_column: str | None = None,
  max_seq_length: int | None = None,
) -> dict:
  """`bert-jax evaluate`: prints the metrics of a fine-tuned run (last line: one JSON object),
  or a pretraining run's held-out masked-LM metrics (`pretrain.evaluate_run`).

  Args:
    workdir: the fine-tuned (or pretraining) run.
    data: a data spec to evaluate on; None: the run's config.data.eval.
    step: a checkpoint step; None: the best eval's (a pretraining run's latest).
    text_column: the column of `data` with the texts; None: the run's.
    text_pair_column: the column of `data` with the second texts of pairs; None: the run's.
    label_column: the column of `data` with the labels (values, tags); None: the run's.
    max_seq_length: tokens a text is cut at; None: the run's (`use_length`).

  Returns:
    The metrics (and "loss").
  """
  columns = {
    "text_column": text_column,
    "text_pair_column": text_pair_column,
    "label_column": label_column,
  }
  meta = run_lib.latest_meta(run_lib.workdir_of(workdir)) or {}
  if meta and "task" not in meta and not meta.get("imported_from"):  # a pretraining run
    given = ["--data"] * bool(data) + [COLUMN_FLAGS[k] for k, v in columns.items() if v]
    given += ["--max-seq-length"] * (max_seq_length is not None)
    if given:
      raise UserError(
        f"{given[0]} is for fine-tuned runs; {workdir} is a pretraining run, evaluated on "
        f"its own held-out rows (drop {given[0]})"
      )
    from bert_jax.train import pretrain  # pylint: disable=g-import-not-at-top

    values = pretrain.evaluate_run(workdir, step)
    evaluate_lib.print_metrics(values)
    return values
  run, config = load(workdir, step)
  spec = data or config.data.eval
  if not spec:
    raise UserError(f"{workdir} was trained without config.data.eval; give --data FILE")
  if not data and not data_lib.is_tfds(spec) and not storage.exists(spec):
    raise UserError(
      f"{spec}, the run's config.data.eval, does not exist (moved, or a path relative to "
      f"another folder); give --data FILE"
    )
  config.data.eval = spec
  use_columns(config, workdir, spec, **columns)
  use_length(config, run, max_seq_length)
  if config.task == "embedding":
    return _evaluate_embedding(run, config, spec)
  labels = _labels(run)
  examples = data_lib.read(spec, config, flags=COLUMN_FLAGS)
  arrays, _ = encoding_lib.encode(examples, run.tokenizer, config, labels)
  logits = evaluate_lib.logits(run.model, run.params, arrays, BATCH_SIZE, progress=True)
  values = evaluate_lib.scores(config, logits, arrays, examples, labels.names if labels else None)
  print(
    f"{len(examples.rows)} examples of {spec}, step {run.step}"
    + (
      f", {progress_lib.count(examples.skipped_empty, 'empty row')} skipped"
      if examples.skipped_empty
      else ""
    )
  )
  evaluate_lib.print_metrics(values)
  return values


def use_columns(
  config,
  workdir: str,
  spec: str,
  text_column: str | None,
  text_pair_column: str | None,
  label_column: str | None = None,
) -> None:
  """Sets config.data's columns to those --text-column / --text-pair-column /
  --label-column name (None: the run's own).

  Raises:
    UserError: an empty name, a column flag for a TFDS dataset (its columns are its
      registry's) or a qa run (question, context), a pair column for a run trained on
      single texts, or a label column for a sentence-embedding run.
  """
  given = {
    "text_column": text_column,
    "text_pair_column": text_pair_column,
    "label_column": label_column,
  }
  given = {key: name for key, name in given.items() if name is not None}
  for key, name in given.items():
    if not name.strip():
      raise UserError(f"{COLUMN_FLAGS[key]} {name!r} names no column; give a column name")
  flags = " and ".join(COLUMN_FLAGS[key] for key in given)
  if given and data_lib.is_tfds(spec):
    raise UserError(f"{flags}: {spec} is read with its registry's columns; drop {flags}")
  if given and config.task == "qa":
    raise UserError(
      f"{flags}: {workdir} is a qa run, which reads the columns question and context; drop {flags}"
    )
  if "label_column" in given and config.task == "embedding":
    raise UserError(
      f"--label-column: {workdir} is a sentence-embedding run, which has no labels; drop "
      f"--label-column"
    )
  # An imported classifier's config.json (no config.data.train) cannot know whether the
  # checkpoint was trained on pairs (NLI, a cross-encoder): it takes a pair column.
  if "text_pair_column" in given and not config.data.text_pair_column and config.data.train:
    raise UserError(
      f"--text-pair-column: {workdir} was trained on single texts (no "
      f"config.data.text_pair_column); drop it, or name the texts with --text-column"
    )
  config.data.update(given)


def use_length(config, run, max_seq_length: int | None) -> None:
  """Sets config.data.max_seq_length to --max-seq-length (None: the run's own), and a qa
  run's question length and window stride to at most half of it (`encoding.set_max_seq_length`).

  Raises:
    UserError: a length the model cannot read (under 8 tokens, or over its positions).
  """
  if max_seq_length is None:
    return
  check_length(max_seq_length, run.model.config.max_length)
  encoding_lib.set_max_seq_length(config.data, max_seq_length)


def check_length(
  max_seq_length: int, limit: int, lowest: int = encoding_lib.MIN_SEQ_LENGTH
) -> None:
  """UserError unless --max-seq-length is from `lowest` to `limit` (the model's positions)."""
  if not lowest <= max_seq_length <= limit:
    raise UserError(
      f"--max-seq-length {max_seq_length}: the model reads {lowest} to {limit} tokens "
      f"(its positions); give a length in that range"
    )


def _evaluate_embedding(run, config, spec: str) -> dict:
  """`evaluate` of an embedding run: retrieval metrics of its eval pairs (`retrieval`)."""
  examples = data_lib.read(spec, config, flags=COLUMN_FLAGS)
  inputs = evaluate_lib.embedding_inputs(examples, run.tokenizer, config.data.max_seq_length)
  values = evaluate_lib.embedding_scores(run.model, run.params, inputs, BATCH_SIZE)
  print(
    f"{len(examples.rows)} pairs of {spec} ({len(inputs['documents']['input_ids'])} "
    f"distinct positives as the corpus), step {run.step}"
  )
  evaluate_lib.print_metrics(values)
  return values


def _run_directory_of(path: str, workdir: str) -> tuple[str, str] | None:
  """(run directory, its file or folder) when `path` is one of a run's own files: the
  metrics, the config, or anything under its checkpoints, best, tokenizer, data or
  tensorboard folders, of `workdir` or of any run directory (one with checkpoints/) above
  `path`.
  """
  real, own_run = _real(path), _real(run_lib.workdir_of(workdir))
  for directory in _parents(real):
    is_run = directory == own_run or storage.isdir(storage.join(directory, run_lib.CHECKPOINTS))
    relative = real[len(directory) :].strip("/")
    first = relative.split("/")[0]
    if is_run and (relative in run_lib.RUN_FILES or first in run_lib.RUN_FOLDERS):
      return directory, first
  return None


def _real(path: str) -> str:
  """`path` resolved (links, `..`) when local; a URL without its trailing slash."""
  return path.rstrip("/") if storage.is_remote(path) else os.path.realpath(path)


def _parents(path: str) -> list[str]:
  """The folders holding `path` (resolved), nearest first, up to `/` or the bucket."""
  root = "/".join(path.split("/", 3)[:3]) if storage.is_remote(path) else "/"  # scheme://bucket
  parents = []
  while path not in (root, ""):
    path = path.rsplit("/", 1)[0] or "/"
    parents.append(path)
  return parents


def check_output(
  output_path: str, workdir: str, *, overwrite: bool = False, example: str = "predictions.jsonl"
) -> None:
  """Bad --output of `predict` (or `embed`: `example` names its kind of file), before
  anything is loaded or written. A folder that does not exist yet is made when the
  output is written (`make_parent`).

  Raises:
    UserError: the path is a run's own file (even with `overwrite`), a folder, under a
      file, in a folder this user may not write in, in a bucket that does not exist, or an
      existing file without `overwrite`.
  """
  if storage.is_remote(output_path) and (problem := storage.unreachable(output_path)):
    raise UserError(f"--output {output_path}: {problem}; check the bucket name and access")
  if link := storage.dangling_link(output_path):
    raise UserError(f"--output {output_path}: {storage.dangling_link_problem(link)}")
  owner = _run_directory_of(output_path, workdir)
  if owner:
    directory, name = owner
    raise UserError(
      f"--output {output_path} is the run {directory}'s own {name}; write elsewhere, "
      f"e.g. --output {example}"
    )
  if storage.isdir(output_path):
    raise UserError(
      f"--output {output_path} is a folder; give a file, e.g. {output_path}/{example}"
    )
  missing = [] if storage.is_remote(output_path) else storage.folders_to_make(output_path)
  above = os.path.dirname(missing[-1]) if missing else None
  if above and not os.path.isdir(above):
    raise UserError(
      f"--output {output_path}: {above} is a file, not a folder; write elsewhere, "
      f"e.g. --output {example}"
    )
  if folder := storage.unwritable_folder(output_path):
    raise UserError(
      f"--output {output_path}: you may not write in {folder}; write elsewhere, e.g. "
      f"--output {example}"
    )
  if storage.exists(output_path) and not overwrite:
    raise UserError(
      f"--output {output_path} exists; give another file, or --overwrite to replace it"
    )


def make_parent(output_path: str) -> None:
  """Makes the folder of a local `output_path` (buckets have no folders)."""
  if not storage.is_remote(output_path):
    os.makedirs(storage.parent(output_path), exist_ok=True)


def _echoed_fields(row) -> dict:
  """The input fields a prediction line repeats: the row's "id" when it has one, and the
  "text" (and "text_pair") of a sequence row; tokens rows' words are in the prediction,
  and a qa prediction has the example's id.
  """
  if not isinstance(row, dict):
    return {}
  fields = {"id": row["id"]} if "id" in row else {}
  fields.update({k: row[k] for k in ("text", "text_pair") if row.get(k) is not None})
  return fields


def predict_main(
  workdir: str,
  input_spec: str,
  output_path: str,
  *,
  step: int | None = None,
  overwrite: bool = False,
  text_column: str | None = None,
  text_pair_column: str | None = None,
  label_column: str | None = None,
  max_seq_length: int | None = None,
) -> None:
  """`bert-jax predict`: one JSON line of prediction per row of `input_spec`, in order.

  A blank text is predicted as the empty text ([CLS] [SEP]); a qa row with an empty
  question or context gets {"id", "answer": null, "error"}. The row's "id" is copied.

  Args:
    workdir: the fine-tuned run.
    input_spec: a data spec with the run's text columns (a label column is optional,
      and checked against the run's labels).
    output_path: the JSON Lines file to write (atomically; its folder is made), or "-":
      stdout (the summary line then goes to stderr).
    step: a checkpoint step; None: the best eval's.
    overwrite: replace an existing `output_path` (never a run's own files).
    text_column: the column of `input_spec` with the texts; None: the run's.
    text_pair_column: the column with the second texts of pairs; None: the run's.
    label_column: the column with the labels the accuracy is printed against; None: the
      run's.
    max_seq_length: tokens a text is cut at; None: the run's (`use_length`).

  Raises:
    UserError: a bad --output (`check_output`), bad input data, a length the model cannot
      read, or a label outside the run's labels; nothing is written then.
  """
  _check_predict_output(output_path, workdir, overwrite)
  run, config = load(workdir, step)
  if config.task == "embedding":
    raise UserError(
      f"{workdir} is a sentence-embedding run: it predicts no labels; get its vectors "
      f"with bert-jax embed --workdir {workdir} --input TEXTS.txt --output VECTORS.npy"
    )
  use_columns(config, workdir, input_spec, text_column, text_pair_column, label_column)
  use_length(config, run, max_seq_length)
  labels = _labels(run)
  examples = data_lib.read(input_spec, config, labelled=False, keep_blank=True, flags=COLUMN_FLAGS)
  key = "tags" if config.task == "tokens" else "label"
  if label_column and not any(
    isinstance(r, dict) and r.get(key) is not None for r in examples.rows
  ):
    raise UserError(
      f"--label-column {label_column}: no row of {input_spec} has a label there; name the "
      f"column with the labels, or drop the flag"
    )
  given = _given_labels(examples, labels)
  results, truncated = _predictions(run, config, examples, labels)
  lines = (
    json.dumps({**_echoed_fields(row), **result}, ensure_ascii=False) + "\n"
    for row, result in zip(examples.rows, results)
  )
  if output_path == STDOUT:
    sys.stdout.writelines(lines)
    sys.stdout.flush()
  else:
    make_parent(output_path)
    storage.write_lines(output_path, lines)
  notes = _blank_note(config, examples)
  if truncated:
    notes.append(f"{truncated} truncated to {config.data.max_seq_length} tokens")
  # As evaluate scores: the rows with text (a blank one is predicted, not scored), here those
  # with a label too.
  texts = [
    (r, i) for r, i, row in zip(results, given or [], examples.rows) if not data_lib.is_blank(row)
  ]
  scored = [(r, i) for r, i in texts if i is not None]
  if config.task == "classification" and scored:
    hits = sum(r["label"] == labels.names[i] for r, i in scored)
    unlabelled = len(texts) - len(scored)
    of = f" (of the {len(scored)} rows with a label; {unlabelled} have none)" if unlabelled else ""
    notes.append(f"accuracy against its label column {hits / len(scored):.4f}{of}")
  where = "stdout" if output_path == STDOUT else output_path
  print(
    f"{len(results)} predictions -> {where}" + (f" ({'; '.join(notes)})" if notes else ""),
    file=sys.stderr if output_path == STDOUT else sys.stdout,
  )


def _check_predict_output(output_path: str, workdir: str, overwrite: bool) -> None:
  """`check_output` for predict, and a name that says JSON Lines; "-" (stdout) passes."""
  if output_path == STDOUT:
    return
  check_output(output_path, workdir, overwrite=overwrite)
  kind = output_path.lower().removesuffix(".gz").rpartition(".")[2]
  if kind in ("csv", "tsv", "json", "txt", "npy"):
    raise UserError(
      f"--output {output_path}: predict writes JSON Lines, one object per row; name the "
      f"file .jsonl (e.g. {output_path.rpartition('.')[0]}.jsonl)"
    )


def _given_labels(examples, labels) -> list[int | None] | None:
  """The ids of the input's labels (checked against the run's: an error names the row),
  None for a row without one; None when no row has one (or the run has no label map).
  """
  given = [r.get("label") if isinstance(r, dict) else None for r in examples.rows]
  given = [None if g is None or str(g).strip() == "" else g for g in given]
  if not labels or all(g is None for g in given):
    return None
  return [None if g is None else labels.encode(g, examples.where(i)) for i, g in enumerate(given)]


def _predictions(run, config, examples, labels) -> tuple[list[dict], int]:
  """(one prediction per row of `examples`, in order; the number of truncated rows). A qa
  row with an empty question or context is not answered: its object says why.
  """
  if config.task != "qa" or not examples.blank:
    return _predicted(run, config, examples, labels)
  answerable = [i for i, e in enumerate(examples.rows) if e.question.strip() and e.context.strip()]
  subset = data_lib.Examples([examples.rows[i] for i in answerable], source=examples.source)
  results = [_unanswered(e) for e in examples.rows]
  truncated = 0
  if answerable:
    predicted, truncated = _predicted(run, config, subset, labels)
    for i, result in zip(answerable, predicted):
      results[i] = result
  return results, truncated


def _predicted(run, config, examples, labels) -> tuple[list[dict], int]:
  """The model's predictions of every row of `examples` and the number truncated, made
  `CHUNK_ROWS` rows at a time under one progress bar of rows.
  """
  names = labels.names if labels else None
  results, truncated, n = [], 0, len(examples.rows)
  with progress_lib.Bar(n, "predict", "row", leave=False) as bar:
    for start in range(0, n, CHUNK_ROWS):
      rows = examples.rows[start : start + CHUNK_ROWS]
      numbers = (examples.numbers or range(1, n + 1))[start : start + len(rows)]
      chunk = dataclasses.replace(examples, rows=rows, numbers=list(numbers))
      arrays, cut = encoding_lib.encode(chunk, run.tokenizer, config, None)
      logits = evaluate_lib.logits(
        run.model, run.params, arrays, BATCH_SIZE, progress=bar, padding_read=False
      )
      results += evaluate_lib.predictions(config, logits, arrays, chunk, names)
      truncated += cut
  return results, truncated


def _unanswered(example) -> dict:
  """The prediction of a qa example with an empty question or context: why there is none."""
  empty = [name for name in ("question", "context") if not getattr(example, name).strip()]
  return {
    "id": example.id,
    "answer": None,
    "probability": None,
    "start": None,
    "error": f"empty {' and '.join(empty)}: nothing to answer",
  }


def _blank_note(config, examples) -> list[str]:
  """The summary's note on blank rows, which predict keeps (one line per row)."""
  if not examples.blank:
    return []
  if config.task == "qa":
    return [
      f"{examples.blank} rows with an empty question or context, not answered: see their error"
    ]
  return [f"{progress_lib.count(examples.blank, 'blank row')}, predicted as empty texts"]
