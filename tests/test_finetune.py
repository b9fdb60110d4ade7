"""End-to-end fine-tuning: every head trained a few steps on a tiny imported BERT, then
checked against independent truths.

The truths are Hugging Face's PyTorch models and pipelines on the exported run (logits,
probabilities, word tags, answers), hand-computed metrics and label layouts, and a second
run (exact resume). The model is a random 2-layer BERT (hidden 32) with a hand-made
WordPiece vocabulary, made with `transformers` once per module and imported with
`import-hf`; every run uses max_seq_length 32 and batches of 8.
"""

import collections
import contextlib
import importlib.util
import io
import json
import os
import random
import re
import shutil
import types

import jax
import numpy as np
import pytest

from bert_jax import cli, storage
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax.errors import UserError
from bert_jax.finetune import commands, squad
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import encoding as encoding_lib
from bert_jax.finetune import evaluate as evaluate_lib
from bert_jax.finetune import labels as labels_lib
from bert_jax.finetune import objective as task_objective
from bert_jax.hf import convert
from bert_jax.train import finetune
from tests.conftest import ONE_DEVICE, compile_threads, compiled_ahead_once, import_tiny_bert

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()

CONFIG = str(config_lib.DEFAULT_FINETUNE_CONFIG)
LENGTH = 32
FILLER = "the a cat dog bird fish red blue green small runs jumps sits sleeps on under tree".split()
NAMES, PLACES = ("john", "mary"), ("paris", "london")
VOCAB = (
  ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "!"]
  + FILLER
  + [
    "good",
    "bad",
    "big",
    "in",
    "house",
    "river",
    "where",
    "is",
    "what",
    "who",
    "yes",
    "no",
    "play",
    "##ing",
    "un",
    "##believ",
    "##able",
  ]
  + list(NAMES + PLACES)
)
TAGS = {"john": "B-PER", "mary": "B-PER", "paris": "B-LOC", "london": "B-LOC"}


# --- the tiny model and data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """A random tiny Hugging Face BERT with a hand-made vocabulary, imported (the init_from)."""
  return import_tiny_bert(tmp_path_factory, VOCAB)


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def _filler(rng, low=3, high=7):
  return [rng.choice(FILLER) for _ in range(rng.randint(low, high))]


def _sentiment_row(rng):
  """Label = which marker word the text holds: trivially learnable."""
  words, label = _filler(rng, 1, 4), rng.choice(["happy", "sad", "neutral"])
  marker = {"happy": "good", "sad": "bad", "neutral": "is"}[label]
  words.insert(rng.randint(0, len(words)), marker)
  return {"text": " ".join(words), "label": label}


def _pair_row(rng):
  a, b = _filler(rng, 2, 5), _filler(rng, 2, 5)
  label = rng.choice(["yes", "no"])
  if label == "yes":
    b.insert(0, a[0])
  return {"premise": " ".join(a), "hypothesis": " ".join(b), "label": label}


def _regression_row(rng):
  words = _filler(rng)
  count = rng.randint(0, 3)
  for _ in range(count):
    words.insert(rng.randint(0, len(words)), "big")
  return {"text": " ".join(words), "label": float(count)}


def _tokens_row(rng):
  words = _filler(rng, 2, 5)
  for extra in rng.sample(NAMES + PLACES + ("unbelievable", "playing"), 2):
    words.insert(rng.randint(0, len(words)), extra)
  return {"text": words, "label": [TAGS.get(w, "O") for w in words]}


def _qa_row(rng, index, sentences=2):
  """A context of `sentences` "NAME sits in PLACE ." sentences; where is the first name?"""
  parts = [
    f"{rng.choice(NAMES)} {rng.choice(FILLER)} in {rng.choice(PLACES)} ." for _ in range(sentences)
  ]
  context = " ".join(parts)
  name, _, _, place, _ = parts[0].split()
  start = context.index(place)
  return {
    "id": f"q{index}",
    "question": f"where is {name} ?",
    "context": context,
    "answers": {"text": [place], "answer_start": [start]},
  }


def _finetune(workdir, init_from, *overrides):
  """Runs `bert-jax finetune` in-process; returns its stdout."""
  argv = [
    "finetune",
    "--config",
    CONFIG,
    "--workdir",
    str(workdir),
    f"--config.init_from={init_from}",
    f"--config.data.max_seq_length={LENGTH}",
    "--config.train.batch_size=8",
    ONE_DEVICE,  # one fixture (regression) takes the 8-device data mesh instead
    *overrides,
  ]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    rc = cli.main(argv)
  assert rc == 0, out.getvalue()
  return out.getvalue()


def _run_dir(
  tmp_path_factory, name, imported, rows_fn, overrides, train=48, evaluate=16, init_from=None
):
  """(workdir, data files, stdout) of a fine-tuning run on generated data."""
  base = tmp_path_factory.mktemp(name)
  rng = random.Random(name)
  train_file = _write_jsonl(base / "train.jsonl", [rows_fn(rng) for _ in range(train)])
  eval_file = _write_jsonl(base / "eval.jsonl", [rows_fn(rng) for _ in range(evaluate)])
  workdir = base / "run"
  stdout = _finetune(
    workdir,
    init_from or imported,
    f"--config.data.train={train_file}",
    f"--config.data.eval={eval_file}",
    *overrides,
  )
  return str(workdir), {"train": train_file, "eval": eval_file}, stdout


CLASSIFY_ARGS = (
  "--config.train.steps=120",
  "--config.train.learning_rate=3e-3",
  "--config.eval.every_steps=20",
)


@pytest.fixture(scope="module")
def classify(tmp_path_factory, imported):
  """3 labels, single texts; two empty train rows are skipped."""
  base = tmp_path_factory.mktemp("classify")
  rng = random.Random(1)
  rows = [_sentiment_row(rng) for _ in range(96)]
  rows[5:5] = [{"text": "", "label": "happy"}, {"text": "   ", "label": "sad"}]
  files = {
    "train": _write_jsonl(base / "train.jsonl", rows),
    "eval": _write_jsonl(base / "eval.jsonl", [_sentiment_row(rng) for _ in range(24)]),
  }
  args = (
    f"--config.data.train={files['train']}",
    f"--config.data.eval={files['eval']}",
    *CLASSIFY_ARGS,
  )
  stdout = _finetune(base / "run", imported, *args)
  return {"workdir": str(base / "run"), "files": files, "stdout": stdout, "args": args}


@pytest.fixture(scope="module")
def classify_hf(tmp_path_factory, classify):
  """The classification run exported for transformers."""
  return _export(classify["workdir"], tmp_path_factory.mktemp("classify_hf") / "hf")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, classify):
  """Pairs with token types: a new 2-label head on the 3-label classification run,
  evaluated before training too.
  """
  return _run_dir(
    tmp_path_factory,
    "pairs",
    None,
    _pair_row,
    (
      "--config.data.text_column=premise",
      "--config.data.text_pair_column=hypothesis",
      "--config.head.reinit=True",
      "--config.train.steps=6",
      "--config.train.learning_rate=1e-3",
      "--config.eval.at_start=True",
    ),
    init_from=classify["workdir"],
  )


@pytest.fixture(scope="module")
def regression(tmp_path_factory, imported):
  """Regression with a frozen encoder whose top layer is re-initialised; checkpoints at
  steps 4 and 8.
  """
  return _run_dir(
    tmp_path_factory,
    "regression",
    imported,
    _regression_row,
    (
      "--config.task=regression",
      "--config.head.freeze_encoder=True",
      "--config.head.reinit_layers=1",
      "--config.train.steps=8",
      "--config.eval.every_steps=4",
      "--config.train.learning_rate=1e-2",
      "--config.mesh.data=-1",  # the 8-device data mesh: fine-tuning sharded
    ),
  )


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, imported):
  return _run_dir(
    tmp_path_factory,
    "tokens",
    imported,
    _tokens_row,
    ("--config.task=tokens", "--config.train.steps=20", "--config.train.learning_rate=5e-3"),
  )


@pytest.fixture(scope="module")
def qa(tmp_path_factory, imported):
  """QA; the eval contexts are long enough for several windows."""
  base = tmp_path_factory.mktemp("qa")
  rng = random.Random(3)
  files = {
    "train": _write_jsonl(base / "train.jsonl", [_qa_row(rng, i) for i in range(32)]),
    "eval": _write_jsonl(base / "eval.jsonl", [_qa_row(rng, i, sentences=8) for i in range(4)]),
  }
  workdir = base / "run"
  _finetune(
    workdir,
    imported,
    "--config.task=qa",
    f"--config.data.train={files['train']}",
    f"--config.data.eval={files['eval']}",
    "--config.data.max_query_length=8",
    "--config.data.doc_stride=8",
    "--config.train.steps=10",
    "--config.train.learning_rate=5e-3",
  )
  return str(workdir), files


# --- helpers ---------------------------------------------------------------------------------


def _export(workdir, out):
  assert cli.main(["export-hf", "--workdir", workdir, "--out", str(out)]) == 0
  return str(out)


