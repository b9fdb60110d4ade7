"""`bert-jax embed`: one vector per line of text from a run's last hidden states.

Pooling `cls` takes the [CLS] token's last hidden state; `mean` averages the last hidden
states over the non-padding tokens ([CLS] and [SEP] included, as sentence-transformers'
mean pooling does), `max` takes each feature's largest value over them; not normalised.
A sentence-embedding run (`config.task="embedding"`) embeds as it was trained: its own
pooling and normalisation, texts cut at its max_seq_length (as its sentence-transformers
export does); `pooling` does not apply to it. Texts are sorted by length and padded per
batch to a multiple of 32 tokens, so a few shapes are compiled and little padding is
computed. The workdir, --input and --output may be URLs (`gs://...`).
"""

import functools
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import progress as progress_lib
from bert_jax import run as run_lib
from bert_jax import storage
from bert_jax.errors import UserError
from bert_jax.finetune import batching as batching_lib
from bert_jax.finetune import commands
from bert_jax.finetune import data as data_lib
from bert_jax.hf import sentence_transformers
from bert_jax.model import embedding

POOLINGS = ("cls", "mean", "max")
TABLES = (".csv", ".tsv", ".jsonl")  # the inputs read by --column (else: a text per line)


@functools.partial(jax.jit, static_argnames=("model", "pooling"))
def _pooled(params, input_ids, attention_mask, *, model, pooling):
  hidden, _ = model.apply(
    {"params": params}, input_ids, jnp.zeros_like(input_ids), attention_mask, method="encode"
  )
  return embedding.pool(hidden, attention_mask, pooling)  # (batch, embed)


@functools.partial(jax.jit, static_argnames=("model",))
def _embedded(params, input_ids, attention_mask, *, model):
  """A sentence-embedding run's own vectors (its pooling and normalisation)."""
  return model.apply({"params": params}, input_ids, jnp.zeros_like(input_ids), attention_mask)


def is_embedding_run(run: run_lib.Run) -> bool:
  """Whether `run` is a sentence-embedding run (it pools and normalises by itself)."""
  return isinstance(run.model, embedding.SentenceEmbedder)


