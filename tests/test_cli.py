"""The `bert-jax` command line: bad input is one `error:` line and exit status 2 (Ctrl-C:
130), never a traceback, and nothing of a run is changed by it.

Covers the recipe file, the workdir, read-only locations, fill-mask's --top-k, short runs of
long recipes, resuming with another batch size, export-hf's --out and --overwrite,
malformed Hugging Face config.json files, and a metrics.jsonl cut off mid-line. The run the
slow tests share is a tiny BERT pretrained for 2 steps on a few of CPython's doc topics.
"""

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import gcsfs.retry
import jax
import pytest

from bert_jax import cli, errors, host_memory, recipe_args, storage
from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.train import loop, pretrain
from bert_jax.train import metrics as metrics_lib
from bert_jax.train import optimizer as optimizer_lib
from tests.conftest import ROOT, write_topics_corpus

TINY = [
  "--config.data.input_format=document",
  "--config.tokenizer.vocab_size=400",
  "--config.data.num_shards=1",
  "--config.data.lanes=1",
  "--config.data.max_seq_length=32",
  "--config.data.max_predictions_per_seq=5",
  "--config.train.steps=2",
  "--config.train.batch_size=8",
  "--config.train.warmup_steps=1",
  "--config.eval.steps=1",
  "--config.eval.every_steps=2",
  "--config.checkpoint.every_steps=2",
]


def _error(capsys, args):
  """The one `error:` line of a command that must fail with exit status 2."""
  assert cli.main(args) == 2
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
  assert "Traceback" not in captured.out + captured.err
  return lines[0]


