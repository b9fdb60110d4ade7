"""Sentence-embedding training (`config.task="embedding"`) against independent truths.

The truths: sentence-transformers' own losses (`MultipleNegativesRankingLoss`, its symmetric
and hard-negative forms, `TripletLoss`) and `Pooling` on the same tensors; hand-computed
retrieval metrics; a second run (exact resume); the export loaded by `SentenceTransformer`
with no custom code, against `bert-jax embed`. The model is a random 2-layer BERT (hidden
32) with a hand-made WordPiece vocabulary, imported with `import-hf`. (MiniLM on BBC news
titles <-> bodies is measured in the README, not here: a run that fits the test budget is
too short to raise MRR@10 reliably from an already strong model.)
"""

import contextlib
import io
import json
import os
import random
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import cli
from bert_jax import run as run_lib
from bert_jax.finetune import contrastive, retrieval
from bert_jax.model import embedding
from tests.conftest import ONE_DEVICE, import_tiny_bert

torch = pytest.importorskip("torch", reason="needs torch")
transformers = pytest.importorskip("transformers", reason="needs transformers")
st = pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()

RECIPE = "configs/finetune/embeddings.py"
LENGTH = 16
WORDS = (
  "the a cat dog bird fish red blue green small big runs jumps sits sleeps on under tree".split()
)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS


# --- 1. the losses and pooling against sentence-transformers ---------------------------------


def _random(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _st_loss(loss, embeddings):
  """The loss value and its gradients with respect to each input, from sentence-transformers."""
  tensors = [torch.tensor(e, requires_grad=True) for e in embeddings]
  value = loss.compute_loss_from_embeddings(tensors, None)
  value.backward()
  return value.item(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize(
  "symmetric, negatives",
  [(False, False), (True, False), (False, True)],
  ids=["mnrl", "symmetric", "hard negatives"],
)
def test_mnrl_matches_sentence_transformers(symmetric, negatives):
  from sentence_transformers.sentence_transformer import losses

  sides = [_random((6, 8), seed) for seed in range(3 if negatives else 2)]
  kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
  theirs = losses.MultipleNegativesRankingLoss(None, scale=7.0, **(kwargs if symmetric else {}))
  want, want_grads = _st_loss(theirs, sides)

  def ours(*xs):
    per_row, _ = contrastive.mnrl_losses(*xs, scale=7.0, symmetric=symmetric)
    return per_row.mean()

  got, grads = jax.value_and_grad(ours, argnums=tuple(range(len(sides))))(*map(jnp.asarray, sides))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), w, atol=1e-5)


def test_triplet_matches_sentence_transformers():
  from sentence_transformers.sentence_transformer import losses

  sides = [_random((6, 8), seed) for seed in range(3)]
  sides[2][:3] = sides[0][:3] + 0.1  # some triplets inside the margin, some outside
  want, want_grads = _st_loss(losses.TripletLoss(None, triplet_margin=3.0), sides)

  def ours(*xs):
    return contrastive.triplet_losses(*xs, margin=3.0)[0].mean()

  got, grads = jax.value_and_grad(ours, argnums=(0, 1, 2))(*map(jnp.asarray, sides))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), w, atol=1e-5)


@pytest.mark.parametrize("pooling", embedding.POOLINGS)
def test_pooling_matches_sentence_transformers(pooling):
  from sentence_transformers.sentence_transformer.modules import Pooling

  hidden = _random((3, 5, 8), 0)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], np.int32)
  features = {"token_embeddings": torch.tensor(hidden), "attention_mask": torch.tensor(mask)}
  want = Pooling(8, pooling_mode=pooling)(features)["sentence_embedding"].numpy()
  got = np.asarray(embedding.pool(jnp.asarray(hidden), jnp.asarray(mask), pooling))
  np.testing.assert_allclose(got, want, atol=1e-6)


# --- 2. retrieval metrics by hand -------------------------------------------------------------


