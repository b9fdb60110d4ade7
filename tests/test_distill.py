"""`bert-jax distill`: the loss against hand-computed values and PyTorch's gradients, a
student distilled from a tiny fine-tuned teacher (exact resume; evaluate, predict and
export-hf against transformers), and the bad input it refuses in one line.

The teacher is a random 2-layer BERT (hidden 32) with a hand-made WordPiece vocabulary,
imported with `import-hf`, under a random 3-label head (a classification run built
directly); the data is a 3-label task where a marker word gives the label; the student
keeps the teacher's layer 1.
"""

import contextlib
import importlib.util
import io
import json
import math
import os
import random
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoint as ckpt_lib
from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax import run as run_lib
from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib
from bert_jax.finetune import distillation
from bert_jax.finetune import labels as labels_lib
from bert_jax.model import tasks
from bert_jax.train import distill, teacher_logits
from tests.conftest import ONE_DEVICE

torch = pytest.importorskip("torch", reason="parity tests need torch")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()

RECIPE = str(config_lib.RECIPES / "distill.py")
WORDS = "the a cat dog bird fish red blue green small runs jumps sits on under tree".split()
MARKERS = {"happy": "good", "sad": "bad", "neutral": "is"}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS + list(MARKERS.values())
FAST = (
  "--config.data.max_seq_length=16",
  "--config.train.batch_size=8",
  "--config.eval.batch_size=8",
  "--config.train.log_every_steps=1",
  ONE_DEVICE,
)


# --- the loss against hand-computed values and PyTorch ---------------------------------------


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_soft_loss_closed_form():
  """T = 1, a uniform teacher and a student at (1/4, 3/4): KL = ln(4/3) / 2."""
  value = distillation.soft_loss(jnp.array([[0.0, math.log(3)]]), jnp.zeros((1, 2)), 1.0)
  assert abs(float(value[0]) - math.log(4 / 3) / 2) < 1e-6


def test_loss_by_hand():
  """Each row: alpha T^2 KL + (1 - alpha) CE when labelled; T^2 KL alone when not."""
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(4, 3)) * 2, rng.normal(size=(4, 3)) * 2
  labels = np.array([0, 2, -1, 1])
  temperature, alpha = 3.0, 0.3
  p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
  kl = (p_t * np.log(p_t / p_s)).sum(-1) * temperature**2
  ce = -np.log(_softmax(student)[np.arange(4), np.maximum(labels, 0)])
  want = np.where(labels >= 0, alpha * kl + (1 - alpha) * ce, kl)
  loss, soft, hard, labelled = distillation.row_losses(
    jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(labels), temperature=3.0, alpha=0.3
  )
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(soft, kl, rtol=1e-5)
  np.testing.assert_allclose(hard, np.where(labels >= 0, ce, 0), rtol=1e-5)
  np.testing.assert_array_equal(labelled, [1, 1, 0, 1])


def test_gradients_match_pytorch():
  """d(mean loss)/d(student logits) against torch's KLDivLoss and cross_entropy."""
  rng = np.random.default_rng(1)
  student, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 3
  labels = np.array([3, -1, 0, 1, -1])
  temperature, alpha = 2.0, 0.7

  def ours(s):
    loss, *_ = distillation.row_losses(
      s, jnp.asarray(teacher), jnp.asarray(labels), temperature=temperature, alpha=alpha
    )
    return loss.mean()

  value, grad = jax.value_and_grad(ours)(jnp.asarray(student, jnp.float32))

  s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
  t = torch.tensor(teacher, dtype=torch.float64)
  y = torch.tensor(labels)
  kl = torch.nn.KLDivLoss(reduction="none")(
    torch.log_softmax(s / temperature, -1), torch.softmax(t / temperature, -1)
  ).sum(-1) * (temperature**2)
  ce = torch.nn.functional.cross_entropy(s, y.clamp(min=0), reduction="none")
  mixed = torch.where(y >= 0, alpha * kl + (1 - alpha) * ce, kl).mean()
  mixed.backward()
  assert abs(float(value) - mixed.item()) < 1e-5
  np.testing.assert_allclose(np.asarray(grad), s.grad.numpy(), atol=1e-6)


