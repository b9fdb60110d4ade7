"""SQuAD features, postprocessing and metrics against hand-worked truths.

A fake tokenizer lower-cases, splits words at punctuation and cuts each piece into chunks of
at most 3 characters ("##" marks a continuation), so most words have several sub-tokens
whose pieces the tests can write down by hand.
"""

import re

import numpy as np
import pytest

from bert_jax.finetune import squad

PAD, CLS, SEP = 0, 1, 2


class FakeTokenizer:
  """A WordPiece look-alike with a vocabulary that grows on demand; records its calls."""

  def __init__(self):
    self.vocab = {"[PAD]": PAD, "[CLS]": CLS, "[SEP]": SEP}
    self.calls = []

  @staticmethod
  def pieces(text):
    out = []
    for word in text.lower().split():
      for part in re.findall(r"\w+|[^\w\s]", word):
        out += [("##" if i else "") + part[i : i + 3] for i in range(0, len(part), 3)]
    return out

  def encode_batch(self, texts):
    self.calls.append(list(texts))
    return [[self.vocab.setdefault(p, len(self.vocab)) for p in self.pieces(t)] for t in texts]

  def decode(self, ids):
    names = {i: p for p, i in self.vocab.items()}
    return [names[int(i)] for i in ids]


class OffsetTokenizer(FakeTokenizer):
  """`FakeTokenizer` that also gives each piece's characters, as `tokenizers` does."""

  def encode_offsets(self, texts):
    offsets = []
    for text in texts:
      spans = []
      for part in re.finditer(r"\w+|[^\w\s]", text):
        for i in range(0, len(part.group()), 3):
          spans.append((part.start() + i, min(part.start() + i + 3, part.end())))
      offsets.append(spans)
    return offsets


EIFFEL = "The Eiffel Tower was completed in (1889), by Gustave Eiffel's company."
# 15 six-letter words of two sub-tokens each: word w is context tokens 2w and 2w + 1.
WORDS = (
  "silver garden planet forest rocket window bridge candle dragon falcon harbor "
  "island jungle kitten lemons"
)


def _answer(context, text):
  return (context.index(text), text)


def _features(examples, tokenizer=None, **kwargs):
  tokenizer = tokenizer or FakeTokenizer()
  kwargs.setdefault("max_seq_length", 64)
  kwargs.setdefault("max_query_length", 16)
  features = squad.make_features(
    examples, tokenizer.encode_batch, cls_id=CLS, sep_id=SEP, pad_id=PAD, **kwargs
  )
  return features, tokenizer


def _answer_pieces(features, tokenizer, row):
  start, end = features["start_positions"][row], features["end_positions"][row]
  return tokenizer.decode(features["input_ids"][row, start : end + 1])


def _word_positions(features, row, context, word):
  """Row positions of the sub-tokens of `word` (its first occurrence in `context`)."""
  start = context.index(word)
  chars = features["token_to_char"][row]
  return np.nonzero((chars[:, 0] == start) & (chars[:, 1] == start + len(word)))[0]


def test_context_words():
  words, spans = squad.context_words("  Hello,\tworld\n again\u00a0there ")
  assert words == ["Hello,", "world", "again", "there"]
  assert spans == [(2, 8), (9, 14), (16, 21), (22, 27)]


EXAMPLES = [
  squad.QAExample("when", "When was it completed?", EIFFEL, [_answer(EIFFEL, "1889")]),
  squad.QAExample(
    "whose",
    "Whose company built it?",
    EIFFEL,
    [_answer(EIFFEL, "Gustave Eiffel's company"), _answer(EIFFEL, "Gustave Eiffel")],
  ),
  squad.QAExample("who", "Who painted it?", EIFFEL, []),
]