def _load_hf(auto_class, hf_dir):
  model, info = auto_class.from_pretrained(hf_dir, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  return model.eval()


def _our_logits(run, arrays):
  return np.asarray(
    run.model.apply(
      {"params": run.params},
      arrays["input_ids"],
      arrays["token_type_ids"],
      arrays["attention_mask"],
    )
  )


def _hf_inputs(arrays):
  return {
    k: torch.tensor(np.asarray(arrays[k]), dtype=torch.long)
    for k in ("input_ids", "token_type_ids", "attention_mask")
  }


def _encoded(workdir, spec):
  """(run, config, examples, arrays) of the run's best checkpoint on a data file."""
  run, config = commands.load(workdir)
  labels = labels_lib.LabelMap(run.meta["labels"]) if run.meta.get("labels") else None
  examples = data_lib.read(spec, config)
  arrays, _ = encoding_lib.encode(examples, run.tokenizer, config, labels)
  return run, config, examples, arrays


def _predict(workdir, input_file, out):
  assert (
    cli.main(["predict", "--workdir", workdir, "--input", input_file, "--output", str(out)]) == 0
  )
  return [json.loads(line) for line in open(out)]


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _params_equal(a, b):
  leaves = jax.tree_util.tree_leaves(
    jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
  )
  return all(leaves)


# --- 1. every head against Hugging Face ------------------------------------------------------


@pytest.mark.slow
def test_classification_matches_transformers(classify, classify_hf, tmp_path, monkeypatch):
  workdir, hf_dir = classify["workdir"], classify_hf
  model = _load_hf(transformers.AutoModelForSequenceClassification, hf_dir)
  run, _, examples, arrays = _encoded(workdir, classify["files"]["eval"])
  assert model.config.id2label == dict(enumerate(run.meta["labels"]))
  assert run.meta["labels"] == ["happy", "neutral", "sad"]
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  texts = [r["text"] for r in examples.rows]
  hf_batch = hf_tokenizer(texts, padding="max_length", max_length=LENGTH, truncation=True)
  np.testing.assert_array_equal(hf_batch["input_ids"], arrays["input_ids"])
  with torch.no_grad():
    hf_logits = model(**_hf_inputs(arrays)).logits.numpy()
  np.testing.assert_allclose(_our_logits(run, arrays), hf_logits, atol=1e-4, rtol=0)

  monkeypatch.setattr(commands, "CHUNK_ROWS", 5)  # predict's 24 rows in 5 chunks
  ours = _predict(workdir, classify["files"]["eval"], tmp_path / "pred.jsonl")
  classifier = transformers.pipeline("text-classification", model=hf_dir, top_k=None)
  for mine, theirs in zip(ours, classifier(texts), strict=True):
    assert set(mine["probabilities"]) == {t["label"] for t in theirs}
    for t in theirs:
      assert abs(mine["probabilities"][t["label"]] - t["score"]) < 1e-4
    assert mine["label"] == max(theirs, key=lambda t: t["score"])["label"]


@pytest.mark.slow
def test_classification_loss_and_gradients_match_transformers(classify, classify_hf):
  """The training objective (without dropout) against BertForSequenceClassification's
  loss and its gradients, on a labelled batch.
  """
  workdir, hf_dir = classify["workdir"], classify_hf
  model = _load_hf(transformers.AutoModelForSequenceClassification, hf_dir)
  run, _, _, arrays = _encoded(workdir, classify["files"]["eval"])
  batch = {k: v[:8] for k, v in arrays.items()}
  objective = task_objective.FineTuning(run.model, "classification")

  def loss(params):
    return objective.loss(
      objective.sums(params, batch, deterministic=True), objective.totals(batch)
    )

  value, grads = jax.value_and_grad(loss)(run.params)
  out = model(**_hf_inputs(batch), labels=torch.tensor(batch["labels"], dtype=torch.long))
  out.loss.backward()
  assert abs(float(value) - float(out.loss)) < 1e-5
  np.testing.assert_allclose(
    np.asarray(grads["classifier"]["kernel"]),
    model.classifier.weight.grad.numpy().T,
    atol=1e-6,
    rtol=1e-4,
  )
  words = np.asarray(grads["bert"]["embeddings"]["word"]["embedding"])[: len(VOCAB)]
  np.testing.assert_allclose(
    words, model.bert.embeddings.word_embeddings.weight.grad.numpy(), atol=1e-6, rtol=1e-4
  )


@pytest.mark.slow
def test_pair_classification_matches_transformers(pairs, tmp_path):
  workdir, files, _ = pairs
  hf_dir = _export(workdir, tmp_path / "hf")
  model = _load_hf(transformers.AutoModelForSequenceClassification, hf_dir)
  run, _, examples, arrays = _encoded(workdir, files["eval"])
  assert run.meta["labels"] == ["no", "yes"]
  assert model.config.id2label == {0: "no", 1: "yes"}
  assert arrays["token_type_ids"].max() == 1  # the second texts are type 1
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  hf_batch = hf_tokenizer(
    [r["text"] for r in examples.rows],
    [r["text_pair"] for r in examples.rows],
    padding="max_length",
    max_length=LENGTH,
    truncation=True,
  )
  np.testing.assert_array_equal(hf_batch["input_ids"], arrays["input_ids"])
  np.testing.assert_array_equal(hf_batch["token_type_ids"], arrays["token_type_ids"])
  with torch.no_grad():
    hf_logits = model(**_hf_inputs(arrays)).logits.numpy()
  np.testing.assert_allclose(_our_logits(run, arrays), hf_logits, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_regression_matches_transformers(regression, tmp_path):
  workdir, files, _ = regression
  hf_dir = _export(workdir, tmp_path / "hf")
  model = _load_hf(transformers.AutoModelForSequenceClassification, hf_dir)
  assert model.config.num_labels == 1 and model.config.problem_type == "regression"
  run, _, _, arrays = _encoded(workdir, files["eval"])
  with torch.no_grad():
    hf_logits = model(**_hf_inputs(arrays)).logits.numpy()
  ours = _our_logits(run, arrays)
  np.testing.assert_allclose(ours, hf_logits, atol=1e-4, rtol=0)
  predicted = _predict(workdir, files["eval"], tmp_path / "pred.jsonl")
  np.testing.assert_allclose([p["value"] for p in predicted], hf_logits[:, 0], atol=1e-4)


@pytest.mark.slow
def test_tokens_match_transformers(tokens, tmp_path, monkeypatch):
  workdir, files, _ = tokens
  hf_dir = _export(workdir, tmp_path / "hf")
  model = _load_hf(transformers.AutoModelForTokenClassification, hf_dir)
  run, _, examples, arrays = _encoded(workdir, files["eval"])
  assert model.config.id2label == dict(enumerate(run.meta["labels"]))
  assert run.meta["labels"] == ["B-LOC", "B-PER", "O"]
  with torch.no_grad():
    hf_logits = model(**_hf_inputs(arrays)).logits.numpy()
  real = arrays["attention_mask"].astype(bool)
  np.testing.assert_allclose(_our_logits(run, arrays)[real], hf_logits[real], atol=1e-4, rtol=0)

  monkeypatch.setattr(commands, "CHUNK_ROWS", 3)  # predict in chunks of 3 rows
  predicted = _predict(workdir, files["eval"], tmp_path / "pred.jsonl")
  tagger = transformers.pipeline("token-classification", model=hf_dir, ignore_labels=[])
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  for row, mine in zip(examples.rows, predicted, strict=True):
    text = " ".join(row["words"])
    by_index = {e["index"]: e["entity"] for e in tagger(text)}
    word_ids = hf_tokenizer(text).word_ids()
    first = {w: i for i, w in reversed(list(enumerate(word_ids))) if w is not None}
    assert mine["words"] == row["words"]
    assert mine["tags"] == [by_index[first[w]] for w in range(len(row["words"]))]


@pytest.mark.slow
def test_qa_matches_transformers(qa, tmp_path, monkeypatch):
  workdir, files = qa
  hf_dir = _export(workdir, tmp_path / "hf")
  model = _load_hf(transformers.AutoModelForQuestionAnswering, hf_dir)
  run, config, examples, features = _encoded(workdir, files["eval"])
  assert len(features["input_ids"]) > len(examples.rows)  # several windows per context
  with torch.no_grad():
    out = model(**_hf_inputs(features))
  ours = _our_logits(run, features)
  real = features["attention_mask"].astype(bool)
  np.testing.assert_allclose(ours[..., 0][real], out.start_logits.numpy()[real], atol=1e-4)
  np.testing.assert_allclose(ours[..., 1][real], out.end_logits.numpy()[real], atol=1e-4)

  # predict ranks the real tokens only (its windows are cut to their length): the padding's
  # logits are -inf to the search.
  start, end = (np.where(real, x.numpy(), -np.inf) for x in (out.start_logits, out.end_logits))
  theirs, _ = squad.postprocess(
    features,
    start,
    end,
    examples.rows,
    n_best=config.qa.n_best,
    max_answer_length=config.qa.max_answer_length,
  )
  monkeypatch.setattr(commands, "CHUNK_ROWS", 3)  # predict in chunks of 3 contexts
  predicted = _predict(workdir, files["eval"], tmp_path / "pred.jsonl")
  assert [p["id"] for p in predicted] == [e.id for e in examples.rows]
  assert {p["id"]: p["answer"] for p in predicted} == theirs
  for p, e in zip(predicted, examples.rows):
    assert e.context[p["start"] : p["start"] + len(p["answer"])] == p["answer"]


# --- 2. learning signal and the best checkpoint ----------------------------------------------


@pytest.mark.slow
def test_trivial_task_is_learnt_and_best_is_kept(classify):
  workdir = classify["workdir"]
  evals = _records(workdir, "eval")
  assert [r["step"] for r in evals] == [20, 40, 60, 80, 100, 120]
  best_value = max(r["accuracy"] for r in evals)
  assert best_value >= 0.9
  assert evals[-1]["best_accuracy"] == best_value
  best_step = min((r["loss"], r["step"]) for r in evals if r["accuracy"] == best_value)[1]
  checkpoints, step = run_lib.open_checkpoints(workdir, folder="best")
  meta = checkpoints.meta(step)
  assert step == best_step and meta["best"]["value"] == best_value
  assert meta["best"]["metric"] == "accuracy"
  assert "train: 96 examples, 96 rows" in classify["stdout"]
  assert "2 empty rows skipped" in classify["stdout"]
  assert "init_from: the encoder (a new head) of " in classify["stdout"]


@pytest.mark.slow
def test_programs_compile_once_ahead_of_the_first_step(imported, tmp_path, caplog):
  """The train step, the finiteness check and the eval program compile on the precompile
  thread while the state loads, once each: their first calls find them compiled, so the
  specs they were compiled for match the real batches.
  """
  rng = random.Random(7)
  train = _write_jsonl(tmp_path / "train.jsonl", [_sentiment_row(rng) for _ in range(24)])
  held_out = _write_jsonl(tmp_path / "eval.jsonl", [_sentiment_row(rng) for _ in range(8)])
  with compile_threads(caplog) as found:
    _finetune(
      tmp_path / "run",
      imported,
      f"--config.data.train={train}",
      f"--config.data.eval={held_out}",
      "--config.train.steps=4",
      "--config.eval.every_steps=2",
    )
  for program in ("train_step", "_all_finite", "logits_of"):
    assert compiled_ahead_once(found, program), (program, found[program])


# --- 3. exact resume -------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_is_exact(classify, imported, tmp_path):
  """Delete the last checkpoint (and best/) of the 120-step run: the rerun resumes from 100
  and ends on the same parameters, bit for bit.
  """
  straight = classify["workdir"]
  assert run_lib.open_checkpoints(straight)[0].all_steps() == [100, 120]
  resumed = str(tmp_path / "resumed")
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "120"))
  shutil.rmtree(os.path.join(resumed, "best"))
  stdout = _finetune(resumed, imported, *classify["args"])
  assert f"resumed from {os.path.join(resumed, 'checkpoints', '100')}" in stdout
  a = run_lib.load(straight, step=120).params
  b = run_lib.load(resumed, step=120).params
  assert _params_equal(a, b)
  assert _records(resumed, "eval")[-1] == _records(straight, "eval")[-1]


