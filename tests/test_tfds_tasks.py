"""Tests of the TFDS fine-tuning task registry and reader, offline.

`tfds.testing.mock_data` stands in for the downloads: random examples for the
sentence tasks, and for NER and SQuAD examples written here (random mock data has
sequences of unrelated lengths, e.g. 19 words and 5 tags), so the reader's output can
be checked against known text. Builder construction reads no data, so the registry is
checked against the real TFDS feature specs.
"""

import subprocess
import sys
import types

import numpy as np
import pytest

from bert_jax.data import tfds_source
from bert_jax.errors import UserError
from bert_jax.finetune import evaluate as evaluate_lib
from bert_jax.finetune import metrics as task_metrics
from bert_jax.finetune import tfds_tasks
from bert_jax.model import tasks
from tests.conftest import ROOT

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")


CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _mock_examples(examples):
  """`mock_data` whose datasets yield `examples`, shaped by the builder's features."""

  def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    del split, decoders, read_config, kwargs
    return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature=builder.info.features.get_tensor_spec()
    )

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _answers(*pairs):
  return {
    "answer_start": np.array([start for start, _ in pairs], np.int32),
    "text": np.array([text for _, text in pairs], object),
  }


# Parsing and look-up.


@pytest.mark.parametrize(
  "spec, parsed",
  [
    ("tfds:glue/sst2:validation", ("glue/sst2", "validation")),
    ("tfds:squad/v1.1", ("squad/v1.1", None)),
    ("tfds:conll2003:dev", ("conll2003", "dev")),
    ("tfds:imdb_reviews:train[:10%]", ("imdb_reviews", "train[:10%]")),
    ("tfds:glue/mnli:validation_mismatched", ("glue/mnli", "validation_mismatched")),
  ],
)
def test_parse_good_specs(spec, parsed):
  assert tfds_tasks.parse(spec) == parsed


@pytest.mark.parametrize(
  "spec, message",
  [
    ("glue/sst2:validation", "write tfds:NAME"),
    ("hf:glue/sst2", "write tfds:NAME"),
    ("tfds:", "the name must be"),
    ("tfds::train", "the name must be"),
    ("tfds:glue/sst2/extra:train", "the name must be"),
    ("tfds:glue/sst2:", "the split after ':'"),
    ("tfds:glue/sst2:train split", "the split after ':'"),
    ("tfds:glue/sst2:1.0.0", "versions are not supported"),
  ],
)
def test_parse_bad_specs(spec, message):
  with pytest.raises(UserError, match=message) as error:
    tfds_tasks.parse(spec)
  assert "\n" not in str(error.value)


def test_task_of_takes_keys_and_tfds_names():
  assert tfds_tasks.task_of("sst2") is tfds_tasks.TASKS["sst2"]
  assert tfds_tasks.task_of("glue/sst2") is tfds_tasks.TASKS["sst2"]
  assert tfds_tasks.task_of("glue/mnli").eval_split == "validation_matched"
  assert tfds_tasks.task_of("mnli_mismatched").eval_split == "validation_mismatched"
  with pytest.raises(
    UserError, match="unknown fine-tuning task 'glue/sst3'; known tasks: cola, sst2, .*conll2003"
  ):
    tfds_tasks.task_of("glue/sst3")


def test_registry_lists_every_glue_task_and_the_others():
  glue = {
    "cola",
    "sst2",
    "mrpc",
    "qqp",
    "stsb",
    "mnli",
    "mnli_mismatched",
    "qnli",
    "rte",
    "wnli",
    "ax",
  }
  assert set(tfds_tasks.TASKS) == glue | {"imdb_reviews", "squad/v1.1", "squad/v2.0", "conll2003"}
  assert tfds_tasks.TASKS["cola"].main_metric == "matthews"
  assert tfds_tasks.TASKS["stsb"].main_metric == "spearman"
  assert tfds_tasks.TASKS["mrpc"].main_metric == tfds_tasks.TASKS["qqp"].main_metric == "f1"
  assert tfds_tasks.TASKS["ax"].train_split is None