def _tree(directory):
  """{relative path: sha256} of every file under `directory`: what a refusal must keep."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


# --- recipes, workdirs, filesystem errors, Ctrl-C ---------------------------------------------


def test_the_reason_quoted_from_a_library_error_is_its_first_line():
  """Before, some callers took `str(e).splitlines()[0]`: an error without a message
  (IndexError there) turned a one-line error into a traceback.
  """
  assert errors.first_line(ValueError("bad value\n  at line 3\n")) == "bad value"
  assert errors.first_line(ValueError("\n  padded first line  \nnext")) == "padded first line"
  assert errors.first_line(TimeoutError()) == "TimeoutError"
  assert errors.first_line(ValueError("x" * 300)) == "x" * 197 + "..."
  assert errors.first_line(ValueError("x" * 120), 120) == "x" * 120
  assert errors.summary(KeyError("weight")) == "KeyError: 'weight'"
  assert errors.summary(TimeoutError()) == "TimeoutError"
  assert len(errors.summary(OSError("y" * 500), 160)) == len("OSError: ") + 160


def test_recipe_with_a_syntax_error(capsys, tmp_path):
  recipe = tmp_path / "broken.py"
  recipe.write_text("from bert_jax import config\n\ndef get_config(:\n  return 1\n")
  workdir = tmp_path / "run"
  for flag in (["--config", str(recipe)], [f"--config={recipe}:arg"]):
    line = _error(capsys, ["pretrain", *flag, "--workdir", str(workdir)])
    assert str(recipe) in line and "line 3" in line and "syntax" in line
  assert not workdir.exists()


def test_recipe_without_get_config(capsys, tmp_path):
  recipe = tmp_path / "nothing.py"
  recipe.write_text("def config():\n  return None\n")
  line = _error(capsys, ["finetune", "--config", str(recipe), "--workdir", str(tmp_path / "w")])
  assert "get_config" in line and str(recipe) in line
  assert "unknown config key" not in line
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  "command, override, meant",
  [
    ("pretrain", "train.step=3", "did you mean 'train.steps'?"),
    ("pretrain", "train.mask_rate=0.2", "did you mean 'data.mask_rate' or 'eval.mask_rate'?"),
    ("finetune", "data.label=x", "did you mean 'data.labels' or 'data.label_column'?"),
    (
      "finetune",
      "train.warmup_steps=9",
      "did you mean 'train.accum_steps' or 'train.warmup_fraction'?",
    ),
    ("pretrain", "trian.steps=3", "did you mean 'train.steps'"),
    ("pretrain", "init-from=runs/x", "did you mean 'init_from'?"),  # (failed to parse)
    ("finetune", "data.max-seq-length=64", "did you mean 'data.max_seq_length'?"),
    ("pretrain", "train.epochs=1", "did you mean 'train.steps'"),  # (was: 'train.eps' alone)
    ("finetune", "train.num_train_epochs=3", "did you mean 'train.epochs' or 'train.steps'?"),
    ("pretrain", "lr=1e-4", "did you mean 'train.learning_rate'?"),
  ],
)
def test_an_unknown_key_names_the_whole_key_and_the_keys_it_may_mean(
  capsys, tmp_path, command, override, meant
):
  workdir = tmp_path / "w"
  line = _error(capsys, [command, "--workdir", str(workdir), f"--config.{override}"])
  key = override.partition("=")[0]
  assert line.startswith(f"error: unknown config key '{key}'; {meant}")
  assert line.endswith(
    f"(`bert-jax {command} --help` lists every key; defaults: bert_jax/config.py)"
  )
  assert not workdir.exists()


def test_finetune_without_init_from_says_so_first(capsys, tmp_path):
  line = _error(capsys, ["finetune", "--workdir", str(tmp_path / "w")])
  assert line == (
    "error: finetune needs --config.init_from=WORKDIR: the run to fine-tune (a pretraining "
    "workdir, or one made by bert-jax import-hf)"
  )
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  "command, recipe, kind, override",
  [
    ("finetune", "configs/demo.py", "pretrain", "--config.data.train=x.csv"),  # not demo's key
    ("finetune", "configs/demo.py", "pretrain", "--config.seed=1"),
    ("pretrain", "configs/finetune/classify_csv.py", "finetune", "--config.seed=1"),
    ("prepare", "configs/distill.py", "distill", "--config.seed=1"),
    ("distill", "configs/finetune/classify_csv.py", "finetune", "--config.seed=1"),
    ("pretrain", "configs/finetune/glue.py:sst2", "finetune", "--config.seed=1"),  # its :ARG
  ],
)
def test_a_recipe_of_another_command_is_one_line_naming_its_command(
  capsys, tmp_path, command, recipe, kind, override
):
  line = _error(
    capsys, [command, "--config", f"{ROOT}/{recipe}", "--workdir", str(tmp_path / "w"), override]
  )
  assert line == (
    f"error: {recipe} is a recipe for bert-jax {kind}, not {command}; run bert-jax {kind} "
    f"--config {recipe} (or give a {command} recipe)"
  )
  assert not (tmp_path / "w").exists()


def test_an_option_that_is_no_setting_is_named_not_blamed_on_the_recipe(capsys, tmp_path):
  """Unknown options and options without their value are the command line's, not the
  recipe's; a folder given as the recipe names the recipes in it.
  """
  w = str(tmp_path / "w")
  assert _error(capsys, ["pretrain", "--workdir"]) == (
    "error: --workdir needs a value (`bert-jax pretrain --help`)"
  )
  assert _error(capsys, ["pretrain", "--workdir", w, "--steps", "5"]) == (
    "error: unknown option --steps; settings are overrides like --config.train.steps=100 "
    "(`bert-jax pretrain --help` lists them)"
  )
  assert _error(capsys, ["finetune", "--workdir", w, "--config.init_from"]) == (
    "error: --config.init_from needs a value (`bert-jax finetune --help`)"
  )
  line = _error(capsys, ["pretrain", "--config", f"{ROOT}/configs/finetune", "--workdir", w])
  assert line.startswith(f"error: config file '{ROOT}/configs/finetune' is a folder; give a ")
  assert "classify_csv.py" in line
  # A recipe not found names those beside it: here (a clone) or installed (elsewhere).
  recipes = sorted(n for n in os.listdir(f"{ROOT}/configs") if n.endswith(".py"))[1:]
  missing = ["pretrain", "--config", "configs/nope.py", "--workdir", w]
  assert _error(capsys, missing) == (
    f"error: config file 'configs/nope.py' not found; the recipes in configs/ are "
    f"{', '.join(recipes)}"
  )
  with contextlib.chdir(tmp_path):
    line = _error(capsys, missing)
    assert line.startswith(
      f"error: config file 'configs/nope.py' not found; the recipes in {config_lib.RECIPES}/ are "
    )
    assert _error(capsys, ["pretrain", "--config", "nope.py", "--workdir", w]) == (
      "error: config file 'nope.py' not found; recipes are in configs/"
    )
  assert not os.path.exists(w)


def test_workdir_that_is_a_file(capsys, tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  for command in (["pretrain"], ["finetune"], ["import-hf", "--hf", str(tmp_path)]):
    line = _error(capsys, [*command, "--workdir", str(path)])
    assert "is a file" in line and str(path) in line
  assert path.read_text() == "mine"


@pytest.mark.parametrize(
  "argv",
  [
    ["pretrain", "--workdir", "gs:/bucket/run"],
    ["pretrain", "--workdir", "run", "--config.data.prepared_dir=gs:/bucket/data"],
    ["finetune", "--workdir", "gs:bucket/run", "--config.init_from=x"],
    ["pretrain", "--workdir", "gs//bucket/run"],  # before: trained into ./gs/bucket/run
    ["pretrain", "--workdir", "gcs:/bucket/run"],
  ],
)
def test_a_url_short_of_a_slash_is_one_line_and_writes_nothing(capsys, no_gs_folder, argv):
  line = _error(capsys, argv)
  assert re.search(r"is not a URL: write gs://bucket/(run|data)$", line), line
  assert os.listdir(".") == []


@pytest.mark.parametrize(
  ("argv", "expected"),
  [
    # The shards' local copies: before, they went to ./gs:/bucket/cache.
    (
      ["pretrain", "--workdir", "run", "--config.data.cache_dir=gs://bucket/cache"],
      "config.data.cache_dir='gs://bucket/cache' must be a folder on this host's disk",
    ),
    # Before: "bucket GS://bucket does not exist".
    (["pretrain", "--workdir", "GS://bucket/run"], "write gs://bucket/run (a URL's scheme is"),
  ],
)
def test_a_bucket_where_a_local_folder_goes_is_one_line(capsys, no_gs_folder, argv, expected):
  assert expected in _error(capsys, argv)
  assert os.listdir(".") == []


def test_gcs_scheme_is_named_as_gs(capsys, no_gs_folder):
  """The gcs:// of gcsfs, which orbax and tensorstore lack: before, "bucket gcs://b does not
  exist" for a bucket that exists.
  """
  line = _error(capsys, ["pretrain", "--workdir", "gcs://bucket/run"])
  assert line == "error: 'gcs://bucket/run': write gs://bucket/run (Cloud Storage's scheme)"
  assert os.listdir(".") == []


@pytest.mark.parametrize(
  "argv, message",
  [
    (["pretrain", "--config.train.learning_rate=-1e-3"], "learning_rate=-0.001 must be above 0"),
    (["pretrain", "--config.data.eval_fraction=1.5"], "eval_fraction=1.5 must be in (0, 1)"),
    (["pretrain", "--config.data.eval_fraction=0"], "eval_fraction=0.0 must be in (0, 1)"),
    (["pretrain", "--config.tokenizer.vocab_size=0"], "tokenizer.vocab_size must be at least 1"),
    (["pretrain", "--config.model.hidden_dropout=1.5"], "hidden_dropout=1.5 must be in [0, 1)"),
    (["pretrain", "--config.train.clip_norm=-1"], "clip_norm=-1.0 must be 0 (none) or more"),
    (["pretrain", "--config.eval.every_steps=-1"], "every_steps=-1 must be 0 (none) or more"),
    (
      ["pretrain", "--config.model.attention_impl=flashx"],
      "attention_impl='flashx' is not one of None, xla, cudnn, splash",
    ),
    *(
      (["finetune", "--config.init_from=x", "--config.data.train=a.csv", arg], message)
      for arg, message in [
        ("--config.train.steps=-3", "config.train.steps=-3: give a positive number of steps"),
        ("--config.train.epochs=0", "config.train.epochs=0.0: give a positive number of epochs"),
        ("--config.data.max_seq_length=2", "max_seq_length=2 leaves no room for text"),
        ("--config.head.reinit_layers=-1", "reinit_layers=-1 must be 0 (none) or more"),
        ("--config.eval.batch_size=0", "config.eval.batch_size must be at least 1, got 0"),
        (
          "--config.eval.metric=auc",  # with --config.data.eval below
          "metric='auc' is not one of the eval metrics of this task and data: accuracy, "
          "macro_f1, loss",
        ),
        (
          "--config.eval.metrics=accuracy,auroc",
          "config.eval.metrics='accuracy,auroc': auroc is not a metric of task "
          "'classification'; choose from accuracy, f1, macro_f1, matthews",
        ),
      ]
    ),
    (  # tags report the entity spans' precision, recall and F1 (and accuracy)
      [
        "finetune",
        "--config.init_from=x",
        "--config.task=tokens",
        "--config.data.train=a.jsonl",
        "--config.data.eval=b.jsonl",
        "--config.eval.metric=entity_f1",
      ],
      "metric='entity_f1' is not one of the eval metrics of this task and data: precision, "
      "recall, f1, accuracy, loss",
    ),
  ],
)
def test_values_out_of_range_are_one_line_before_anything_is_written(
  capsys, tmp_path, argv, message
):
  if "--config.eval.metric=auc" in argv:
    argv = [*argv, "--config.data.eval=b.csv"]
  line = _error(capsys, [*argv[:1], "--workdir", str(tmp_path / "run"), *argv[1:]])
  assert message in line
  assert not (tmp_path / "run").exists()


def test_distributed_without_a_cluster_is_one_line(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORD", "JAX_NUM", "SLURM"))}
  proc = subprocess.run(
    [sys.executable, "-m", "bert_jax", "pretrain", "--workdir", str(tmp_path / "run")]
    + ["--config.distributed=True"],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  line = proc.stderr.strip().splitlines()[-1]
  assert line.startswith("error: config.distributed=True found no cluster to join")
  assert "JAX_COORDINATOR_ADDRESS=HOST:PORT, JAX_NUM_PROCESSES and JAX_PROCESS_ID" in line
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_workdir_under_a_read_only_directory(capsys, tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o555)
  try:
    line = _error(capsys, ["pretrain", "--workdir", str(locked / "run")])
  finally:
    locked.chmod(0o755)
  assert "not writable" in line and str(locked) in line
  assert not os.listdir(locked)


@pytest.mark.parametrize(
  "code,text",
  [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")],
)
def test_filesystem_errors_are_one_line(capsys, code, text):
  def fails():
    raise OSError(code, text, "/x/metrics.jsonl")

  assert cli.report_errors(fails) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.splitlines() == [
    f"error: {text}: /x/metrics.jsonl; choose a writable location with room"
  ]


def test_other_os_errors_are_not_hidden():
  def fails():
    raise OSError(errno.EIO, "Input/output error", "/x")

  with pytest.raises(OSError, match="Input/output error"):
    cli.report_errors(fails)


def test_ctrl_c_is_one_line_and_status_130(capsys):
  def interrupted():
    raise KeyboardInterrupt

  assert cli.report_errors(interrupted, resumes=True) == 130
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.strip().splitlines() == ["interrupted; run the same command again to resume"]
  # predict, embed, the exports: nothing to resume (before, they said "to resume" too)
  assert cli.report_errors(interrupted) == 130
  again = "interrupted; run the same command again to start it over"
  assert capsys.readouterr().err.strip().splitlines() == [again]


def test_finetune_help_prints_the_default_recipe(capsys):
  assert cli.main(["finetune", "--help"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: bert-jax finetune")
  spec = importlib.util.spec_from_file_location("recipe", config_lib.DEFAULT_FINETUNE_CONFIG)
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  assert config_lib.DEFAULT_FINETUNE_CONFIG.name == "classify_csv.py"
  assert out.rstrip().endswith(recipe_args.config_text(recipe.get_config()))
  assert "\ntask = 'classification'\n" in out and "\ndata.label_column = 'label'\n" in out


@pytest.mark.parametrize("top_k", ["0", "-3"])
def test_fill_mask_top_k_below_one(capsys, tmp_path, top_k):
  """Refused before the run is read (a missing run would be another error)."""
  workdir = str(tmp_path / "no_run")
  line = _error(capsys, ["fill-mask", "--workdir", workdir, "--top-k", top_k, "a [MASK] b"])
  assert f"--top-k {top_k} must be at least 1" in line


@pytest.mark.parametrize("command", ["evaluate", "export-hf", "predict", "embed"])
def test_a_folder_that_is_no_run_is_one_line_naming_how_to_make_one(capsys, tmp_path, command):
  (tmp_path / "texts.txt").write_text("a line\n")
  files = ["--input", str(tmp_path / "texts.txt"), "--output", str(tmp_path / "out")]
  argv = [command, "--workdir", str(tmp_path)]
  argv += {"export-hf": ["--out", str(tmp_path / "hf")], "evaluate": []}.get(command, files)
  line = _error(capsys, argv)
  assert line == (
    f"error: {tmp_path} has no checkpoints/: it is not a run; train first (bert-jax "
    f"pretrain, finetune or distill --workdir {tmp_path}) or import one (bert-jax import-hf)"
  )
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))  # an HF model
  assert _error(capsys, argv) == (
    f"error: {tmp_path} is a Hugging Face model directory, not a run; import it first "
    f"(bert-jax import-hf --hf {tmp_path} --workdir runs/NAME) and give runs/NAME"
  )
  argv[argv.index("--workdir") + 1] = str(tmp_path / "nowhere")
  assert _error(capsys, argv) == (
    f"error: {tmp_path / 'nowhere'} does not exist; give a run directory (a --workdir trained in)"
  )


def test_an_unknown_tokenizer_kind_is_one_line(capsys, tmp_path):
  argv = ["prepare", "--workdir", str(tmp_path / "w"), "--config.tokenizer.model_type=word_piece"]
  assert _error(capsys, argv) == (
    "error: config.tokenizer.model_type='word_piece' is not one of unigram, bpe, "
    "bytelevel_bpe, wordpiece"
  )
  assert not (tmp_path / "w").exists()  # refused before anything is written


def test_unknown_command_names_the_closest_and_lists_the_commands(capsys):
  assert cli.main(["pretrian"]) == 2
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert (
    captured.out == "" and lines[0] == "error: unknown command 'pretrian'; did you mean 'pretrain'?"
  )
  assert [line.split()[0] for line in lines if line.startswith("  ")] == list(cli.COMMANDS)


def test_version_names_the_package_and_jax(capsys):
  from importlib import metadata

  assert cli.main(["--version"]) == 0
  out = capsys.readouterr().out.strip()
  assert out.startswith(f"bert-jax {metadata.version('bert_jax')} (jax {jax.__version__}, ")


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_help_lists_every_command_with_a_line_and_exits_0(capsys, argv):
  assert cli.main(argv) == 0
  captured = capsys.readouterr()
  assert captured.err == "" and captured.out.startswith("usage: bert-jax COMMAND")
  listed = dict(line.split(None, 1) for line in captured.out.splitlines() if line.startswith("  "))
  assert list(listed) == list(cli.COMMANDS) and all(listed.values())


# --- a short run of a long recipe --------------------------------------------------------------


def test_layers_set_apart_from_the_size_are_said_to_override_it():
  model = config_lib.base_config().model
  assert pretrain.size_note(model) is None  # base, nothing set apart
  model.size, model.num_layers, model.hidden_size = "tiny", 12, 128
  assert pretrain.size_note(model) == (
    "model: config.model.num_layers=12 overrides size 'tiny' (L2 H128); "
    "--config.model.num_layers=None takes the size's"
  )
  model.hidden_size = 64
  assert pretrain.size_note(model) == (
    "model: config.model.num_layers=12 and config.model.hidden_size=64 override size 'tiny' "
    "(L2 H128); --config.model.num_layers=None --config.model.hidden_size=None takes the "
    "size's"
  )


def test_a_prediction_cap_below_the_mask_rate_is_said_before_preparing(capsys, tmp_path):
  """The demo's 20 predictions of 128 tokens kept at 512: 20 / 510 = 3.9 % masked, not
  15 % (round(510 * 0.15) = 76).
  """
  data = config_lib.base_config().data
  assert pretrain.max_predictions_note(data) is None  # 20 of 128: round(126 * 0.15) = 19
  argv = ["pretrain", "--config", os.path.join(ROOT, "configs", "demo.py"), "--workdir"]
  argv += [str(tmp_path / "run"), "--config.data.max_seq_length=512"]
  argv += ["--config.model.max_position_embeddings=512", "--config.data.input=/no/such.txt"]
  assert cli.main(argv) == 2  # the missing input: the note came before preparing it
  out = capsys.readouterr().out
  assert out == (
    "note: config.data.max_predictions_per_seq=20 caps the masked tokens of a 512-token row "
    "at 3.9%, below config.data.mask_rate=0.15 (76 tokens); "
    "--config.data.max_predictions_per_seq=76 masks at the rate\n"
  )
  data.max_seq_length, data.max_predictions_per_seq = 512, 76
  assert pretrain.max_predictions_note(data) is None


def test_none_unsets_a_key_that_may_be_none_and_only_such(capsys, tmp_path):
  # The note above says --config.model.num_layers=None; ml_collections' flags parse None as
  # the key's type (int('None') failed). A key that may not be None is one line.
  config, _ = recipe_args.parse_config(
    "pretrain",
    [
      "--config",
      "configs/electra.py",
      "--workdir",
      str(tmp_path),
      "--config.model.num_layers=None",
    ],
    config_lib.DEFAULT_CONFIG,
    "usage",
  )
  assert config.model.num_layers is None and config.model.hidden_size is not None
  line = _error(capsys, ["pretrain", "--workdir", str(tmp_path / "w"), "--config.train.steps=None"])
  assert line.startswith("error: config.train.steps cannot be None; give it a value")
  assert not (tmp_path / "w").exists()


def test_a_resumed_run_names_every_change_the_training_s_first():
  """Before: five changes, then "and 4 more", the learning rate among those not named."""
  changes = [f"data.key{i} 1 -> 2" for i in range(5)] + [
    "mesh.data 1 -> -1",
    "train.accum_steps 1 -> 2",
    "train.learning_rate 0.002 -> 0.001",
  ]
  assert loop.changes_line(changes) == (
    "resuming with changed settings (config.json is rewritten): train.accum_steps 1 -> 2; "
    "train.learning_rate 0.002 -> 0.001; data.key0 1 -> 2; data.key1 1 -> 2; data.key2 1 -> "
    "2; data.key3 1 -> 2; data.key4 1 -> 2; mesh.data 1 -> -1"
  )


def test_warmup_longer_than_the_run_is_clipped(capsys):
  train = config_lib.base_config().train
  train.steps, train.warmup_steps = 20, 10_000
  assert pretrain.warmup_steps(train) == 2  # a tenth of 20
  notice = capsys.readouterr().out.strip().splitlines()
  assert len(notice) == 1 and "warmup_steps=10000" in notice[0] and "20 steps" in notice[0]
  train.warmup_steps = 20
  assert pretrain.warmup_steps(train) == 20  # it fits: kept, silently
  train.steps, train.warmup_steps = 5, 10_000
  assert pretrain.warmup_steps(train) == 0
  notice = capsys.readouterr().out.strip().splitlines()  # only the clipped one spoke
  assert notice == [
    "config.train.warmup_steps=10000 exceeds the 5 steps of this run; no warmup instead"
  ]


def test_default_recipe_takes_twenty_steps(capsys, tmp_path):
  """`bert-jax pretrain --workdir w --config.train.steps=20`: the demo's 100 warmup steps
  would not fit; validation passes and the schedule warms up over 2 steps instead.
  """
  config, workdir = cli.parse_config(
    "pretrain",
    ["--workdir", str(tmp_path / "w"), "--config.train.steps=20"],
    pretrain.DEFAULT_RECIPE,
    pretrain.USAGE["pretrain"],
  )
  assert workdir == str(tmp_path / "w") and config.train.warmup_steps > config.train.steps
  pretrain.validate(config)
  _, schedule = optimizer_lib.make_optimizer(
    config.train, warmup_steps=pretrain.warmup_steps(config.train)
  )
  peak = config.train.learning_rate
  # Linear warmup over 2 steps, then linear decay to 0 over the other 18.
  for step, expected in ((0, 0.0), (1, peak / 2), (2, peak), (11, peak / 2), (20, 0.0)):
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-9), step
  with pytest.raises(UserError, match="exceeds"):
    optimizer_lib.make_optimizer(config.train)  # unclipped, the schedule refuses


# --- metrics.jsonl cut off mid-line --------------------------------------------------------------


def _record(step):
  return json.dumps({"step": step, "split": "train", "loss": 1.0 / step}) + "\n"


def test_truncate_jsonl_drops_a_partial_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(_record(s) for s in (1, 2, 3, 4)) + _record(5)[:17])
  messages = []
  metrics_lib.truncate_jsonl(str(path), 3, log=messages.append)
  assert path.read_text() == _record(1) + _record(2) + _record(3)
  assert len(messages) == 1
  assert str(path) in messages[0] and "dropped 1 incomplete line" in messages[0]

  # A whole last record without its newline is kept, and the next one starts a new line.
  path.write_text(_record(1) + _record(2).rstrip("\n"))
  messages.clear()
  metrics_lib.truncate_jsonl(str(path), 5, log=messages.append)
  assert path.read_text() == _record(1) + _record(2) and not messages


def test_metric_writer_resumes_after_a_cut_line(tmp_path, capsys):
  path = tmp_path / "metrics.jsonl"
  path.write_text(_record(1) + _record(2) + '{"step": 3, "spl')
  writer = metrics_lib.MetricWriter(str(tmp_path), 2)
  writer.write(3, "train", {"loss": 0.5})
  writer.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3] and records[2]["loss"] == 0.5
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and str(path) in out[0]


# --- Hugging Face config.json ------------------------------------------------------------------

_BERT = {
  "model_type": "bert",
  "vocab_size": 100,
  "hidden_size": 32,
  "num_hidden_layers": 1,
  "num_attention_heads": 2,
  "intermediate_size": 64,
}


@pytest.mark.parametrize(
  "content,expected",
  [
    (b'{"model_type": "bert", ', "not valid JSON"),
    (b"\xff\xfe not text", "not valid JSON"),
    (b"[1, 2, 3]", "JSON list, not an object"),
    (b'"bert"', "JSON str, not an object"),
    (b'{"hidden_size": 32}', "no model_type"),
    (b'{"model_type": "gpt2", "architectures": "GPT2LMHeadModel"}', "is a 'gpt2' model; import"),
    (b'{"model_type": "t5", "architectures": ["T5Model"]}', "is a 't5' model (T5Model); import"),
    (json.dumps({**_BERT, "hidden_size": None}).encode(), "hidden_size=None"),
    (json.dumps({**_BERT, "num_hidden_layers": "2"}).encode(), "num_hidden_layers='2'"),
    (json.dumps({**_BERT, "vocab_size": 0}).encode(), "vocab_size=0"),
    (
      json.dumps({k: v for k, v in _BERT.items() if k != "intermediate_size"}).encode(),
      "lacks intermediate_size",
    ),
  ],
)
def test_malformed_hf_config_is_one_line(capsys, tmp_path, content, expected):
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  (hf_dir / "config.json").write_bytes(content)
  workdir = tmp_path / "run"
  line = _error(capsys, ["import-hf", "--hf", str(hf_dir), "--workdir", str(workdir)])
  assert str(hf_dir / "config.json") in line and expected in line
  assert not workdir.exists()


def test_a_hub_name_is_one_line_saying_nothing_is_downloaded(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  line = _error(capsys, ["import-hf", "--hf", "bert-base-uncased", "--workdir", "run"])
  assert line.startswith("error: bert-base-uncased is not a directory here;")
  assert "never downloads" in line and "huggingface-cli download bert-base-uncased" in line
  assert os.listdir(tmp_path) == []
  os.mkdir("empty")
  assert "empty has no config.json" in _error(
    capsys, ["import-hf", "--hf", "empty", "--workdir", "run"]
  )


# --- export-hf --out ---------------------------------------------------------------------------


def _fake_run(directory):
  """A directory laid out as a run (what export-hf must never delete)."""
  (directory / "checkpoints" / "40").mkdir(parents=True)
  (directory / "checkpoints" / "40" / "params").write_bytes(b"weights")
  (directory / "metrics.jsonl").write_text(_record(40))
  (directory / "config.json").write_text(json.dumps({"model": {}, "train": {"steps": 40}}))


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_export_refuses_a_run_directory(capsys, tmp_path, overwrite):
  other = tmp_path / "other_run"
  _fake_run(other)
  before = _tree(other)
  line = _error(
    capsys,
    ["export-hf", "--workdir", str(tmp_path / "mine"), "--out", str(other), *overwrite],
  )
  assert "run directory" in line and "checkpoints" in line and "metrics.jsonl" in line
  assert _tree(other) == before

  # Only the run's config.json left: still a run's, not a Hugging Face one.
  lone = tmp_path / "lone"
  lone.mkdir()
  (lone / "config.json").write_text((other / "config.json").read_text())
  line = _error(capsys, ["export-hf", "--workdir", str(tmp_path), "--out", str(lone), *overwrite])
  assert "run directory" in line and "config.json" in line
  assert os.listdir(lone) == ["config.json"]


def test_export_overwrite_refuses_files_it_did_not_write(capsys, tmp_path):
  out = tmp_path / "hf"
  out.mkdir()
  (out / "config.json").write_text(json.dumps({"model_type": "bert"}))
  (out / "model.safetensors").write_bytes(b"old")
  for name in ("notes.txt", "results.csv", "a.bin", "b.bin", "c.bin", "d.bin"):
    (out / name).write_text("mine")
  (out / "logs").mkdir()
  before = _tree(out)
  line = _error(
    capsys, ["export-hf", "--workdir", str(tmp_path / "run"), "--out", str(out), "--overwrite"]
  )
  assert "a.bin, b.bin, c.bin, d.bin, logs and 2 more" in line
  assert "config.json, model.safetensors" in line  # what --overwrite replaces
  assert _tree(out) == before

  # A config.json that is not a Hugging Face one is not the export's to replace either.
  (out / "config.json").write_text("[]")
  for name in ("notes.txt", "results.csv", "a.bin", "b.bin", "c.bin", "d.bin"):
    (out / name).unlink()
  (out / "logs").rmdir()
  line = _error(
    capsys, ["export-hf", "--workdir", str(tmp_path / "run"), "--out", str(out), "--overwrite"]
  )
  assert "holds config.json," in line
  assert (out / "config.json").read_text() == "[]"


def test_export_refuses_a_file_and_the_run_itself(capsys, tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("mine")
  assert "is a file" in _error(capsys, ["export-hf", "--workdir", "w", "--out", str(path)])
  line = _error(capsys, ["export-hf", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path)])
  assert "would replace the run directory" in line
  assert path.read_text() == "mine"


def test_export_refuses_a_folder_it_may_not_write_in_before_reading_the_run(capsys, read_only):
  line = _error(capsys, ["export-hf", "--workdir", "w", "--out", f"{read_only}/new/hf"])
  assert (
    line == f"error: --out {read_only}/new/hf: you may not write in {read_only}; export elsewhere"
  )
  assert _error(capsys, ["export-hf", "--workdir", "w", "--out", str(read_only)]) == (
    f"error: --out {read_only}: you may not write in {read_only}; export elsewhere"
  )
  assert os.listdir(read_only) == []


# --- a real tiny run: resume checks, export --overwrite, fill-mask --------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """(workdir, its pretrain arguments): a tiny BERT pretrained for 2 steps."""
  root = tmp_path_factory.mktemp("tiny")
  corpus = root / "corpus"
  write_topics_corpus(corpus, 40)
  workdir = str(root / "run")
  args = ["--workdir", workdir, f"--config.data.input={corpus}/*.txt", *TINY]
  assert cli.main(["pretrain", *args]) == 0
  return workdir, args


@pytest.mark.slow
def test_pretrain_resume_with_another_batch_size(capsys, tiny_run):
  workdir, args = tiny_run
  capsys.readouterr()
  before = _tree(workdir)
  line = _error(
    capsys, ["pretrain", *args, "--config.train.batch_size=16", "--config.train.steps=4"]
  )
  assert "config.train.batch_size=8" in line and "16" in line
  assert "--config.train.batch_size=8" in line and "new --workdir" in line
  assert _tree(workdir) == before  # config.json, metrics and checkpoints as they were


@pytest.mark.slow
def test_a_resumed_run_names_the_settings_it_changed(capsys, tmp_path):
  corpus = tmp_path / "corpus"
  write_topics_corpus(corpus, 40)
  args = ["pretrain", "--workdir", str(tmp_path / "run"), f"--config.data.input={corpus}/*.txt"]
  assert cli.main([*args, *TINY]) == 0
  capsys.readouterr()
  rate = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["learning_rate"]
  changed = ["--config.train.steps=3", "--config.train.learning_rate=1e-5"]
  assert cli.main([*args, *TINY, *changed]) == 0
  out = capsys.readouterr().out
  assert (
    f"resuming with changed settings (config.json is rewritten): train.learning_rate {rate} "
    f"-> 1e-05; train.steps 2 -> 3\n"
  ) in out
  saved = (tmp_path / "run" / "config.json").read_text()
  assert json.loads(saved)["train"]["steps"] == 3
  # Finished: nothing trains, so nothing is said to change and config.json stays.
  assert cli.main([*args, *TINY, "--config.train.steps=3", "--config.train.learning_rate=1"]) == 0
  out = capsys.readouterr().out
  assert "nothing to do" in out and "changed settings" not in out
  assert (tmp_path / "run" / "config.json").read_text() == saved
  assert cli.main([*args, *TINY]) == 0  # 2 steps asked of a run at 3
  assert "at step 3, past the 2 steps asked; raise config.train.steps" in capsys.readouterr().out
  # config.json holds the warmup the run had: a warmup clipped to fit is a change it names.
  assert cli.main([*args, *TINY, "--config.train.steps=4", "--config.train.warmup_steps=100"]) == 0
  assert "train.warmup_steps 1 -> 0" in capsys.readouterr().out
  assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["warmup_steps"] == 0


@pytest.mark.slow
def test_finetune_resume_with_another_batch_size(capsys, tiny_run, tmp_path):
  workdir, _ = tiny_run
  train = tmp_path / "train.csv"
  train.write_text(
    "text,label\n"
    + "".join(f"text number {i} is fine,{'yes' if i % 2 else 'no'}\n" for i in range(32))
  )
  args = [
    "finetune",
    "--workdir",
    str(tmp_path / "clf"),
    f"--config.init_from={workdir}",
    f"--config.data.train={train}",
    "--config.data.max_seq_length=32",
    "--config.train.steps=2",
    "--config.train.batch_size=8",
  ]
  assert cli.main(args) == 0
  capsys.readouterr()
  before = _tree(tmp_path / "clf")
  line = _error(capsys, [*args, "--config.train.batch_size=16"])
  assert "config.train.batch_size=8" in line and "16" in line
  assert "--config.train.batch_size=8" in line and "new --workdir" in line
  assert _tree(tmp_path / "clf") == before

  # Another task: refused before the data is read (here it does not even exist).
  line = _error(
    capsys, [*args, "--config.task=regression", f"--config.data.train={tmp_path}/no.csv"]
  )
  assert "holds a checkpoint of task 'classification', not 'regression'" in line
  # A run of the other kind as --workdir: refused, both runs as they were (before, finetune
  # copied its tokenizer in and pretrain prepared data there, then refused).
  pretraining = _tree(workdir)
  args[args.index("--workdir") + 1] = workdir
  line = _error(capsys, args)
  assert "holds a pretraining checkpoint, not a fine-tuned run" in line
  assert f"--config.init_from={workdir} and a new --workdir" in line
  assert _tree(workdir) == pretraining
  _, pretrain_args = tiny_run
  line = _error(capsys, ["pretrain", *pretrain_args, "--workdir", str(tmp_path / "clf")])
  assert "holds a run fine-tuned for 'classification', not a pretraining run" in line
  assert _tree(tmp_path / "clf") == before


@pytest.mark.slow
def test_rows_longer_than_init_from_s_positions_are_refused_first(capsys, tiny_run, tmp_path):
  """size=checkpoint takes init_from's positions: checked before any data is prepared."""
  workdir, args = tiny_run
  line = _error(
    capsys,
    [
      "pretrain",
      *args,
      "--workdir",
      str(tmp_path / "new"),
      f"--config.init_from={workdir}",
      "--config.model.size=checkpoint",
      "--config.data.max_seq_length=1024",
    ],
  )
  assert "max_seq_length=1024 exceeds the 512 positions of config.init_from" in line
  assert "lower the sequence length" in line
  assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_export_overwrite_replaces_only_an_earlier_export(capsys, tiny_run, tmp_path):
  workdir, _ = tiny_run
  fresh, out = tmp_path / "fresh", tmp_path / "hf"
  assert cli.main(["export-hf", "--workdir", workdir, "--out", str(fresh)]) == 0
  out.mkdir()
  (out / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 3}))
  (out / "model.safetensors").write_bytes(b"old weights")
  (out / "vocab.txt").write_text("[PAD]\n")  # an earlier WordPiece export's
  assert "--overwrite" in _error(capsys, ["export-hf", "--workdir", workdir, "--out", str(out)])
  assert cli.main(["export-hf", "--workdir", workdir, "--out", str(out), "--overwrite"]) == 0
  assert _tree(out) == _tree(fresh)  # the new export, nothing of the old one
  assert sorted(os.listdir(tmp_path)) == ["fresh", "hf"]  # no staging folder left