# --- 4. metrics against hand-computed values -------------------------------------------------


def _config(task):
  config = config_lib.finetune_base_config()
  config.task = task
  return config


def test_classification_accuracy_and_loss_by_hand():
  logits = np.array(
    [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]], np.float32
  )
  labels = np.array([0, 1, 2, 2], np.int32)  # the last one is wrong
  examples = data_lib.Examples([{"text": "x", "label": int(i)} for i in labels])
  values = evaluate_lib.scores(
    _config("classification"), logits, {"labels": labels}, examples, ["a", "b", "c"]
  )
  assert values["accuracy"] == 0.75
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert abs(values["loss"] + log_softmax[np.arange(4), labels].mean()) < 1e-6
  # F1 of a: precision 1/2, recall 1 -> 2/3; b: 1; c: precision 1, recall 1/2 -> 2/3
  assert abs(values["macro_f1"] - (2 / 3 + 1 + 2 / 3) / 3) < 1e-6


def test_regression_pearson_by_hand():
  labels = np.array([1.0, 2.0, 3.0], np.float32)
  predicted = np.array([[1.0], [2.0], [4.0]], np.float32)
  examples = data_lib.Examples([{"text": "x", "label": float(v)} for v in labels])
  values = evaluate_lib.scores(_config("regression"), predicted, {"labels": labels}, examples, None)
  # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42 / 9) = 9 / sqrt(84)
  assert abs(values["pearson"] - 9 / np.sqrt(84)) < 1e-6
  assert abs(values["loss"] - 1 / 3) < 1e-6  # squared errors 0, 0, 1


def test_token_entity_f1_by_hand(imported):
  tokenizer = run_lib.tokenizer(imported)
  names = ["B-LOC", "B-PER", "O"]
  truth = [["john", "sits", "in", "paris"], ["mary", "unbelievable", "london"]]
  gold = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O", "B-LOC"]]
  guess = [["B-PER", "O", "O", "O"], ["B-PER", "B-LOC", "B-LOC"]]
  examples = data_lib.Examples([{"words": w, "tags": t} for w, t in zip(truth, gold)])
  arrays, _ = encoding_lib.encode_tokens(examples, tokenizer, LENGTH, labels_lib.LabelMap(names))
  logits = np.zeros((2, LENGTH, 3), np.float32)
  logits[..., names.index("B-PER")] = 5.0  # every position not a first sub-token says B-PER
  for row, tags in enumerate(guess):
    for position in np.nonzero(arrays["word_index"][row] >= 0)[0]:
      logits[row, position] = 0.0
      logits[row, position, names.index(tags[arrays["word_index"][row, position]])] = 5.0
  values = evaluate_lib.scores(_config("tokens"), logits, arrays, examples, names)
  # gold entities 4, predicted 4 (john, mary, unbelievable, london), correct 3
  assert values["precision"] == 0.75 and values["recall"] == 0.75 and values["f1"] == 0.75
  assert values["accuracy"] == 5 / 7  # word-level: paris and unbelievable are wrong
  # The names checked before training (config.eval.metric) are the ones evaluated.
  names_checked, main = evaluate_lib.metric_names(_config("tokens"))
  assert set(values) == {*names_checked, "loss"} and main == "f1"


def test_word_tags_by_hand():
  """Each word's tag is its first sub-token's argmax; words cut off by the length are "O"."""
  names = ["B-LOC", "B-PER", "O"]
  word_index = np.array([[-1, 0, -1, 1, -1], [-1, 0, 1, -1, -1]], np.int32)
  logits = np.zeros((2, 5, 3), np.float32)
  logits[0, 1, 1] = logits[0, 3, 0] = 1.0  # row 0: word 0 B-PER, word 1 B-LOC
  logits[1, 1, 2] = logits[1, 2, 1] = 1.0  # row 1: word 0 O, word 1 B-PER
  logits[0, 2, 0] = logits[1, 3, 0] = 9.0  # not first sub-tokens: ignored
  arrays = {"word_index": word_index, "words_per_row": [3, 2]}  # row 0's third word is cut
  assert evaluate_lib.word_tags(logits, arrays, names) == [["B-PER", "B-LOC", "O"], ["O", "B-PER"]]