def test_a_download_that_fails_is_announced_then_one_line(tmp_path, monkeypatch, capsys):
  builder_class = type(tfds.builder("glue/sst2", data_dir=str(tmp_path)))

  def offline(self, *args, **kwargs):
    raise ConnectionError("Max retries exceeded with url: https://dl.fbaipublicfiles.com")

  monkeypatch.setattr(builder_class, "download_and_prepare", offline)
  monkeypatch.setattr(
    tfds_source, "_unreachable", lambda *_: ""
  )  # as online (offline: test_sources)
  with pytest.raises(UserError) as raised:
    tfds_source.builder("glue/sst2", str(tmp_path))
  assert str(raised.value).startswith(
    f"TFDS dataset 'glue/sst2' is not prepared in {tmp_path}/glue/sst2/"
  )
  assert "preparing it failed (ConnectionError: Max retries" in str(raised.value)
  assert "set config.data.tfds_data_dir" in str(raised.value)
  err = capsys.readouterr().err
  assert f"TFDS: glue/sst2 is not prepared in {tmp_path}/glue/sst2/" in err
  assert "downloading and preparing it (this needs network access" in err


@pytest.mark.parametrize("key", list(tfds_tasks.TASKS))
def test_registered_task_matches_its_tfds_builder(key):
  task = tfds_tasks.TASKS[key]
  features = tfds.builder(task.name).info.features  # Construction reads no data.
  columns = [task.text_column, task.label_column]
  columns += [task.text_pair_column] if task.text_pair_column else []
  assert set(columns) <= set(features.keys())
  assert task.task in tasks.TASKS and task.main_metric in task.metrics
  label = features[task.label_column]
  if task.task == "classification":
    assert isinstance(label, tfds.features.ClassLabel)
  if task.task == "regression":
    assert np.issubdtype(label.np_dtype, np.floating)
  if task.task in ("classification", "regression"):
    assert set(task.metrics) <= set(task_metrics.METRICS)
  if task.task == "tokens":
    assert isinstance(label.feature, tfds.features.ClassLabel)
    assert task.metrics == evaluate_lib.DEFAULT_METRICS["tokens"] and task.main_metric == "f1"
  if task.task == "qa":
    assert set(label.feature.keys()) == {"answer_start", "text"}
    assert task.metrics == ("exact_match", "f1")


def test_squad_v2_marks_questions_without_an_answer():
  features = tfds.builder("squad/v2.0").info.features
  assert {"is_impossible", "plausible_answers"} <= set(features.keys())


# Reading sentence tasks from random mock data.


def test_read_single_sentence_classification():
  with tfds.testing.mock_data(num_examples=5):
    examples, names = tfds_tasks.read("glue/sst2", "validation")
  assert names == ["negative", "positive"] and len(examples) == 5
  for example in examples:
    assert set(example) == {"text", "text_pair", "label"}
    assert isinstance(example["text"], str) and example["text_pair"] is None
    assert type(example["label"]) is int and example["label"] in (0, 1)


def test_read_sentence_pairs_and_limit():
  with tfds.testing.mock_data(num_examples=5):
    examples, names = tfds_tasks.read("mrpc", "train", limit=3)
  assert names == ["not_equivalent", "equivalent"] and len(examples) == 3
  for example in examples:
    assert isinstance(example["text"], str) and isinstance(example["text_pair"], str)
    assert type(example["label"]) is int


def test_read_regression_labels_are_floats():
  with tfds.testing.mock_data(num_examples=4):
    examples, names = tfds_tasks.read("stsb", "validation")
  assert names is None and len(examples) == 4
  for example in examples:
    assert type(example["label"]) is float
    assert isinstance(example["text"], str) and isinstance(example["text_pair"], str)


def test_read_imdb_by_tfds_name():
  with tfds.testing.mock_data(num_examples=2):
    examples, names = tfds_tasks.read("imdb_reviews", "test")
  assert names == ["neg", "pos"] and len(examples) == 2
  assert all(isinstance(e["text"], str) and e["text_pair"] is None for e in examples)


# Reading NER and SQuAD from examples written here.


