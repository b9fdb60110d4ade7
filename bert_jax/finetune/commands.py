"""`bert-jax evaluate` and `bert-jax predict`: a fine-tuned run on a dataset or a file.

Both load the run's best eval checkpoint (or `--step`) on one device with its tokenizer,
label map and data settings (the run's `config.json`), so the columns and the maximum
length are the ones it was trained with.
"""

import json
import os

import ml_collections

from bert_jax import run as run_lib
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import evaluate as evaluate_lib

BATCH_SIZE = 32


def load(workdir, step=None):
  """(run, its config) of a fine-tuned workdir."""
  run = run_lib.load(workdir, step)
  if "task" not in run.meta:
    raise UserError(
      f"{workdir} is not a fine-tuned run (it has no task head); fine-tune it "
      f"first: bert-jax finetune --config.init_from={workdir} --workdir NEW_DIR"
    )
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  return run, config


def _labels(run):
  return data_lib.LabelMap(run.meta["labels"]) if run.meta.get("labels") else None


def evaluate_main(workdir, *, data=None, step=None):
  """`bert-jax evaluate`: prints the metrics of a fine-tuned run (last line: one JSON object)."""
  run, config = load(workdir, step)
  spec = data or config.data.eval
  if not spec:
    raise UserError(f"{workdir} was trained without config.data.eval; give --data FILE")
  config.data.eval = spec
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


def predict_main(workdir, input_spec, output_path, *, step=None):
  """`bert-jax predict`: one JSON line of prediction per row of `input_spec`."""
  run, config = load(workdir, step)
  out_parent = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(out_parent):
    raise UserError(f"--output {output_path}: the directory {out_parent} does not exist")
  labels = _labels(run)
  examples = data_lib.read(input_spec, config, labelled=False)
  given = [r.get("label") if isinstance(r, dict) else None for r in examples.rows]
  if labels and any(g is not None for g in given):  # a label column: check it against the map
    for i, g in enumerate(given):
      labels.encode(g, f"{input_spec} row {i + 1}")
  arrays, truncated = data_lib.encode(examples, run.tokenizer, config, None)
  logits = evaluate_lib.logits(run.model, run.params, arrays, BATCH_SIZE, progress=True)
  results = evaluate_lib.predictions(
    config, logits, arrays, examples, labels.names if labels else None
  )
  tmp = output_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for row, result in zip(examples.rows, results):
      shown = (
        {k: v for k, v in row.items() if k in ("text", "text_pair") and v is not None}
        if isinstance(row, dict) and "text" in row
        else {}
      )
      f.write(json.dumps({**shown, **result}, ensure_ascii=False) + "\n")
  os.replace(tmp, output_path)
  notes = [f"{examples.skipped_empty} empty rows skipped"] if examples.skipped_empty else []
  if truncated:
    notes.append(f"{truncated} truncated to {config.data.max_seq_length} tokens")
  if labels and given and all(g is not None for g in given) and config.task == "classification":
    hits = sum(
      str(r["label"]) == labels.names[labels.encode(g, "")] for r, g in zip(results, given)
    )
    notes.append(f"accuracy against its label column {hits / len(given):.4f}")
  print(
    f"{len(results)} predictions -> {output_path}" + (f" ({'; '.join(notes)})" if notes else "")
  )