def test_rows_and_answer_positions():
  features, tokenizer = _features(EXAMPLES)
  assert features["example_index"].tolist() == [0, 1, 2]  # one window each
  # "(1889)," tokenizes to ( 188 ##9 ) , and the answer is tightened to 188 ##9.
  assert _answer_pieces(features, tokenizer, 0) == ["188", "##9"]
  # The gold span covers the word "company." but not its full stop.
  assert _answer_pieces(features, tokenizer, 1) == [
    "gus",
    "##tav",
    "##e",
    "eif",
    "##fel",
    "'",
    "s",
    "com",
    "##pan",
    "##y",
  ]
  assert (features["start_positions"][2], features["end_positions"][2]) == (0, 0)

  question = ["whe", "##n", "was", "it", "com", "##ple", "##ted", "?"]
  context = [
    "the",
    "eif",
    "##fel",
    "tow",
    "##er",
    "was",
    "com",
    "##ple",
    "##ted",
    "in",
    "(",
    "188",
    "##9",
    ")",
    ",",
    "by",
    "gus",
    "##tav",
    "##e",
    "eif",
    "##fel",
    "'",
    "s",
    "com",
    "##pan",
    "##y",
    ".",
  ]
  real = 1 + len(question) + 1 + len(context) + 1
  assert tokenizer.decode(features["input_ids"][0]) == (
    ["[CLS]"] + question + ["[SEP]"] + context + ["[SEP]"] + ["[PAD]"] * (64 - real)
  )
  assert features["token_type_ids"][0].tolist() == (
    [0] * (len(question) + 2) + [1] * (len(context) + 1) + [0] * (64 - real)
  )
  assert features["attention_mask"][0].tolist() == [1] * real + [0] * (64 - real)

  # Context tokens carry their word's characters; everything else (-1, -1).
  chars = features["token_to_char"][0]
  word_start = EIFFEL.index("(1889),")
  assert chars[len(question) + 2 + 11].tolist() == [word_start, word_start + 7]  # "188"
  is_context = np.zeros(64, bool)
  is_context[len(question) + 2 : len(question) + 2 + len(context)] = True
  assert (chars[~is_context] == -1).all() and (chars[is_context] >= 0).all()
  assert all(EIFFEL[s:e] in EIFFEL.split() for s, e in chars[is_context])
  # A single window is the max-context window of all its context tokens.
  assert (features["max_context"][0] == is_context).all()

  for key in (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "token_to_char",
    "start_positions",
    "end_positions",
    "example_index",
  ):
    assert features[key].dtype == np.int32, key
  same, _ = _features(EXAMPLES, train=True)
  for key in features:
    np.testing.assert_array_equal(same[key], features[key])


def test_each_distinct_text_is_encoded_once_in_few_calls():
  other = "The cat saw the cat."
  examples = EXAMPLES + [
    squad.QAExample("cat", "What did the cat see?", other, [_answer(other, "the cat.")]),
    squad.QAExample("cat2", "What did the cat see?", other, []),
  ]
  features, tokenizer = _features(examples)
  assert len(tokenizer.calls) <= 3
  texts = [t for call in tokenizer.calls for t in call]
  assert len(texts) == len(set(texts))
  assert set(EIFFEL.split()) | set(other.split()) <= set(texts)
  assert _answer_pieces(features, tokenizer, 3) == ["the", "cat", "."]


def test_question_truncation_and_length_check():
  example = squad.QAExample("q", "One two three four five?", EIFFEL, [])
  features, tokenizer = _features([example], max_query_length=3)
  assert tokenizer.decode(features["input_ids"][0, :6]) == [
    "[CLS]",
    "one",
    "two",
    "thr",
    "[SEP]",
    "the",
  ]
  assert features["token_type_ids"][0, :6].tolist() == [0, 0, 0, 0, 0, 1]
  with pytest.raises(ValueError, match="max_query_length"):
    _features([example], max_seq_length=10, max_query_length=7)
  with pytest.raises(ValueError, match="outside"):
    _features([squad.QAExample("bad", "Why?", "short", [(3, "tall")])])


