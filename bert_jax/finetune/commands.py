"""`bert-jax evaluate` and `bert-jax predict`: a fine-tuned run on a dataset or a file.

Both load the run's best eval checkpoint (or `--step`) on one device with its tokenizer,
label map and data settings (the run's `config.json`), so the columns and the maximum
length are the ones it was trained with.

`predict` writes its JSON Lines atomically, never over an existing file without
`--overwrite`, and never over a run's own files (metrics, config, checkpoints). The workdir,
the data files and --output may be URLs (`gs://...`).
"""

import json
import os

import ml_collections

from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import evaluate as evaluate_lib

BATCH_SIZE = 32


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
  config = ml_collections.ConfigDict(storage.read_json(run_lib.path(workdir, run_lib.CONFIG)))
  return run, config


def _labels(run):
  return data_lib.LabelMap(run.meta["labels"]) if run.meta.get("labels") else None


def evaluate_main(workdir: str, *, data: str | None = None, step: int | None = None) -> dict:
  """`bert-jax evaluate`: prints the metrics of a fine-tuned run (last line: one JSON object),
  or a pretraining run's held-out masked-LM metrics (`pretrain.evaluate_run`).

  Args:
    workdir: the fine-tuned (or pretraining) run.
    data: a data spec to evaluate on; None: the run's config.data.eval.
    step: a checkpoint step; None: the best eval's (a pretraining run's latest).

  Returns:
    The metrics (and "loss").
  """
  meta = run_lib.latest_meta(run_lib.workdir_of(workdir)) or {}
  if meta and "task" not in meta and not meta.get("imported_from"):  # a pretraining run
    if data:
      raise UserError(
        f"--data is for fine-tuned runs; {workdir} is a pretraining run, evaluated on its "
        f"own held-out rows (drop --data)"
      )
    from bert_jax.train import pretrain  # pylint: disable=g-import-not-at-top

    values = pretrain.evaluate_run(workdir, step)
    evaluate_lib.print_metrics(values)
    return values
  run, config = load(workdir, step)
  spec = data or config.data.eval
  if not spec:
    raise UserError(f"{workdir} was trained without config.data.eval; give --data FILE")
  config.data.eval = spec
  if config.task == "embedding":
    return _evaluate_embedding(run, config, spec)
  labels = _labels(run)
  examples = data_lib.read(spec, config)
  arrays, _ = data_lib.encode(examples, run.tokenizer, config, labels)
  logits = evaluate_lib.logits(run.model, run.params, arrays, BATCH_SIZE, progress=True)
  values = evaluate_lib.scores(config, logits, arrays, examples, labels.names if labels else None)
  print(
    f"{len(examples.rows)} examples of {spec}, step {run.step}"
    + (f", {examples.skipped_empty} empty rows skipped" if examples.skipped_empty else "")
  )
  evaluate_lib.print_metrics(values)
  return values


def _evaluate_embedding(run, config, spec: str) -> dict:
  """`evaluate` of an embedding run: retrieval metrics of its eval pairs (`retrieval`)."""
  examples = data_lib.read(spec, config)
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
  anything is loaded or written.

  Raises:
    UserError: the path is a run's own file (even with `overwrite`), a folder, in a
      folder (or a bucket) that does not exist, or an existing file without `overwrite`.
  """
  if storage.is_remote(output_path) and (problem := storage.unreachable(output_path)):
    raise UserError(f"--output {output_path}: {problem}; check the bucket name and access")
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
  parent = os.path.dirname(os.path.abspath(output_path))
  if not storage.is_remote(output_path) and not os.path.isdir(parent):  # buckets have no folders
    raise UserError(f"--output {output_path}: the directory {parent} does not exist")
  if storage.exists(output_path) and not overwrite:
    raise UserError(
      f"--output {output_path} exists; give another file, or --overwrite to replace it"
    )


def _echoed_fields(row) -> dict:
  """The input texts a prediction line repeats: "text" (and "text_pair") of a sequence
  row; nothing for tokens rows (their words are in the prediction) or qa examples.
  """
  if not isinstance(row, dict) or "text" not in row:
    return {}
  return {k: row[k] for k in ("text", "text_pair") if row.get(k) is not None}


def predict_main(
  workdir: str,
  input_spec: str,
  output_path: str,
  *,
  step: int | None = None,
  overwrite: bool = False,
) -> None:
  """`bert-jax predict`: one JSON line of prediction per row of `input_spec`.

  Args:
    workdir: the fine-tuned run.
    input_spec: a data spec with the run's text columns (a label column is optional,
      and checked against the run's labels).
    output_path: the JSON Lines file to write (atomically).
    step: a checkpoint step; None: the best eval's.
    overwrite: replace an existing `output_path` (never a run's own files).

  Raises:
    UserError: a bad --output (`check_output`), bad input data, or a label outside the
      run's labels; nothing is written then.
  """
  check_output(output_path, workdir, overwrite=overwrite)
  kind = output_path.lower().removesuffix(".gz").rpartition(".")[2]
  if kind in ("csv", "tsv", "json", "txt", "npy"):
    raise UserError(
      f"--output {output_path}: predict writes JSON Lines, one object per row; name the "
      f"file .jsonl (e.g. {output_path.rpartition('.')[0]}.jsonl)"
    )
  run, config = load(workdir, step)
  if config.task == "embedding":
    raise UserError(
      f"{workdir} is a sentence-embedding run: it predicts no labels; get its vectors "
      f"with bert-jax embed --workdir {workdir} --input TEXTS.txt --output VECTORS.npy"
    )
  labels = _labels(run)
  examples = data_lib.read(input_spec, config, labelled=False)
  given = [r.get("label") if isinstance(r, dict) else None for r in examples.rows]
  given_ids = None
  if labels and any(g is not None for g in given):  # a label column: check it against the map
    given_ids = [labels.encode(g, examples.where(i)) for i, g in enumerate(given)]
  arrays, truncated = data_lib.encode(examples, run.tokenizer, config, None)
  logits = evaluate_lib.logits(run.model, run.params, arrays, BATCH_SIZE, progress=True)
  results = evaluate_lib.predictions(
    config, logits, arrays, examples, labels.names if labels else None
  )
  storage.write_lines(
    output_path,
    (
      json.dumps({**_echoed_fields(row), **result}, ensure_ascii=False) + "\n"
      for row, result in zip(examples.rows, results)
    ),
  )
  notes = [f"{examples.skipped_empty} empty rows skipped"] if examples.skipped_empty else []
  if truncated:
    notes.append(f"{truncated} truncated to {config.data.max_seq_length} tokens")
  if given_ids and None not in given and config.task == "classification":
    hits = sum(r["label"] == labels.names[i] for r, i in zip(results, given_ids))
    notes.append(f"accuracy against its label column {hits / len(given):.4f}")
  print(
    f"{len(results)} predictions -> {output_path}" + (f" ({'; '.join(notes)})" if notes else "")
  )
