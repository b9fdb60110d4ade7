"""Extractive question answering (SQuAD v1.1 / v2.0) data for BERT fine-tuning.

Follows google-research/bert `run_squad.py`, on token ids and with any tokenizer:

* `context_words` splits a context at whitespace; answers map from characters to these
  words. Predicted spans map back to the characters of their own sub-tokens when the
  tokenizer gives each sub-token's characters (`encode_offsets`: "Denver" of
  "Denver-based"; the original's `get_final_text` trims to the predicted tokens so), else
  to whole words.
* `make_features` tokenizes every distinct word once (one `encode_batch` call over all
  of them), lays out `[CLS] question [SEP] window [SEP]` rows over sliding windows of the
  context (`doc_stride`), marks for each token the window where it has the most context,
  and places the first gold answer's first / last sub-token, tightened to the answer's own
  sub-tokens (`_improve_answer_span`).
* `postprocess` turns the start / end logits of every window into answers (n-best search,
  the SQuAD 2.0 null score).
* `normalize_answer` and `squad_metrics` are the official SQuAD v1.1 / v2.0 scores.

`encode_batch(texts)` returns one list of token ids per text, without [CLS] / [SEP].
"""

import collections
import dataclasses
import re
import string
from collections.abc import Callable

import numpy as np

_WORD = re.compile(r"\S+")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_ENCODE_CHUNK = 65536  # texts per encode_batch call


@dataclasses.dataclass
class QAExample:
  """One question about one context.

  Attributes:
    id: The question id; predictions are keyed by it.
    question: The question text.
    context: The paragraph the answer is taken from.
    answers: (character start in `context`, answer text) of each gold answer; empty when
      the question has no answer (SQuAD 2.0). Features use the first one.
  """

  id: str
  question: str
  context: str
  answers: list[tuple[int, str]] = dataclasses.field(default_factory=list)


def context_words(context: str) -> tuple[list[str], list[tuple[int, int]]]:
  """Whitespace-split words of a context and their character spans.

  Whitespace is Python's Unicode whitespace (`\\s`): the original's space, tab, CR, LF and
  U+202F, plus e.g. no-break spaces, so predicted words are never wider than the original's.

  Args:
    context: The paragraph.

  Returns:
    (words, spans): the words in order and each word's (char_start, char_end), end exclusive,
    so that `context[start:end] == word`.
  """
  matches = list(_WORD.finditer(context))
  return [m.group() for m in matches], [m.span() for m in matches]


@dataclasses.dataclass
class _Context:
  """A context tokenized word by word.

  Attributes:
    ids: (tokens,) int32 sub-token ids of all words in order.
    token_chars: (tokens, 2) int32 (char_start, char_end) of each sub-token in the context
      (its word's, where the tokenizer gives no offsets).
    word_starts: (words,) char start of each word.
    word_ends: (words,) char end (exclusive) of each word.
    first_token: (words + 1,) index of each word's first sub-token; the last entry is the
      number of tokens.
  """

  ids: np.ndarray
  token_chars: np.ndarray
  word_starts: np.ndarray
  word_ends: np.ndarray
  first_token: np.ndarray


@dataclasses.dataclass
class _Window:
  """One feature row before it is written out: a window of one example's context."""

  example_index: int
  query: list[int]
  context: _Context
  start: int  # first context token in the window
  length: int  # context tokens in the window
  is_max_context: np.ndarray  # (length,) bool
  answer: tuple[int, int] | None  # (first, last) context token of the answer


def _in_chunks(function, texts, name="encode_batch"):
  """`function` (texts -> one result per text) over `texts` in large chunks; the results."""
  results = []
  for begin in range(0, len(texts), _ENCODE_CHUNK):
    chunk = texts[begin : begin + _ENCODE_CHUNK]
    out = function(chunk)
    if len(out) != len(chunk):
      raise ValueError(f"{name} returned {len(out)} results for {len(chunk)} texts")
    results.extend(out)
  return results


