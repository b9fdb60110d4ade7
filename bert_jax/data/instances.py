"""Training rows from tokenized documents, for each pretraining objective.

A row is `(tokens, segment_lengths, label)` (see `rows_from_documents`); rows
are built from a chunk of documents, without masking: masking happens later,
per batch, so every epoch sees fresh masks.

- `nsp` follows `create_training_instances` and
  `create_instances_from_document` of google-research/bert
  `create_pretraining_data.py`, with the same calls on `rng`; labels use
  Hugging Face's convention, 0 = B follows A, 1 = B is random.
- `sop` is ALBERT's sentence-order variant (google-research/albert): B is the
  real continuation, swapped with A half of the time (label 1).
- `mlm` is RoBERTa's FULL-SENTENCES input (one segment, documents separated by
  [SEP]) or, with packing, whole `[CLS] chunk [SEP]` examples packed per row.
"""

import random
from collections.abc import Sequence

OBJECTIVES = ("nsp", "sop", "mlm")


def _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
  """Trims the longer list, at the front or back at random, until both fit."""
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del trunc_tokens[0]
    else:
      trunc_tokens.pop()


def _pairs_from_document(
  all_documents, document_index, max_seq_length, short_seq_prob, rng, sentence_order, others=()
):
  """Yields (tokens_a, tokens_b, label) for one document (BERT or ALBERT); a random B comes
  from another of `all_documents` or of `others`.
  """
  document = all_documents[document_index]
  max_num_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]

  # Mostly fill the sequence; sometimes use a shorter one so that fine-tuning
  # on short inputs is not out of distribution.
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)

  current_chunk = []
  current_length = 0
  i = 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      if current_chunk:
        # `a_end` is how many segments of `current_chunk` go into A.
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = []
        for j in range(a_end):
          tokens_a.extend(current_chunk[j])

        tokens_b = []
        if len(current_chunk) == 1 or (not sentence_order and rng.random() < 0.5):
          label = 1
          target_b_length = target_seq_length - len(tokens_a)
          # Try to pick another document (always works with >= 2 documents
          # except with probability ~(1/n)^10).
          for _ in range(10):
            random_document_index = rng.randint(0, len(all_documents) + len(others) - 1)
            if random_document_index != document_index:
              break
          if random_document_index < len(all_documents):
            random_document = all_documents[random_document_index]
          else:
            random_document = others[random_document_index - len(all_documents)]
          random_start = rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          # The segments after A were not used: put them back.
          i -= len(current_chunk) - a_end
        else:
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
          label = 0
          if sentence_order and rng.random() < 0.5:
            tokens_a, tokens_b, label = tokens_b, tokens_a, 1
        _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        yield tokens_a, tokens_b, label
      current_chunk = []
      current_length = 0
    i += 1


def _full_sentence_rows(documents, capacity, cls_id, sep_id):
  """RoBERTa FULL-SENTENCES: whole sentences in order, [SEP] between documents.

  A sentence that does not fit in the current row starts the next one; only a
  sentence longer than a whole row is split.
  """
  rows, body = [], []

  def flush():
    if body:
      tokens = [cls_id, *body, sep_id]
      rows.append((tokens, [len(tokens)], -1))
      body.clear()

  for document in documents:
    if body:
      if len(body) + 1 + len(document[0]) > capacity:
        flush()
      else:
        body.append(sep_id)
    for sentence in document:
      if len(body) + len(sentence) > capacity:
        flush()
      for start in range(0, len(sentence), capacity):
        piece = sentence[start : start + capacity]
        if len(body) + len(piece) > capacity:
          flush()
        body.extend(piece)
  flush()
  return rows


