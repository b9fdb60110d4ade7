"""`bert-jax <command>`: the one entry point.

    bert-jax prepare [--config configs/RECIPE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]
    bert-jax pretrain [--config configs/RECIPE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]
    bert-jax finetune [--config configs/finetune/TASK.py] --workdir DIR [--config.KEY=VALUE ...]
    bert-jax distill [--config configs/distill.py] --workdir DIR --config.teacher=RUN_DIR [--config.KEY=VALUE ...]
    bert-jax evaluate --workdir DIR [--data FILE|tfds:NAME:SPLIT] [--step N]
    bert-jax predict --workdir DIR --input FILE --output OUT.jsonl [--step N] [--overwrite]
    bert-jax fill-mask --workdir DIR [--json] [--top-k 5] "text with [MASK] in it" ...
    bert-jax export-hf --workdir DIR --out HF_DIR [--step N] [--overwrite]
    bert-jax import-hf --hf HF_DIR --workdir DIR [--generator ELECTRA_GENERATOR_DIR]
    bert-jax embed --workdir DIR --input FILE --output OUT.npy [--pooling cls|mean|max] [--overwrite]
    bert-jax compile [--config configs/RECIPE.py[:ARG]] --topology v5e:4x4 [--config.KEY=VALUE ...]

Bad input ends in one `error: ...` line and exit status 2. A run stopped by SIGTERM (or
Ctrl-C) saves a checkpoint and exits with status 75 (`errors.PREEMPTED_EXIT_CODE`): run
the same command again to resume. SIGTERM while data is prepared exits 75 as well, with
what was prepared kept. A second Ctrl-C stops at once, with status 130.
"""

import argparse
import contextlib
import difflib
import errno
import gc
import os
import signal
import sys
import threading
import traceback

import jax

from bert_jax import compile_cache, errors, host_memory, multihost
from bert_jax.errors import PREEMPTED_EXIT_CODE, Preempted, Terminated, UserError
from bert_jax.recipe_args import parse_config

# TensorFlow (tf.data, TFDS): quiet unless it matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _job(command, module_name, entry):
  """A job command: parse the recipe and overrides, then run the job's entry function."""

  def run(argv):
    import importlib

    job = importlib.import_module(module_name)
    parsed = parse_config(command, argv, job.DEFAULT_RECIPE, job.USAGE[command])
    if parsed:
      getattr(job, entry)(*parsed)  # each entry validates its config first

  return run


def _evaluate(argv):
  parser = _parser(
    "evaluate",
    "Metrics of a fine-tuned run on its eval data (or --data), or of a pretraining run on its "
    "held-out rows; the last line is one JSON object.",
    step=True,
  )
  parser.add_argument(
    "--data",
    help="a .csv / .tsv / .jsonl file or tfds:NAME:SPLIT (default: the run's config.data.eval)",
  )
  _column_flags(parser, "--data")
  _max_seq_length_flag(parser)
  args = _parse(parser, argv)
  from bert_jax.finetune import commands

  commands.evaluate_main(
    args.workdir,
    data=args.data,
    step=args.step,
    text_column=args.text_column,
    text_pair_column=args.text_pair_column,
    label_column=args.label_column,
    max_seq_length=args.max_seq_length,
  )