def embed_texts(
  run: run_lib.Run,
  texts: list[str],
  *,
  pooling: str | None = "mean",
  batch_size: int = 64,
  max_length: int | None = None,
  progress: bool = False,
  normalize: bool = False,
) -> tuple[np.ndarray, int]:
  """One vector per text under a loaded run.

  Args:
    run: a `run.Run` (its model's `encode` gives the hidden states).
    texts: the texts.
    pooling: "cls", "mean" or "max" (see the module docstring; None: "mean"); an
      embedding run's own pooling replaces it.
    batch_size: texts per compiled call.
    max_length: tokens per text, [CLS] and [SEP] included; None or more than the model's
      positions: the model's positions (an embedding run: its max_seq_length). Longer
      texts are truncated.
    progress: show a progress bar.
    normalize: scale each vector to length 1 (sentence-transformers' Normalize).

  Returns:
    ((len(texts), hidden) float32 vectors, the number of texts truncated).

  Raises:
    UserError: an unknown pooling.
  """
  pooling = pooling or "mean"
  if pooling not in POOLINGS:
    raise UserError(f"--pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
  tok, limit = run.tokenizer, run.model.config.max_length
  own = is_embedding_run(run)
  if own:
    max_length = max_length or run.meta.get("max_seq_length")
  max_length = min(max_length or limit, limit)
  encoded = tok.encode_batch(list(texts)) if texts else []
  rows = [[tok.cls_id] + ids[: max_length - 2] + [tok.sep_id] for ids in encoded]
  truncated = sum(len(ids) > max_length - 2 for ids in encoded)
  out = np.zeros((len(rows), run.model.config.hidden_size), np.float32)
  lengths = np.array([len(r) for r in rows])
  batches = list(batching_lib.length_batches(lengths, batch_size, max_length))
  for index, length, count in progress_lib.over(
    batches, len(batches), "embed", "batch", shown=progress
  ):
    ids = np.full((count, length), tok.pad_id, np.int32)  # one shape per width
    mask = np.zeros((count, length), np.int32)
    for j, i in enumerate(index):
      ids[j, : len(rows[i])] = rows[i]
      mask[j, : len(rows[i])] = 1
    mask[len(index) :, 0] = 1  # filler rows: keep their softmax defined
    if own:
      vectors = _embedded(run.params, ids, mask, model=run.model)
    else:
      vectors = _pooled(run.params, ids, mask, model=run.model, pooling=pooling)
    out[index] = np.asarray(vectors)[: len(index)]
  if normalize:  # as torch's F.normalize: eps 1e-12
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
  return out, truncated


def _texts(input_path: str, column: str) -> list[str]:
  """The texts of `input_path`: `column` of each row of a .csv / .tsv / .jsonl file (read
  as fine-tuning data is), else each line, blank ones too. UTF-8, a byte order mark dropped.

  Raises:
    UserError: a file that is not UTF-8, a file without `column`, or a row without text
      there (no such field, null, a number, a list), naming the row.
  """
  if not input_path.lower().endswith(TABLES):
    try:
      with storage.open_file(input_path, "rb") as raw, io.TextIOWrapper(raw, "utf-8-sig") as f:
        return [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError:
      raise UserError(f"--input {input_path} {storage.not_utf8_problem(input_path)}") from None
  rows = data_lib.read_records(input_path)
  keys = dict.fromkeys(key for row in rows for key in row if isinstance(key, str))
  found = sorted(keys) if input_path.lower().endswith(".jsonl") else list(keys)  # CSV: its order
  if rows and column not in found:
    raise UserError(
      f"--input {input_path} has no column {column!r} (it has {', '.join(found)}); "
      f"name the one with the texts: --column NAME"
    )
  return [
    data_lib.text_of(row, column, f"--input {input_path} row {number}", "--column")
    for number, row in enumerate(rows, 1)
  ]


def _output_name(output_path: str) -> str:
  """The .npy file to write: `output_path`, with `.npy` added to a name without a suffix
  (as `np.save` does).

  Raises:
    UserError: a name with another suffix (`vectors.txt`), which would become
      `vectors.txt.npy`.
  """
  if output_path.endswith(".npy"):
    return output_path
  if storage.isdir(output_path):
    raise UserError(
      f"--output {output_path} is a folder; give a file, e.g. {output_path.rstrip('/')}/vectors.npy"
    )
  suffix = os.path.splitext(storage.name(output_path))[1]
  if suffix:
    raise UserError(
      f"--output {output_path}: embed writes a NumPy array; name the file .npy (e.g. "
      f"{output_path.removesuffix(suffix)}.npy)"
    )
  return output_path + ".npy"


def main(
  workdir: str,
  input_path: str,
  output_path: str,
  *,
  pooling: str | None,
  batch_size: int,
  max_length: int | None,
  step: int | None = None,
  overwrite: bool = False,
  column: str | None = None,
) -> None:
  """`bert-jax embed`: one vector per line of `input_path`, saved as .npy to `output_path`.

  Args:
    workdir: a run directory (or an imported one).
    input_path: UTF-8 text, one text per line (blank lines too), or a .csv / .tsv /
      .jsonl file (`column`).
    output_path: the .npy file to write, (lines, hidden) float32 (atomically, its folder
      made; `.npy` is appended to a name without a suffix, as `np.save` does).
    pooling: "cls", "mean" or "max"; None: "mean" (an embedding run uses its own).
    batch_size: texts per compiled call.
    max_length: tokens per text (None: the model's positions).
    step: the checkpoint step; None: the run's default (`run.load`).
    overwrite: replace an existing output file (never one of a run's own files).
    column: the column of a .csv / .tsv / .jsonl input that holds the texts; None: the
      run's config.data.text_column (a fine-tuned run's), else "text".

  Raises:
    UserError: a missing, empty or non-UTF-8 input, a row without text in `column`, an
      output named other than .npy, that exists (without `overwrite`), is a run's own
      file or lies in a bucket that does not exist, a bad pooling, batch size or length,
      or no checkpoint.
  """
  if batch_size < 1:
    raise UserError(f"--batch-size {batch_size} must be at least 1")
  if max_length is not None and max_length < 3:
    raise UserError(
      f"--max-seq-length {max_length} leaves no room for text beside [CLS] and [SEP]; give 3 or more"
    )
  if storage.is_remote(input_path) and (problem := storage.unreachable(input_path)):
    raise UserError(f"--input {input_path}: {problem}; check the bucket name and access")
  if not storage.isfile(input_path):
    raise UserError(
      f"--input {input_path} does not exist; give a .txt file of one text per line, or a "
      f".csv, .tsv or .jsonl file (--column names the texts)"
    )
  if column is not None and not input_path.lower().endswith(TABLES):
    raise UserError(
      f"--column {column}: --input {input_path} holds one text per line; drop --column, or "
      f"give a .csv, .tsv or .jsonl file"
    )
  output_path = _output_name(output_path)
  commands.check_output(output_path, workdir, overwrite=overwrite, example="vectors.npy")
  if column is None:
    config = run_lib.read_config(run_lib.workdir_of(workdir)) or {}
    column = (config.get("data") or {}).get("text_column") or "text"
  texts = _texts(input_path, column)
  if not texts:
    raise UserError(f"--input {input_path} is empty; give one text per line (or row)")
  run = run_lib.load(workdir, step)
  if max_length is not None:  # as predict: past the positions is an error, not a cut
    commands.check_length(max_length, run.model.config.max_length, lowest=3)
  if pooling and is_embedding_run(run):
    print(
      f"--pooling {pooling} is ignored: {workdir} is an embedding run, which pools as it "
      f"was trained",
      file=sys.stderr,
    )
  # An import of a sentence-transformers checkpoint: its files' pooling, normalisation and
  # length, unless --pooling asks for a plain pooling.
  modules = (
    None if pooling or is_embedding_run(run) else run.meta.get(sentence_transformers.META_KEY)
  )
  if modules:
    pooling, max_length = modules["pooling"], max_length or modules["max_seq_length"]
  vectors, truncated = embed_texts(
    run,
    texts,
    pooling=pooling,
    batch_size=batch_size,
    max_length=max_length,
    progress=True,
    normalize=bool(modules and modules["normalize"]),
  )
  buffer = io.BytesIO()
  np.save(buffer, vectors)
  commands.make_parent(output_path)
  storage.write_bytes(output_path, buffer.getvalue())
  limit = run.model.config.max_length
  if is_embedding_run(run):
    limit = min(max_length or run.meta.get("max_seq_length") or limit, limit)
    e = run.meta.get(embedding.TASK) or {}
    how = f"the run's {e.get('pooling')} pooling{', normalised' if e.get('normalize') else ''}"
  else:
    limit, how = min(max_length or limit, limit), f"{pooling or 'mean'} pooling"
    if modules:
      how += (
        f"{', normalised' if modules['normalize'] else ''}, as its sentence-transformers files say"
      )
  note = f", {truncated} truncated to {limit} tokens" if truncated else ""
  print(f"{len(texts)} texts -> {output_path} {vectors.shape} float32, {how}{note}")