def _encode(encode_batch, texts):
  """`encode_batch` over `texts` in large chunks; one list of int ids per text."""
  return [[int(i) for i in one] for one in _in_chunks(encode_batch, texts)]


def _encode_distinct(encode_batch, texts):
  """{text: ids} for the distinct `texts`, each encoded once."""
  distinct = list(dict.fromkeys(texts))
  return dict(zip(distinct, _encode(encode_batch, distinct)))


def _build_context(words, spans, word_ids, word_offsets=None):
  """A `_Context` from a context's words, their spans and the ids of every word;
  `word_offsets` ({word: (tokens, 2) character offsets of its sub-tokens in it, or None})
  narrows each sub-token's characters from its word's to its own.
  """
  pieces = [word_ids[word] for word in words]
  counts = np.array([len(p) for p in pieces], dtype=np.int64)
  spans = np.array(spans, dtype=np.int32).reshape(-1, 2)
  token_chars = np.repeat(spans, counts, axis=0)
  if word_offsets is not None and len(token_chars):
    own = [word_offsets.get(word) for word in words]
    if all(o is not None for o in own):
      starts = np.repeat(spans[:, 0], counts)
      offsets = np.concatenate([np.asarray(o, np.int32).reshape(-1, 2) for o in own])
      # A piece of no characters (SentencePiece's lone "▁", a character's first bytes)
      # keeps its word's: a span of it alone is never empty.
      narrowed = offsets[:, 0] < offsets[:, 1]
      token_chars = np.where(narrowed[:, None], starts[:, None] + offsets, token_chars)
  return _Context(
    ids=np.array([i for p in pieces for i in p], dtype=np.int32),
    token_chars=token_chars.astype(np.int32),
    word_starts=spans[:, 0],
    word_ends=spans[:, 1],
    first_token=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
  )


def _tokenize_contexts(contexts, encode_batch, encode_offsets=None):
  """{context: _Context} for the distinct contexts; each distinct word is encoded once.

  `encode_offsets` (texts -> one list of (char_start, char_end) per sub-token of each, or
  None for a text it cannot align) gives each sub-token its own characters.
  """
  split = {context: context_words(context) for context in dict.fromkeys(contexts)}
  words = list(dict.fromkeys(word for ws, _ in split.values() for word in ws))
  word_ids = _encode_distinct(encode_batch, words)
  word_offsets = None
  if encode_offsets is not None:
    word_offsets = {
      word: offsets if offsets is not None and len(offsets) == len(word_ids[word]) else None
      for word, offsets in zip(words, _in_chunks(encode_offsets, words, "encode_offsets"))
    }
  return {
    context: _build_context(ws, spans, word_ids, word_offsets)
    for context, (ws, spans) in split.items()
  }


def _improve_answer_span(doc_ids, first, last, answer_ids):
  """The original `_improve_answer_span` on ids: the earliest run of `answer_ids` inside
  tokens [first, last], else (first, last) unchanged.
  """
  size = len(answer_ids)
  if size:
    for start in range(first, last - size + 2):
      if doc_ids[start : start + size].tolist() == answer_ids:
        return start, start + size - 1
  return first, last


def _answer_tokens(example, context, answer_ids):
  """(first, last) context token of the example's first gold answer, or None.

  The answer covers the words holding its first and last characters, then
  `_improve_answer_span` tightens it to the answer's own sub-tokens.

  Raises:
    ValueError: When the answer's characters lie outside the context.
  """
  if not example.answers:
    return None
  char_start, text = example.answers[0]
  char_end = char_start + len(text)
  if char_start < 0 or char_end > len(example.context):
    raise ValueError(
      f"example {example.id!r}: answer [{char_start}, {char_end}) lies "
      f"outside its context of {len(example.context)} characters"
    )
  first_word = int(np.searchsorted(context.word_ends, char_start, side="right"))
  last_word = int(np.searchsorted(context.word_starts, char_end, side="left")) - 1
  if first_word > last_word:  # empty or all-whitespace answer
    return None
  first = int(context.first_token[first_word])
  last = int(context.first_token[last_word + 1]) - 1
  if last < first:  # the answer's words have no tokens
    return None
  return _improve_answer_span(context.ids, first, last, answer_ids[text])