# Question "what?" is 3 tokens, so rows of 16 hold 16 - 3 - 3 = 10 context tokens; windows
# start every 4 tokens: [0, 10), [4, 14), [8, 18), [12, 22), [16, 26), [20, 30).
STRIDE_EXAMPLE = squad.QAExample(
  "stride", "what?", WORDS, [_answer(WORDS, "rocket window")]
)  # tokens 8..11


def _stride_features(**kwargs):
  return _features([STRIDE_EXAMPLE], max_seq_length=16, doc_stride=4, max_query_length=8, **kwargs)


def test_windows_and_an_answer_across_a_window_boundary():
  features, tokenizer = _stride_features()
  pieces = FakeTokenizer.pieces(WORDS)
  assert len(pieces) == 30 and features["input_ids"].shape == (6, 16)
  for row, start in enumerate(range(0, 24, 4)):
    assert tokenizer.decode(features["input_ids"][row]) == (
      ["[CLS]", "wha", "##t", "?", "[SEP]"] + pieces[start : start + 10] + ["[SEP]"]
    )
  # Window 0 ends inside the answer and window 3 starts inside it: (0, 0). Windows 1 and 2
  # hold all of it, at row offset 5 (= 3 question tokens + [CLS] + [SEP]).
  assert features["start_positions"].tolist() == [0, 8 - 4 + 5, 8 - 8 + 5, 0, 0, 0]
  assert features["end_positions"].tolist() == [0, 11 - 4 + 5, 11 - 8 + 5, 0, 0, 0]
  for row in (1, 2):
    assert _answer_pieces(features, tokenizer, row) == ["roc", "##ket", "win", "##dow"]


def _owners(features, stride):
  """{context token: the one row where it is max-context}, for the "what?" examples."""
  owner = {}
  for row in range(len(features["input_ids"])):
    for position in np.nonzero(features["max_context"][row])[0]:
      token = stride * row + position - 5
      assert token not in owner
      owner[token] = row
  return owner


def test_max_context_windows():
  features, _ = _stride_features()
  owner = _owners(features, 4)
  # A token's score in a window is min(left, right) context (+ 0.1 for every window of
  # 10): token 6 has min(6, 3) = 3 in window 0 and min(2, 7) = 2 in window 1; token 7 has
  # 2 and 3. So window k > 0 owns tokens 4k + 3 .. 4k + 6, the first and last windows the
  # ends.
  expected = [0] * 7 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 7
  assert [owner[t] for t in range(30)] == expected


def test_max_context_ties_go_to_the_first_window():
  # Stride 3: windows [0, 10), [3, 13), [6, 16), ... Token 6 scores min(6, 3) = 3 in window
  # 0 and min(3, 6) = 3 in window 1 (equal lengths); token 9 likewise in windows 1 and 2.
  features, _ = _features([STRIDE_EXAMPLE], max_seq_length=16, doc_stride=3, max_query_length=8)
  owner = _owners(features, 3)
  assert sorted(owner) == list(range(30))
  assert (owner[5], owner[6], owner[7]) == (0, 0, 1)
  assert (owner[8], owner[9], owner[10]) == (1, 1, 2)


def _logits(features, values):
  """(start, end) logits: -1 everywhere but {(row, position): (start, end)} of `values`."""
  start = np.full(features["input_ids"].shape, -1.0, np.float32)
  end = start.copy()
  for (row, position), (s, e) in values.items():
    start[row, position], end[row, position] = s, e
  return start, end


def test_postprocess_finds_an_answer_across_windows_in_its_max_context_window():
  features, _ = _stride_features()
  values = {
    (1, 9): (5, 0),
    (1, 12): (0, 5),  # the answer, tokens 8..11, in window 1
    # Higher scores where the start token does not have its max context: token 8
    # in window 2 (owned by window 1) and token 9 in window 0.
    (2, 5): (7, 0),
    (2, 8): (0, 7),
    (0, 14): (8, 8),
  }
  start, end = _logits(features, values)
  predictions, nbest = squad.postprocess(features, start, end, [STRIDE_EXAMPLE])
  assert predictions == {"stride": "rocket window"}
  best = nbest["stride"][0]
  assert (best["text"], best["score"]) == ("rocket window", 10.0)
  assert WORDS[best["start"] : best["end"]] == "rocket window"
  scores = [c["score"] for c in nbest["stride"]]
  assert scores == sorted(scores, reverse=True) and len(scores) <= 20
  assert len({c["text"] for c in nbest["stride"]}) == len(scores)  # merged by text
  assert sum(c["probability"] for c in nbest["stride"]) == pytest.approx(1.0)