def test_retrieval_metrics_by_hand():
  # 4 queries, 12 documents; query q's relevant document is relevant[q].
  similarity = np.zeros((4, 12))
  similarity[0, 0] = 0.9  # rank 1
  similarity[1, [1, 3]] = [0.5, 0.8]  # relevant 1: one above -> rank 2
  similarity[2, :] = np.linspace(1.0, 0.0, 12)  # relevant 11: ten above -> rank 12
  similarity[3, [2, 5, 6]] = [0.4, 0.7, 0.6]  # relevant 2: two above -> rank 3
  relevant = np.array([0, 1, 11, 2])
  np.testing.assert_array_equal(retrieval.ranks(similarity, relevant), [1, 2, 12, 3])
  values = retrieval.scores_of_ranks(retrieval.ranks(similarity, relevant))
  assert values["mrr@10"] == pytest.approx((1 + 1 / 2 + 0 + 1 / 3) / 4)
  assert values["recall@1"] == pytest.approx(1 / 4)
  assert values["recall@10"] == pytest.approx(3 / 4)
  corpus, index = retrieval.corpus_of(["b", "a", "b", "c"])
  assert corpus == ["b", "a", "c"] and index.tolist() == [0, 1, 0, 2]


# --- 3. a tiny model trained end to end --------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """A random tiny Hugging Face BERT with a hand-made vocabulary, imported (the init_from)."""
  return import_tiny_bert(tmp_path_factory, VOCAB)


def _pair(rng):
  """An anchor of 2-4 words; its positive repeats them among other words; a random negative."""
  anchor = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
  positive = anchor + [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
  rng.shuffle(positive)
  negative = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
  return {"query": " ".join(anchor), "doc": " ".join(positive), "neg": " ".join(negative)}


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def _finetune(workdir, imported, *overrides):
  argv = [
    "finetune",
    "--config",
    RECIPE,
    "--workdir",
    str(workdir),
    f"--config.init_from={imported}",
    f"--config.data.max_seq_length={LENGTH}",
    "--config.data.text_column=query",
    "--config.data.text_pair_column=doc",
    "--config.train.batch_size=8",
    ONE_DEVICE,
    *overrides,
  ]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    rc = cli.main(argv)
  assert rc == 0, out.getvalue()
  return out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, imported):
  """12 steps with hard negatives, max pooling, normalised; checkpoints at 6 and 12."""
  base = tmp_path_factory.mktemp("emb")
  rng = random.Random(0)
  files = {
    "train": _write_jsonl(base / "train.jsonl", [_pair(rng) for _ in range(48)]),
    "eval": _write_jsonl(base / "eval.jsonl", [_pair(rng) for _ in range(24)]),
  }
  args = (
    f"--config.data.train={files['train']}",
    f"--config.data.eval={files['eval']}",
    "--config.data.negative_column=neg",
    "--config.embedding.pooling=max",
    "--config.train.steps=12",
    "--config.train.learning_rate=1e-3",
    "--config.eval.every_steps=6",
    "--config.eval.at_start=True",
  )
  stdout = _finetune(base / "run", imported, *args)
  return {"workdir": str(base / "run"), "files": files, "args": args, "stdout": stdout}


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _params_equal(a, b):
  same = jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
  return all(jax.tree_util.tree_leaves(same))


@pytest.mark.slow
def test_resume_is_exact(trained, imported, tmp_path):
  """Delete the last checkpoint (and best/): the rerun resumes from step 6 and ends on the
  same parameters, bit for bit, with the same eval.
  """
  straight = trained["workdir"]
  assert run_lib.open_checkpoints(straight)[0].all_steps() == [6, 12]
  resumed = str(tmp_path / "resumed")
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "12"))
  shutil.rmtree(os.path.join(resumed, "best"))
  stdout = _finetune(resumed, imported, *trained["args"])
  assert f"resumed from {os.path.join(resumed, 'checkpoints', '6')}" in stdout
  a = run_lib.load(straight, step=12).params
  b = run_lib.load(resumed, step=12).params
  assert _params_equal(a, b)
  assert _records(resumed, "eval")[-1] == _records(straight, "eval")[-1]