# --- a teacher, and a student distilled from it ---------------------------------------------


def _row(rng):
  label = rng.choice(sorted(MARKERS))
  words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
  words.insert(rng.randint(0, len(words)), MARKERS[label])
  return {"text": " ".join(words), "label": label}


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _import(tmp_path_factory, name, vocab):
  hf_dir = tmp_path_factory.mktemp(f"{name}_hf")
  (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (hf_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  torch.manual_seed(0)
  hf_config = transformers.BertConfig(
    vocab_size=len(vocab),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
  )
  transformers.BertModel(hf_config).save_pretrained(hf_dir)
  workdir = str(tmp_path_factory.mktemp(name))
  with contextlib.redirect_stdout(io.StringIO()):
    assert cli.main(["import-hf", "--hf", str(hf_dir), "--workdir", workdir]) == 0
  return workdir, str(hf_dir)


def _cli(*argv):
  """(exit status, stdout, stderr) of `bert-jax ARGV` in this process."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli.main(list(argv))
  return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A classification run built directly (no training: it would cost a compile): the
  imported tiny BERT's encoder under a random head, scaled up so that its probabilities are
  far from uniform.
  """
  base = tmp_path_factory.mktemp("teacher")
  imported, hf_dir = _import(tmp_path_factory, "imported", VOCAB)
  rng = random.Random(0)
  files = {
    "train": _jsonl(base / "train.jsonl", [_row(rng) for _ in range(48)]),
    "eval": _jsonl(base / "eval.jsonl", [_row(rng) for _ in range(16)]),
  }
  unlabeled = base / "unlabeled.txt"
  unlabeled.write_text("\n".join(_row(rng)["text"] for _ in range(16)) + "\n\n")
  files["unlabeled"] = str(unlabeled)
  workdir = str(base / "run")
  source = run_lib.load(imported)
  model = tasks.ForTask(source.model.config, "classification", len(MARKERS))
  fresh = run_lib.abstract_params(model)["classifier"]
  head = {
    "kernel": np.asarray(jax.random.normal(jax.random.key(1), fresh["kernel"].shape)),
    "bias": np.zeros(fresh["bias"].shape, np.float32),
  }
  meta = {
    "model": config_lib.model_dict(source.model.config),
    "tokenizer_fingerprint": source.meta["tokenizer_fingerprint"],
    "task": "classification",
    "num_labels": len(MARKERS),
    "labels": sorted(MARKERS),
    "max_seq_length": 16,
  }
  checkpoints = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
  checkpoints.save_params(0, {"bert": source.params["bert"], "classifier": head}, meta)
  checkpoints.close()
  shutil.copytree(os.path.join(imported, "tokenizer"), os.path.join(workdir, "tokenizer"))
  return {"workdir": workdir, "imported": imported, "hf": hf_dir, "files": files}


def _distill(workdir, teacher, *overrides):
  f = teacher["files"]
  return _cli(
    "distill",
    "--config",
    RECIPE,
    "--workdir",
    str(workdir),
    f"--config.teacher={teacher['workdir']}",
    f"--config.data.train={f['train']}",
    f"--config.data.eval={f['eval']}",
    *FAST,
    *overrides,
  )


STUDENT = (
  "--config.model.size=teacher",
  "--config.distill.student_layers=1",
  "--config.train.steps=8",
  "--config.eval.every_steps=4",
  "--config.train.learning_rate=5e-3",
)


@pytest.fixture(scope="module")
def student(tmp_path_factory, teacher):
  """Layer 1 of the teacher, distilled for 8 steps with extra unlabelled texts."""
  workdir = tmp_path_factory.mktemp("student") / "run"
  args = (*STUDENT, f"--config.distill.unlabeled={teacher['files']['unlabeled']}")
  rc, out, err = _distill(workdir, teacher, *args)
  assert rc == 0, err
  return {"workdir": str(workdir), "stdout": out, "args": args}


def _params_equal(a, b):
  same = jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
  return all(jax.tree_util.tree_leaves(same))


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.mark.slow
def test_student_starts_from_the_teacher_layers_and_reports(student, teacher):
  out = student["stdout"]
  assert "train: 48 examples, 48 rows" in out and "unlabeled: 16 examples" in out
  assert "labels 64 train rows" in out
  teacher_run = run_lib.load(teacher["workdir"])
  run = run_lib.load(student["workdir"])
  assert run.meta["task"] == "classification" and run.meta["labels"] == ["happy", "neutral", "sad"]
  assert run.model.config.num_layers == 1
  # The parameter counts in the log, against a count of the two trees by hand.
  counts = {}
  for name, r in (("teacher", teacher_run), ("student", run)):
    sizes = {"/".join(map(str, k)): int(np.prod(v.shape)) for k, v in _flat(r.params)}
    total = sum(sizes.values())
    body = total - sum(v for k, v in sizes.items() if k.startswith("bert/embeddings"))
    counts[name] = (total, body)
  (t_all, t_body), (s_all, s_body) = counts["teacher"], counts["student"]
  assert f"teacher {t_all:,} ({t_body:,} non-embedding)" in out
  assert f"student {s_all:,} ({s_body:,} non-embedding" in out
  assert out.count("parameters: teacher") == 2  # at the start and the end
  teacher_eval = next(line for line in out.splitlines() if line.startswith("teacher eval:"))
  assert "accuracy" in teacher_eval and "of the teacher's" in out
  # The train metrics of a distilled run.
  train = _records(student["workdir"], "train")
  assert {"soft_loss", "hard_loss", "teacher_agreement", "accuracy"} <= set(train[-1])


def _flat(params):
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    yield [getattr(k, "key", k) for k in path], leaf


@pytest.mark.slow
def test_resume_is_exact(student, teacher, tmp_path):
  straight = student["workdir"]
  assert run_lib.open_checkpoints(straight)[0].all_steps() == [4, 8]
  resumed = str(tmp_path / "resumed")
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  shutil.rmtree(os.path.join(resumed, "best"))
  rc, out, err = _distill(resumed, teacher, *student["args"])
  assert rc == 0, err
  assert f"resumed from {os.path.join(resumed, 'checkpoints', '4')}" in out
  # The teacher's logits kept by the first start: the rows are not labelled again.
  assert "teacher logits of the 64 train rows: teacher_logits.npz in the workdir" in out
  assert "labels 64 train rows" not in out
  assert _params_equal(run_lib.load(straight, step=8).params, run_lib.load(resumed, step=8).params)
  assert _records(resumed, "eval")[-1] == _records(straight, "eval")[-1]
  # Run again when finished: nothing to do, and the teacher labels nothing first.
  rc, out, err = _distill(resumed, teacher, *student["args"])
  assert rc == 0, err
  assert "nothing to do: the latest checkpoint is at step 8 of 8" in out
  assert "labels 64 train rows" not in out and "of the teacher's" in out


def test_kept_teacher_logits_are_read_only_under_their_key(tmp_path):
  """The key changes with the teacher's step or head and with the rows' ids; a file of
  another key, or a damaged one, reads as None (the rows are labelled again).
  """
  params = {"bert": {}, "classifier": {"kernel": np.ones((4, 3), np.float32), "bias": np.zeros(3)}}
  arrays = {k: np.arange(12, dtype=np.int32).reshape(3, 4) for k in teacher_logits.ROW_KEYS}
  key = teacher_logits.key("/t", 5, params, arrays)
  other_head = {**params, "classifier": {**params["classifier"], "bias": np.ones(3)}}
  other_ids = {**arrays, "input_ids": arrays["input_ids"][::-1]}
  others = [
    teacher_logits.key("/t", 6, params, arrays),
    teacher_logits.key("/t", 5, other_head, arrays),
    teacher_logits.key("/t", 5, params, other_ids),
  ]
  assert len({key, *others}) == 4
  logits = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
  assert teacher_logits.read(str(tmp_path), key) is None  # no file yet
  teacher_logits.write(str(tmp_path), key, logits)
  np.testing.assert_array_equal(teacher_logits.read(str(tmp_path), key), logits)
  assert teacher_logits.read(str(tmp_path), others[0]) is None
  for damaged in (b"PK\x03\x04 not a whole zip", b""):  # cut short; a full disk's
    (tmp_path / teacher_logits.FILE).write_bytes(damaged)
    assert teacher_logits.read(str(tmp_path), key) is None


@pytest.mark.slow
def test_a_workdir_of_another_run_or_init_from_is_refused_before_the_teacher_labels(
  student, teacher, tmp_path
):
  """The teacher's own workdir, or a resume with a new init_from (which a resumed run would
  ignore), is one line before the teacher labels the train rows.
  """
  rc, out, err = _distill(teacher["workdir"], teacher, *STUDENT)
  assert rc == 2 and "labels" not in out, out
  assert err.strip() == (
    f"error: {teacher['workdir']} holds a fine-tuned run (the teacher itself), not a "
    f"distillation run; distil into a new --workdir"
  )
  resumed = str(tmp_path / "resumed")
  shutil.copytree(student["workdir"], resumed)
  other = ["--config.model.size=checkpoint", f"--config.init_from={teacher['imported']}"]
  rc, out, err = _distill(resumed, teacher, *STUDENT, *other)
  assert rc == 2 and "labels" not in out, out
  assert "holds a run started without config.init_from, and resuming it goes on from its" in err


@pytest.mark.slow
def test_evaluate_predict_and_export_work_on_the_student(student, teacher, tmp_path):
  workdir, eval_file = student["workdir"], teacher["files"]["eval"]
  rc, out, err = _cli("evaluate", "--workdir", workdir)
  assert rc == 0, err
  checkpoints, step = run_lib.open_checkpoints(workdir, folder="best")
  best = checkpoints.meta(step)["best"]["metrics"]
  assert json.loads(out.splitlines()[-1])["accuracy"] == round(best["accuracy"], 6)

  predictions = tmp_path / "pred.jsonl"
  rc, _, err = _cli(
    "predict", "--workdir", workdir, "--input", eval_file, "--output", str(predictions)
  )
  assert rc == 0, err
  ours = [json.loads(line) for line in predictions.read_text().splitlines()]

  hf_dir = str(tmp_path / "hf")
  rc, _, err = _cli("export-hf", "--workdir", workdir, "--out", hf_dir)
  assert rc == 0, err
  model = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir)
  assert model.config.num_hidden_layers == 1
  classify = transformers.pipeline("text-classification", model=hf_dir, top_k=None)
  texts = [json.loads(line)["text"] for line in open(eval_file)]
  for mine, theirs in zip(ours, classify(texts), strict=True):
    for t in theirs:
      assert abs(mine["probabilities"][t["label"]] - t["score"]) < 1e-4


# --- bad input: one line, nothing written -----------------------------------------------------


def _refused(tmp_path, teacher, *overrides, teacher_dir=None):
  workdir = tmp_path / "run"
  argv = list(overrides)
  if teacher_dir:
    argv.append(f"--config.teacher={teacher_dir}")
  rc, _, err = _distill(workdir, teacher, *argv)
  assert rc == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  return lines[0]


@pytest.mark.slow
def test_a_label_the_teacher_does_not_know_is_refused(teacher, tmp_path):
  rows = [_row(random.Random(i)) for i in range(16)] + [{"text": "cat", "label": "angry"}]
  train = _jsonl(tmp_path / "other.jsonl", rows)
  line = _refused(tmp_path, teacher, *STUDENT, f"--config.data.train={train}")
  assert "happy, neutral, sad" in line and "angry" in line
  # In the eval data: the teacher's labels, not a fine-tuning fix (config.data.labels).
  dev = _jsonl(tmp_path / "dev.jsonl", rows)
  line = _refused(tmp_path, teacher, *STUDENT, f"--config.data.eval={dev}")
  assert "label 'angry' is not one of the 3 labels of the teacher" in line
  assert "a student learns its teacher's labels" in line and "config.data.labels" not in line


@pytest.mark.slow
def test_a_student_of_another_tokenizer_is_refused(teacher, tmp_path_factory, tmp_path):
  other, _ = _import(tmp_path_factory, "other_tokenizer", VOCAB[:-1] + ["zebra"])  # same shapes
  line = _refused(
    tmp_path, teacher, "--config.model.size=checkpoint", f"--config.init_from={other}"
  )
  assert "another tokenizer than the teacher" in line


@pytest.mark.slow
def test_a_teacher_that_is_no_classifier_is_refused(teacher, tmp_path):
  line = _refused(tmp_path, teacher, *STUDENT, teacher_dir=teacher["imported"])
  assert "not a fine-tuned run" in line and "classification" in line
  line = _refused(tmp_path, teacher, *STUDENT, teacher_dir=teacher["hf"])
  assert "not a *ForSequenceClassification" in line and "fine-tune it with bert_jax" in line


@pytest.mark.slow
def test_a_hugging_face_classifier_teaches_as_its_run_does(teacher, tmp_path):
  """The teacher's export as config.teacher: the same logits, labels and token ids as the
  run it was exported from.
  """
  hf_dir = str(tmp_path / "teacher_hf")
  assert _cli("export-hf", "--workdir", teacher["workdir"], "--out", hf_dir)[0] == 0
  ours = run_lib.load(teacher["workdir"])
  theirs = distill.load_teacher(hf_dir, str(tmp_path / "scratch"))
  assert theirs.meta["labels"] == ours.meta["labels"]
  texts = [json.loads(line)["text"] for line in open(teacher["files"]["eval"])]
  ids = ours.tokenizer.encode_batch(texts)
  assert theirs.tokenizer.encode_batch(texts) == ids
  batch = np.zeros((len(ids), 16), np.int32)
  for i, row in enumerate(ids):
    batch[i, : len(row) + 2] = [ours.tokenizer.cls_id, *row, ours.tokenizer.sep_id]
  args = (batch, np.zeros_like(batch), (batch > 0).astype(np.int32))
  np.testing.assert_allclose(
    theirs.model.apply({"params": theirs.params}, *args),
    ours.model.apply({"params": ours.params}, *args),
    atol=1e-5,
  )


@pytest.mark.slow
def test_a_student_as_large_as_the_teacher_is_noted_before_the_teacher_labels(teacher, tmp_path):
  args = ("--config.model.size=teacher", "--config.distill.student_layers=0,1")
  rc, out, err = _distill(tmp_path / "run", teacher, *args, "--config.train.steps=1")
  assert rc == 0, err
  note = out.index("note: the student is not smaller than the teacher")
  assert note < out.index("labels 48 train rows")  # before the slow part: Ctrl-C is cheap


@pytest.mark.slow
def test_student_layers_out_of_range_are_refused(teacher, tmp_path):
  line = _refused(
    tmp_path, teacher, "--config.model.size=teacher", "--config.distill.student_layers=0,2"
  )
  assert "out of range" in line and "2 layers" in line


@pytest.mark.slow
def test_the_teacher_may_label_every_text(teacher, tmp_path):
  """No labelled train data, only texts (config.distill.unlabeled): the student learns the
  teacher's probabilities alone (before, config.data.train was required).
  """
  unlabeled = f"--config.distill.unlabeled={teacher['files']['unlabeled']}"
  rc, out, err = _distill(
    tmp_path / "run",
    teacher,
    *STUDENT[:2],
    "--config.train.steps=2",
    "--config.data.train=",
    unlabeled,
  )
  assert rc == 0, err
  assert "unlabeled: 16 examples" in out and "labels 16 train rows" in out
  assert "train: " not in out
  (record,) = (r for r in _records(str(tmp_path / "run"), "train") if r["step"] == 2)
  assert record["soft_loss"] > 0
  # No row has a label: no accuracy of 0 (before), no hard loss.
  assert "accuracy" not in record and "hard_loss" not in record


def _distill_rows(tmp_path, teacher, rows, steps):
  """A short distillation of the teacher's layer 1 on train `rows`; its stdout."""
  train = _jsonl(tmp_path / "train_rows.jsonl", rows)
  args = (*STUDENT[:2], f"--config.train.steps={steps}", f"--config.data.train={train}")
  rc, out, err = _distill(tmp_path / "run", teacher, *args)
  assert rc == 0, err
  return out


@pytest.mark.slow
def test_train_rows_of_one_label_are_noted(teacher, tmp_path):
  out = _distill_rows(tmp_path, teacher, [{"text": "the cat is good", "label": "happy"}] * 8, 1)
  assert (
    "note: every labelled train row is 'happy': the student learns the teacher's other 2 "
    "labels from its probabilities alone"
  ) in out


@pytest.mark.slow
def test_train_rows_without_a_label_are_the_teachers_to_label(teacher, tmp_path):
  """An empty label in config.data.train makes a row the teacher's alone (before: the
  fine-tuning error "has no label" stopped the run).
  """
  rng = random.Random(3)
  rows = [_row(rng) for _ in range(16)]
  for row in rows[::2]:
    row["label"] = "" if len(row["text"]) % 2 else None
  out = _distill_rows(tmp_path, teacher, rows, 2)
  assert "train: 8 rows without a label: the teacher labels them" in out
  assert "labels 16 train rows" in out
  assert "note: every labelled train row is" not in out  # the 8 labelled rows hold 3 labels
  (record,) = (r for r in _records(str(tmp_path / "run"), "train") if r["step"] == 2)
  assert 0 <= record["accuracy"] <= 1 and record["hard_loss"] > 0


def test_an_empty_label_is_unlabelled_only_where_partly_labelled_data_is_read(tmp_path):
  """`read(partly_labelled=True)` keeps rows of an empty or null label (label None), and a
  label map with `unlabelled_id` gives them that id; fine-tuning still refuses them.
  """
  rows = [{"text": "a good cat", "label": "happy"}, {"text": "a dog", "label": " "}]
  rows.append({"text": "a sad bird", "label": None})
  path = _jsonl(tmp_path / "rows.jsonl", rows)
  config = config_lib.distill_base_config()
  with pytest.raises(UserError, match="row 2 has no label"):
    data_lib.read(path, config)
  examples = data_lib.read(path, config, partly_labelled=True)
  assert [r["label"] for r in examples.rows] == ["happy", None, None]
  names = sorted(MARKERS)
  labels = labels_lib.LabelMap(names, unlabelled_id=distillation.UNLABELED)
  ids = [labels.encode(r["label"], "here") for r in examples.rows]
  assert ids == [names.index("happy"), distillation.UNLABELED, distillation.UNLABELED]
  with pytest.raises(UserError, match="not one of the 3 labels"):
    labels_lib.LabelMap(names).encode(None, "here")


def test_metrics_without_labelled_rows_have_no_accuracy():
  sums = dict.fromkeys(distillation.Distillation.sum_keys, jnp.float32(0))
  sums |= {"loss": jnp.float32(2), "soft": jnp.float32(2), "agree": 1.0, "count": 4.0}
  with_labels = distillation.Distillation(None, 2.0, 0.5).summarize(sums)
  teacher_only = distillation.Distillation(None, 2.0, 0.5, labelled=False).summarize(sums)
  assert set(with_labels) - set(teacher_only) == {"accuracy", "hard_loss"}
  assert float(teacher_only["loss"]) == 0.5 and float(teacher_only["teacher_agreement"]) == 0.25


def test_config_checks():
  config = config_lib.distill_base_config()
  config.teacher = "t"
  with pytest.raises(distill.UserError) as raised:
    distill.validate(config)
  assert str(raised.value).startswith(
    "config.data.train (labelled texts) or config.distill.unlabeled (texts the teacher "
    "labels, a .txt of one per line) is required"
  )
  config.teacher, config.data.train = "t", "x.csv"
  config.model.size, config.distill.student_layers = "teacher", "2,1"
  with pytest.raises(distill.UserError, match="increasing order"):
    distill.validate(config)
  config.distill.student_layers, config.distill.alpha = "0", 1.5
  with pytest.raises(distill.UserError, match="alpha"):
    distill.validate(config)


def test_recipe_loads_and_validates():
  spec = importlib.util.spec_from_file_location("recipe", RECIPE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert "bert-jax distill" in module.__doc__ and config.model.size == "teacher"
  config.teacher = "runs/bbc"
  distill.validate(config)
