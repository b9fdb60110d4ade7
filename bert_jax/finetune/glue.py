"""`python -m bert_jax.finetune.glue`: the paper's GLUE sweep, written up as its Table 1.

    python -m bert_jax.finetune.glue --init-from runs/bert_base --workdir runs/glue \
      [--tasks cola,sst2,...] [--learning-rates 5e-5,4e-5,3e-5,2e-5] \
      [--config.KEY=VALUE ...] [--out runs/glue/glue.md]

For each task and learning rate it fine-tunes `--init-from` with the recipe
`configs/finetune/glue.py:TASK` in WORKDIR/TASK/lr_X (an interrupted run resumes; a
finished one, with its `results.json`, is not run again), takes the metrics of the run's
best dev eval (WORKDIR/TASK/lr_X/best/), picks the best learning rate per task on the dev
set (Devlin et al. 2018, §4.1) and writes the markdown tables (`markdown_table`) after
every run. MNLI-mm is no run of its own: the MNLI model of each learning rate is
evaluated on the mismatched dev set, and the table shows it for the rate MNLI-m picked.
`--config.KEY=VALUE` options go to every run (e.g. `--config.model.dtype=bfloat16`);
delete a run's results.json to run it again after changing them. The workdir and --out may
be URLs (`gs://...`).
"""

import argparse
import json
import sys

from bert_jax import cli, host_memory, storage
from bert_jax import config as config_lib
from bert_jax.errors import UserError
from bert_jax.finetune import tfds_tasks

RECIPE = config_lib.RECIPES / "finetune" / "glue.py"
# The paper's choices (Devlin et al. 2018, §4.1), picked per task on the dev set; the
# recipe configs/finetune/glue.py defaults to the lowest.
LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)
MISMATCHED = "mnli_mismatched"
# The paper's Table 1 columns and the tasks each shows (MNLI: matched / mismatched).
COLUMNS = (
  ("MNLI-(m/mm)", ("mnli", MISMATCHED)),
  ("QQP", ("qqp",)),
  ("QNLI", ("qnli",)),
  ("SST-2", ("sst2",)),
  ("CoLA", ("cola",)),
  ("STS-B", ("stsb",)),
  ("MRPC", ("mrpc",)),
  ("RTE", ("rte",)),
)
TASKS = tuple(t for _, tasks in COLUMNS for t in tasks) + ("wnli",)
NAMES = {
  "mnli": "MNLI-m",
  MISMATCHED: "MNLI-mm",
  "qqp": "QQP",
  "qnli": "QNLI",
  "sst2": "SST-2",
  "cola": "CoLA",
  "stsb": "STS-B",
  "mrpc": "MRPC",
  "rte": "RTE",
  "wnli": "WNLI",
}
RESULTS_FILE = "results.json"


def lr_name(lr: float) -> str:
  """A learning rate as a folder name: 2e-05."""
  return f"{lr:g}"


def run_dir(workdir: str, task: str, lr: float) -> str:
  """WORKDIR/TASK/lr_X; MNLI-mm shares MNLI's run."""
  trained = "mnli" if task == MISMATCHED else task
  return storage.join(workdir, trained, f"lr_{lr_name(lr)}")


def best_metrics(directory: str) -> dict[str, float]:
  """The metrics of a fine-tuned run's best eval (kept in DIRECTORY/best/ by the loop)."""
  from bert_jax import run as run_lib

  checkpoints, step = run_lib.open_checkpoints(directory, folder="best")
  try:
    return dict(checkpoints.meta(step)["best"]["metrics"])
  finally:
    checkpoints.close()


def _cached(path, compute):
  """The JSON in `path`, or `compute()` written there first."""
  if storage.isfile(path):
    return storage.read_json(path)
  values = {k: float(v) for k, v in compute().items()}
  storage.write_json(path, values, indent=1)
  return values