@pytest.mark.slow
def test_evaluate_command_prints_the_best_eval(classify, capsys, tmp_path):
  workdir = classify["workdir"]
  assert cli.main(["evaluate", "--workdir", workdir]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  evals = _records(workdir, "eval")
  best = run_lib.open_checkpoints(workdir, folder="best")[1]
  at_best = next(r for r in evals if r["step"] == best)
  for key in ("accuracy", "macro_f1", "loss"):
    assert abs(printed[key] - at_best[key]) < 1e-5, key
  assert abs(printed["accuracy"] - evals[-1]["accuracy"]) < 1e-5  # learnt: the last is as good

  assert cli.main(["evaluate", "--workdir", workdir, "--step", "120"]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for key in ("accuracy", "macro_f1", "loss"):
    assert abs(printed[key] - evals[-1][key]) < 1e-5, key

  # The best eval's step, once pruned from checkpoints/ (a copy of the run without it), is
  # found in best/.
  pruned = str(tmp_path / "pruned")
  shutil.copytree(workdir, pruned)
  shutil.rmtree(os.path.join(pruned, "checkpoints", str(best)))
  kept = run_lib.open_checkpoints(pruned)[0].all_steps()
  assert best not in kept
  assert cli.main(["evaluate", "--workdir", pruned, "--step", str(best)]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert abs(printed["loss"] - at_best["loss"]) < 1e-5
  line = _cli_error(capsys, ["evaluate", "--workdir", pruned, "--step", "7"])
  assert line == (
    f"error: no checkpoint at step 7 in {pruned}: checkpoints/ has {sorted(kept)}, best/ "
    f"(the best eval) has [{best}]"
  )


@pytest.mark.slow  # classify
def test_label_column_flag_and_predict_scores_as_evaluate(classify, capsys, tmp_path):
  """`evaluate` and `predict` read other column names (--text-column, --label-column), and
  predict's accuracy is evaluate's: a blank row is predicted, not scored (before, predict
  counted it).
  """
  with open(classify["files"]["eval"]) as f:
    rows = [json.loads(line) for line in f][:12]
  rows.insert(3, {"text": "  ", "label": "sad"})
  renamed = _write_jsonl(
    tmp_path / "renamed.jsonl", [{"review": r["text"], "gold": r["label"]} for r in rows]
  )
  plain = _write_jsonl(tmp_path / "plain.jsonl", rows)
  workdir = classify["workdir"]
  columns = ["--text-column", "review", "--label-column", "gold"]
  expected = _last_json(capsys, ["evaluate", "--workdir", workdir, "--data", plain])
  assert (
    _last_json(capsys, ["evaluate", "--workdir", workdir, "--data", renamed, *columns]) == expected
  )
  summary = _predict_summary(capsys, workdir, renamed, *columns)
  assert summary.startswith("13 predictions")
  assert f"accuracy against its label column {expected['accuracy']:.4f}" in summary
  # Rows without a label are predicted and left out of the score (before: no score at all).
  labelled = _write_jsonl(tmp_path / "labelled.jsonl", rows[:3] + rows[4:9])
  partly = _write_jsonl(
    tmp_path / "partly.jsonl", rows[:9] + [{"text": r["text"], "label": ""} for r in rows[9:]]
  )
  expected = _last_json(capsys, ["evaluate", "--workdir", workdir, "--data", labelled])
  summary = _predict_summary(capsys, workdir, partly)
  assert summary.startswith("13 predictions"), summary
  assert (
    f"accuracy against its label column {expected['accuracy']:.4f} (of the 8 rows with a "
    f"label; 4 have none)" in summary
  ), summary
  argv = [
    "predict",
    "--workdir",
    workdir,
    "--input",
    renamed,
    "--output",
    str(tmp_path / "x.jsonl"),
  ]
  assert _cli_error(capsys, [*argv, "--text-column", "review", "--label-column", "stars"]) == (
    f"error: --label-column stars: no row of {renamed} has a label there; name the column "
    f"with the labels, or drop the flag"
  )


@pytest.mark.slow  # the only test of the fast tier that needed `classify` (11 s)
def test_fill_mask_refuses_a_fine_tuned_run_naming_where_it_started(classify, imported, capsys):
  line = _cli_error(capsys, ["fill-mask", "--workdir", classify["workdir"], "a [MASK] b"])
  assert line == (
    f"error: {classify['workdir']} is fine-tuned for 'classification' and has no masked-LM "
    f"head; fill-mask takes a pretraining run, or an import of a pretrained (masked-LM) "
    f"model, such as the one it started from: --workdir {imported}"
  )


def test_fill_mask_notes_the_masks_past_the_positions(imported, capsys):
  """70 [MASK]s on 64 positions: the 63 after [CLS] are predicted, a note for the other 7."""
  capsys.readouterr()
  assert cli.main(["fill-mask", "--workdir", imported, "--json", "[MASK] " * 70]) == 0
  captured = capsys.readouterr()
  assert len(json.loads(captured.out.strip().splitlines()[-1])) == 63
  assert "its last 7 [MASK]s, past the model's 64 positions, are not predicted" in captured.err


# --- 5. token labels on first sub-tokens -----------------------------------------------------


def test_tokens_label_first_sub_token_only(imported):
  tokenizer = run_lib.tokenizer(imported)
  labels = labels_lib.LabelMap(["B-LOC", "B-PER", "O"])
  examples = data_lib.Examples(
    [{"words": ["john", "unbelievable", "playing"], "tags": ["B-PER", "O", "B-LOC"]}]
  )
  arrays, truncated = encoding_lib.encode_tokens(examples, tokenizer, 12, labels)
  pieces = ["[CLS]", "john", "un", "##believ", "##able", "play", "##ing", "[SEP]"]
  expected_ids = [VOCAB.index(p) for p in pieces] + [0] * 4
  ignore = encoding_lib.IGNORE
  assert truncated == 0
  assert arrays["input_ids"][0].tolist() == expected_ids
  assert arrays["attention_mask"][0].tolist() == [1] * 8 + [0] * 4
  assert arrays["labels"][0].tolist() == [ignore, 1, 2, ignore, ignore, 0, ignore] + [ignore] * 5
  assert arrays["word_index"][0].tolist() == [-1, 0, 1, -1, -1, 2] + [-1] * 6


# --- 6. bad input ----------------------------------------------------------------------------


def _cli_error(capsys, argv):
  """The one `error:` line of a command that must fail with status 2."""
  capsys.readouterr()
  assert cli.main(argv) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines and lines[-1].startswith("error: "), lines
  return lines[-1]


@pytest.mark.slow
def test_predict_refuses_a_label_outside_the_map(classify, tmp_path, capsys):
  bad = _write_jsonl(
    tmp_path / "bad.jsonl",
    [{"text": "good cat", "label": "happy"}, {"text": "bad dog", "label": "angry"}],
  )
  with pytest.raises(UserError, match=rf"^{re.escape(bad)} row 2: label 'angry' is not one of"):
    commands.predict_main(classify["workdir"], bad, str(tmp_path / "out.jsonl"))
  line = _cli_error(
    capsys,
    [
      "predict",
      "--workdir",
      classify["workdir"],
      "--input",
      bad,
      "--output",
      str(tmp_path / "out.jsonl"),
    ],
  )
  assert f"{bad} row 2: label 'angry'" in line and "happy, neutral, sad" in line
  assert not os.path.exists(tmp_path / "out.jsonl")


@pytest.mark.slow
def test_empty_rows_are_skipped_and_counted(classify, tmp_path, capsys):
  path = tmp_path / "texts.csv"
  path.write_text("text,label\ngood cat,happy\n,sad\n   ,sad\nbad dog,sad\n")
  config = config_lib.finetune_base_config()
  examples = data_lib.read(str(path), config)
  assert examples.skipped_empty == 2
  assert [r["text"] for r in examples.rows] == ["good cat", "bad dog"]
  capsys.readouterr()
  out = tmp_path / "out.jsonl"
  assert (
    cli.main(
      ["predict", "--workdir", classify["workdir"], "--input", str(path), "--output", str(out)]
    )
    == 0
  )
  printed = capsys.readouterr().out  # predict keeps them: one line per row
  assert "4 predictions" in printed and "2 blank rows, predicted as empty texts" in printed
  assert [json.loads(line)["text"] for line in open(out)] == ["good cat", "", "   ", "bad dog"]


def test_integer_labels_are_names(tmp_path):
  """JSON labels 1, 2, 3 (e.g. star ratings) are the names "1", "2", "3", not ids."""
  config = config_lib.finetune_base_config()
  path = _write_jsonl(tmp_path / "stars.jsonl", [{"text": "good", "label": v} for v in (3, 1, 2)])
  examples = data_lib.read(path, config)
  labels = labels_lib.LabelMap.infer(examples, config)
  assert labels.names == ["1", "2", "3"]
  assert [labels.encode(r["label"], "") for r in examples.rows] == [2, 0, 1]
  assert data_lib._name_of(1, ["neg", "pos"]) == "pos"  # TFDS: ClassLabel ids, named when read


def test_a_row_without_a_label_names_the_file_and_row(tmp_path):
  """Before, an empty CSV cell became a class named '' and a JSON null a confusing error."""
  config = config_lib.finetune_base_config()
  csv_path = _write_csv(tmp_path / "a.csv", ["good cat,happy", "bad dog,", "a cat,sad"])
  rows = [{"text": "x", "label": "a"}, {"text": "y", "label": None}]
  for path in (csv_path, _write_jsonl(tmp_path / "a.jsonl", rows)):
    with pytest.raises(UserError, match=rf"^{re.escape(path)} row 2 has no label \(an empty"):
      data_lib.read(path, config)
    assert data_lib.read(path, config, labelled=False).rows[1]["label"] in ("", None)  # predict
  config.task = "tokens"
  tags = _write_jsonl(
    tmp_path / "t.jsonl", [{"text": "john sits", "label": "B-PER O"}, {"text": "x"}]
  )
  with pytest.raises(UserError, match=r"row 2 has no label"):
    data_lib.read(tags, config)


def test_qa_window_too_short_is_a_user_error(imported, tmp_path, capsys):
  rng = random.Random(3)
  train = _write_jsonl(tmp_path / "qa.jsonl", [_qa_row(rng, i) for i in range(8)])
  line = _cli_error(
    capsys,
    [
      "finetune",
      "--config",
      CONFIG,
      "--workdir",
      str(tmp_path / "w"),
      "--config.task=qa",
      f"--config.init_from={imported}",
      f"--config.data.train={train}",
      f"--config.data.max_seq_length={LENGTH}",
      "--config.data.max_query_length=30",
    ],
  )
  assert "max_query_length" in line


def test_missing_column_is_named(imported, tmp_path, capsys):
  rng = random.Random(1)
  train = _write_jsonl(tmp_path / "train.jsonl", [_sentiment_row(rng) for _ in range(16)])
  config = config_lib.finetune_base_config()
  config.data.text_column = "sentence"
  with pytest.raises(UserError, match=r"no column 'sentence'.*'text', 'label'"):
    data_lib.read(train, config)
  line = _cli_error(
    capsys,
    [
      "finetune",
      "--config",
      CONFIG,
      "--workdir",
      str(tmp_path / "w"),
      f"--config.init_from={imported}",
      f"--config.data.train={train}",
      "--config.data.text_column=sentence",
    ],
  )
  assert "'sentence'" in line and "'text', 'label'" in line


def test_unknown_task(imported, tmp_path, capsys):
  config = config_lib.finetune_base_config()
  config.task = "ner"
  config.init_from = imported
  config.data.train = "x.jsonl"
  with pytest.raises(UserError, match=r"config.task='ner' is not one of classification"):
    finetune.validate(config)
  line = _cli_error(
    capsys,
    [
      "finetune",
      "--config",
      CONFIG,
      "--workdir",
      str(tmp_path / "w"),
      f"--config.init_from={imported}",
      "--config.data.train=x.jsonl",
      "--config.task=ner",
    ],
  )
  assert "regression, tokens, qa" in line


@pytest.mark.slow
def test_other_labels_than_init_from_offer_reinit(classify, pairs, tmp_path):
  """A 3-label classification run as init_from, data with 2 other labels: a new head is
  offered (and with it, `pairs`, the same data trains).
  """
  config = _pairs_config(classify, pairs[1]["train"])
  with pytest.raises(UserError, match=r"--config.head.reinit=True"):
    finetune.finetune(config, str(tmp_path / "w"))


def _recipe():
  """The default recipe's config (configs/finetune/classify_csv.py)."""
  spec = importlib.util.spec_from_file_location("classify_csv", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _pairs_config(classify, train_file):
  """The default recipe on the pair data, from the classification run."""
  config = _recipe()
  config.init_from = classify["workdir"]
  config.data.train = train_file
  config.data.text_column = "premise"
  config.data.text_pair_column = "hypothesis"
  config.data.max_seq_length = LENGTH
  config.train.batch_size = 8
  config.train.steps = 2
  return config


@pytest.mark.slow
def test_reinit_head_trains(pairs):
  """The new head starts fresh and trains: before the first step a 2-way head initialised
  near zero gives each label about 1/2, an eval loss of ln 2 (init_from's trained head is
  3-way); after 6 steps its bias, zero at initialisation (BERT's init), has moved.
  """
  workdir, _, stdout = pairs
  assert "done: 6 steps" in stdout
  run = run_lib.load(workdir, step=6)
  assert run.meta["num_labels"] == 2 and run.meta["labels"] == ["no", "yes"]
  evals = _records(workdir, "eval")
  assert [r["step"] for r in evals] == [0, 6]
  assert abs(evals[0]["loss"] - np.log(2)) < 0.05
  best = run_lib.load(workdir)  # what evaluate and predict take: the last line names it
  kept = best.meta["best"]
  assert stdout.strip().splitlines()[-1] == (
    f"best eval: {kept['metric']} {kept['value']:.4f} at step {best.step}, in "
    f"{workdir}/best (what evaluate, predict and export-hf use)"
  )
  bias = np.asarray(run.params["classifier"]["bias"])
  assert bias.shape == (2,) and np.abs(bias).min() > 1e-4


def _write_csv(path, rows, header="text,label"):
  path.write_text("".join(f"{line}\n" for line in [header, *rows]))
  return str(path)


def _sentiment_csv(path, labels=("happy", "sad")):
  """16 rows cycling through `labels` (two batches of 8)."""
  return _write_csv(path, [f"good cat {i},{labels[i % len(labels)]}" for i in range(16)])


def _finetune_error(capsys, workdir, imported, *overrides):
  """The one error line of `bert-jax finetune` on the test's settings."""
  return _cli_error(
    capsys,
    [
      "finetune",
      "--config",
      CONFIG,
      "--workdir",
      str(workdir),
      f"--config.init_from={imported}",
      f"--config.data.max_seq_length={LENGTH}",
      "--config.train.batch_size=8",
      *overrides,
    ],
  )


@pytest.mark.parametrize(
  "content",
  ["", "text,label\n", "text,label\n,happy\n  ,sad\n"],
  ids=["0 bytes", "header only", "only empty texts"],
)
def test_train_file_without_rows_is_named(imported, tmp_path, capsys, content):
  train = tmp_path / "train.csv"
  train.write_text(content)
  workdir = tmp_path / "w"
  line = _finetune_error(capsys, workdir, imported, f"--config.data.train={train}")
  assert line.startswith(f"error: {train} has no rows")
  assert "batch size" not in line
  if content.count("\n") > 1:
    assert "all 2 rows have an empty 'text'" in line
  assert not workdir.exists()  # nothing written


def test_a_batch_the_devices_do_not_divide_writes_nothing(imported, tmp_path, capsys):
  train = _sentiment_csv(tmp_path / "train.csv")
  workdir = tmp_path / "w"
  line = _finetune_error(
    capsys, workdir, imported, f"--config.data.train={train}", "--config.train.batch_size=12"
  )
  assert "config.train.batch_size=12" in line and "use a multiple of 8" in line
  assert not workdir.exists()  # before, its tokenizer/ and .lock were left


def test_too_few_rows_for_a_batch_name_a_batch_size_that_fits(imported, tmp_path, capsys):
  train = _write_csv(tmp_path / "t.csv", [f"text {i},{'ab'[i % 2]}" for i in range(12)])
  line = _finetune_error(
    capsys, tmp_path / "w", imported, f"--config.data.train={train}", "--config.train.batch_size=32"
  )
  assert line == (
    f"error: {train} gives 12 training rows, fewer than one batch of "
    f"config.train.batch_size=32; lower the batch size, e.g. --config.train.batch_size=4"
  )
  assert not (tmp_path / "w").exists()


def test_eval_file_without_rows_is_named(imported, tmp_path, capsys):
  train = _sentiment_csv(tmp_path / "train.csv")
  evaluate = _write_csv(tmp_path / "eval.csv", [])
  workdir = tmp_path / "w"
  line = _finetune_error(
    capsys, workdir, imported, f"--config.data.train={train}", f"--config.data.eval={evaluate}"
  )
  assert line.startswith(f"error: {evaluate} has no rows (a header only, or an empty file)")
  assert not workdir.exists()


def test_unknown_eval_label_names_the_file_and_row(imported, tmp_path, capsys):
  """Row numbers are the file's data rows: the skipped empty row counts."""
  train = _sentiment_csv(tmp_path / "train.csv")
  evaluate = _write_csv(tmp_path / "eval.csv", ["good cat,happy", ",sad", "bad dog,angry"])
  workdir = tmp_path / "w"
  line = _finetune_error(
    capsys, workdir, imported, f"--config.data.train={train}", f"--config.data.eval={evaluate}"
  )
  assert line == (
    f"error: {evaluate} row 3: label 'angry' is not one of the 2 labels of the train data "
    f"{train} (happy, sad); fix the data, or name every label in config.data.labels"
  )
  assert not workdir.exists()


@pytest.mark.slow  # classify
def test_a_resumed_run_refuses_data_of_other_labels(classify, imported, tmp_path, capsys):
  """Before, the error said to name the labels in config.data.labels, which gave it again."""
  train = _write_csv(tmp_path / "t.csv", ["good cat,0", "bad dog,2"])
  for labels in ([], ["--config.data.labels=0,2"]):
    line = _finetune_error(
      capsys,
      classify["workdir"],
      imported,
      *classify["args"],
      f"--config.data.train={train}",
      *labels,
    )
    assert line == (
      f"error: {classify['workdir']} was trained with the labels happy, neutral, sad, and "
      f"this data has 0, 2; fine-tune on it in a new --workdir"
    )


@pytest.mark.slow  # classify
def test_the_labels_are_logged_with_their_counts(classify):
  with open(classify["files"]["train"]) as f:
    counts = collections.Counter(json.loads(line)["label"] for line in f)
  counts["happy"] -= 1  # the empty rows, skipped
  counts["sad"] -= 1
  shown = ", ".join(f"{n} {counts[n]}" for n in ("happy", "neutral", "sad"))
  assert f"labels: 3 ({shown})" in classify["stdout"]
  with open(classify["files"]["eval"]) as f:
    (name, n), *_ = collections.Counter(json.loads(line)["label"] for line in f).most_common()
  line = next(x for x in classify["stdout"].splitlines() if x.startswith("eval: 24 examples"))
  assert line.endswith(f"(most frequent label {name!r}: accuracy {n / 24:.4f})")


def test_a_semicolon_separated_csv_is_named(tmp_path):
  path = tmp_path / "s.csv"
  path.write_text("text;label\ngood;pos\n")
  with pytest.raises(UserError) as e:
    data_lib.read_records(str(path))
  assert str(e.value) == (
    f"{path} is semicolon-separated (its header is 'text;label'); separate its columns with "
    f'commas (a spreadsheet\'s "CSV UTF-8" export does)'
  )


def test_repeated_positives_of_an_embedding_run_get_a_note():
  rows = [{"text": a, "text_pair": p} for a, p in (("a", "x"), ("b", "y"), ("a", "x"), ("c", "x"))]
  assert finetune._repeats_note(data_lib.Examples(rows)) == (
    "note: 2 rows repeat a positive of another row: two in one batch are each other's "
    "negative, which MNRL trains against; drop the repeats"
  )
  assert finetune._repeats_note(data_lib.Examples(rows[:2])) is None


def test_whole_numbers_name_one_label_and_odd_labels_get_a_note():
  """1, 1.0 and "1" are one label (before, a set of the raw values kept 1, and 1.0 was
  then "not one of the labels"); labels alike but for case or spaces, labels without rows,
  and a score read as classes get a note.
  """
  config = _config("classification")
  rows = [{"text": "a", "label": v} for v in (1, 1.0, "1", 0, 0.0, "1.0", "-0.0", "0.5")]
  examples = data_lib.Examples(rows, source="f.jsonl")
  labels = labels_lib.LabelMap.infer(examples, config)
  assert labels.names == ["0", "0.5", "1"]  # a CSV cell "1.0" as JSON's 1.0
  assert [labels.encode(r["label"], "here") for r in rows] == [2, 2, 2, 0, 0, 2, 0, 1]
  assert labels_lib.LabelMap(["1.0", "2.0"]).encode("2.0", "here") == 1  # an older model's
  rows = [{"text": "a", "label": v} for v in ("pos", "pos ", "Pos", "neg", "neg")]
  examples = data_lib.Examples(rows, source="f.csv")
  assert finetune._label_lines(config, labels_lib.LabelMap.infer(examples, config), examples) == [
    "labels: 4 (Pos 1, neg 2, pos 1, pos  1)",
    "note: the labels 'Pos', 'pos', 'pos ' differ only in case or spaces; fix the data if "
    "they are one",
  ]
  config.data.labels = "neg,pos,other"
  assert finetune._label_lines(config, labels_lib.LabelMap.infer(examples, config), examples)[
    1:
  ] == ["note: no train rows of 'other'"]
  config.data.labels = ""
  rows = [{"text": "a", "label": 0.25 * i} for i in range(16)]
  examples = data_lib.Examples(rows, source="f.jsonl")
  assert finetune._label_lines(config, labels_lib.LabelMap.infer(examples, config), examples)[
    1:
  ] == [
    "note: 16 labels in 16 rows, all numbers: for a score, fine-tune with --config.task=regression"
  ]


def test_unknown_tag_and_regression_label_name_the_file_and_row(imported, tmp_path):
  tokenizer = run_lib.tokenizer(imported)
  config = config_lib.finetune_base_config()
  config.task = "tokens"
  tags = _write_jsonl(
    tmp_path / "tags.jsonl",
    [{"text": "john sits", "label": "B-PER O"}, {"text": "mary in paris", "label": "B-PER O X"}],
  )
  examples = data_lib.read(tags, config)
  with pytest.raises(UserError, match=rf"^{re.escape(tags)} row 2 word 3: label 'X' is not one"):
    encoding_lib.encode(examples, tokenizer, config, labels_lib.LabelMap(["B-PER", "O"]))
  config.task = "regression"
  values = _write_csv(tmp_path / "values.csv", ["good cat,1.5", "bad dog,high"])
  examples = data_lib.read(values, config)
  with pytest.raises(UserError, match=rf"^{re.escape(values)} row 2: regression label 'high'"):
    encoding_lib.encode(examples, tokenizer, config, None)


def test_a_qa_answer_not_at_its_answer_start_is_one_line_naming_the_row(tmp_path):
  config = config_lib.finetune_base_config()
  config.task = "qa"
  context = "The Denver  Broncos won in New York."

  def row(text, start):
    return {
      "question": "Who?",
      "context": context,
      "answers": {"text": [text], "answer_start": [start]},
    }

  fine = [row("Denver Broncos", 4), row("New York", context.index("New")), row("", -1)]
  path = _write_jsonl(tmp_path / "fine.jsonl", fine)  # whitespace aside, and no answer
  assert len(data_lib.read(path, config).rows) == 3
  for bad, message in [
    (row("zebra", 5), r"row 2: the answer 'zebra' is not at answer_start 5 .*reads 'enver'"),
    (row("York.", 40), r"row 2: the answer 'York.' at answer_start 40 lies outside its context"),
  ]:
    path = _write_jsonl(tmp_path / "bad.jsonl", [fine[0], bad])
    with pytest.raises(UserError, match=message):
      data_lib.read(path, config)


def test_tag_ids_instead_of_names_are_one_line_when_read(tmp_path):
  """A Hugging Face CoNLL export's integer tags: refused when the file is read (they were
  taken as names and crashed the first evaluation, after checkpoints saved their labels).
  """
  config = config_lib.finetune_base_config()
  config.task = "tokens"
  path = _write_jsonl(tmp_path / "ids.jsonl", [{"text": "john sits", "label": [1, 0]}])
  with pytest.raises(UserError, match=r"row 1: the tags \('label'\) are \[1, 0\] .*tag names"):
    data_lib.read(path, config)


@pytest.mark.slow
def test_one_class_is_refused_unless_the_labels_name_more(imported, tmp_path, capsys):
  """One label in the train data: refused (the loss would be 0 from the start); with
  config.data.labels naming two it trains, here without eval data (no evaluation).
  """
  train = _sentiment_csv(tmp_path / "train.csv", labels=("happy",))
  workdir = tmp_path / "w"
  line = _finetune_error(capsys, workdir, imported, f"--config.data.train={train}")
  assert line.startswith(f"error: the train data {train} has only one label 'happy'")
  assert "classification needs at least two" in line and "config.data.labels" in line
  assert not workdir.exists()
  line = _finetune_error(
    capsys, workdir, imported, f"--config.data.train={train}", "--config.data.labels=happy"
  )
  assert line.startswith("error: config.data.labels='happy' names only one label 'happy'")

  stdout = _finetune(
    workdir,
    imported,
    f"--config.data.train={train}",
    "--config.data.labels=happy,sad",
    "--config.train.steps=2",
  )
  assert "done: 2 steps" in stdout
  assert run_lib.load(str(workdir)).meta["labels"] == ["happy", "sad"]
  assert [r["step"] for r in _records(str(workdir), "train")] == [2]
  assert _records(str(workdir), "eval") == []


def test_one_class_may_train_a_kept_head_of_more():
  """A fine-tuned init_from's head is kept: its labels, not the data's one, are the map."""
  config = _config("classification")
  config.data.train = "train.csv"
  examples = data_lib.Examples([{"text": "x", "label": "happy"}], source="train.csv")
  init_meta = {"task": "classification", "labels": ["happy", "neutral", "sad"]}
  assert finetune._label_map("w", config, examples, None, init_meta).names == init_meta["labels"]
  config.head.reinit = True  # a new head: the data's one label is not enough
  with pytest.raises(UserError, match="has only one label 'happy'"):
    finetune._label_map("w", config, examples, None, init_meta)


def test_predict_refuses_an_existing_output(imported, tmp_path, capsys):
  """Checked before the run is loaded: the file stays as it was."""
  out = tmp_path / "out.jsonl"
  out.write_text("keep me\n")
  line = _cli_error(
    capsys, ["predict", "--workdir", imported, "--input", "in.csv", "--output", str(out)]
  )
  assert line == f"error: --output {out} exists; give another file, or --overwrite to replace it"
  assert out.read_text() == "keep me\n"
  line = _cli_error(
    capsys, ["predict", "--workdir", imported, "--input", "in.csv", "--output", "p.csv"]
  )
  assert line == (
    "error: --output p.csv: predict writes JSON Lines, one object per row; name the file "
    ".jsonl (e.g. p.jsonl)"
  )


@pytest.mark.slow
def test_predict_overwrite_replaces_the_output(classify, tmp_path):
  out = tmp_path / "out.jsonl"
  out.write_text("keep me\n")
  argv = ["predict", "--workdir", classify["workdir"], "--input", classify["files"]["eval"]]
  assert cli.main([*argv, "--output", str(out), "--overwrite"]) == 0
  predicted = [json.loads(line) for line in open(out)]
  assert len(predicted) == 24 and {p["label"] for p in predicted} <= {"happy", "neutral", "sad"}
  assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]  # no temporary file left


@pytest.mark.slow
def test_predict_reads_a_txt_of_one_text_per_line(classify, pairs, tmp_path, capsys):
  rows = [json.loads(line) for line in open(classify["files"]["eval"])]
  texts = tmp_path / "texts.txt"
  texts.write_text("".join(r["text"] + "\n" + ("\n" if i == 3 else "") for i, r in enumerate(rows)))
  workdir = classify["workdir"]
  commands.predict_main(workdir, str(texts), str(tmp_path / "from_txt.jsonl"))
  commands.predict_main(workdir, classify["files"]["eval"], str(tmp_path / "from_jsonl.jsonl"))
  from_txt = [json.loads(line) for line in open(tmp_path / "from_txt.jsonl")]
  blank = from_txt.pop(4)  # the blank line's: predict keeps one line per row
  assert blank["text"] == ""
  assert from_txt == [json.loads(line) for line in open(tmp_path / "from_jsonl.jsonl")]
  assert [p["text"] for p in from_txt] == [r["text"] for r in rows]
  line = _cli_error(
    capsys,
    [
      "predict",
      "--workdir",
      pairs[0],
      "--input",
      str(texts),
      "--output",
      str(tmp_path / "x.jsonl"),
    ],
  )
  assert "a .txt file holds one text per line, and this classification run reads" in line
  with pytest.raises(UserError, match=r"a \.txt file has no labels; give a \.csv"):
    data_lib.read(str(texts), commands.load(workdir)[1])


@pytest.mark.parametrize(
  "target",
  ["metrics.jsonl", "config.json", "checkpoints/0/out.jsonl", "best/out.jsonl", "tokenizer/x"],
)
def test_predict_never_writes_over_a_run_file(imported, tmp_path, capsys, target):
  """Even with --overwrite; of the run predicted with or of another run (a directory with
  checkpoints/).
  """
  other = tmp_path / "other_run"
  (other / "checkpoints").mkdir(parents=True)
  (other / "metrics.jsonl").write_text('{"step": 1}\n')
  for run in (imported, str(other)):
    out = os.path.join(run, target)
    before = open(out, "rb").read() if os.path.isfile(out) else None
    argv = ["predict", "--workdir", imported, "--input", "in.csv", "--output", out, "--overwrite"]
    line = _cli_error(capsys, argv)
    owner, name = os.path.realpath(run), target.split("/")[0]
    assert line.startswith(f"error: --output {out} is the run {owner}'s own {name}; write")
    assert (open(out, "rb").read() if os.path.isfile(out) else None) == before


# --- 7. frozen encoder, re-initialised layers ------------------------------------------------


@pytest.mark.slow
def test_freeze_encoder_keeps_bert_exactly(regression, imported):
  """The encoder of steps 4 and 8 is the starting one: init_from's below the top layer."""
  workdir, _, _ = regression
  init = run_lib.load(imported).params["bert"]
  at_4 = run_lib.load(workdir, step=4).params
  at_8 = run_lib.load(workdir, step=8).params
  assert _params_equal(at_4["bert"], at_8["bert"])
  for name in ("embeddings",):
    assert _params_equal(at_8["bert"][name], init[name])
  assert _params_equal(at_8["bert"]["encoder"]["layer_0"], init["encoder"]["layer_0"])
  assert not np.array_equal(at_4["classifier"]["kernel"], at_8["classifier"]["kernel"])


@pytest.mark.slow
def test_reinit_top_layer(regression, imported):
  """reinit_layers=1: layer 1 and the pooler are fresh (not init_from's), layer 0 is not."""
  workdir, _, _ = regression
  init = run_lib.load(imported).params["bert"]
  params = run_lib.load(workdir, step=4).params["bert"]
  assert sorted(params["encoder"]) == ["layer_0", "layer_1"]
  fresh = (params["encoder"]["layer_1"], params["pooler"])
  for ours, theirs in zip(fresh, (init["encoder"]["layer_1"], init["pooler"])):
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
      if np.asarray(b).std() > 0:  # kernels (LayerNorm starts at 1 and 0, biases at 0)
        assert not np.array_equal(a, b)


@pytest.mark.parametrize("layout", ["layers", "groups"])
def test_reinit_top_layers_of_scanned_encoders(layout):
  """The top 2 of 7 layers fresh in either scanned layout: BERT's `layers` (a leading layer
  axis) and ModernBERT's `layer_0` + `groups` of 3 (layer 1 + 3 g + j in groups/layer_j).
  Layer i holds the value i; fresh values are -1.
  """
  jnp = jax.numpy
  if layout == "layers":
    old = {"layers": {"w": jnp.arange(7.0)}}
    new = {"layers": {"w": -jnp.ones(7)}}
  else:
    old = {"layer_0": {"w": jnp.zeros(())}}
    old["groups"] = {f"layer_{j}": {"w": 1.0 + 3 * jnp.arange(2.0) + j} for j in range(3)}
    new = jax.tree_util.tree_map(lambda a: -jnp.ones_like(a), old)
  pooler = {"kernel": jnp.zeros((2, 2))}
  params = {"bert": {"encoder": old, "pooler": pooler}, "head": {"w": jnp.ones(())}}
  fresh = {"encoder": new, "pooler": {"kernel": -jnp.ones((2, 2))}}
  out = finetune._reinit_top_layers(params, fresh, 2)
  encoder = out["bert"]["encoder"]
  assert jax.tree_util.tree_structure(encoder) == jax.tree_util.tree_structure(old)
  values = [float(a) for a in jax.tree_util.tree_leaves(convert.unscan(out)["bert"]["encoder"])]
  by_layer = dict(zip(sorted(convert.unscan(out)["bert"]["encoder"]), values))
  assert [by_layer[f"layer_{i}"] for i in range(7)] == [0, 1, 2, 3, 4, -1, -1]
  np.testing.assert_array_equal(out["bert"]["pooler"]["kernel"], -1)
  assert out["head"] is params["head"]


def test_reinit_layers_beyond_the_model_or_of_albert_are_refused():
  """Checked before the workdir is made: more layers than the model's, and any for ALBERT,
  whose encoder is its shared groups (no top layer of its own to reset).
  """
  config = config_lib.finetune_base_config()
  bert, albert = (types.SimpleNamespace(arch=a, num_layers=7) for a in ("bert", "albert"))
  config.head.reinit_layers = 7
  finetune._check_reinit_layers(config, bert)
  config.head.reinit_layers = 8
  with pytest.raises(UserError, match="reinit_layers=8 exceeds the model's 7 layers"):
    finetune._check_reinit_layers(config, bert)
  config.head.reinit_layers = 1
  with pytest.raises(UserError, match="does not apply to ALBERT"):
    finetune._check_reinit_layers(config, albert)


# --- 8. users' files in predict, evaluate and finetune ---------------------------------------


@pytest.fixture(scope="module")
def stars(tmp_path_factory, imported):
  """A 2-step run on JSON integer labels 1 and 2 (star ratings), no eval data: the quick
  run of the tests of users' files below.
  """
  base = tmp_path_factory.mktemp("stars")
  rows = [
    {"text": f"{'good' if i % 2 == 0 else 'bad'} {word}", "label": 1 + i % 2}
    for i, word in enumerate(FILLER[:16])
  ]
  train = _write_jsonl(base / "train.jsonl", rows)
  _finetune(base / "run", imported, f"--config.data.train={train}", "--config.train.steps=2")
  return str(base / "run")


def _last_json(capsys, argv):
  """The JSON object on the last stdout line of a command that must succeed."""
  capsys.readouterr()
  assert cli.main(argv) == 0
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow  # classify
def test_an_unreadable_checkpoint_names_the_steps_to_choose(classify, tmp_path, capsys):
  run = tmp_path / "run"
  shutil.copytree(classify["workdir"], run)
  (best,) = os.listdir(run / "best")
  os.remove(run / "best" / best / "meta" / "metadata")
  line = _cli_error(capsys, ["evaluate", "--workdir", str(run)])
  kept = sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())
  assert line.startswith(f"error: checkpoint {run}/best/{best} is unreadable (")
  assert line.endswith(f"; choose another step with --step (checkpoints/ has {kept})")
  assert _last_json(capsys, ["evaluate", "--workdir", str(run), "--step", str(kept[-1])])


def test_json_integer_labels_are_names_never_ids(stars, tmp_path, capsys):
  """JSON labels 1 and 2 train the names "1" and "2": an eval label 0 is an error naming
  its row (before, it was read as the id of "1"), 1 and "1" are one label, and the export
  and the predictions name the labels as given.
  """
  assert run_lib.load(stars).meta["labels"] == ["1", "2"]
  zero = _write_jsonl(
    tmp_path / "zero.jsonl", [{"text": "good cat", "label": 1}, {"text": "bad cat", "label": 0}]
  )
  assert _cli_error(capsys, ["evaluate", "--workdir", stars, "--data", zero]) == (
    f"error: {zero} row 2: label 0 is not one of the 2 labels the model was trained with "
    f"(1, 2); fix the data or fine-tune with it (config.data.labels)"
  )
  rows = [
    {"text": "good cat", "label": 1},
    {"text": "bad dog", "label": "2"},
    {"text": "good fish", "label": "1"},
    {"text": "bad tree", "label": 2},
  ]
  mixed = _write_jsonl(tmp_path / "mixed.jsonl", rows)
  predicted = _predict(stars, mixed, tmp_path / "p.jsonl")
  assert all(set(p["probabilities"]) == {"1", "2"} for p in predicted)
  metrics = _last_json(capsys, ["evaluate", "--workdir", stars, "--data", mixed])
  hits = [p["label"] == str(r["label"]) for p, r in zip(predicted, rows)]
  assert metrics["accuracy"] == pytest.approx(sum(hits) / len(rows), abs=1e-6)
  with open(os.path.join(_export(stars, tmp_path / "hf"), "config.json")) as f:
    exported = json.load(f)
  assert exported["id2label"] == {"0": "1", "1": "2"}
  assert exported["label2id"] == {"1": 0, "2": 1}


@pytest.mark.parametrize(
  "row, problem",
  [
    (
      {"txt": "good cat", "label": 1},
      "row 2 has no 'text' field (it has 'txt', 'label'); add it to the row, or name the "
      "field that holds the texts with {setting}",
    ),
    (
      {"text": 42, "label": 1},
      "row 2: 'text' is 42 (a number), not text; give a string there, or name the field "
      "that holds the texts with {setting}",
    ),
  ],
  ids=["no field", "a number"],
)
def test_a_row_without_text_is_one_line_naming_the_row_and_field(
  stars, imported, tmp_path, capsys, row, problem
):
  """Before: a KeyError or an AttributeError traceback in predict, evaluate and finetune."""
  data = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "good cat", "label": 1}, row])
  out = tmp_path / "p.jsonl"
  predict = ["predict", "--workdir", stars, "--input", data, "--output", str(out)]
  expected = f"error: {data} {problem.format(setting='--text-column')}"
  assert _cli_error(capsys, predict) == expected
  assert _cli_error(capsys, ["evaluate", "--workdir", stars, "--data", data]) == expected
  line = _finetune_error(capsys, tmp_path / "w", imported, f"--config.data.train={data}")
  assert line == f"error: {data} {problem.format(setting='config.data.text_column')}"
  assert not out.exists() and not (tmp_path / "w").exists()