def _window_spans(num_tokens, max_tokens, doc_stride):
  """(start, length) of the sliding windows over `num_tokens` context tokens."""
  spans, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, max_tokens)
    spans.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, doc_stride)
  return spans


def _max_context_windows(spans, num_tokens):
  """For each context token, the window where it has the most context.

  The original `_check_is_max_context`: score = min(left, right) + 0.01 * window length;
  the first window wins ties.
  """
  best = np.full(num_tokens, -1, dtype=np.int64)
  best_score = np.full(num_tokens, -np.inf)
  for index, (start, length) in enumerate(spans):
    window = slice(start, start + length)
    offsets = np.arange(length)
    score = np.minimum(offsets, length - 1 - offsets) + 0.01 * length
    better = score > best_score[window]
    best_score[window] = np.where(better, score, best_score[window])
    best[window] = np.where(better, index, best[window])
  return best


def _example_windows(index, example, query, context, answer_ids, max_seq_length, doc_stride):
  """The `_Window`s of one example."""
  answer = _answer_tokens(example, context, answer_ids)
  spans = _window_spans(len(context.ids), max_seq_length - len(query) - 3, doc_stride)
  best = _max_context_windows(spans, len(context.ids))
  return [
    _Window(index, query, context, start, length, best[start : start + length] == window, answer)
    for window, (start, length) in enumerate(spans)
  ]


def _window_positions(window, offset):
  """(start, end) row positions of the answer when the window holds all of it, else (0, 0)."""
  if window.answer is None:
    return 0, 0
  first, last = window.answer
  if first < window.start or last > window.start + window.length - 1:
    return 0, 0
  return first - window.start + offset, last - window.start + offset


def _empty_features(rows, max_seq_length, pad_id):
  """Feature arrays for `rows` rows, filled with padding."""
  return {
    "input_ids": np.full((rows, max_seq_length), pad_id, np.int32),
    "token_type_ids": np.zeros((rows, max_seq_length), np.int32),
    "attention_mask": np.zeros((rows, max_seq_length), np.int32),
    "start_positions": np.zeros(rows, np.int32),
    "end_positions": np.zeros(rows, np.int32),
    "example_index": np.zeros(rows, np.int32),
    "token_to_char": np.full((rows, max_seq_length, 2), -1, np.int32),
    "max_context": np.zeros((rows, max_seq_length), bool),
  }


def _write_row(features, row, window, cls_id, sep_id):
  """Writes `[CLS] query [SEP] window [SEP]` and its per-token data into row `row`."""
  offset = len(window.query) + 2
  end = offset + window.length  # position of the last [SEP]
  doc = slice(window.start, window.start + window.length)
  ids = features["input_ids"][row]
  ids[0], ids[offset - 1], ids[end] = cls_id, sep_id, sep_id
  ids[1 : offset - 1] = window.query
  ids[offset:end] = window.context.ids[doc]
  features["token_type_ids"][row, offset : end + 1] = 1
  features["attention_mask"][row, : end + 1] = 1
  features["token_to_char"][row, offset:end] = window.context.token_chars[doc]
  features["max_context"][row, offset:end] = window.is_max_context
  features["example_index"][row] = window.example_index
  features["start_positions"][row], features["end_positions"][row] = _window_positions(
    window, offset
  )


def _check_lengths(max_seq_length, max_query_length, doc_stride):
  """Raises ValueError unless every window can hold context and windows advance."""
  if max_seq_length - max_query_length - 3 <= 0:
    raise ValueError(
      f"max_seq_length ({max_seq_length}) must exceed max_query_length "
      f"({max_query_length}) + 3, to leave room for the context"
    )
  if doc_stride < 1:
    raise ValueError(f"doc_stride must be at least 1, got {doc_stride}")


