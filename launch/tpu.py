#!/usr/bin/env python3
"""Pretrain on a Cloud TPU slice: provision it, run on every worker, follow, babysit, delete.

Standard library plus the `gcloud` CLI (no SDK). From a laptop, in this checkout:

    launch/tpu.py up    --name bert --zone us-west4-a --accelerator-type v5litepod-16 --spot
    launch/tpu.py run   --name bert --zone us-west4-a --config configs/bert_base.py:phase1 \\
                        --workdir gs://BUCKET/runs/base128 $DATA [--config.KEY=VALUE ...]
    launch/tpu.py logs  --name bert --zone us-west4-a [--worker 3] [--no-follow]
    launch/tpu.py watch --name bert --zone us-west4-a --accelerator-type v5litepod-16 --spot \\
                        --config configs/bert_base.py:phase1 --workdir gs://BUCKET/runs/base128 \\
                        $DATA --retries 10 --autodelete
    launch/tpu.py down  --name bert --zone us-west4-a

where DATA="--config.data.input=gs://BUCKET/corpus/*.txt
--config.data.prepared_dir=gs://BUCKET/data/prepared128": the recipe's data, in the bucket.

`up` creates a queued resource (a queued resource and its node share `--name`) and waits for
ACTIVE, printing each state; a slice that is ACTIVE already is left as it is. `up`, `watch`
and `run` refuse a slice that exists with another accelerator type than `--accelerator-type`
(optional for `run`: checked when given); `down` it first, or use another `--name`. `run`
ships this checkout (every file git tracks or would track, uncommitted edits included) to
every worker, installs `bert_jax[tpu]` into ~/venv there with uv, on a Python >= 3.11
(`--python PATH` skips the install and uses that interpreter), and starts `bert-jax pretrain
--config.distributed=True` detached on all workers (BERT_JAX_LOCK_WAIT_S=300 unless --env
sets it: a stale lock in the workdir is waited out), each logging to ~/bert_jax_run/log.
`run` refuses a slice whose run is still alive; `--force` stops that run (SIGTERM: it saves
a checkpoint) and starts this one. `logs` follows (or prints) one worker's log. `watch`
babysits the run until it ends: it creates the slice if need be, and recreates it and reruns
after a preemption, up to `--retries` times in all. `down` deletes the slice, waiting up to
15 times `--timeout`.

`run` and `watch` first check here what would fail only on the workers, after the slice is
paid for (data on local paths included: each worker would prepare its own copy). Every
gcloud call has a time limit (`--timeout`, for a describe or a status poll; more for a
create, a copy or a start), and one cut off is tried again. `--dry-run` on any subcommand
prints the gcloud commands instead of running them (for `watch`: those of a slice not
created yet), and no state. Errors are one `error: ...` line and exit status 2.

This file is the command line; beside it (imported from this folder, not as a package):
  tpu_cloud.py     the gcloud calls of one slice: time limits, retries, their errors
  tpu_worker.py    what runs on each worker: the start script, the status probe
  tpu_checkout.py  this checkout: the checks before a slice is paid for, the tarball shipped
  tpu_watch.py     `watch`: creates, polls, recreates after preemption, deletes
  tpu_errors.py    Error (one `error: ...` line), Busy, Mismatch, DeleteStuck, Transient
"""

import argparse
import math
import re
import sys
import tempfile

from tpu_checkout import check_job
from tpu_cloud import LOST, Cloud, shown
from tpu_errors import Busy, Error
from tpu_watch import watch
from tpu_worker import RUN_DIR

NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")  # a GCP resource name


# --- subcommands -------------------------------------------------------------------------------


def up(cloud):
  """Creates the queued resource and waits for ACTIVE; one that exists (of the type asked
  for) is waited for.
  """
  state = None if cloud.dry_run else cloud.existing()
  if state == "ACTIVE":
    cloud.say("ACTIVE already: nothing to create")
    return
  if state in LOST:
    raise Error(
      f"the queued resource {cloud.args.name} exists but is {state}: "
      f"`{cloud.command_line('down')}` it, then `up` again"
    )
  if state is None:
    cloud.create()
  else:
    cloud.say(f"exists ({state}): waiting for ACTIVE")
  cloud.wait_active()


def run(cloud):
  """Ships the checkout and starts the run on every worker, unless a run is alive there
  (`--force`: stopped first).
  """
  a = cloud.args
  if not cloud.dry_run and a.accelerator_type:
    cloud.existing()  # a slice of another type is refused before anything is shipped
  if not cloud.dry_run and cloud.live_runs():
    if not a.force:
      raise Busy(cloud.busy_message("a run"))
    cloud.say("stopping the run alive on it (--force): it saves a checkpoint first")
  cloud.start(force=a.force)


def logs(cloud):
  """Follows (or prints) one worker's log."""
  a = cloud.args
  if not cloud.dry_run:
    count = cloud.worker_count()
    if not 0 <= a.worker < count:
      raise Error(f"--worker {a.worker}: {a.name} has {count} workers, 0 to {count - 1}")
  if not a.no_follow:  # until Ctrl-C; gcloud's own messages go to the terminal
    result = cloud.ssh(f"tail -n +1 -F {RUN_DIR}/log", worker=str(a.worker), kind="follow")
    if result is not None and result.returncode not in (0, 130):
      raise Error(f"`{shown(result.args)}` exited with status {result.returncode}")
    return
  result = cloud.check(cloud.ssh(f"cat {RUN_DIR}/log", worker=str(a.worker), kind="logs"))
  if result is not None:
    print(result.stdout, end="", flush=True)


