"""Every family through the commands: a tiny random Hugging Face `*ForMaskedLM` with its
own kind of tokenizer (WordPiece, SentencePiece, byte-level BPE), built offline, is
imported (`import-hf`), adapted by continued MLM (`pretrain`), fine-tuned (`finetune`,
each family's sequence head) and exported (`export-hf`); `transformers` loads both exports
as the family's classes with every weight used. Then each family pretrained from scratch:
its export loads whole and `pipeline("fill-mask")` gives our top 5; ELECTRA's by
replaced-token detection, its discriminator and generator exported side by side.

BERT and RoBERTa take the same path with real numbers in test_hf_model.py,
test_bbc_news.py and test_e2e_roberta.py.
"""

import contextlib
import csv
import io
import json
import os

import jax
import numpy as np
import pytest

from bert_jax import cli
from tests import tiny_tokenizers
from tests.conftest import ONE_DEVICE, check_fill_mask_export, write_topics_corpus

transformers = pytest.importorskip("transformers", reason="needs transformers")
torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
FAMILIES = {
  "distilbert": ("DistilBertForMaskedLM", "DistilBertForSequenceClassification"),
  "electra": ("ElectraForMaskedLM", "ElectraForSequenceClassification"),
  "albert": ("AlbertForPreTraining", "AlbertForSequenceClassification"),
  "modernbert": ("ModernBertForMaskedLM", "ModernBertForSequenceClassification"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A folder of pydoc topics, its lines, and a two-label CSV of them."""
  root = tmp_path_factory.mktemp("family_cli")
  write_topics_corpus(root / "corpus", count=40)
  lines = [
    line.strip()
    for path in sorted((root / "corpus").iterdir())
    for line in path.read_text().splitlines()
    if len(line.split()) > 3
  ]
  with open(root / "labelled.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(("text", "label"))
    for line in lines[:64]:
      writer.writerow((line, "long" if len(line) > 60 else "short"))
  return root, lines


def _hf_checkpoint(family, lines, directory):
  """A random tiny `family` MLM model and its tokenizer saved in `directory`."""
  directory.mkdir(parents=True)
  if family in ("distilbert", "electra"):
    name = {"distilbert": "DistilBertTokenizer", "electra": "ElectraTokenizer"}[family]
    config = {"tokenizer_class": name}
    tiny_tokenizers.wordpiece_files(lines, directory, config=config, vocab_size=400)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  elif family == "albert":
    tiny_tokenizers.albert_files(lines, directory, vocab_size=300)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  else:
    tokenizer = tiny_tokenizers.modernbert_bpe(lines, vocab_size=400)
  ids = {
    "pad_token_id": tokenizer.pad_token_id,
    "cls_token_id": tokenizer.cls_token_id,
    "sep_token_id": tokenizer.sep_token_id,
  }
  if family == "distilbert":
    config = transformers.DistilBertConfig(
      vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=48, **ids
    )
  elif family == "electra":
    config = transformers.ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, **SIZES)
  elif family == "albert":
    config = transformers.AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, **SIZES)
  else:
    config = transformers.ModernBertConfig(
      vocab_size=len(tokenizer), local_attention=8, global_attn_every_n_layers=2, **SIZES, **ids
    )
  torch.manual_seed(0)
  model_class = getattr(transformers, FAMILIES[family][0])
  model_class(config).save_pretrained(str(directory))
  tokenizer.save_pretrained(str(directory))


def _loads_whole(hf_dir, auto_class, architecture):
  model, info = getattr(transformers, auto_class).from_pretrained(hf_dir, output_loading_info=True)
  assert type(model).__name__ == architecture
  assert not any(info.values()), info


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_import_adapt_finetune_export(family, corpus):
  root, lines = corpus
  work = root / family
  _hf_checkpoint(family, lines, work / "hf")
  imported, adapted, classifier = (str(work / n) for n in ("imported", "adapted", "classifier"))
  assert cli.main(["import-hf", "--hf", str(work / "hf"), "--workdir", imported]) == 0
  common = ["--config.train.batch_size=8", "--config.data.max_seq_length=32", ONE_DEVICE]
  pretrain = [
    "pretrain",
    "--config",
    "configs/continue_pretraining.py",
    "--workdir",
    adapted,
    f"--config.init_from={imported}",
    f"--config.data.input={root / 'corpus'}/*.txt",
    "--config.data.max_predictions_per_seq=5",
    "--config.data.num_shards=1",
    "--config.data.lanes=1",
    "--config.data.loader=threads",
    "--config.train.steps=2",
    "--config.eval.at_start=False",
    "--config.eval.steps=1",
  ]
  assert cli.main(pretrain + common) == 0
  finetune = [
    "finetune",
    "--workdir",
    classifier,
    f"--config.init_from={adapted}",
    f"--config.data.train={root / 'labelled.csv'}",
    f"--config.data.eval={root / 'labelled.csv'}",
    "--config.train.steps=2",
  ]
  assert cli.main(finetune + common) == 0
  for run in (adapted, classifier):  # the family init_from brought, not the recipe's default
    with open(os.path.join(run, "config.json")) as f:
      assert json.load(f)["model"]["arch"] == family
  pretraining_class, classifier_class = FAMILIES[family]
  assert cli.main(["export-hf", "--workdir", adapted, "--out", str(work / "hf_adapted")]) == 0
  auto = "AutoModelForPreTraining" if family == "albert" else "AutoModelForMaskedLM"
  _loads_whole(str(work / "hf_adapted"), auto, pretraining_class)
  assert cli.main(["export-hf", "--workdir", classifier, "--out", str(work / "hf_cls")]) == 0
  _loads_whole(str(work / "hf_cls"), "AutoModelForSequenceClassification", classifier_class)
  if family == "distilbert":  # the runs a family does not change: once
    _from_a_fine_tuned_run_and_other_sizes(work, imported, classifier, pretrain, common)


def _from_a_fine_tuned_run_and_other_sizes(work, imported, classifier, pretrain, common):
  """Continued MLM from a fine-tuned run takes its encoder, with new pretraining heads;
  fine-tuning at another size than init_from's is one line, before anything is written.
  """
  from bert_jax import run as run_lib

  readapted = str(work / "readapted")
  again = [*pretrain[:4], readapted, f"--config.init_from={classifier}", *pretrain[6:]]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert (
      cli.main([*again, *common, "--config.train.steps=1", "--config.train.learning_rate=1e-9"])
      == 0
    )
  assert "(fine-tuned for classification); the pretraining heads are new" in out.getvalue()
  ours, theirs = run_lib.load(readapted).params, run_lib.load(classifier).params
  for a, b in zip(*(jax.tree_util.tree_leaves(p["bert"]) for p in (ours, theirs))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)  # one step at lr 1e-9
  assert "classifier" in theirs and "classifier" not in ours
  resized = str(work / "resized")
  argv = ["finetune", "--workdir", resized, f"--config.init_from={imported}"]
  argv += [f"--config.data.train={work.parent / 'labelled.csv'}", "--config.model.size=tiny"]
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    assert cli.main(argv + common) == 2
  assert "holds a checkpoint of another model (" in err.getvalue()
  assert "fine-tune it as it is: config.model.size='checkpoint'" in err.getvalue()
  assert not os.path.exists(resized)
  other = "roberta"  # a family given with size 'checkpoint' must be init_from's
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    assert cli.main([*pretrain[:4], resized, *pretrain[5:], f"--config.model.arch={other}"]) == 2
  assert "config.model.arch='roberta', but config.init_from holds a distilbert model" in (
    err.getvalue()
  )
  assert not os.path.exists(resized)
  # Said before any data is prepared: an objective the family has no head for, a mistyped
  # init_from, a Hugging Face directory not imported yet, a shape the checkpoint overrides.
  for change, said in (
    (["--config.data.objective=nsp"], "distilbert has no sentence-pair head; use "),
    ([f"--config.init_from={imported}x"], f"{imported}x does not exist; give a run"),
    ([f"--config.init_from={work / 'hf'}"], "is a Hugging Face model directory, not a run"),
    (["--config.model.num_layers=3"], "config.model.num_layers=3, but config.model.size="),
  ):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      assert cli.main([*pretrain[:4], resized, *pretrain[5:], *common, *change]) == 2
    assert said in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert not os.path.exists(resized)


# From scratch: each family's export and the recipe's own arguments. ALBERT's recipe
# (configs/albert.py, shrunk, float32, its layers scanned) is masked LM on n-grams of whole
# words + SOP on sentence pairs with LAMB, RoBERTa's tokenizer byte-level BPE, BERT's here a
# WordPiece trained by bert_jax; ELECTRA's recipe replaced-token detection (WordPiece,
# rows of one document), shrunk, with a projection from the embeddings (E 96) in both the
# discriminator (H 128) and the generator (64); the rest take the default recipe (masked LM
# on packed rows, a SentencePiece unigram tokenizer).
FROM_SCRATCH = {  # family: (its export's class, the recipe (None: the default), its arguments)
  "albert": (
    "AlbertForPreTraining",
    "configs/albert.py",
    [
      "--config.model.num_layers=2",
      "--config.model.hidden_size=128",
      "--config.model.dtype=float32",
    ],
  ),
  "bert": ("BertForPreTraining", None, ["--config.tokenizer.model_type=wordpiece"]),
  "distilbert": ("DistilBertForMaskedLM", None, []),
  "electra": (
    "ElectraForPreTraining",
    "configs/electra.py",
    [
      "--config.model.num_layers=2",
      "--config.model.hidden_size=128",
      "--config.model.embedding_size=96",
    ],
  ),
  "roberta": ("RobertaForMaskedLM", None, ["--config.tokenizer.model_type=bytelevel_bpe"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FROM_SCRATCH))
def test_pretrained_from_scratch_loads_in_the_fill_mask_pipeline(family, corpus, capsys):
  """A new model of the family, 3 steps: the sentence-pair metric only where the recipe
  has one, an export that loads whole (ALBERT's SOP head included), and
  `pipeline("fill-mask")` gives our top 5.
  """
  root, _ = corpus
  work = root / f"{family}_from_scratch"
  workdir, hf_dir = str(work / "run"), str(work / "hf")
  architecture, recipe, recipe_args = FROM_SCRATCH[family]
  argv = [
    "pretrain",
    *(["--config", recipe] if recipe else []),
    "--workdir",
    workdir,
    f"--config.model.arch={family}",
    "--config.model.size=tiny",
    "--config.tokenizer.vocab_size=1000",
    f"--config.data.input={root / 'corpus'}/*.txt",
    "--config.data.max_seq_length=64",
    "--config.data.max_predictions_per_seq=10",
    "--config.data.num_shards=1",
    "--config.data.lanes=1",
    "--config.data.loader=threads",
    "--config.train.steps=3",
    "--config.train.batch_size=8",
    "--config.eval.steps=1",
    ONE_DEVICE,
    *recipe_args,
  ]
  assert cli.main(argv) == 0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert {r["split"] for r in records} == {"train", "eval"}
  for r in records:  # SOP's metric keeps NSP's name
    assert "mlm_accuracy" in r and ("nsp_accuracy" in r) == (family == "albert"), r
    assert ("rtd_accuracy" in r) == (family == "electra"), r
  assert cli.main(["export-hf", "--workdir", workdir, "--out", hf_dir]) == 0
  auto = "AutoModelForPreTraining" if "PreTraining" in architecture else "AutoModelForMaskedLM"
  _loads_whole(hf_dir, auto, architecture)  # ALBERT's SOP head too
  if family == "electra":  # the generator beside the discriminator
    _check_discriminator(workdir, hf_dir)
    _check_finetuning_takes_the_discriminator(root, workdir, hf_dir)
    _check_the_pair_round_trips(root, hf_dir)
    hf_dir = os.path.join(hf_dir, "generator")
    _loads_whole(hf_dir, "AutoModelForMaskedLM", "ElectraForMaskedLM")
  fill = check_fill_mask_export(
    workdir, hf_dir, "Return a new sorted list from the {mask} in iterable.", capsys
  )
  assert type(fill.model).__name__ == architecture.replace("PreTraining", "MaskedLM")
  if family == "roberta":  # its trained tokenizer has RoBERTa's names and pair layout
    assert (fill.tokenizer.mask_token, fill.tokenizer.cls_token) == ("<mask>", "<s>")
    pair = fill.tokenizer("a", "b")["input_ids"]
    assert pair[pair.index(fill.tokenizer.sep_token_id) + 1] == fill.tokenizer.sep_token_id


def _check_the_pair_round_trips(root, hf_dir):
  """`import-hf` of the export (its generator/ found by itself) and `export-hf` of that give
  both models' tensors back bit for bit.
  """
  import safetensors.numpy

  imported, again = os.path.join(root, "electra_imported"), os.path.join(root, "electra_again")
  assert cli.main(["import-hf", "--hf", hf_dir, "--workdir", imported]) == 0
  assert cli.main(["export-hf", "--workdir", imported, "--out", again]) == 0
  for folder in ("", "generator"):
    first, second = (
      safetensors.numpy.load_file(os.path.join(d, folder, "model.safetensors"))
      for d in (hf_dir, again)
    )
    assert first.keys() == second.keys()
    for name in first:
      np.testing.assert_array_equal(first[name], second[name], err_msg=f"{folder}/{name}")


def _check_finetuning_takes_the_discriminator(root, workdir, hf_dir):
  """`finetune` from the RTD run, its encoder frozen: the exported classifier's encoder is
  the exported discriminator's, tensor for tensor.
  """
  import safetensors.numpy

  classifier, classifier_hf = (
    os.path.join(root, "electra_cls"),
    os.path.join(root, "electra_cls_hf"),
  )
  argv = [
    "finetune",
    "--workdir",
    classifier,
    f"--config.init_from={workdir}",
    f"--config.data.train={root / 'labelled.csv'}",
    f"--config.data.eval={root / 'labelled.csv'}",
    "--config.train.steps=2",
    "--config.train.batch_size=8",
    "--config.data.max_seq_length=32",
    "--config.head.freeze_encoder=True",
    ONE_DEVICE,
  ]
  assert cli.main(argv) == 0
  assert cli.main(["export-hf", "--workdir", classifier, "--out", classifier_hf]) == 0
  _loads_whole(
    classifier_hf, "AutoModelForSequenceClassification", "ElectraForSequenceClassification"
  )
  ours, pretrained = (
    safetensors.numpy.load_file(os.path.join(d, "model.safetensors"))
    for d in (classifier_hf, hf_dir)
  )
  encoder = [name for name in pretrained if name.startswith("electra.")]
  assert encoder and all(name in ours for name in encoder)
  for name in encoder:
    np.testing.assert_array_equal(ours[name], pretrained[name], err_msg=name)


def _check_discriminator(workdir, hf_dir):
  """The exported `ElectraForPreTraining` gives our discriminator's logits at every token
  of a padded batch of two texts, and its encoder `bert-jax embed`'s mean-pooled vectors.
  """
  from bert_jax import embed
  from bert_jax import run as run_lib

  run = run_lib.load(workdir)
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  texts = ["Return a new sorted list from the items in iterable.", "The module is imported."]
  inputs = tokenizer(texts, padding=True, return_tensors="np")
  ours = run.model.apply(
    {"params": run.params},
    inputs["input_ids"],
    inputs["token_type_ids"],
    inputs["attention_mask"],
    None,
    True,
    method="discriminate",
  )
  model = transformers.AutoModelForPreTraining.from_pretrained(hf_dir)
  with torch.no_grad():
    outputs = model(
      **{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True
    )
  real = inputs["attention_mask"] == 1
  np.testing.assert_allclose(np.asarray(ours)[real], outputs.logits.numpy()[real], atol=1e-4)
  hidden = outputs.hidden_states[-1].numpy()  # (batch, length, hidden)
  mean = (hidden * real[..., None]).sum(1) / real.sum(1, keepdims=True)
  vectors, _ = embed.embed_texts(run, texts, pooling="mean")
  np.testing.assert_allclose(vectors, mean, atol=1e-4)
