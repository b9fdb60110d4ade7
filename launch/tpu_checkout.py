"""This checkout, as the workers of a Cloud TPU slice get it: the checks of `run` and
`watch` made here before a slice is paid for, and the tarball of its files they are sent.

The checks find what would fail only on the workers: a --workdir that is not a bucket (each
worker's disk goes with the slice; `--shared-workdir` for a path every worker mounts), an
--env that is not KEY=VALUE, a recipe that is not in this checkout (outside it, or ignored
by git: the workers get only the checkout), and, when bert_jax is importable here, whatever
`bert-jax pretrain` refuses in the recipe and its overrides (an unknown key, a fine-tuning
recipe, a bad value). Without --shared-workdir they also refuse a corpus or prepared data
on local paths (config.data.input, config.data.prepared_dir; as the recipe resolves them
when bert_jax is importable here, else as the overrides give them): each worker would
prepare its own copy. The tarball holds every file git tracks or would track, uncommitted
edits included.
"""

import json
import os
import re
import subprocess
import sys
import tarfile

from tpu_errors import Error, last_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATA_KEYS = ("config.data.input", "config.data.prepared_dir")
# What a run reads that no worker prepares (a phase-2 recipe's: phase 1's tokenizer and run).
READ_KEYS = ("config.tokenizer.path", "config.init_from")
DATA_LINE = "bert-jax-data"  # the check's last line: this, then DATA_KEYS' values as JSON
# Inputs read from no local path: built-in text, TensorFlow Datasets.
REMOTE_INPUTS = ("builtin:", "tfds:")

# Run in a subprocess (the launcher imports no bert_jax): the recipe and its overrides read as
# `bert-jax pretrain` reads them on the workers, then validated; given an accelerator type
# (argv[1]), the mesh and the batch on its chips too. Exit 3: no bert_jax here. Its last line
# gives the data's paths (DATA_LINE).
_CHECK_RECIPE = """
import json, math, sys, types
try:
  from bert_jax import aot, sharding, recipe_args
  from bert_jax.errors import UserError
  from bert_jax.train import pretrain
except ImportError:
  sys.exit(3)
try:
  accelerator, argv = sys.argv[1], ["--config", sys.argv[2], *sys.argv[3:]]
  config, _ = recipe_args.parse_config("pretrain", argv, pretrain.DEFAULT_RECIPE, "", False)
  config = pretrain.lanes_for_the_batch(config, say=lambda _: None)
  pretrain.validate(config)
  if accelerator:
    chips = math.prod(aot.parse_topology(accelerator)[1])
    shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, chips)))
    mesh = types.SimpleNamespace(shape=shape)
    try:
      sharding.check_batch_divides(config.train.batch_size, config.train.accum_steps, mesh)
    except UserError as e:
      raise UserError(f"on the {chips} chips of {accelerator}: {e}") from None
except UserError as e:
  print(e)
  sys.exit(2)
paths = [config.data.input, config.data.get("prepared_dir")]
print("bert-jax-data", json.dumps([*paths, config.tokenizer.get("path"), config.get("init_from")]))
"""


def check_job(a):
  """Bad input of `run` and `watch`, found here before a slice is paid for: a workdir the
  workers cannot share, an --env that is not KEY=VALUE, a recipe that is not in this
  checkout, and (when bert_jax is importable here) what `bert-jax pretrain` would refuse.
  """
  if not a.workdir.startswith("gs://") and not a.shared_workdir:
    raise Error(
      f"--workdir {a.workdir} is not a bucket: each worker has its own disk, which goes "
      f"with the slice (a recreated one starts empty); give gs://BUCKET/runs/NAME, or "
      f"--shared-workdir for a path every worker mounts (e.g. Filestore)"
    )
  for setting in a.env:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", setting):
      raise Error(f"--env {setting!r} is not KEY=VALUE")
  check_recipe_is_shipped(a.config.partition(":")[0])
  checked = subprocess.run(
    [sys.executable, "-c", _CHECK_RECIPE, a.accelerator_type or "", a.config, *a.overrides],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
  )
  if checked.returncode == 3:
    print("(bert_jax is not importable here: the workers check the recipe)", flush=True)
    data = overridden_data(a.overrides)
  elif checked.returncode:
    raise Error(last_line(checked.stdout) or last_line(checked.stderr))
  else:
    data = resolved_data(checked.stdout)
  if not a.shared_workdir:
    check_data_in_bucket(data)