def down(cloud):
  """Deletes the queued resource and its node."""
  cloud.delete()


def parser():
  """The command line: five subcommands sharing the slice flags."""
  p = argparse.ArgumentParser(
    prog="launch/tpu.py",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  commands = p.add_subparsers(dest="command", required=True)
  summaries = {
    "up": "create the slice (a queued resource) and wait until it is ACTIVE",
    "run": "ship this checkout to every worker and start bert-jax pretrain there",
    "logs": "follow (or print) one worker's log",
    "watch": "babysit the run: create, recreate after preemption, rerun, until it ends",
    "down": "delete the slice",
  }
  for name, summary in summaries.items():
    c = commands.add_parser(name, help=summary, description=summary)
    c.add_argument("--name", required=True, help="the queued resource and its node")
    c.add_argument("--zone", required=True)
    c.add_argument("--project", help="default: gcloud's core/project")
    c.add_argument("--accelerator-type", help="e.g. v5litepod-16, v4-32, v5p-16, v6e-16")
    c.add_argument("--runtime-version", help="default: the TPU VM image of the accelerator")
    tiers = c.add_mutually_exclusive_group()
    for tier in ("spot", "reserved", "best-effort"):
      tiers.add_argument(f"--{tier}", dest="tier", action="store_const", const=tier)
    c.add_argument("--dry-run", action="store_true", help="print the gcloud commands only")
    c.add_argument("--poll", type=float, default=30.0, help="seconds between state checks")
    c.add_argument(
      "--timeout",
      type=float,
      default=120.0,
      help="seconds a describe or status poll may take (a create 5 times, a copy or start 15)",
    )
    if name in ("run", "watch"):
      add_job_flags(c)
    if name == "run":
      c.add_argument(
        "--force", action="store_true", help="stop a run alive on the slice, then start this"
      )
    if name == "watch":
      c.add_argument(
        "--retries", type=int, default=5, help="recreations after a preemption, in all (default 5)"
      )
      c.add_argument("--autodelete", action="store_true", help="delete the slice when done")
      c.add_argument(
        "--missed-polls",
        type=int,
        default=10,
        help="give up after this many status polls in a row that a worker did not answer",
      )
    if name == "logs":
      c.add_argument("--worker", type=int, default=0)
      c.add_argument("--no-follow", action="store_true", help="print the log and return")
  return p


def add_job_flags(c):
  """The flags of the run itself (`run` and `watch`)."""
  c.add_argument(
    "--config",
    required=True,
    help="a recipe in this checkout, e.g. configs/bert_base.py:phase1",
  )
  c.add_argument("--workdir", required=True, help="gs://BUCKET/runs/NAME, seen by all workers")
  c.add_argument(
    "--shared-workdir",
    action="store_true",
    help="--workdir is a path every worker mounts (e.g. Filestore), not a bucket",
  )
  c.add_argument("--python", help="a Python on the workers with bert_jax: skips the install")
  c.add_argument(
    "--env", action="append", default=[], metavar="KEY=VALUE", help="set on the workers"
  )


def check_args(args):
  """What the command line alone shows wrong."""
  if args.overrides and args.command not in ("run", "watch"):
    raise Error(f"--config.KEY=VALUE overrides go with run or watch, not {args.command}")
  if not NAME.fullmatch(args.name):
    raise Error(
      f"--name {args.name!r} is not a valid slice name: lowercase letters, digits and "
      f"hyphens, starting with a letter, not ending with a hyphen, at most 63 characters"
    )
  if args.command in ("up", "watch") and not args.accelerator_type:
    raise Error(f"{args.command} needs --accelerator-type (e.g. v5litepod-16)")
  for flag, seconds in (("--timeout", args.timeout), ("--poll", args.poll)):
    if not (math.isfinite(seconds) and seconds > 0):
      raise Error(f"{flag} {seconds:g} must be above 0 seconds")
  if args.command == "watch" and args.retries < 0:
    raise Error(f"--retries {args.retries} must be 0 or more (0: never recreate the slice)")
  if args.command == "watch" and args.missed_polls < 1:
    raise Error(f"--missed-polls {args.missed_polls} must be 1 or more")


def main(argv=None):
  """Runs one subcommand; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  # --config.KEY=VALUE overrides go to bert-jax pretrain untouched.
  args = parser().parse_args([x for x in argv if not x.startswith("--config.")])
  args.overrides = [x for x in argv if x.startswith("--config.")]
  command = {"up": up, "run": run, "logs": logs, "watch": watch, "down": down}[args.command]
  try:
    check_args(args)
    if args.command in ("run", "watch"):
      check_job(args)
    with tempfile.TemporaryDirectory(prefix="bert_jax_launch_") as scratch:
      status = command(Cloud(args, scratch))
  except Error as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    if e.afterword:
      print(e.afterword, flush=True)
    return 2
  except KeyboardInterrupt:
    return 130
  return status or 0


if __name__ == "__main__":
  sys.exit(main())