def make_features(
  examples: list[QAExample],
  encode_batch: Callable[[list[str]], list[list[int]]],
  *,
  cls_id: int,
  sep_id: int,
  pad_id: int,
  max_seq_length: int = 384,
  doc_stride: int = 128,
  max_query_length: int = 64,
  train: bool = False,
  encode_offsets: Callable[[list[str]], list] | None = None,
) -> dict[str, np.ndarray]:
  """Model rows for `examples`: one per sliding window over each context.

  Each distinct context word, question and first answer text is encoded once, in large
  `encode_batch` calls. Questions are truncated to `max_query_length` tokens. A row is
  `[CLS] question [SEP] window [SEP] padding`, with token type 0 up to the first [SEP] and
  1 after it. Windows hold `max_seq_length - len(question) - 3` context tokens and start
  `doc_stride` tokens apart (the last one ends at the context's end). An example whose
  context has no tokens gets no rows (as in the original).

  Args:
    examples: `QAExample`s.
    encode_batch: list[str] -> list[list[int]], token ids without [CLS] / [SEP].
    cls_id: Id of [CLS].
    sep_id: Id of [SEP].
    pad_id: Id of padding.
    max_seq_length: Row length.
    doc_stride: Tokens between the starts of consecutive windows.
    max_query_length: Question tokens kept.
    train: Accepted for symmetry with the original; rows are the same either way (answer
      positions are always computed, from the first gold answer).
    encode_offsets: list[str] -> each text's sub-token (char_start, char_end) offsets (the
      tokenizer's `encode_offsets`), or None per text it cannot align; None: whole words.

  Returns:
    Numpy arrays, n = number of rows:
      input_ids, token_type_ids, attention_mask: (n, max_seq_length) int32.
      start_positions, end_positions: (n,) int32 row positions of the first gold answer's
        first / last sub-token when the window holds all of it, else 0 ([CLS]); 0 for
        examples without an answer.
      example_index: (n,) int32 index into `examples`.
      token_to_char: (n, max_seq_length, 2) int32 (char_start, char_end) of each context
        token (of its word without `encode_offsets`); (-1, -1) elsewhere.
      max_context: (n, max_seq_length) bool, True on context tokens whose max-context
        window is this row.

  Raises:
    ValueError: When `max_seq_length <= max_query_length + 3`, `doc_stride < 1` or an
      answer lies outside its context.
  """
  del train  # same rows either way
  _check_lengths(max_seq_length, max_query_length, doc_stride)
  examples = list(examples)
  questions = _encode_distinct(encode_batch, [e.question for e in examples])
  answer_ids = _encode_distinct(encode_batch, [e.answers[0][1] for e in examples if e.answers])
  contexts = _tokenize_contexts([e.context for e in examples], encode_batch, encode_offsets)
  windows = [
    window
    for index, example in enumerate(examples)
    for window in _example_windows(
      index,
      example,
      questions[example.question][:max_query_length],
      contexts[example.context],
      answer_ids,
      max_seq_length,
      doc_stride,
    )
  ]
  features = _empty_features(len(windows), max_seq_length, pad_id)
  for row, window in enumerate(windows):
    _write_row(features, row, window, cls_id, sep_id)
  return features


def _top_indices(logits, n):
  """Indices of the `n` largest logits, largest first (lower index first on ties)."""
  n = min(n, len(logits))
  if n <= 0:
    return np.zeros(0, dtype=np.int64)
  kth = np.partition(logits, -n)[-n]
  contenders = np.flatnonzero(logits >= kth)  # every index a full sort could pick
  return contenders[np.argsort(-logits[contenders], kind="stable")[:n]]


