"""Fine-tuning examples (`data.read`) as fixed-length token arrays, per task: [CLS] text
[SEP] (pair [SEP]) for classification and regression, a label on each word's first
sub-token for tokens, SQuAD windows for qa, each side of a pair for embedding.
"""

import numpy as np

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import squad

IGNORE = -100  # label of positions that take no loss (tokens task: non-first sub-tokens)
# The shortest texts a run takes (config.data.max_seq_length, --max-seq-length): the special
# tokens and a few of text.
MIN_SEQ_LENGTH = 8


def _truncate_pair(a, b, limit):
  """Original BERT's longest-first truncation of two token lists to `limit` tokens in all."""
  a, b = list(a), list(b)
  while len(a) + len(b) > limit:
    (a if len(a) > len(b) else b).pop()
  return a, b


def encode_sequences(
  examples: data_lib.Examples, tokenizer, max_seq_length: int, labels=None, regression: bool = False
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
      [data_lib.label_number(r["label"], examples.where(i)) for i, r in enumerate(rows)], np.float32
    )
  elif labels:
    arrays["labels"] = np.array(
      [labels.encode(r["label"], examples.where(i)) for i, r in enumerate(rows)], np.int32
    )
  return arrays, truncated


def encode_tokens(
  examples: data_lib.Examples, tokenizer, max_seq_length: int, labels=None
) -> tuple[dict[str, np.ndarray], int]:
  """Token classification rows: each word's sub-tokens; the label sits on a word's first
  sub-token and the others get IGNORE (as Hugging Face's run_ner.py).

  Returns (arrays, truncated): input_ids, token_type_ids, attention_mask, word_index
  (n, length) int32 (word_index: the word a first sub-token starts, else -1), and "labels"
  when `labels` is given; truncated counts rows with words cut off.
  """
  rows = examples.rows
  vocab = sorted({w for r in rows for w in r["words"]})
  # Byte-level BPE: each word as after a space ("Ġword"), as Hugging Face encodes words
  # (`is_split_into_words` with `add_prefix_space=True`) and as pretraining saw them.
  spaced = tokenizer_lib.as_in_the_text(tokenizer, vocab, all_spaced=True)
  pieces = dict(zip(vocab, tokenizer.encode_batch(spaced))) if vocab else {}
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


def encode_qa(examples: data_lib.Examples, tokenizer, config, train: bool) -> tuple[dict, int]:
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
      encode_offsets=getattr(tokenizer, "encode_offsets", None),
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


def encode_pairs(examples: data_lib.Examples, tokenizer, max_seq_length: int) -> tuple[dict, int]:
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


def encode(examples: data_lib.Examples, tokenizer, config, labels, *, train: bool = False):
  """Arrays of `examples` for config.task.

  Args:
    examples: from `read`.
    tokenizer: the run's tokenizer.
    config: the fine-tuning config (task, lengths).
    labels: the `labels.LabelMap` (classification, tokens), or None: no "labels" array.
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


def set_max_seq_length(data, max_seq_length: int) -> None:
  """Sets config.data (`data`)'s max_seq_length, and qa's question length and window stride
  to at most half of it (what a window of that length has room for).
  """
  data.max_seq_length = max_seq_length
  data.max_query_length = min(data.max_query_length, max_seq_length // 2)
  data.doc_stride = min(data.doc_stride, max_seq_length // 2)