@pytest.mark.slow
def test_evaluate_a_pretraining_run_gives_its_own_held_out_metrics(capsys, tiny_run):
  workdir, _ = tiny_run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    logged = [r for r in map(json.loads, f) if r["split"] == "eval"][-1]
  capsys.readouterr()
  assert cli.main(["evaluate", "--workdir", workdir]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  printed = json.loads(out[-1])
  assert printed.keys() == logged.keys() - {"step", "split"}
  for key, value in printed.items():
    assert value == pytest.approx(logged[key], abs=1e-5), key
  assert out[-2].startswith(f"eval step {logged['step']}: loss ")
  line = _error(capsys, ["evaluate", "--workdir", workdir, "--data", "x.csv"])
  assert "is a pretraining run, evaluated on its own held-out rows (drop --data)" in line


@pytest.mark.slow
def test_fill_mask_top_k(capsys, tiny_run):
  workdir, _ = tiny_run
  assert cli.main(["fill-mask", "--workdir", workdir, "--json", "--top-k", "3", "a [MASK] b"]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert len(result) == 3
  scores = [r["score"] for r in result]
  assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1


@pytest.mark.parametrize("key", ["data.mask_rate", "eval.mask_rate"])
def test_a_mask_rate_outside_zero_to_one_is_one_line(capsys, tmp_path, key):
  workdir = tmp_path / "run"
  line = _error(capsys, ["pretrain", "--workdir", str(workdir), f"--config.{key}=1.5"])
  assert f"config.{key}=1.5 must be in (0, 1)" in line
  assert not workdir.exists()


def test_a_host_without_accelerators_starts_the_cpu_alone(monkeypatch, tmp_path):
  """Unless JAX_PLATFORMS says otherwise, or an accelerator's device file exists."""
  updates = []
  monkeypatch.setattr(cli.jax.config, "update", lambda *kv: updates.append(kv))
  monkeypatch.setattr(host_memory, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "nvidia[0-9]*"),))
  assert cli.cpu_alone_without_accelerators({}) and updates == [("jax_platforms", "cpu")]
  assert not cli.cpu_alone_without_accelerators({"JAX_PLATFORMS": "cuda"})
  (tmp_path / "nvidia0").touch()
  assert not cli.cpu_alone_without_accelerators({})
  assert updates == [("jax_platforms", "cpu")]