def resolved_data(stdout):
  """{key: value} of DATA_KEYS and READ_KEYS from the recipe check's DATA_LINE."""
  for line in reversed(stdout.splitlines()):
    if line.startswith(f"{DATA_LINE} "):
      return dict(zip(DATA_KEYS + READ_KEYS, json.loads(line[len(DATA_LINE) + 1 :])))
  return {}


def overridden_data(overrides):
  """{key: value} of the DATA_KEYS and READ_KEYS the --config.KEY=VALUE overrides set (the
  last of each).
  """
  data = {}
  for override in overrides:
    key, _, value = override[2:].partition("=")
    if key in DATA_KEYS + READ_KEYS:
      data[key] = None if value == "None" else value
  return data


def is_local(key, value):
  """Whether a DATA_KEYS setting names files on the worker's own disk. An input may be
  comma-separated globs (each one counts); a prepared_dir left unset is WORKDIR/data.
  """
  if not value or (key == "config.data.input" and value.startswith(REMOTE_INPUTS)):
    return False
  paths = value.split(",") if key == "config.data.input" else [value]
  return any(not path.strip().startswith("gs://") for path in paths if path.strip())


def check_data_in_bucket(data):
  """Refuses a tokenizer or a run to start from on local paths (READ_KEYS: no worker has
  them), and a corpus or prepared data there: each worker would prepare its own copy on
  its own disk, which goes with the slice (and the corpus would go in the tarball).
  """
  for keys, why, example in (
    (
      READ_KEYS,
      ", and no worker has it (each has its own disk, which goes with the slice)",
      "--config.init_from=gs://BUCKET/runs/base128 "
      "--config.tokenizer.path=gs://BUCKET/data/prepared128/tokenizer.model",
    ),
    (
      DATA_KEYS,
      ": each worker would prepare its own copy on its own disk, which goes with the slice",
      "--config.data.input=gs://BUCKET/corpus/*.txt "
      "--config.data.prepared_dir=gs://BUCKET/data/prepared128",
    ),
  ):
    local = [f"{k}={v}" for k, v in data.items() if k in keys and is_local(k, v)]
    if local:
      raise Error(
        f"{' and '.join(local)} {'is' if len(local) == 1 else 'are'} local{why}; put "
        f"{'it' if keys is READ_KEYS else 'the data'} in the bucket, e.g. {example}, or give "
        f"--shared-workdir for paths every worker mounts"
      )


def check_recipe_is_shipped(recipe):
  """The workers run `recipe` from the root of the checkout shipped to them: it must be a
  file of this checkout, named from its root, that git does not ignore.
  """
  if os.path.isabs(recipe) or os.path.normpath(recipe).split(os.sep)[0] == "..":
    raise Error(
      f"--config {recipe} is outside this checkout, and the workers get only the checkout "
      f"({REPO}): copy the recipe into it (e.g. configs/) and give its path from there"
    )
  if not os.path.isfile(os.path.join(REPO, recipe)):
    raise Error(
      f"--config {recipe} is not a file of this checkout ({REPO}); the workers run the "
      f"recipes of the checkout this ships, e.g. configs/bert_base.py:phase1"
    )
  if os.path.normpath(recipe) not in checkout_files():
    raise Error(
      f"--config {recipe} is ignored by git, so it is not shipped (the workers get the files "
      f"git tracks or would track): move it, or `git add -f` it"
    )


def checkout_files():
  """The files of this checkout that git tracks or would track (its .gitignore applied)."""
  try:
    listed = subprocess.run(
      ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      cwd=REPO,
      capture_output=True,
      check=True,
    ).stdout
  except (OSError, subprocess.CalledProcessError):
    raise Error(f"{REPO} is not a git checkout: `run` ships the files git lists") from None
  return set(listed.decode().split("\0")) - {""}


def pack_checkout(path):
  """A tar.gz of the files of this checkout that git tracks or would track."""
  with tarfile.open(path, "w:gz") as tar:
    for name in sorted(checkout_files()):
      if os.path.isfile(os.path.join(REPO, name)):  # not a deleted one
        tar.add(os.path.join(REPO, name), arcname=name)