def _packed_rows(documents, max_seq_length, cls_id, sep_id):
  """Cuts documents into `[CLS] chunk [SEP]` examples, packed best-fit decreasing."""
  capacity = max_seq_length - 2
  examples = []
  for document in documents:
    stream = [token for sentence in document for token in sentence]
    for start in range(0, len(stream), capacity):
      examples.append([cls_id, *stream[start : start + capacity], sep_id])

  # Best fit: each example (longest first) goes to the open row with the least
  # free space that still holds it; rows are found by free space.
  order = sorted(range(len(examples)), key=lambda e: -len(examples[e]))
  rows = []  # lists of example indices
  by_free_space = [[] for _ in range(max_seq_length + 1)]  # free -> row ids
  for e in order:
    size = len(examples[e])
    free = next((f for f in range(size, max_seq_length + 1) if by_free_space[f]), None)
    if free is None:
      rows.append([])
      row, free = len(rows) - 1, max_seq_length
    else:
      row = by_free_space[free].pop()
    rows[row].append(e)
    by_free_space[free - size].append(row)

  out = []
  for row in rows:
    parts = sorted(row)  # document order inside a row
    out.append(([t for e in parts for t in examples[e]], [len(examples[e]) for e in parts], -1))
  return out


def _non_empty(documents):
  """The documents as lists of their non-empty sentences, those left with none dropped."""
  documents = [[list(s) for s in doc if len(s)] for doc in documents]
  return [doc for doc in documents if doc]


def rows_from_documents(
  documents: Sequence[Sequence[Sequence[int]]],
  *,
  objective: str,
  max_seq_length: int,
  short_seq_prob: float,
  rng: random.Random,
  cls_id: int,
  sep_id: int,
  packing: bool = False,
  dupe_factor: int = 1,
  others: Sequence[Sequence[Sequence[int]]] = (),
) -> list[tuple]:
  """Builds the training rows of one chunk of tokenized documents.

  Args:
    documents: document -> sentences -> token ids. Random "next" segments are
      drawn from the other documents of this chunk (and `others`). Empty
      sentences and documents are dropped.
    objective: "nsp" (BERT), "sop" (ALBERT) or "mlm" (RoBERTa, one segment).
    max_seq_length: L, the longest row, special tokens included (>= 5).
    short_seq_prob: nsp/sop only: probability of aiming for a random shorter
      length.
    rng: the only source of randomness (documents order, splits, shuffling).
    cls_id: id of [CLS].
    sep_id: id of [SEP].
    packing: mlm only: pack several `[CLS] chunk [SEP]` examples per row.
    dupe_factor: passes over the documents (each with different splits; for
      mlm, a different document order).
    others: nsp/sop: documents from elsewhere in the corpus that a random B may
      also come from (a chunk of a few documents, or one: `units`); none, as
      google-research/bert, draws from the chunk alone.

  Returns:
    Rows `(tokens, segment_lengths, label)` in random order. nsp/sop: tokens
    `[CLS] A [SEP] B [SEP]`, segment_lengths `[len(A) + 2, len(B) + 1]`, label 0
    (B follows A) or 1 (nsp: B is random; sop: B and A swapped, or B random
    when A is the document's only segment). mlm: label -1, segment_lengths the
    packed examples' lengths (one segment without packing).
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  if max_seq_length < 5:
    raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
  all_documents = _non_empty(documents)
  rng.shuffle(all_documents)
  others = _non_empty(others)

  rows = []
  for _ in range(dupe_factor):
    if objective == "mlm":
      if packing:
        rows.extend(_packed_rows(all_documents, max_seq_length, cls_id, sep_id))
      else:
        rows.extend(_full_sentence_rows(all_documents, max_seq_length - 2, cls_id, sep_id))
      rng.shuffle(all_documents)  # the next pass groups documents differently
      continue
    for document_index in range(len(all_documents)):
      for tokens_a, tokens_b, label in _pairs_from_document(
        all_documents,
        document_index,
        max_seq_length,
        short_seq_prob,
        rng,
        sentence_order=objective == "sop",
        others=others,
      ):
        tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
        rows.append((tokens, [len(tokens_a) + 2, len(tokens_b) + 1], label))
  rng.shuffle(rows)
  return rows