@pytest.mark.slow
def test_export_loads_in_sentence_transformers_and_equals_embed(trained, tmp_path, capsys):
  """`SentenceTransformer(export)` with no custom code gives `bert-jax embed`'s vectors;
  `evaluate` prints the best eval's retrieval metrics, which the exported vectors give too.
  """
  workdir, hf_dir = trained["workdir"], str(tmp_path / "hf")
  assert cli.main(["export-hf", "--workdir", workdir, "--out", hf_dir]) == 0
  assert sorted(os.listdir(os.path.join(hf_dir, "2_Normalize"))) == ["config.json"]
  pairs = [json.loads(line) for line in open(trained["files"]["eval"])]
  texts = [p["query"] for p in pairs] + ["green fish sleeps under the big blue tree . " * 3]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
  out = str(tmp_path / "vectors.npy")
  texts_file = str(tmp_path / "texts.txt")
  argv = ["embed", "--workdir", workdir, "--input", texts_file, "--output", out]
  assert cli.main([*argv, "--pooling", "cls"]) == 0  # said to be ignored: the run's own
  assert "--pooling cls is ignored: " in capsys.readouterr().err
  ours = np.load(out)
  _, info = transformers.AutoModel.from_pretrained(hf_dir, output_loading_info=True)
  assert not any(info.values()), info  # a complete BertModel, nothing newly initialised
  model = st.SentenceTransformer(hf_dir, device="cpu")
  assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
  theirs = model.encode(texts, convert_to_numpy=True, batch_size=8)
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
  # The run's own eval file: its texts are in the run's column ("query"), not "text".
  own = str(tmp_path / "own.npy")
  argv = ["embed", "--workdir", workdir, "--input", trained["files"]["eval"], "--output", own]
  assert cli.main(argv) == 0
  np.testing.assert_allclose(np.load(own), ours[:-1], atol=1e-6)
  # evaluate: the best eval (kept by mrr@10), and the same numbers from the exported vectors
  capsys.readouterr()
  assert cli.main(["evaluate", "--workdir", workdir]) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  evals = _records(workdir, "eval")
  assert evals[0]["step"] == 0  # eval.at_start: the untrained model's numbers
  assert metrics["mrr@10"] == pytest.approx(max(r["mrr@10"] for r in evals), abs=1e-6)
  corpus, relevant = retrieval.corpus_of([p["doc"] for p in pairs])
  queries = model.encode([p["query"] for p in pairs], convert_to_numpy=True)
  documents = model.encode(corpus, convert_to_numpy=True)
  rank = retrieval.ranks(queries @ documents.T, relevant)
  for key, value in retrieval.scores_of_ranks(rank).items():
    assert metrics[key] == pytest.approx(value, abs=1e-6), key


# --- 4. bad input: one error line each ---------------------------------------------------------


def _error(capsys, argv):
  capsys.readouterr()
  assert cli.main(argv) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


@pytest.fixture
def bad_run(imported, tmp_path):
  """(argv of a run on `rows`, its workdir) for the bad-input tests."""

  def argv(rows, *overrides):
    data = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    return [
      "finetune",
      "--config",
      RECIPE,
      "--workdir",
      str(tmp_path / "run"),
      f"--config.init_from={imported}",
      f"--config.data.train={data}",
      "--config.data.eval=",
      "--config.data.text_column=query",
      "--config.data.text_pair_column=doc",
      "--config.train.batch_size=2",
      ONE_DEVICE,
      *overrides,
    ]

  return argv


GOOD = [{"query": "red cat", "doc": "the red cat runs"}, {"query": "dog", "doc": "a dog sits"}]


@pytest.mark.parametrize(
  "rows, overrides, message",
  [
    (
      GOOD + [{"query": "fish", "doc": "  "}],
      (),
      "pairs.jsonl row 3 has an empty positive (column 'doc'); every pair needs text",
    ),
    (GOOD, ("--config.train.batch_size=1",), "need at least 2: raise the batch size"),
    (GOOD, ("--config.embedding.pooling=sum",), "config.embedding.pooling='sum' is not one of"),
    (GOOD, ("--config.data.text_pair_column=answer",), "has no column 'answer'"),
    (GOOD, ("--config.data.text_pair_column=",), "needs config.data.text_pair_column"),
  ],
  ids=["empty side", "batch of 1", "unknown pooling", "missing pair column", "no pair column"],
)
def test_bad_input_is_one_error_line(bad_run, capsys, tmp_path, rows, overrides, message):
  assert message in _error(capsys, bad_run(rows, *overrides))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


# --- 5. embed's input and output ---------------------------------------------------------------


def _embed(imported, input_path, output, *flags):
  """Runs `bert-jax embed` of the tiny model; returns its vectors."""
  argv = ["embed", "--workdir", imported, "--input", str(input_path), "--output", str(output)]
  assert cli.main([*argv, *flags]) == 0
  return np.load(output)