def _row_candidates(
  context, start_logits, end_logits, token_to_char, max_context, *, n_best, max_answer_length
):
  """The `n_best` best candidate spans of one row with distinct texts, best first.

  Args:
    context: The example's context.
    start_logits: (max_seq_length,) start logits of the row.
    end_logits: (max_seq_length,) end logits of the row.
    token_to_char: (max_seq_length, 2) the row's `token_to_char`.
    max_context: (max_seq_length,) the row's `max_context`.
    n_best: Start / end positions tried, and candidates kept.
    max_answer_length: Longest span, in tokens.

  Returns:
    Dicts with "text", "score", "start" and "end" (characters).
  """
  starts = _top_indices(start_logits, n_best)[:, None]
  ends = _top_indices(end_logits, n_best)[None, :]
  is_context = token_to_char[:, 0] >= 0
  valid = (
    is_context[starts]
    & is_context[ends]
    & max_context[starts]
    & (starts <= ends)
    & (ends - starts + 1 <= max_answer_length)
  )
  rows, columns = np.nonzero(valid)
  span_starts, span_ends = starts[rows, 0], ends[0, columns]
  scores = start_logits[span_starts] + end_logits[span_ends]
  candidates, texts = [], set()
  for k in np.argsort(-scores, kind="stable"):
    char_start = int(token_to_char[span_starts[k], 0])
    char_end = int(token_to_char[span_ends[k], 1])
    text = context[char_start:char_end]
    if text not in texts:
      texts.add(text)
      candidates.append(
        {"text": text, "score": float(scores[k]), "start": char_start, "end": char_end}
      )
      if len(candidates) == n_best:
        break
  return candidates


def _best_distinct(candidates, n_best):
  """The `n_best` best candidates, keeping the best-scoring one of each text."""
  seen, best = set(), []
  for candidate in sorted(candidates, key=lambda c: c["score"], reverse=True):
    if candidate["text"] not in seen:
      seen.add(candidate["text"])
      best.append(candidate)
  return best[:n_best]


def _with_probabilities(entries):
  """`entries` sorted best first, each with "probability": a softmax over their scores."""
  entries = sorted(entries, key=lambda c: c["score"], reverse=True)
  if entries:
    scores = np.array([e["score"] for e in entries], dtype=np.float64)
    weights = np.exp(scores - scores.max())
    for entry, probability in zip(entries, weights / weights.sum()):
      entry["probability"] = float(probability)
  return entries


def _rows_by_example(example_index, num_examples):
  """For each example, the feature rows of its windows."""
  rows = [[] for _ in range(num_examples)]
  for row, index in enumerate(np.asarray(example_index)):
    rows[int(index)].append(row)
  return rows


def _choose(ranked, null_score, null_threshold):
  """The predicted text: the best span, or "" when there is none or the null score wins."""
  if not ranked:
    return ""
  if null_score is not None and null_score - ranked[0]["score"] > null_threshold:
    return ""
  return ranked[0]["text"]


def postprocess(
  features: dict[str, np.ndarray],
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  examples: list[QAExample],
  *,
  n_best: int = 20,
  max_answer_length: int = 30,
  null_threshold: float = 0.0,
  version_2: bool = False,
) -> tuple[dict[str, str], dict[str, list[dict]]]:
  """Answers from the start / end logits of every window (original BERT n-best search).

  For each example, over all its windows, candidate spans pair the `n_best` best start and
  `n_best` best end positions of a window, keeping spans of context tokens with
  start <= end, at most `max_answer_length` tokens, whose start token has its max context
  in that window. A span scores start_logit + end_logit; its text runs from the start of
  the start token's word to the end of the end token's word. The best span of each text is
  kept, then the `n_best` best.

  With `version_2`, the null score is the minimum over windows of
  start_logits[row, 0] + end_logits[row, 0]; it joins the n-best as text "" (start = end =
  -1), and the prediction is "" when null_score - best span score > `null_threshold`.
  Without any valid span the prediction is "" (and the n-best holds at most the null entry).

  Args:
    features: The arrays from `make_features` (example_index, token_to_char and
      max_context are used), possibly a subset of its rows.
    start_logits: (n, max_seq_length) float, one row per feature row.
    end_logits: (n, max_seq_length) float.
    examples: The `QAExample`s the features were made from.
    n_best: Start / end positions tried per window, and n-best entries kept.
    max_answer_length: Longest span, in tokens.
    null_threshold: Null score margin over the best span needed to predict "" (version 2).
    version_2: Whether questions may have no answer (SQuAD 2.0).

  Returns:
    (predictions, nbest): {id: text} and {id: list of {"text", "score", "probability",
    "start", "end"}} sorted best first; probabilities are a softmax over the list's scores.
  """
  start_logits = np.asarray(start_logits, dtype=np.float64)
  end_logits = np.asarray(end_logits, dtype=np.float64)
  token_to_char = np.asarray(features["token_to_char"])
  max_context = np.asarray(features["max_context"])
  if start_logits.shape != max_context.shape or end_logits.shape != max_context.shape:
    raise ValueError(
      f"logits of shapes {start_logits.shape} and {end_logits.shape} do not "
      f"match the features' {max_context.shape}"
    )
  examples = list(examples)
  predictions, nbest = {}, {}
  for example, rows in zip(examples, _rows_by_example(features["example_index"], len(examples))):
    candidates = [
      c
      for row in rows
      for c in _row_candidates(
        example.context,
        start_logits[row],
        end_logits[row],
        token_to_char[row],
        max_context[row],
        n_best=n_best,
        max_answer_length=max_answer_length,
      )
    ]
    ranked = _best_distinct(candidates, n_best)  # the rows' lists hold all of these
    null_score = None
    if version_2 and rows:
      null_score = min(float(start_logits[r, 0]) + float(end_logits[r, 0]) for r in rows)
    null_entry = (
      [{"text": "", "score": null_score, "start": -1, "end": -1}] if null_score is not None else []
    )
    predictions[example.id] = _choose(ranked, null_score, null_threshold)
    nbest[example.id] = _with_probabilities([dict(c) for c in ranked] + null_entry)
  return predictions, nbest