def run(
  task: str, lr: float, *, workdir: str, init_from: str, overrides=(), recipe=RECIPE
) -> dict[str, float]:
  """Fine-tunes (or resumes, or reuses) one task at one learning rate.

  Args:
    task: a key of `TASKS`; `mnli_mismatched` evaluates the MNLI run of `lr`.
    lr: the learning rate.
    workdir: the sweep's folder (the run is `run_dir(workdir, task, lr)`).
    init_from: the run to fine-tune.
    overrides: `--config.KEY=VALUE` options for the run.
    recipe: a recipe file taking the task as its argument.

  Returns:
    The dev metrics of the run's best eval (cached in its results.json).
  """
  directory = run_dir(workdir, task, lr)
  if task == MISMATCHED:
    run("mnli", lr, workdir=workdir, init_from=init_from, overrides=overrides, recipe=recipe)
    mismatched = tfds_tasks.TASKS[MISMATCHED]
    spec = tfds_tasks.data_spec(mismatched.name, mismatched.eval_split)
    from bert_jax.finetune import commands

    return _cached(
      storage.join(directory, f"{MISMATCHED}.json"),
      lambda: commands.evaluate_main(directory, data=spec),
    )

  def train():
    from bert_jax.train import finetune

    argv = [
      "--config",
      f"{recipe}:{task}",
      "--workdir",
      directory,
      f"--config.init_from={init_from}",
      f"--config.train.learning_rate={lr!r}",
      *overrides,
    ]
    finetune.finetune(
      *cli.parse_config("finetune", argv, finetune.DEFAULT_RECIPE, finetune.USAGE["finetune"])
    )
    return best_metrics(directory)

  storage.makedirs(directory)
  return _cached(storage.join(directory, RESULTS_FILE), train)


def main_metric(task: str) -> str:
  """The metric the paper reports for a GLUE task."""
  return tfds_tasks.TASKS[task].main_metric


def best_learning_rates(results: dict) -> dict[str, float]:
  """{task: the learning rate of its best dev score}; MNLI-mm takes MNLI-m's (one model)."""
  best = {task: _best_lr(runs, main_metric(task)) for task, runs in results.items() if runs}
  if MISMATCHED in best and best.get("mnli") in results.get(MISMATCHED, {}):
    best[MISMATCHED] = best["mnli"]
  return best


def _best_lr(runs, metric):
  """The learning rate of the highest `metric` (the lowest rate of a tie).

  Raises:
    UserError: a run's metrics without `metric` (a results.json of other settings).
  """
  missing = [lr_name(lr) for lr in sorted(runs) if metric not in runs[lr]]
  if missing:
    raise UserError(
      f"the runs {', '.join(missing)} have no {metric!r} in their {RESULTS_FILE} (made with "
      f"other metrics); delete those {RESULTS_FILE} files to run them again"
    )
  return max(sorted(runs), key=lambda lr: runs[lr][metric])


def _score(value):
  return f"{100 * value:.1f}"


def markdown_table(results: dict) -> str:
  """Markdown of GLUE dev results laid out like Table 1 of Devlin et al. (2018), then a
  table of every run.

  Args:
    results: {task: {learning rate: {metric: value}}}, tasks of `TASKS`, metric values in
      [0, 1] (correlations in [-1, 1]) as the evaluations give them.

  Returns:
    The markdown text. Scores are x100 with one decimal: F1 for QQP and MRPC, Spearman
    for STS-B, Matthews for CoLA, accuracy otherwise, at each task's best learning rate.
    The average is over the 9 numbers of the table (MNLI-m and MNLI-mm each count), as in
    the paper; tasks not run show "-" and the average is then over those run, marked (k/9).
  """
  best = best_learning_rates(results)
  scores = {t: results[t][lr][main_metric(t)] for t, lr in best.items()}
  cells, shown = [], []
  for _, tasks in COLUMNS:
    cells.append("/".join(_score(scores[t]) if t in scores else "-" for t in tasks))
    shown += [scores[t] for t in tasks if t in scores]
  total = sum(len(tasks) for _, tasks in COLUMNS)
  average = (
    "-"
    if not shown
    else _score(sum(shown) / len(shown))
    + ("" if len(shown) == total else f" ({len(shown)}/{total})")
  )
  lines = [
    "## GLUE dev results",
    "",
    "| " + " | ".join([name for name, _ in COLUMNS] + ["Average"]) + " |",
    "|" + "---|" * (len(COLUMNS) + 1),
    "| " + " | ".join(cells + [average]) + " |",
    "",
    "Dev sets, best learning rate per task, x100: F1 for QQP and MRPC, Spearman for STS-B, "
    "Matthews for CoLA, accuracy otherwise. The average is over the 9 numbers (MNLI-m and "
    "MNLI-mm each count), as in the paper's Table 1; like the paper it leaves out WNLI "
    "(a flawed set: the majority class beats trained systems), shown below. MNLI-mm is the "
    "MNLI-m model of the chosen rate on the mismatched dev set.",
    "",
    "## Every run",
    "",
    "| Task | Learning rate | Dev score | Metrics | Chosen |",
    "|---|---|---|---|---|",
  ]
  for task in [t for t in TASKS if t in results] + [t for t in results if t not in TASKS]:
    metric = main_metric(task)
    for lr in sorted(results[task], reverse=True):
      values = results[task][lr]
      detail = ", ".join(
        f"{m} {_score(values[m])}" for m in tfds_tasks.TASKS[task].metrics if m in values
      )
      if "loss" in values:
        detail += f", loss {values['loss']:.3f}"
      lines.append(
        f"| {NAMES.get(task, task)} | {lr_name(lr)} | {metric} "
        f"{_score(values[metric])} | {detail} | {'yes' if best[task] == lr else ''} |"
      )
  return "\n".join(lines) + "\n"