@pytest.mark.parametrize(
  "row, problem",
  [
    ({"title": "red cat"}, "row 2 has no 'text' field (it has 'title'); add it to the row"),
    ({"text": None}, "row 2: 'text' is null, not text; give a string there"),
    ({"text": 3}, "row 2: 'text' is 3 (a number), not text; give a string there"),
  ],
  ids=["no field", "null", "a number"],
)
def test_embed_refuses_a_row_without_text(imported, tmp_path, capsys, row, problem):
  """Before, such a row was embedded as the empty text, silently."""
  data = _write_jsonl(tmp_path / "texts.jsonl", [{"text": "a dog"}, row, {"text": "fish"}])
  out = tmp_path / "v.npy"
  argv = ["embed", "--workdir", imported, "--input", data, "--output", str(out)]
  assert _error(capsys, argv) == (
    f"error: --input {data} {problem}, or name the field that holds the texts with --column"
  )
  assert not out.exists()


def test_embed_drops_a_byte_order_mark_and_makes_its_folder(imported, tmp_path):
  """The vectors of a file with U+FEFF first are those of the file without it (before, the
  mark was embedded with the first text, and a CSV's first column was '\\ufefftext').
  """
  texts = ["red cat", "", "the dog runs"]
  plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
  plain.write_text("\n".join(texts) + "\n", encoding="utf-8")
  marked.write_text("\ufeff" + "\n".join(texts) + "\n", encoding="utf-8")
  (tmp_path / "marked.csv").write_text(
    "\ufefftext,n\n" + "".join(f"{t},{i}\n" for i, t in enumerate(texts)), encoding="utf-8"
  )
  expected = _embed(imported, plain, tmp_path / "plain.npy")
  assert expected.shape[0] == 3  # the blank line too
  np.testing.assert_array_equal(_embed(imported, marked, tmp_path / "new" / "m.npy"), expected)
  np.testing.assert_array_equal(
    _embed(imported, tmp_path / "marked.csv", tmp_path / "c.npy"), expected
  )


def test_embed_refuses_a_column_of_a_text_file(imported, tmp_path, capsys):
  """Before, --column was ignored for a .txt file."""
  (tmp_path / "t.txt").write_text("red cat\n")
  argv = ["embed", "--workdir", imported, "--input", str(tmp_path / "t.txt"), "--output", "v.npy"]
  assert _error(capsys, [*argv, "--column", "title"]) == (
    f"error: --column title: --input {tmp_path / 't.txt'} holds one text per line; drop "
    f"--column, or give a .csv, .tsv or .jsonl file"
  )


def test_embed_refuses_a_length_past_the_model_s_positions(imported, tmp_path, capsys):
  """As predict does; before, 1024 was taken and cut at 512 without a word."""
  (tmp_path / "t.txt").write_text("red cat\n")
  out = tmp_path / "v.npy"
  argv = ["embed", "--workdir", imported, "--input", str(tmp_path / "t.txt"), "--output", str(out)]
  limit = run_lib.load(imported).model.config.max_length
  assert _error(capsys, [*argv, "--max-seq-length", str(limit + 1)]) == (
    f"error: --max-seq-length {limit + 1}: the model reads 3 to {limit} tokens (its "
    f"positions); give a length in that range"
  )
  assert not out.exists()


def test_embed_refuses_an_output_not_named_npy(imported, tmp_path, capsys):
  """Before, `--output out/vec.txt` wrote out/vec.txt.npy."""
  (tmp_path / "t.txt").write_text("red cat\n")
  out = tmp_path / "out" / "vec.txt"
  argv = ["embed", "--workdir", imported, "--input", str(tmp_path / "t.txt"), "--output", str(out)]
  assert _error(capsys, argv) == (
    f"error: --output {out}: embed writes a NumPy array; name the file .npy (e.g. "
    f"{tmp_path / 'out' / 'vec.npy'})"
  )
  assert not (tmp_path / "out").exists()
  missing = [
    "embed",
    "--workdir",
    imported,
    "--input",
    str(tmp_path / "no.txt"),
    "--output",
    "v.npy",
  ]
  assert _error(capsys, missing) == (
    f"error: --input {tmp_path / 'no.txt'} does not exist; give a .txt file of one text per "
    f"line, or a .csv, .tsv or .jsonl file (--column names the texts)"
  )