def test_text_must_be_a_string_or_a_tokens_row_s_words(tmp_path):
  config = config_lib.finetune_base_config()
  for value, shown in ((None, "null"), (["good", "cat"], '["good", "cat"] (a list)')):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"text": "x", "label": "a"}, {"text": value}])
    with pytest.raises(UserError, match=rf"^{re.escape(path)} row 2: 'text' is {re.escape(shown)}"):
      data_lib.read(path, config, labelled=False)
  config.task = "tokens"
  words = _write_jsonl(
    tmp_path / "w.jsonl", [{"text": ["john", "sits"], "label": "B-PER O"}, {"text": ["x", 1]}]
  )
  with pytest.raises(
    UserError,
    match=r"row 2: 'text' is \[\"x\", 1\] \(a list\), not text; give a string or a list of words",
  ):
    data_lib.read(words, config, labelled=False)
  good = _write_jsonl(tmp_path / "g.jsonl", [{"text": ["john", "sits"], "label": "B-PER O"}])
  assert data_lib.read(good, config).rows == [{"words": ["john", "sits"], "tags": ["B-PER", "O"]}]
  config.task = "qa"
  qa = _write_jsonl(
    tmp_path / "q.jsonl", [{"question": "who ?", "context": "john"}, {"question": "who ?"}]
  )
  with pytest.raises(
    UserError, match=r"row 2 has no 'context' field \(it has 'question'\); add it to the row$"
  ):
    data_lib.read(qa, config, labelled=False)


