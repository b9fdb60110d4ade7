"""`bert-jax export-hf`: a run's checkpoint -> a Hugging Face model directory.

Writes `config.json`, `model.safetensors` (parameters only, float32, Hugging Face's names)
and the tokenizer files, so that `transformers` loads it offline with no custom code:
  - a pretraining run: `BertForPreTraining` (MLM and NSP heads; the decoder tied to the word
    embeddings), for `AutoModelForMaskedLM` and `pipeline("fill-mask")`;
  - a fine-tuned run (its best eval, unless --step): `BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` with `id2label` /
    `label2id`, for `pipeline("text-classification" | "token-classification" |
    "question-answering")`; the tokenizer's `model_max_length` is the run's
    max_seq_length, so `truncation=True` cuts texts where training did.
The checkpoint may come from any mesh: it is restored onto one device.
"""

import os
import shutil

import jax
import numpy as np

from bert_jax import run as run_lib
from bert_jax.errors import UserError
from bert_jax.hf import convert, files, tokenizer_files


def export_hf(workdir, out_dir, *, step=None, overwrite=False, log=print):
  """Exports the checkpoint of `workdir` at `step` (default: latest) into `out_dir`."""
  _check_out_dir(workdir, out_dir, overwrite)
  run = run_lib.load(workdir, step)
  model = run.model.config
  vocab_size = run.meta.get("hf_vocab_size") or run.tokenizer.vocab_size
  params = jax.tree_util.tree_map(np.asarray, convert.unscan(run.params))
  head = run.meta.get("task", "pretraining")
  tensors = convert.to_hf(params, model.num_layers, vocab_size, head)
  config = files.hf_config(model, vocab_size, run.tokenizer.pad_id, convert.ARCHITECTURES[head])
  if head != "pretraining":
    config = files.task_config(config, head, run.meta.get("labels"))

  staging = os.path.normpath(out_dir) + ".export-tmp"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    files.write(staging, tensors, config)
    tokenizer_files.export_tokenizer(
      run.tokenizer,
      staging,
      model_max_length=run.meta.get("max_seq_length", model.max_position_embeddings),
    )
    if os.path.isdir(out_dir):
      shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  log(
    f"exported step {run.step} of {workdir} ({len(tensors)} tensors, vocab {vocab_size}) "
    f"-> {out_dir}"
  )
  return out_dir


def _check_out_dir(workdir, out_dir, overwrite):
  if os.path.isfile(out_dir):
    raise UserError(f"--out {out_dir} is a file; give a directory")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise UserError(
      f"--out {out_dir} is not empty; choose a new directory or pass --overwrite to replace it"
    )
  out, work = os.path.realpath(out_dir), os.path.realpath(workdir)
  if work == out or work.startswith(out + os.sep):
    raise UserError(
      f"--out {out_dir} would replace the run directory {workdir}; "
      f"export into a directory of its own"
    )