def test_postprocess_null_score_is_the_minimum_over_windows():
  features, _ = _stride_features()
  values = {(1, 9): (5, 0), (1, 12): (0, 5)}
  values.update({(row, 0): (1.5, 1.5) for row in range(6)})
  values[(3, 0)] = (1, 0.5)
  start, end = _logits(features, values)
  predictions, nbest = squad.postprocess(features, start, end, [STRIDE_EXAMPLE], version_2=True)
  assert predictions == {"stride": "rocket window"}
  null = [c for c in nbest["stride"] if c["text"] == ""]
  assert len(null) == 1 and null[0]["score"] == 1.5


def test_postprocess_span_rules():
  features, _ = _features(EXAMPLES[:1])
  positions = {
    w: _word_positions(features, 0, EIFFEL, w)
    for w in ("was", "completed", "company.", "Gustave", "Tower", "Eiffel's")
  }

  # "was" .. "company." is 19 tokens; with at most 4 the best is "was completed" (was com
  # ##ple ##ted, 10 + 6); with at most 3 it ends on ##ple: the same words, 10 + 2.
  start, end = _logits(
    features,
    {
      (0, positions["was"][0]): (10, -1),
      (0, positions["company."][-1]): (-1, 10),
      (0, positions["completed"][-1]): (-1, 6),
      (0, positions["completed"][-2]): (-1, 2),
    },
  )
  long_text = "was completed in (1889), by Gustave Eiffel's company."
  assert squad.postprocess(features, start, end, EXAMPLES[:1])[0] == {"when": long_text}
  for max_length, score in ((4, 16.0), (3, 12.0)):
    predictions, nbest = squad.postprocess(
      features, start, end, EXAMPLES[:1], max_answer_length=max_length
    )
    assert predictions == {"when": "was completed"}
    assert nbest["when"][0]["score"] == score

  # The best end comes before the best start: the next best end is taken.
  start, end = _logits(
    features,
    {
      (0, positions["Gustave"][0]): (10, -1),
      (0, positions["Tower"][-1]): (-1, 10),
      (0, positions["Eiffel's"][-1]): (-1, 4),
    },
  )
  assert squad.postprocess(features, start, end, EXAMPLES[:1])[0] == {"when": "Gustave Eiffel's"}

  # Only [CLS] among the single best start and end: no valid span.
  start, end = _logits(features, {(0, 0): (10, 10)})
  assert squad.postprocess(features, start, end, EXAMPLES[:1], n_best=1) == (
    {"when": ""},
    {"when": []},
  )


def test_postprocess_null_threshold():
  example = EXAMPLES[2]
  features, _ = _features([example])
  gustave = _word_positions(features, 0, EIFFEL, "Gustave")[0]
  full_stop = _word_positions(features, 0, EIFFEL, "company.")[-1]
  # Null score 3 + 3 = 6 against the best span 2.5 + 2.5 = 5: a margin of 1.
  start, end = _logits(
    features, {(0, 0): (3, 3), (0, gustave): (2.5, -1), (0, full_stop): (-1, 2.5)}
  )
  span = "Gustave Eiffel's company."
  for threshold, expected in ((0.0, ""), (0.99, ""), (1.01, span), (5.0, span)):
    predictions, nbest = squad.postprocess(
      features, start, end, [example], version_2=True, null_threshold=threshold
    )
    assert predictions == {"who": expected}, threshold
    assert [c["text"] for c in nbest["who"][:2]] == ["", span]
    assert [c["score"] for c in nbest["who"][:2]] == [6.0, 5.0]
    assert sum(c["probability"] for c in nbest["who"]) == pytest.approx(1.0)
  # Without version 2 the null score plays no part.
  assert squad.postprocess(features, start, end, [example])[0] == {"who": span}