def _probabilities_of_the_empty_text(workdir):
  """The run's label probabilities for [CLS] [SEP]: what a blank text is."""
  run = run_lib.load(workdir)
  tok = run.tokenizer
  ids = np.full((1, LENGTH), tok.pad_id, np.int32)
  ids[0, :2] = [tok.cls_id, tok.sep_id]
  mask = (np.arange(LENGTH) < 2).astype(np.int32)[None]
  arrays = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}
  logits = _our_logits(run, arrays)[0]
  return dict(zip(run.meta["labels"], np.exp(logits) / np.exp(logits).sum()))


def test_predict_writes_one_object_per_row_blank_ones_too(stars, tmp_path, capsys):
  """Line N of the output is row N of the input (.txt or CSV); a blank text is predicted as
  [CLS] [SEP]. Before, blank rows were dropped: silently in a .txt.
  """
  texts = ["good cat", "", "bad dog", "   ", "good fish"]
  txt = tmp_path / "texts.txt"
  txt.write_text("\n".join(texts) + "\n")
  csv_file = _write_csv(tmp_path / "texts.csv", [f"{t},1" for t in texts])
  empty = _probabilities_of_the_empty_text(stars)
  for path in (str(txt), csv_file):
    capsys.readouterr()
    predicted = _predict(stars, path, f"{path}.jsonl")
    assert "5 predictions" in capsys.readouterr().out
    assert [p["text"] for p in predicted] == texts
    for p in (predicted[1], predicted[3]):
      for label, probability in empty.items():
        assert p["probabilities"][label] == pytest.approx(float(probability), abs=1e-5)
  assert "(2 blank rows, predicted as empty texts" in _predict_summary(capsys, stars, csv_file)