def sweep(
  tasks, learning_rates, *, workdir: str, init_from: str, overrides=(), out=None, recipe=RECIPE
) -> dict:
  """Runs every task at every learning rate, rewriting `out` (markdown) and
  WORKDIR/glue.json after each run.

  Returns:
    {task: {learning rate: dev metrics}} (see `run`).
  """
  out = out or storage.join(workdir, "glue.md")
  results = {}
  for task in tasks:
    for lr in learning_rates:
      results.setdefault(task, {})[lr] = run(
        task, lr, workdir=workdir, init_from=init_from, overrides=overrides, recipe=recipe
      )
      _write(out, markdown_table(results))
      _write(
        storage.join(workdir, "glue.json"),
        json.dumps(
          {t: {lr_name(lr): v for lr, v in runs.items()} for t, runs in results.items()}, indent=1
        )
        + "\n",
      )
  print(f"GLUE results -> {out}")
  return results


def _write(path, text):
  storage.makedirs(storage.parent(path))
  storage.write_text(path, text)


def _parse(argv):
  parser = argparse.ArgumentParser(
    prog="python -m bert_jax.finetune.glue",
    description="Fine-tune on GLUE with the paper's "
    "learning-rate sweep and write the dev results as its Table 1. Other options "
    "--config.KEY=VALUE go to every run.",
  )
  parser.add_argument(
    "--init-from",
    required=True,
    help="the run to fine-tune (a pretraining workdir or one made by bert-jax import-hf)",
  )
  parser.add_argument("--workdir", required=True, help="one folder per task and learning rate")
  parser.add_argument(
    "--tasks", default=",".join(TASKS), help=f"comma-separated, of {','.join(TASKS)} (default: all)"
  )
  parser.add_argument(
    "--learning-rates",
    default=",".join(map(lr_name, LEARNING_RATES)),
    help="comma-separated (default: the paper's)",
  )
  parser.add_argument("--out", help="the markdown file (default: WORKDIR/glue.md)")
  parser.add_argument(
    "--recipe", default=str(RECIPE), help="a recipe taking the task as its argument (FILE:TASK)"
  )
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    raise UserError(
      f"unexpected arguments {bad}; per-run options look like --config.train.batch_size=16"
    )
  tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
  unknown = [t for t in tasks if t not in TASKS]
  if unknown or not tasks:
    raise UserError(
      f"--tasks: unknown {', '.join(unknown) or 'none given'}; choose from {', '.join(TASKS)}"
    )
  try:
    rates = [float(x) for x in args.learning_rates.split(",") if x.strip()]
  except ValueError:
    raise UserError(
      f"--learning-rates={args.learning_rates!r}: give numbers, e.g. 2e-5,3e-5,5e-5"
    ) from None
  if not rates or min(rates) <= 0:
    raise UserError("--learning-rates: give positive numbers, e.g. 2e-5,3e-5,5e-5")
  return args, tasks, rates, rest


def _main(argv):
  args, tasks, rates, overrides = _parse(argv)
  sweep(
    tasks,
    rates,
    workdir=args.workdir,
    init_from=args.init_from,
    overrides=overrides,
    out=args.out,
    recipe=args.recipe,
  )


def main(argv: list[str] | None = None) -> int:
  """`python -m bert_jax.finetune.glue`; returns the exit status."""
  if argv is None:  # this process is the command: set up as `bert-jax` does (cli.main)
    host_memory.keep_freed_memory()
    cli.start_command()
  return cli.report_errors(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
  sys.exit(main())