def _predict(argv):
  parser = _parser(
    "predict",
    "Predictions of a fine-tuned run for every row of --input, as "
    "JSON Lines: label and probabilities, value, word tags or answer.",
    step=True,
  )
  parser.add_argument(
    "--input",
    required=True,
    help="a .csv / .tsv / .jsonl file with the run's text columns (and an optional id "
    "column, copied to the output), a .txt of one text per line, or tfds:NAME:SPLIT",
  )
  parser.add_argument(
    "--output",
    required=True,
    help="the .jsonl file to write, one object per input row (its folder is made), or - for stdout",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  _column_flags(parser, "--input")
  _max_seq_length_flag(parser)
  args = _parse(parser, argv)
  from bert_jax.finetune import commands

  commands.predict_main(
    args.workdir,
    args.input,
    args.output,
    step=args.step,
    overwrite=args.overwrite,
    text_column=args.text_column,
    text_pair_column=args.text_pair_column,
    label_column=args.label_column,
    max_seq_length=args.max_seq_length,
  )


def _column_flags(parser, source: str):
  """The flags of predict and evaluate that name the columns of `source` (--input, --data)."""
  parser.add_argument(
    "--text-column",
    help=f"the column of {source} with the texts (default: the run's config.data.text_column)",
  )
  parser.add_argument(
    "--text-pair-column",
    help=f"runs of pairs: the column of {source} with the second texts (default: the run's "
    "config.data.text_pair_column)",
  )
  parser.add_argument(
    "--label-column",
    help=f"the column of {source} with the labels, values or tags (default: the run's "
    "config.data.label_column)",
  )


def _max_seq_length_flag(parser):
  """The --max-seq-length flag of predict and evaluate."""
  parser.add_argument(
    "--max-seq-length",
    type=int,
    help="tokens a text (or pair) is cut at, up to the model's positions (default: the run's "
    "config.data.max_seq_length); batches of wider texts hold fewer of them",
  )


def _parser(command, description, workdir_help="a run directory", step=False):
  """An argparse parser for a workdir command (--workdir, and --step if asked)."""
  parser = argparse.ArgumentParser(prog=f"bert-jax {command}", description=description)
  parser.add_argument("--workdir", required=True, help=workdir_help)
  if step:
    parser.add_argument(
      "--step",
      type=int,
      help="checkpoint step (default: a fine-tuned run's best eval, else the latest)",
    )
  return parser


def _parse(parser, argv):
  args = parser.parse_args(argv)
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # Orbax warns about read-only managers
  return args


def _fill_mask(argv):
  parser = _parser("fill-mask", "Top predictions for each [MASK] in the text.")
  parser.add_argument("--json", action="store_true", help="one JSON list per input")
  parser.add_argument("--top-k", type=int, default=5, help="predictions shown per [MASK]")
  parser.add_argument("text", nargs="+", help='text containing [MASK], e.g. "a [MASK] b"')
  args = _parse(parser, argv)
  from bert_jax import fill_mask

  fill_mask.main(args.workdir, args.text, top_k=args.top_k, as_json=args.json)


def _export_hf(argv):
  parser = _parser(
    "export-hf",
    "A run's checkpoint as a Hugging Face model directory (config.json, "
    "model.safetensors, tokenizer files): its family's pretraining class "
    "(BertForPreTraining, RobertaForMaskedLM, ElectraForPreTraining with the generator in "
    "OUT/generator/ as ElectraForMaskedLM, ...), its fine-tuned head, or a "
    "sentence-transformers model.",
    step=True,
  )
  parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
  args = _parse(parser, argv)
  from bert_jax.hf import export

  export.export_hf(args.workdir, args.out, step=args.step, overwrite=args.overwrite)


def _import_hf(argv):
  parser = _parser(
    "import-hf",
    "A Hugging Face checkpoint directory (BERT, RoBERTa, XLM-R, DistilBERT, "
    "ELECTRA, ALBERT or ModernBERT) as a bert_jax "
    "workdir to start from (--config.init_from=WORKDIR).",
    "the new run directory",
  )
  parser.add_argument("--hf", required=True, help="checkpoint dir: config.json, weights, vocab")
  parser.add_argument(
    "--generator",
    help="ELECTRA: the generator (ElectraForMaskedLM dir) to pair with the discriminator "
    "in --hf, for replaced-token detection (default: --hf's generator/ folder, if any)",
  )
  parser.add_argument("--seed", type=int, default=0, help="initialises missing heads")
  parser.add_argument(
    "--vocab-multiple",
    type=int,
    default=128,
    help="pad the vocabulary rows to a multiple (config.model.vocab_multiple)",
  )
  args = _parse(parser, argv)
  from bert_jax import run as run_lib
  from bert_jax.hf import import_hf

  run_lib.check_workdir(args.workdir)
  import_hf.import_hf(
    args.hf,
    args.workdir,
    generator_dir=args.generator,
    vocab_multiple=args.vocab_multiple,
    seed=args.seed,
  )


def _embed(argv):
  parser = _parser(
    "embed",
    "One vector per line of text, saved as .npy.",
    "a run directory (or an imported one)",
    step=True,
  )
  parser.add_argument(
    "--input",
    required=True,
    help="UTF-8 text, one text per line, blank lines too (or a .csv / .tsv / .jsonl: see --column)",
  )
  parser.add_argument(
    "--output",
    required=True,
    help="the .npy file to write, (lines, hidden) float32 (its folder is made)",
  )
  parser.add_argument(
    "--pooling",
    choices=("cls", "mean", "max"),
    default=None,
    help="[CLS] hidden state, or the mean (default) or max over non-padding tokens; an "
    "embedding run (task embedding) uses its own pooling and normalisation",
  )
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument(
    "--max-seq-length",
    "--max-length",
    dest="max_length",
    metavar="MAX_SEQ_LENGTH",
    type=int,
    help="tokens per text (default: the model's positions; an embedding run: its "
    "max_seq_length); batches of wider texts hold fewer of them",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
  parser.add_argument(
    "--column",
    help="the column of a .csv / .tsv / .jsonl --input with the texts (default: the run's "
    "config.data.text_column, else text)",
  )
  args = _parse(parser, argv)
  from bert_jax import embed

  embed.main(
    args.workdir,
    args.input,
    args.output,
    pooling=args.pooling,
    batch_size=args.batch_size,
    max_length=args.max_length,
    step=args.step,
    overwrite=args.overwrite,
    column=args.column,
  )


def _compile(argv):
  """`bert-jax compile`: the recipe's train step compiled for a TPU slice; exit 1 if it
  does not fit.
  """
  parser = argparse.ArgumentParser(prog="bert-jax compile", add_help=False)
  parser.add_argument("--topology")
  args, rest = parser.parse_known_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # nothing runs: no accelerator is needed
  from bert_jax import aot
  from bert_jax import config as config_lib

  parsed = parse_config("compile", rest, config_lib.DEFAULT_CONFIG, aot.USAGE, workdir=False)
  if parsed and not args.topology:
    raise UserError("--topology is required, e.g. --topology v5e:4x4")
  if parsed and not aot.main(parsed[0], args.topology):
    sys.exit(1)


COMMANDS = {
  "prepare": _job("prepare", "bert_jax.train.pretrain", "prepare_data"),
  "pretrain": _job("pretrain", "bert_jax.train.pretrain", "pretrain"),
  "finetune": _job("finetune", "bert_jax.train.finetune", "finetune"),
  "distill": _job("distill", "bert_jax.train.distill", "distill"),
  "evaluate": _evaluate,
  "predict": _predict,
  "fill-mask": _fill_mask,
  "export-hf": _export_hf,
  "import-hf": _import_hf,
  "embed": _embed,
  "compile": _compile,
}


def cpu_alone_without_accelerators(environ=os.environ) -> bool:
  """Starts JAX's CPU backend alone on a host with no accelerator device files, unless
  `JAX_PLATFORMS` says otherwise; returns whether it did. Otherwise an installed libtpu (the
  `aot` extra, for `bert-jax compile`, which needs no TPU backend) probes for a TPU at each
  command and prints a screen of warnings.
  """
  if environ.get("JAX_PLATFORMS", "").strip() or not host_memory.runs_on_cpu(environ):
    return False
  jax.config.update("jax_platforms", "cpu")
  return True


def start_command() -> None:
  """What a process whose command is bert_jax's (`bert-jax`, `python -m
  bert_jax.finetune.glue`) does before it runs: the persistent compilation cache (a rerun
  loads the programs this one compiled, compile_cache.py), and JAX's CPU backend alone on
  a host without accelerators.
  """
  compile_cache.enable()
  cpu_alone_without_accelerators()


def main(argv=None):
  """`bert-jax COMMAND ...`; returns the exit status (2 for bad input, 75 for a run
  stopped by SIGTERM / Ctrl-C after its checkpoint, 130 for a second Ctrl-C).
  """
  command = argv is None  # this process is the command (a caller's, tests or notebooks,
  if command:  # keeps its own allocator and collector): tune the allocator before JAX starts
    host_memory.keep_freed_memory()
    argv = sys.argv[1:]
  if argv and argv[0] == "--version":
    print(version())
    return 0
  if not argv or argv[0] not in COMMANDS:
    return report_errors(_overview, argv[0] if argv else None)
  if command:
    start_command()
  resumable = argv[0] in RESUMABLE and "--help" not in argv and "-h" not in argv
  with _sigterm_stops(to_the_end=command) if resumable else contextlib.nullcontext():
    status = report_errors(COMMANDS[argv[0]], argv[1:], resumes=argv[0] in RESUMABLE)
  if command:  # the exit's collection would walk every object the run made (~0.3 s): skip it
    gc.freeze()
  return status


# The commands a launcher reruns after exit 75 (SLURM --requeue, `launch/tpu.py watch`).
RESUMABLE = ("prepare", "pretrain", "finetune", "distill")


@contextlib.contextmanager
def _sigterm_stops(to_the_end: bool = False):
  """SIGTERM raises `Terminated` in the body: a preemption while data is prepared exits 75
  (run again) instead of 143. The training loop takes SIGTERM over while it steps (and
  saves a checkpoint); under jax.distributed, JAX's preemption notifier does. Once the
  command stopped, SIGTERM is ignored; `to_the_end` (the process is the command) keeps it
  so through the interpreter's teardown, else the handler found is restored.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM finds it stopping
    raise Terminated()

  stop.raises = True  # the loop ignores SIGTERM after its stop rather than restore this
  previous = signal.signal(signal.SIGTERM, stop)
  try:
    yield
  finally:
    if not (to_the_end and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
      signal.signal(signal.SIGTERM, previous)


# `bert-jax --help`: one line per command (each command's --help has the rest).
SUMMARIES = {
  "prepare": "tokenizer and masked-pretraining shards of a recipe's corpus",
  "pretrain": "pretrain (or resume) an encoder; the embedded demo without --config",
  "finetune": "fine-tune a run or an import: classification, regression, tokens, qa, embedding",
  "distill": "distil a fine-tuned classifier into a smaller student",
  "evaluate": "metrics of a checkpoint: fine-tuned on eval data (or --data), pretrained held-out",
  "predict": "predictions of a fine-tuned run for each row of --input, as JSON Lines",
  "fill-mask": "top predictions for each [MASK] in a text",
  "export-hf": "a run's checkpoint as a Hugging Face model directory",
  "import-hf": "a Hugging Face checkpoint as a workdir to start from",
  "embed": "one vector per line of text, saved as .npy",
  "compile": "compile a recipe's train step for a TPU slice: memory per chip, fits or not",
}


def version() -> str:
  """`bert-jax --version`: this package's version and the ones a bug report needs."""
  import platform
  from importlib import metadata

  import flax

  return (
    f"bert-jax {metadata.version('bert_jax')} (jax {jax.__version__}, flax {flax.__version__}, "
    f"Python {platform.python_version()})"
  )


def _overview(word):
  """`bert-jax`, `bert-jax --help` or `bert-jax WORD` (not a command): the commands, one
  line each; exit 0 when help was asked for, else 2 (on stderr, after naming WORD).
  """
  asked = word in ("-h", "--help", "help")
  lines = []
  if not asked and word is not None:
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    lines.append(
      f"error: unknown command {word!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    )
  lines += ["usage: bert-jax COMMAND [--help] ...  (bert-jax --version)", "", "commands:"]
  lines += [f"  {name:<10} {SUMMARIES[name]}" for name in COMMANDS]
  lines += ["", "bert-jax COMMAND --help: its flags, or its recipe's config with every key."]
  print("\n".join(lines), file=sys.stdout if asked else sys.stderr)
  return 0 if asked else 2


# Filesystem errors that are the user's to fix (a read-only disk, a full one, a path that is
# a file or a folder where the other is needed): one line, as bad input.
_USER_OS_ERRORS = (
  errno.EROFS,
  errno.EACCES,
  errno.EPERM,
  errno.ENOSPC,
  errno.EDQUOT,
  errno.ENOTDIR,
  errno.EISDIR,
)


def report_errors(function, *args, resumes: bool = False):
  """Runs `function(*args)`; bad input (UserError) becomes one `error:` line and exit 2.

  A run stopped by SIGTERM or a first Ctrl-C (Preempted) has saved a checkpoint, and one
  SIGTERM stopped outside its steps (Terminated) has nothing to save: one line and exit 75,
  which launchers read as "run again"; so does a connection to a bucket lost after its
  clients' retries (`storage.connection_lost`), in one line too. Any other Ctrl-C prints
  one line and exits 130: a job (`resumes`) goes on where it stopped when run again,
  another command starts over (predict, embed and the exports write their files whole, or
  not at all).
  """
  try:
    status = function(*args)  # None for a job; `_overview` gives its own
  except (Preempted, Terminated) as e:
    print(str(e), file=sys.stderr)
    return PREEMPTED_EXIT_CODE
  except UserError as e:
    return _failed(2, f"error: {e}", tell=not isinstance(e, multihost.SharedFailure))
  except BrokenPipeError:  # `bert-jax ... | head`: the reader has stopped; no traceback
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  except OSError as e:
    from bert_jax import storage  # pylint: disable=g-import-not-at-top

    if e.errno in (errno.EEXIST, errno.ENOENT) and (link := storage.dangling_link(e.filename)):
      return _failed(2, f"error: {storage.dangling_link_problem(link)}")
    if reason := storage.connection_lost(e):
      return _failed(PREEMPTED_EXIT_CODE, _lost_connection_line(reason, resumes))
    if e.errno not in _USER_OS_ERRORS:
      _stop_cluster_on(e)
      raise
    where = f": {e.filename}" if e.filename else ""
    return _failed(2, f"error: {e.strerror}{where}; choose a writable location with room")
  except KeyboardInterrupt:
    again = "to resume" if resumes else "to start it over"
    print(f"\ninterrupted; run the same command again {again}", file=sys.stderr)
    return 130
  except Exception as e:
    from bert_jax import storage  # pylint: disable=g-import-not-at-top

    if reason := storage.connection_lost(e):
      return _failed(PREEMPTED_EXIT_CODE, _lost_connection_line(reason, resumes))
    _stop_cluster_on(e)
    raise
  return status or 0


def _lost_connection_line(reason: str, resumes: bool) -> str:
  """The one line of a command that lost its connection to the storage (exit 75, which
  launchers rerun): a job resumes from its last saved checkpoint, another command starts over.
  """
  again = "to resume from its last saved checkpoint" if resumes else "to start it over"
  return (
    f"error: lost the connection to the storage ({reason}); once it is back, run the same "
    f"command again {again}"
  )


def _failed(status: int, line: str, tell: bool = True) -> int:
  """Prints the error `line` and returns `status`; in a jax.distributed cluster every
  process ends with that line and status (multihost.stop_all), at once.
  """
  multihost.stop_all(status, line, tell)  # returns only outside a cluster
  print(line, file=sys.stderr)
  return status


def _stop_cluster_on(e: BaseException) -> None:
  """A failure that is a bug (its traceback) ends every process of a cluster too."""
  if multihost.in_cluster():
    text = "".join(traceback.format_exception(e)).rstrip()
    multihost.stop_all(1, f"{text}\nerror: process failed: {errors.summary(e)}")


if __name__ == "__main__":
  sys.exit(main())