def _predict_summary(capsys, workdir, input_file, *flags):
  """The summary line of a predict to a new file."""
  out = f"{input_file}.{len(flags)}.again.jsonl"
  capsys.readouterr()
  assert (
    cli.main(["predict", "--workdir", workdir, "--input", input_file, "--output", out, *flags]) == 0
  )
  return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_blank_tokens_row_is_kept_for_predict(imported, tmp_path):
  """A tokens row without words is [CLS] [SEP] and gets no tags, in its place."""
  config = _config("tokens")
  path = _write_jsonl(
    tmp_path / "w.jsonl", [{"text": ["john", "sits"]}, {"text": []}, {"text": "mary in paris"}]
  )
  assert data_lib.read(path, config, labelled=False).skipped_empty == 1  # distill, eval
  examples = data_lib.read(path, config, labelled=False, keep_blank=True)
  assert [r["words"] for r in examples.rows] == [["john", "sits"], [], ["mary", "in", "paris"]]
  assert examples.blank == 1
  tokenizer = run_lib.tokenizer(imported)
  arrays, _ = encoding_lib.encode(examples, tokenizer, config, None)
  assert arrays["input_ids"][1, :3].tolist() == [
    tokenizer.cls_id,
    tokenizer.sep_id,
    tokenizer.pad_id,
  ]
  logits = np.random.default_rng(0).normal(size=(3, config.data.max_seq_length, 2))
  predicted = evaluate_lib.predictions(config, logits, arrays, examples, ["B-PER", "O"])
  assert predicted[1] == {"words": [], "tags": []}
  assert [len(p["tags"]) for p in predicted] == [2, 0, 3]


@pytest.mark.slow
def test_predict_says_why_a_qa_row_without_question_or_context_is_not_answered(imported, tmp_path):
  rng = random.Random(3)
  train = _write_jsonl(tmp_path / "train.jsonl", [_qa_row(rng, i) for i in range(8)])
  workdir = str(tmp_path / "run")
  qa_args = ("--config.data.max_query_length=8", "--config.data.doc_stride=8")
  _finetune(
    workdir,
    imported,
    "--config.task=qa",
    f"--config.data.train={train}",
    *qa_args,
    "--config.train.steps=1",
  )
  rows = [_qa_row(rng, 10), {**_qa_row(rng, 11), "question": ""}]
  rows += [{**_qa_row(rng, 12), "context": "  "}, _qa_row(rng, 13)]
  predicted = _predict(workdir, _write_jsonl(tmp_path / "q.jsonl", rows), tmp_path / "p.jsonl")
  assert [p["id"] for p in predicted] == ["q10", "q11", "q12", "q13"]
  assert predicted[1] == {
    "id": "q11",
    "answer": None,
    "probability": None,
    "start": None,
    "error": "empty question: nothing to answer",
  }
  assert predicted[2]["error"] == "empty context: nothing to answer"
  answerable = _write_jsonl(tmp_path / "a.jsonl", [rows[0], rows[3]])
  assert [predicted[0], predicted[3]] == _predict(workdir, answerable, tmp_path / "a_out.jsonl")


def test_a_byte_order_mark_is_dropped(stars, tmp_path, capsys):
  """Excel's "CSV UTF-8" starts with U+FEFF: before, its first column was '\\ufefftext'
  (and a JSON Lines file's first line was no JSON).
  """
  config = config_lib.finetune_base_config()
  csv_text = "text,label\ngood cat,1\nbad dog,2\n"
  files = {
    "a.csv": csv_text,
    "a.tsv": csv_text.replace(",", "\t"),
    "a.jsonl": '{"text": "good cat", "label": 1}\n{"text": "bad dog", "label": 2}\n',
    "a.txt": "good cat\nbad dog\n",
  }
  for folder, mark in (("plain", ""), ("marked", "\ufeff")):
    (tmp_path / folder).mkdir()
    for name, text in files.items():
      (tmp_path / folder / name).write_text(mark + text, encoding="utf-8")
  for name in files:
    plain, marked = (str(tmp_path / folder / name) for folder in ("plain", "marked"))
    assert open(marked, "rb").read(3) == b"\xef\xbb\xbf"
    labelled = not name.endswith(".txt")
    rows = data_lib.read(marked, config, labelled=labelled).rows
    assert rows == data_lib.read(plain, config, labelled=labelled).rows
    assert rows[0]["text"] == "good cat"
  marked_csv = str(tmp_path / "marked" / "a.csv")
  assert _predict(stars, marked_csv, tmp_path / "m.jsonl") == _predict(
    stars, str(tmp_path / "plain" / "a.csv"), tmp_path / "p.jsonl"
  )
  metrics = _last_json(capsys, ["evaluate", "--workdir", stars, "--data", marked_csv])
  assert metrics == _last_json(
    capsys, ["evaluate", "--workdir", stars, "--data", str(tmp_path / "plain" / "a.csv")]
  )


def test_none_for_a_file_says_how_to_leave_it_empty(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError) as e:
    data_lib.read("None", _config("classification"))
  assert str(e.value) == (
    "data file None does not exist; give a .csv, .tsv or .jsonl file or tfds:NAME:SPLIT (to "
    "leave a file setting empty, give nothing: --config.data.eval=)"
  )


def test_a_tsv_is_one_row_per_line_and_its_quotes_are_text(tmp_path):
  """GLUE's files (and original BERT's reader): a `"` in a TSV cell is text. Before, an
  unclosed quote joined the next row to the text, and the quotes were dropped.
  """
  path = tmp_path / "q.tsv"
  path.write_text(
    'text\tlabel\n"Best movie ever\tpos\nthe 12" pizza\tneg\n" shrek " is a hoot\tpos\n'
  )
  assert data_lib.read_records(str(path)) == [
    {"text": '"Best movie ever', "label": "pos"},
    {"text": 'the 12" pizza', "label": "neg"},
    {"text": '" shrek " is a hoot', "label": "pos"},
  ]