def test_read_ner_words_and_tag_names():
  tag_ids = {name: i for i, name in enumerate(CONLL_TAGS)}
  words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
  tags = [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"]]
  examples = [
    {
      "tokens": np.array(w, object),
      "ner": np.array([tag_ids[t] for t in s], np.int64),
      "pos": np.zeros(len(w), np.int64),
      "chunks": np.zeros(len(w), np.int64),
    }
    for w, s in zip(words, tags)
  ]
  with _mock_examples(examples):
    read, names = tfds_tasks.read("conll2003", "dev")
  assert names == CONLL_TAGS
  assert read == [{"words": w, "tags": t} for w, t in zip(words, tags)]
  for example in read:
    assert len(example["words"]) == len(example["tags"])
    assert set(example["tags"]) <= set(names)


def test_read_ner_rejects_words_and_tags_of_different_lengths():
  example = {
    "tokens": np.array(["a", "b", "c"], object),
    "ner": np.zeros(2, np.int64),
    "pos": np.zeros(3, np.int64),
    "chunks": np.zeros(3, np.int64),
  }
  with (
    _mock_examples([example]),
    pytest.raises(UserError, match="tfds:conll2003:train example 0: 3 words but 2 tags"),
  ):
    tfds_tasks.read("conll2003", "train")


CONTEXT = "The cat sat on the mat. It purred."


def _squad_example(question, *answers, **v2):
  return {
    "id": f"q-{question}",
    "title": "Cats",
    "context": CONTEXT,
    "question": question,
    "answers": _answers(*answers),
    **v2,
  }


def test_read_squad_v1():
  examples = [
    _squad_example("who sat", (4, "cat"), (0, "The cat")),
    _squad_example("where", (15, "the mat")),
  ]
  with _mock_examples(examples):
    read, names = tfds_tasks.read("squad/v1.1", "validation")
  assert names is None
  assert read == [
    {
      "id": "q-who sat",
      "question": "who sat",
      "context": CONTEXT,
      "answers": [(4, "cat"), (0, "The cat")],
    },
    {"id": "q-where", "question": "where", "context": CONTEXT, "answers": [(15, "the mat")]},
  ]
  for example in read:
    for start, text in example["answers"]:
      assert type(start) is int and example["context"][start : start + len(text)] == text


def test_read_squad_v2_gives_no_answers_to_impossible_questions():
  examples = [
    _squad_example("what purred", (24, "It"), is_impossible=False, plausible_answers=_answers()),
    _squad_example("what barked", is_impossible=True, plausible_answers=_answers((4, "cat"))),
  ]
  with _mock_examples(examples):
    read, _ = tfds_tasks.read("squad/v2.0", "validation")
  assert [example["answers"] for example in read] == [[(24, "It")], []]
  assert CONTEXT[24:26] == "It"


# Preparation, splits and imports.


def test_unprepared_dataset_that_cannot_download_is_a_user_error(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise ConnectionError("unreachable")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
  with pytest.raises(UserError, match="not prepared.*unreachable.*tfds build glue/rte"):
    tfds_tasks.read("rte", "train", data_dir=str(tmp_path))


def test_unknown_split_of_a_prepared_dataset_lists_the_splits():
  # A prepared dataset knows its splits; a dict raises KeyError like a SplitDict.
  splits = {"train": None, "validation": None}
  builder = types.SimpleNamespace(info=types.SimpleNamespace(splits=splits))
  with pytest.raises(UserError, match="no split 'dev'; choose from train, validation"):
    tfds_tasks._check_split(builder, "glue/rte", "dev")
  tfds_tasks._check_split(builder, "glue/rte", "validation")


def test_registry_imports_without_tensorflow():
  code = (
    "import sys\n"
    "class Block:\n"
    "  def find_spec(self, name, path=None, target=None):\n"
    "    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):\n"
    "      raise ImportError(name + ' blocked')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from bert_jax.finetune import tfds_tasks\n"
    "from bert_jax.finetune import metrics as task_metrics\n"
    "assert tfds_tasks.task_of(tfds_tasks.parse('tfds:glue/cola')[0]).main_metric == "
    "'matthews'\n"
    "assert task_metrics.compute(['accuracy'], [1, 0], [1, 1]) == {'accuracy': 0.5}\n"
    "try:\n"
    "  tfds_tasks.read('cola', 'train')\n"
    "except tfds_tasks.UserError as e:\n"
    "  print(e)\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "needs TensorFlow Datasets" in result.stdout


def test_an_unlabelled_test_split_is_predicted_not_trained_on():
  """GLUE's test splits carry label -1 (no label): their rows have none, so `predict`
  reads them and training names the row, instead of "label -1 is not one of the labels".
  """
  from bert_jax import config as config_lib
  from bert_jax.finetune import data as data_lib

  config = config_lib.finetune_base_config()
  rows = [{"idx": i, "sentence": s, "label": -1} for i, s in enumerate([b"a fine film", b"dull"])]
  with _mock_examples(rows):
    examples = data_lib.read("tfds:glue/sst2:test", config, labelled=False)
  assert [r["label"] for r in examples.rows] == [None, None]
  assert [r["text"] for r in examples.rows] == ["a fine film", "dull"]
  with _mock_examples(rows), pytest.raises(UserError, match="row 1 has no label"):
    data_lib.read("tfds:glue/sst2:test", config)