def _raises(error):
  def run():
    raise error

  return run


def _caused(outer, inner):
  try:
    raise outer from inner
  except type(outer) as e:
    return e


@pytest.mark.parametrize(
  "error, reason",
  [
    (
      _caused(
        RuntimeError("writing metrics"),
        gcsfs.retry.HttpError({"code": 503, "message": "Service Unavailable"}),
      ),
      "HttpError: Service Unavailable, 503",
    ),
    (
      ValueError("UNAVAILABLE: CURL error Failure when receiving data from the peer"),
      "UNAVAILABLE: CURL error",
    ),
    (
      _caused(OSError("upload failed"), ConnectionResetError(104, "Connection reset by peer")),
      "ConnectionResetError: [Errno 104] Connection reset by peer",
    ),
  ],
)
def test_a_lost_connection_to_the_storage_is_one_line_and_status_75(error, reason, capsys):
  assert cli.report_errors(_raises(error), resumes=True) == 75
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f"error: lost the connection to the storage ({reason}")
  assert line.endswith("run the same command again to resume from its last saved checkpoint")
  assert cli.report_errors(_raises(error)) == 75  # an export or predict: starts over
  assert capsys.readouterr().err.rstrip().endswith("run the same command again to start it over")


@pytest.mark.parametrize(
  "error",
  [
    ValueError("a shape mismatch"),
    gcsfs.retry.HttpError({"code": 403, "message": "Forbidden"}),
    KeyError("UNAVAILABLE"),  # the word alone, not a status
  ],
)
def test_other_errors_are_not_taken_for_a_lost_connection(error):
  with pytest.raises(type(error)):
    cli.report_errors(_raises(error), resumes=True)


def test_a_closed_stdout_pipe_is_no_lost_connection():
  """`bert-jax pretrain | head`: the run still closes its checkpoints and lock on its way out."""
  assert storage.connection_lost(_caused(RuntimeError("printing"), BrokenPipeError())) is None
  assert storage.connection_lost(ConnectionRefusedError(111, "Connection refused"))