def test_a_file_not_utf8_is_named_with_the_offset_from_its_start(tmp_path):
  """Before, the offset was counted from the text stream's chunk: 7341 for byte 15533."""
  path = tmp_path / "latin1.csv"
  path.write_bytes(b"text,label\n" + b"fine text,a\n" * 1400 + "caf\xe9,b\n".encode("latin-1"))
  offset = len(b"text,label\n" + b"fine text,a\n" * 1400 + b"caf")
  with pytest.raises(UserError) as e:
    data_lib.read_records(str(path))
  assert str(e.value) == (
    f"{path} is not UTF-8 text (invalid continuation byte at byte {offset}); convert it, e.g. "
    f"iconv -f latin1 -t utf-8 {path} > NEW_FILE for Latin-1"
  )
  # A character cut by the 1 MiB read, then a byte that is no UTF-8.
  head = b"a" * ((1 << 20) - 1) + "é".encode() + b"x"
  path.write_bytes(head + b"\xff")
  assert storage.not_utf8(str(path)) == f"invalid start byte at byte {len(head)}"
  path.write_bytes(head + "é".encode()[:1])  # cut short at the end
  assert storage.not_utf8(str(path)) == f"unexpected end of data at byte {len(head)}"


@pytest.mark.parametrize(
  "name, content, problem",
  [
    (
      "r.csv",
      "text,label\ngood,pos\nhello, world,pos\n",
      'quote a text that holds a comma ("hello, world")',
    ),
    (
      "r.tsv",
      "text\tlabel\ngood\tpos\nhello\tworld\tpos\n",
      "a text may not hold a tab; replace it with a space",
    ),
  ],
)
def test_a_row_with_more_cells_than_the_header_is_named(tmp_path, name, content, problem):
  """Before, the extra cell was dropped: "hello, world,pos" trained label " world"."""
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(UserError) as e:
    data_lib.read_records(str(path))
  assert str(e.value) == (
    f"{path} row 2 has 3 cells but its header names 2 (text, label); {problem}"
  )


def test_predict_makes_its_folder_and_writes_stdout_for_a_dash(
  stars, tmp_path, capsys, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  data = _write_jsonl(tmp_path / "in.jsonl", [{"text": "good cat"}, {"text": "bad dog"}])
  in_file = _predict(stars, data, tmp_path / "new" / "deeper" / "p.jsonl")  # before: refused
  assert len(in_file) == 2
  capsys.readouterr()
  assert cli.main(["predict", "--workdir", stars, "--input", data, "--output", "-"]) == 0
  captured = capsys.readouterr()
  assert [json.loads(line) for line in captured.out.splitlines()] == in_file
  assert "2 predictions -> stdout" in captured.err
  assert not (tmp_path / "-").exists()
  argv = ["predict", "--workdir", stars, "--output", str(tmp_path / "x.jsonl"), "--input"]
  assert _cli_error(capsys, [*argv, str(tmp_path / "none.csv")]) == (
    f"error: data file {tmp_path / 'none.csv'} does not exist; give a .csv, .tsv, .jsonl or "
    f".txt file or tfds:NAME:SPLIT"
  )
  (tmp_path / "a.xlsx").write_text("x")
  assert _cli_error(capsys, [*argv, str(tmp_path / "a.xlsx")]) == (
    f"error: {tmp_path / 'a.xlsx'}: unknown file type; give a .csv, .tsv, .jsonl or .txt "
    f"file or tfds:NAME:SPLIT"
  )
  under_a_file = ["predict", "--workdir", stars, "--input", data, "--output", f"{data}/p.jsonl"]
  assert _cli_error(capsys, under_a_file) == (
    f"error: --output {data}/p.jsonl: {data} is a file, not a folder; write elsewhere, e.g. "
    f"--output predictions.jsonl"
  )
  assert not os.path.exists(tmp_path / "x.jsonl")


def test_predict_refuses_a_folder_it_may_not_write_in_before_predicting(stars, read_only, capsys):
  data = _write_jsonl(read_only.parent / "in.jsonl", [{"text": "good cat"}])
  output = f"{read_only}/new/p.jsonl"
  argv = ["predict", "--workdir", stars, "--input", data, "--output", output]
  assert _cli_error(capsys, argv) == (
    f"error: --output {output}: you may not write in {read_only}; write elsewhere, e.g. "
    f"--output predictions.jsonl"
  )
  assert os.listdir(read_only) == []


def test_predict_and_evaluate_name_the_text_column_and_keep_ids(stars, tmp_path, capsys):
  rows = [{"id": 7, "review": "good cat", "label": 1}, {"id": "b", "review": "bad dog", "label": 2}]
  reviews = _write_jsonl(tmp_path / "reviews.jsonl", rows)
  texts = _write_jsonl(
    tmp_path / "texts.jsonl", [{"text": r["review"], "label": r["label"]} for r in rows]
  )
  plain = _predict(stars, texts, tmp_path / "plain.jsonl")
  by_flag = str(tmp_path / "by_flag.jsonl")
  argv = ["predict", "--workdir", stars, "--input", reviews, "--output", by_flag]
  assert cli.main([*argv, "--text-column", "review"]) == 0
  with open(by_flag) as f:
    named = [json.loads(line) for line in f]
  assert named == [{"id": r["id"], **p} for r, p in zip(rows, plain)]
  assert [list(p)[:2] for p in named] == [["id", "text"]] * 2
  evaluate = ["evaluate", "--workdir", stars, "--data"]
  assert _last_json(capsys, [*evaluate, reviews, "--text-column", "review"]) == _last_json(
    capsys, [*evaluate, texts]
  )
  assert _cli_error(capsys, [*evaluate, reviews]) == (
    f"error: {reviews} has no column 'text' (--text-column); its columns are 'id', "
    f"'review', 'label'"
  )
  assert _cli_error(capsys, [*evaluate, texts, "--text-pair-column", "review"]) == (
    f"error: --text-pair-column: {stars} was trained on single texts (no "
    f"config.data.text_pair_column); drop it, or name the texts with --text-column"
  )
  config = config_lib.finetune_base_config()
  config.data.text_pair_column = "hypothesis"
  with pytest.raises(UserError, match=r"has no column 'hypothesis' \(--text-pair-column\)"):
    data_lib.read(texts, config, flags=commands.COLUMN_FLAGS)


@pytest.mark.parametrize(
  "name, content, overrides, problem",
  [
    (
      "list.jsonl",
      '{"text": "good cat", "label": "a"}\n{"text": "bad dog", "label": ["b"]}\n',
      [],
      "row 2: the label ('label') is [\"b\"] (a list); give one label per row, a string or "
      "a number",
    ),
    (
      "nan.jsonl",  # before: trained as the class "nan"
      '{"text": "good cat", "label": 2}\n{"text": "bad dog", "label": NaN}\n',
      [],
      "row 2: the label ('label') is NaN (a number), not a label; give a label name or a "
      "finite number, or remove the row",
    ),
    (
      "nan.csv",
      "text,label\ngood cat,1.5\nbad dog,nan\n",
      ["--config.task=regression"],
      "row 2: regression label 'nan' is not a finite number; fix the row",
    ),
    (
      "twice.csv",
      "text,text,label\ngood cat,x,a\nbad dog,x,b\n",
      [],
      ": its header names the column 'text' twice; give each column its own name",
    ),
    (
      "tabs.csv",
      "text\tlabel\ngood cat\ta\nbad dog\tb\n",
      [],
      " is tab-separated (its header is 'text\\tlabel'); name it .tsv, or separate its "
      "columns with commas",
    ),
  ],
  ids=["list label", "NaN class label", "nan regression label", "a column twice", "tabs in a .csv"],
)
def test_bad_labels_and_headers_are_one_line(
  imported, tmp_path, capsys, name, content, overrides, problem
):
  """Before: a TypeError traceback (a list label), a run to a NaN loss blaming the learning
  rate (nan), training on the last of two same-named columns, a missing-column error.
  """
  data = tmp_path / name
  data.write_text(content)
  line = _finetune_error(
    capsys, tmp_path / "w", imported, f"--config.data.train={data}", *overrides
  )
  assert line == f"error: {data}{'' if problem.startswith(':') else ' '}{problem.lstrip()}"
  assert not (tmp_path / "w").exists()


def test_a_run_s_missing_or_damaged_files_and_paths_are_one_line(stars, tmp_path, capsys):
  """Before: FileNotFoundError and JSONDecodeError tracebacks (config.json), a resume blamed
  on init_from, "train first" for a file, and an output made under a link to nothing.
  """
  texts = tmp_path / "texts.txt"
  texts.write_text("good cat\n")
  run = tmp_path / "run"
  shutil.copytree(stars, run)
  predict = ["predict", "--workdir", str(run), "--input", str(texts), "--output"]
  (run / "config.json").unlink()
  assert _cli_error(capsys, [*predict, str(tmp_path / "p.jsonl")]) == (
    f"error: {run} has no config.json: it holds the run's settings (task, columns, lengths); "
    f"restore it from where the run was made"
  )
  (run / "config.json").write_text("{")
  assert _cli_error(capsys, ["evaluate", "--workdir", str(run), "--data", str(texts)]).startswith(
    f"error: {run / 'config.json'} is damaged (not JSON: Expecting property name"
  )
  shutil.copy(os.path.join(stars, "config.json"), run / "config.json")
  config = json.loads((run / "config.json").read_text())
  config["data"]["eval"] = str(tmp_path / "moved.jsonl")
  (run / "config.json").write_text(json.dumps(config))
  assert _cli_error(capsys, ["evaluate", "--workdir", str(run)]) == (
    f"error: {tmp_path / 'moved.jsonl'}, the run's config.data.eval, does not exist (moved, "
    f"or a path relative to another folder); give --data FILE"
  )
  os.symlink(tmp_path / "nowhere", tmp_path / "link")
  assert _cli_error(capsys, [*predict, str(tmp_path / "link" / "p.jsonl")]) == (
    f"error: --output {tmp_path / 'link' / 'p.jsonl'}: {tmp_path / 'link'} is a link to "
    f"{tmp_path / 'nowhere'}, which does not exist; remove the link, or make the folder it "
    f"points to"
  )
  assert _cli_error(capsys, ["evaluate", "--workdir", str(texts)]) == (
    f"error: {texts} is a file, not a run directory; give the folder a run wrote"
  )
  assert not (tmp_path / "nowhere").exists() and not (tmp_path / "p.jsonl").exists()