def test_normalize_answer():
  assert squad.normalize_answer("The  Eiffel-Tower, (Paris)!") == "eiffeltower paris"
  assert squad.normalize_answer("An apple a day") == "apple day"
  assert squad.normalize_answer("theatre") == "theatre"


def _gold(*texts):
  return [(0, t) for t in texts]


def test_squad_metrics():
  examples = [
    squad.QAExample("a", "", "", _gold("Eiffel tower")),
    squad.QAExample("b", "", "", _gold("1889", "the year 1889")),
    squad.QAExample("c", "", "", []),
    squad.QAExample("d", "", "", []),
    squad.QAExample("e", "", "", _gold("Gustave Eiffel")),
  ]
  predictions = {"a": "the Eiffel Tower", "b": "in the year 1889", "c": "", "d": "Paris", "e": ""}
  # b: "in year 1889" vs "1889": precision 1/3, recall 1, F1 1/2; vs "year 1889":
  # precision 2/3, recall 1, F1 = 2 * (2/3) / (5/3) = 4/5; the best gold counts.
  exact = [1, 0, 1, 0, 0]
  f1 = [1, 4 / 5, 1, 0, 0]
  metrics = squad.squad_metrics(predictions, examples)
  assert metrics == pytest.approx(
    {
      "exact_match": 100 * sum(exact) / 5,
      "f1": 100 * sum(f1) / 5,
      "has_answer_exact": 100 * (1 + 0 + 0) / 3,
      "has_answer_f1": 100 * (1 + 4 / 5 + 0) / 3,
      "no_answer_exact": 100 * (1 + 0) / 2,
      "no_answer_f1": 100 * (1 + 0) / 2,
    }
  )


def test_squad_metrics_partial_overlap_and_missing_predictions():
  examples = [
    squad.QAExample("x", "", "", _gold("the big red barn")),
    squad.QAExample("y", "", "", _gold("Paris")),
  ]
  # "big red barn" vs "red barn door": 2 common, precision 2/3, recall 2/3, F1 2/3; "y"
  # has no prediction and scores 0.
  metrics = squad.squad_metrics({"x": "red barn door"}, examples)
  assert metrics == pytest.approx({"exact_match": 0.0, "f1": 100 * (2 / 3) / 2})


@pytest.mark.parametrize("answer", ["Denver", "Beyoncé"])
def test_a_prediction_is_its_own_sub_tokens_given_offsets_else_whole_words(answer):
  """Logits on exactly the gold answer's sub-tokens inside a longer word ("Denver-based",
  "Beyoncé's"): with the tokenizer's offsets the prediction is the answer (exact match
  100), as the original's `get_final_text` trims it; without them, the whole word.
  """
  context = "The Denver-based band sang Beyoncé's songs."
  example = squad.QAExample("q", "Who?", context, [_answer(context, answer)])
  word = context.split()[1 if answer == "Denver" else 4]
  for tokenizer, expected in ((FakeTokenizer(), word), (OffsetTokenizer(), answer)):
    encode_offsets = getattr(tokenizer, "encode_offsets", None)
    features, _ = _features([example], tokenizer, encode_offsets=encode_offsets)
    start = np.full(features["input_ids"].shape, -10.0, np.float32)
    end = start.copy()
    start[0, features["start_positions"][0]] = end[0, features["end_positions"][0]] = 10.0
    predictions, _ = squad.postprocess(features, start, end, [example])
    assert predictions == {"q": expected}
    exact = squad.squad_metrics(predictions, [example])["exact_match"]
    assert exact == (100.0 if expected == answer else 0.0)
