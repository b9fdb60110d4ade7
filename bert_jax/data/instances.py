"""Next-sentence-prediction instances, ported from Google's original BERT.

`create_nsp_instances` follows `create_training_instances` and
`create_instances_from_document` of google-research/bert
`create_pretraining_data.py`, with the same calls on one `random.Random(seed)`,
minus the masking: masking happens later, in the tf.data pipeline, so every
epoch sees fresh masks. One difference in output: `next_sentence_labels` uses
Hugging Face's convention, 0 = B follows A, 1 = B is random.
"""

import random

import numpy as np


def _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
  """Trims the longer list, at the front or back at random, until both fit."""
  while len(tokens_a) + len(tokens_b) > max_num_tokens:
    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    if rng.random() < 0.5:
      del trunc_tokens[0]
    else:
      trunc_tokens.pop()


def _instances_from_document(all_documents, document_index, max_seq_length,
                             short_seq_prob, rng):
  """Yields (tokens_a, tokens_b, is_random_next) for one document."""
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
        if len(current_chunk) == 1 or rng.random() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          # Try to pick another document (always works with >= 2 documents
          # except with probability ~(1/n)^10).
          for _ in range(10):
            random_document_index = rng.randint(0, len(all_documents) - 1)
            if random_document_index != document_index:
              break
          random_document = all_documents[random_document_index]
          random_start = rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          # The segments after A were not used: put them back.
          i -= len(current_chunk) - a_end
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
        _truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        yield tokens_a, tokens_b, is_random_next
      current_chunk = []
      current_length = 0
    i += 1


def create_nsp_instances(documents, *, max_seq_length: int,
                         short_seq_prob: float = 0.1, seed: int, cls_id: int,
                         sep_id: int, pad_id: int,
                         dupe_factor: int = 1) -> dict[str, np.ndarray]:
  """Builds `[CLS] A [SEP] B [SEP]` pairs from tokenized documents.

  Args:
    documents: document -> sentences -> token ids. Empty sentences and
      documents are dropped.
    max_seq_length: length L of every row, special tokens included (>= 5).
    short_seq_prob: probability of aiming for a random shorter length.
    seed: seed of the one `random.Random` used.
    cls_id: id of [CLS].
    sep_id: id of [SEP].
    pad_id: id of [PAD], filling each row after the last [SEP].
    dupe_factor: passes over the documents (each with different splits).

  Returns:
    `input_ids` int32 (N, L); `token_type_ids` int32 (N, L), 0 for
    [CLS] A [SEP] and padding, 1 for B [SEP]; `next_sentence_labels` int32 (N,),
    0 = B is the real continuation, 1 = B is random.
  """
  if max_seq_length < 5:
    raise ValueError(f"max_seq_length must be >= 5, got {max_seq_length}")
  rng = random.Random(seed)
  all_documents = [[list(s) for s in doc if len(s)] for doc in documents]
  all_documents = [doc for doc in all_documents if doc]
  rng.shuffle(all_documents)

  pairs = []
  for _ in range(dupe_factor):
    for document_index in range(len(all_documents)):
      pairs.extend(_instances_from_document(
          all_documents, document_index, max_seq_length, short_seq_prob, rng))
  rng.shuffle(pairs)

  n = len(pairs)
  input_ids = np.full((n, max_seq_length), pad_id, np.int32)
  token_type_ids = np.zeros((n, max_seq_length), np.int32)
  labels = np.zeros((n,), np.int32)
  for row, (tokens_a, tokens_b, is_random_next) in enumerate(pairs):
    a_len, b_len = len(tokens_a), len(tokens_b)
    tokens = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
    input_ids[row, :len(tokens)] = tokens
    token_type_ids[row, a_len + 2:a_len + b_len + 3] = 1
    labels[row] = int(is_random_next)
  return {"input_ids": input_ids, "token_type_ids": token_type_ids,
          "next_sentence_labels": labels}