def normalize_answer(text: str) -> str:
  """The official SQuAD normalization: lower case, no punctuation, no articles (a, an,
  the), single spaces.
  """
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(gold, prediction):
  return float(normalize_answer(gold) == normalize_answer(prediction))


def _f1(gold, prediction):
  """Token F1 of normalized texts; 1 or 0 when either is empty (agree or not)."""
  gold_tokens = normalize_answer(gold).split()
  predicted_tokens = normalize_answer(prediction).split()
  if not gold_tokens or not predicted_tokens:
    return float(gold_tokens == predicted_tokens)
  same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
  if same == 0:
    return 0.0
  precision = same / len(predicted_tokens)
  recall = same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _gold_texts(example):
  """Gold texts that survive normalization; [""] for a question without an answer."""
  return [text for _, text in example.answers if normalize_answer(text)] or [""]


def _scores(predictions, example):
  """(exact, f1) of one example, the max over its gold answers; 0 when not predicted."""
  if example.id not in predictions:
    return 0.0, 0.0
  prediction = predictions[example.id]
  golds = _gold_texts(example)
  return (max(_exact(g, prediction) for g in golds), max(_f1(g, prediction) for g in golds))


def squad_metrics(predictions: dict[str, str], examples) -> dict[str, float]:
  """The official SQuAD v1.1 / v2.0 evaluation.

  Args:
    predictions: {example id: predicted text}; a missing id scores 0.
    examples: `QAExample`s with their gold answers.

  Returns:
    {"exact_match", "f1"} in percent, each example scored by its best gold answer; an
    example without an answer scores 1 only for an empty prediction. When some examples
    have answers and some not, also "has_answer_exact", "has_answer_f1", "no_answer_exact"
    and "no_answer_f1" (the v2 script's HasAns / NoAns).

  Raises:
    ValueError: When there are no examples.
  """
  examples = list(examples)
  if not examples:
    raise ValueError("no examples to score")
  scores = np.array([_scores(predictions, e) for e in examples])  # (n, 2)
  result = {"exact_match": 100 * scores[:, 0].mean(), "f1": 100 * scores[:, 1].mean()}
  has_answer = np.array([bool(e.answers) for e in examples])
  if has_answer.any() and not has_answer.all():
    for name, group in (("has_answer", has_answer), ("no_answer", ~has_answer)):
      result[f"{name}_exact"] = 100 * scores[group, 0].mean()
      result[f"{name}_f1"] = 100 * scores[group, 1].mean()
  return {k: float(v) for k, v in result.items()}
