"""Official SQuAD JSON and CoNLL files read as the rows of their flat equivalents (the
JSON Lines rows of Hugging Face's `squad` / `squad_v2` and `conll2003` exports, written by
hand here), and their bad input in one line.
"""

import json

import pytest

from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib

CONTEXT = "Denver-based Beyoncé sang in 2016. The show was in Santa Clara."
SQUAD_V2 = {
  "version": "v2.0",
  "data": [
    {
      "title": "Super_Bowl_50",
      "paragraphs": [
        {
          "context": CONTEXT,
          "qas": [
            {
              "id": "q1",
              "question": "Who sang?",
              "answers": [{"text": "Beyoncé", "answer_start": 13}],
              "is_impossible": False,
            },
            {
              "id": "q2",
              "question": "Who paid?",
              "answers": [],
              "plausible_answers": [{"text": "Denver", "answer_start": 0}],
              "is_impossible": True,
            },
          ],
        },
        {
          "context": "Levi's Stadium is in Santa Clara.",
          "qas": [
            {
              "id": "q3",
              "question": "Where is the stadium?",
              "answers": [
                {"text": "Santa Clara", "answer_start": 21},
                {"text": "Santa Clara.", "answer_start": 21},
              ],
            }
          ],
        },
      ],
    }
  ],
}
# The same questions as Hugging Face's squad_v2 rows (answers as columns of lists).
FLAT = [
  {
    "id": "q1",
    "question": "Who sang?",
    "context": CONTEXT,
    "answers": {"text": ["Beyoncé"], "answer_start": [13]},
  },
  {
    "id": "q2",
    "question": "Who paid?",
    "context": CONTEXT,
    "answers": {"text": [], "answer_start": []},
  },
  {
    "id": "q3",
    "question": "Where is the stadium?",
    "context": "Levi's Stadium is in Santa Clara.",
    "answers": {"text": ["Santa Clara", "Santa Clara."], "answer_start": [21, 21]},
  },
]
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def _config(task):
  config = config_lib.finetune_base_config()
  config.task = task
  if task == "tokens":
    config.data.text_column, config.data.label_column = "tokens", "ner_tags"
  return config


def test_an_official_squad_file_reads_as_its_flat_rows(tmp_path):
  official = tmp_path / "dev-v2.0.json"
  official.write_text(json.dumps(SQUAD_V2, indent=2))
  flat = tmp_path / "dev.jsonl"
  flat.write_text("".join(json.dumps(r) + "\n" for r in FLAT))
  ours = data_lib.read(str(official), _config("qa"))
  theirs = data_lib.read(str(flat), _config("qa"))
  assert ours.rows == theirs.rows and len(ours.rows) == 3
  assert ours.rows[0].answers == [(13, "Beyoncé")] and ours.rows[1].answers == []


def test_a_json_file_of_lines_is_still_json_lines(tmp_path):
  path = tmp_path / "dev.json"
  path.write_text("".join(json.dumps(r) + "\n" for r in FLAT))
  assert len(data_lib.read(str(path), _config("qa")).rows) == 3


def test_a_squad_file_without_its_fields_is_one_line(tmp_path):
  broken = json.loads(json.dumps(SQUAD_V2))
  del broken["data"][0]["paragraphs"][1]["qas"][0]["question"]
  path = tmp_path / "train-v2.0.json"
  path.write_text(json.dumps(broken))
  with pytest.raises(UserError, match=r"data\[0\]\.paragraphs\[1\]\.qas\[0\] has no 'question'"):
    data_lib.read(str(path), _config("qa"))


@pytest.mark.parametrize("name", ["eng.train.txt", "train.conll"])
def test_a_conll_file_reads_a_sentence_per_row(tmp_path, name):
  path = tmp_path / name
  path.write_text(CONLL)
  examples = data_lib.read(str(path), _config("tokens"))
  assert [r["words"] for r in examples.rows] == [
    ["EU", "rejects", "German", "call", "."],
    ["Peter", "Blackburn"],
    ["BRUSSELS"],
  ]
  assert examples.rows[0]["tags"] == ["B-ORG", "O", "B-MISC", "O", "O"]
  assert examples.rows[1]["tags"] == ["B-PER", "I-PER"]


def test_predict_reads_a_txt_file_as_sentences_and_a_conll_file_as_words(tmp_path):
  sentences = tmp_path / "new.txt"
  sentences.write_text("EU rejects German call .\nPeter Blackburn\n")
  rows = data_lib.read(str(sentences), _config("tokens"), labelled=False).rows
  assert [r["words"] for r in rows] == [
    ["EU", "rejects", "German", "call", "."],
    ["Peter", "Blackburn"],
  ]
  conll = tmp_path / "new.conll"
  conll.write_text(CONLL)
  assert len(data_lib.read(str(conll), _config("tokens"), labelled=False).rows) == 3


def test_a_conll_word_without_its_tag_is_one_line(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text("EU B-ORG\nrejects\n")
  with pytest.raises(UserError, match="line 2 is 'rejects', a word without its tag"):
    data_lib.read(str(path), _config("tokens"))


@pytest.mark.parametrize(
  ("change", "expected"),
  [
    (
      lambda d: d["data"][0]["paragraphs"][0]["qas"].__setitem__(0, "q1"),
      r"qas\[0\] has no 'question'",
    ),
    (
      lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].pop("answer_start"),
      r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: an answer is .*answer_start",
    ),
    (
      lambda d: d["data"][0]["paragraphs"][0]["qas"][0].__setitem__("answers", ["Beyoncé"]),
      r'qas\[0\]: an answer is "Beyoncé"',
    ),
    (  # named by its place in the file, not a "row" the file does not have
      lambda d: d["data"][0]["paragraphs"][1]["qas"][0]["answers"][0].__setitem__(
        "answer_start", 0
      ),
      r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: the answer 'Santa Clara' is not at answer_start 0",
    ),
  ],
)
def test_a_squad_question_of_another_shape_is_one_line(tmp_path, change, expected):
  broken = json.loads(json.dumps(SQUAD_V2))
  change(broken)
  path = tmp_path / "dev.json"
  path.write_text(json.dumps(broken))
  with pytest.raises(UserError, match=expected):  # before: AttributeError, KeyError, TypeError
    data_lib.read(str(path), _config("qa"))


def test_a_json_array_of_rows_reads_as_its_rows(tmp_path):
  path = tmp_path / "dev.json"
  path.write_text(json.dumps(FLAT, indent=2))
  assert len(data_lib.read(str(path), _config("qa")).rows) == 3
