"""The run directory: its layout, and opening a run (parameters, tokenizer, meta) on one device.

A workdir holds:

    checkpoints/<step>/   Orbax: params, opt_state, meta (the latest few, to resume)
    best/<step>/          fine-tuning: the best eval's params and meta
    data/                 prepared shards, manifest and tokenizer (or config.data.prepared_dir)
    tokenizer/            the tokenizer of an imported or fine-tuned run
    metrics.jsonl         one JSON object per logged step
    tensorboard/          the same scalars for TensorBoard
    config.json           the resolved config of the run

This module is the one place that knows those names. Needs no TensorFlow.
"""

import dataclasses
import os
import sys

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from bert_jax import checkpoint as ckpt_lib
from bert_jax import multihost, storage
from bert_jax.data import prepare
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.hf import convert as hf_convert
from bert_jax.model import registry

CHECKPOINTS = "checkpoints"
BEST = "best"
DATA = "data"
TOKENIZER = "tokenizer"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CONFIG = "config.json"
TEACHER_LOGITS = "teacher_logits.npz"  # a distillation's (`train.teacher_logits`)
# What a run directory holds, which no other command (predict, export-hf) may replace.
RUN_FOLDERS = (CHECKPOINTS, BEST, DATA, TOKENIZER, TENSORBOARD)
RUN_FILES = (METRICS, CONFIG, TEACHER_LOGITS)
TOKENIZER_FILES = tokenizer_lib.FILE_NAMES  # by preference


def workdir_of(path: str) -> str:
  """The run directory of `path`, a workdir or its `checkpoints/` folder."""
  if storage.is_remote(path):
    path = os.fspath(path).rstrip("/")
    return storage.parent(path) if storage.name(path) == CHECKPOINTS else path
  path = os.path.normpath(path)
  return os.path.dirname(path) if os.path.basename(path) == CHECKPOINTS else path


def path(workdir: str, name: str) -> str:
  """`WORKDIR/name` for one of this module's layout names."""
  return storage.join(workdir, name)


def data_dir(config, workdir: str) -> str:
  """Where a run's prepared data lives: config.data.prepared_dir, or WORKDIR/data; absolute
  (a URL as it is).
  """
  return storage.absolute(config.data.prepared_dir or path(workdir, DATA))


def write_config(config, workdir: str) -> None:
  """Writes the resolved config as WORKDIR/config.json (process 0, for all)."""
  text = config.to_json_best_effort(indent=2)
  multihost.on_process_zero(lambda: storage.write_text(path(workdir, CONFIG), text))


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
  """'key old -> new' for each setting of the config dict `new` that differs from `old`
  (a run's config.json, written by an earlier run), nested keys dotted.
  """
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_changes(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key} {a!r} -> {b!r}")
  return out


def check_same_init_from(config, workdir: str) -> None:
  """Bad input: resuming the run in `workdir` with another config.init_from than it
  started from. init_from is read when a run starts; a resumed run goes on from its own
  checkpoint, so a new init_from would be ignored while config.json claimed it.
  """
  new = config.init_from
  saved = read_config(workdir)
  if saved is None:  # config.json gone: a fine-tuned run's checkpoint names its init_from too
    saved = latest_meta(workdir) or {}
  old = saved.get("init_from")
  if not new or (old and _same_place(old, new)):
    return
  began = f"from config.init_from={old!r}" if old else "without config.init_from"
  raise UserError(
    f"{workdir} holds a run started {began}, and resuming it goes on from its own "
    f"checkpoint: config.init_from={new!r} would be ignored; use a new --workdir to start "
    f"from it (or resume with the init_from the run started with)"
  )


def _same_place(a: str, b: str) -> bool:
  """Whether two run paths name the same run (as written, or once made absolute)."""
  a, b = workdir_of(a), workdir_of(b)
  return a == b or storage.absolute(a) == storage.absolute(b)


def read_config(workdir: str, required: bool = False) -> dict | None:
  """The run's config.json as a dict, or None when there is none.

  Raises:
    UserError: config.json is not JSON, or is missing and `required`.
  """
  config_path = path(workdir, CONFIG)
  if not storage.exists(config_path):
    if required:
      raise UserError(
        f"{workdir} has no {CONFIG}: it holds the run's settings (task, columns, lengths); "
        f"restore it from where the run was made"
      )
    return None
  try:
    return storage.read_json(config_path)
  except ValueError as e:  # json.JSONDecodeError
    raise UserError(
      f"{config_path} is damaged (not JSON: {str(e)[:80]}); restore it from where the run was made"
    ) from None


def check_workdir(workdir: str) -> None:
  """Bad input: a --workdir that is a file, or that cannot be created or written; for a URL,
  a bucket that does not exist or cannot be reached.
  """
  if storage.is_remote(workdir):
    problem = storage.unreachable(workdir)
    if problem:
      raise UserError(f"--workdir {workdir}: {problem}; check the bucket name and access")
    if storage.isfile(workdir):
      raise UserError(f"--workdir {workdir} is a file; give a directory (new or a run's)")
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"--workdir {workdir} is a file; give a directory (new or a run's)")
  parent = os.path.dirname(os.path.abspath(workdir))
  existing = workdir if os.path.isdir(workdir) else parent
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f"--workdir {workdir}: {existing} is not writable; choose another directory")


def has_best(workdir: str) -> bool:
  """Whether a fine-tuned run kept its best eval's parameters (WORKDIR/best/)."""
  directory = path(workdir_of(workdir), BEST)
  return storage.isdir(directory) and any(n.isdigit() for n in storage.listdir(directory))


def latest_checkpoint(workdir: str) -> tuple[int | None, dict | None]:
  """(step, meta) of the latest checkpoint in WORKDIR/checkpoints/; (None, None) when there
  is none.
  """
  directory = path(workdir, CHECKPOINTS)
  if not storage.isdir(directory):
    return None, None
  checkpoints = ckpt_lib.Checkpoints(directory, read_only=True)
  step = checkpoints.latest_step()
  return (None, None) if step is None else (step, checkpoints.meta(step))


def latest_meta(workdir: str) -> dict | None:
  """The meta of the latest checkpoint in WORKDIR/checkpoints/, or None when there is none."""
  return latest_checkpoint(workdir)[1]


def open_checkpoints(workdir: str, step: int | None = None, folder: str = CHECKPOINTS):
  """Read-only checkpoints of a run and the step to use (the latest unless given).

  Args:
    workdir: a run directory or its `checkpoints/` folder.
    step: the checkpoint step; None: the latest.
    folder: `checkpoints`, or `best` for the best eval of a fine-tuned run.

  Returns:
    (checkpoint.Checkpoints, step).

  Raises:
    UserError: there is no finished checkpoint, or none at `step` (the error lists the
      steps there are).
  """
  directory = check_is_run(workdir, folder)
  checkpoints = ckpt_lib.Checkpoints(directory, read_only=True)
  steps = checkpoints.all_steps()
  if not steps:
    raise UserError(f"{directory} holds no finished checkpoint yet")
  step = max(steps) if step is None else step
  if step not in steps:
    raise UserError(f"no checkpoint at step {step} in {directory}; available: {sorted(steps)}")
  return checkpoints, step


def check_is_run(workdir: str, folder: str = CHECKPOINTS) -> str:
  """WORKDIR/folder (`workdir` may name a step: `workdir_of`), checked to exist.

  Raises:
    UserError: `workdir` does not exist, or is no run (a Hugging Face model directory, a
      file, a folder without `folder`/), with what to give instead.
  """
  directory = path(workdir_of(workdir), folder)
  if not storage.isdir(directory):
    if not storage.exists(workdir):
      raise UserError(f"{workdir} does not exist; give a run directory (a --workdir trained in)")
    raise UserError(_not_a_run(workdir, folder))
  return directory


def _not_a_run(workdir: str, folder: str) -> str:
  """Why `workdir` (which exists) is no run, and how to make one of it."""
  if storage.isfile(workdir):
    return f"{workdir} is a file, not a run directory; give the folder a run wrote"
  try:
    hf = storage.read_json(path(workdir, CONFIG))
  except (OSError, ValueError):
    hf = None
  if isinstance(hf, dict) and "model_type" in hf:  # a Hugging Face model's config.json
    return (
      f"{workdir} is a Hugging Face model directory, not a run; import it first (bert-jax "
      f"import-hf --hf {workdir} --workdir runs/NAME) and give runs/NAME"
    )
  return (
    f"{workdir} has no {folder}/: it is not a run; train first (bert-jax pretrain, "
    f"finetune or distill --workdir {workdir}) or import one (bert-jax import-hf)"
  )


def tokenizer_path(workdir: str) -> tuple[str, bool | None]:
  """(tokenizer file, lowercase) of a run: `WORKDIR/tokenizer/` (imported and fine-tuned
  runs), else its prepared data's tokenizer (lowercase as the data was prepared).
  """
  own = path(workdir, TOKENIZER)
  for name in TOKENIZER_FILES:
    if storage.isfile(storage.join(own, name)):
      return storage.join(own, name), None
  data = _prepared_dir(workdir)
  manifest = prepare.read_manifest(data)
  if manifest is None:
    raise UserError(
      f"no tokenizer for {workdir}: neither {own}/ nor prepared data "
      f"({prepare.MANIFEST}) in {data}; restore that directory or fix "
      f"config.data.prepared_dir"
    )
  return storage.join(data, manifest["tokenizer_file"]), manifest["settings"]["tokenizer"][
    "lowercase"
  ]


def _prepared_dir(workdir: str) -> str:
  """The prepared data of a pretraining run: its config's prepared_dir, else WORKDIR/data."""
  config = read_config(workdir) or {}
  return config.get("data", {}).get("prepared_dir") or path(workdir, DATA)


def tokenizer(workdir: str):
  """The tokenizer a run was trained with (see `tokenizer_path`)."""
  file, lowercase = tokenizer_path(workdir)
  return tokenizer_lib.load(file, lowercase=lowercase)


def inherited_tokenizer(config) -> dict | None:
  """The tokenizer settings a run continues with, or None to keep config.tokenizer as is.

  With config.model.size='checkpoint' and no config.tokenizer.path, a model continues with
  the vocabulary it was trained on: config.init_from's tokenizer. Returns
  {"path", "lowercase", "vocab_size"} for `config.tokenizer` then; changes nothing.
  """
  if config.model.size != "checkpoint" or not config.init_from or config.tokenizer.path:
    return None
  check_is_run(config.init_from)  # before its tokenizer is looked for
  file, lowercase = tokenizer_path(workdir_of(config.init_from))
  vocab_size = tokenizer_lib.load(file, lowercase=lowercase).vocab_size
  return {"path": file, "lowercase": lowercase, "vocab_size": vocab_size}


def with_inherited_tokenizer(config):
  """A copy of `config` whose tokenizer is the inherited one (`inherited_tokenizer`), or
  `config` itself when nothing is inherited.
  """
  settings = inherited_tokenizer(config)
  if settings is None:
    return config
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.tokenizer.update(settings)
  return config


def save_tokenizer(tokenizer, workdir: str) -> None:
  """Copies the tokenizer file into WORKDIR/tokenizer/ (a fine-tuned run stands alone); the
  bytes, and so the fingerprint the checkpoint records, stay the same.
  """
  target = path(workdir, TOKENIZER)
  storage.makedirs(target)
  destination = storage.join(target, tokenizer.file_name)
  if storage.absolute(tokenizer.model_path) != storage.absolute(destination):
    storage.copy(tokenizer.model_path, destination)


@dataclasses.dataclass
class Run:
  """A run's checkpoint loaded on one device: the model, its parameters and tokenizer."""

  model: nn.Module
  params: dict
  tokenizer: object  # tokenizer.SentencePieceTokenizer | tokenizer.WordPieceTokenizer
  meta: dict
  step: int


def load(workdir: str, step: int | None = None) -> Run:
  """The run in `workdir` at `step`, parameters on one device.

  Without `step`: the best eval's parameters of a fine-tuned run (WORKDIR/best/), else the
  latest checkpoint. A `step` is looked for in checkpoints/, then in best/. Works for a checkpoint saved on any mesh (Orbax restores into the
  single-device layout) and for one written by `import-hf` (parameters only).
  """
  folder = _folder_of(workdir, step)
  checkpoints, step = open_checkpoints(workdir, step, folder)
  try:
    meta = checkpoints.meta(step)
    model = registry.model_for(registry.config_for(meta), meta)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_params(model)
    )
    params, _ = checkpoints.restore(step, target)
  except ckpt_lib.Unreadable as e:
    steps = {
      f: [s for s in _steps(workdir, f) if (f, s) != (folder, step)] for f in (CHECKPOINTS, BEST)
    }
    others = "; ".join(f"{f}/ has {found}" for f, found in steps.items() if found)
    fix = f"choose another step with --step ({others})" if others else "train the run again"
    raise UserError(
      f"checkpoint {checkpoints.directory}/{step} is unreadable ({e.reason}); {fix}"
    ) from None
  if note := _unfinished_note(workdir, step, checkpoints if folder == CHECKPOINTS else None):
    print(note, file=sys.stderr)
  run_tokenizer = tokenizer(workdir)
  if run_tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
    raise UserError(
      f"the tokenizer {run_tokenizer.model_path} is not the one the checkpoint of "
      f"{workdir} was trained with; restore the run's own tokenizer (or point "
      f"config.data.prepared_dir at that run's data)"
    )
  return Run(model, params, run_tokenizer, meta, step)


def _unfinished_note(workdir: str, step: int, checkpoints=None) -> str | None:
  """A note when the run's latest checkpoint is short of the steps it was started for
  (stopped, or still training), naming the step `load` uses; None for a finished run, an
  import, or a checkpoint saved before runs recorded their plan. `checkpoints`: the run's
  checkpoints/ where `load` has it open already.
  """
  if checkpoints is None:
    directory = path(workdir_of(workdir), CHECKPOINTS)
    if not storage.isdir(directory):
      return None
    checkpoints = ckpt_lib.Checkpoints(directory, read_only=True)
  steps = sorted(checkpoints.all_steps())
  if not steps:
    return None
  latest = steps[-1]
  planned = checkpoints.meta(latest).get("steps")
  if not planned or latest >= planned:
    return None
  return (
    f"note: {workdir} stopped at step {latest} of the {planned} it was started for (or is "
    f"still training); this uses its step {step}: rerun its training command to finish it"
  )


def _folder_of(workdir: str, step: int | None) -> str:
  """Where `load` finds `step`: best/ for a fine-tuned run's default or a step kept only
  there (the others are pruned as training goes on), else checkpoints/.
  """
  if not has_best(workdir):
    return CHECKPOINTS
  if step is None:
    return BEST
  steps = {folder: _steps(workdir, folder) for folder in (CHECKPOINTS, BEST)}
  for folder, found in steps.items():
    if step in found:
      return folder
  raise UserError(
    f"no checkpoint at step {step} in {workdir}: checkpoints/ has {steps[CHECKPOINTS]}, "
    f"best/ (the best eval) has {steps[BEST]}"
  )


def _steps(workdir: str, folder: str) -> list[int]:
  directory = path(workdir_of(workdir), folder)
  if not storage.isdir(directory):
    return []
  return sorted(ckpt_lib.Checkpoints(directory, read_only=True).all_steps())


def restore_encoder(source, step, meta, abstract_encoder):
  """The encoder (`bert`) of checkpoint `step` of `source`, whatever heads it was saved
  with (`meta`: its meta), in `abstract_encoder`'s layout and shardings (`restore_as`).
  """
  return restore_as(source, step, meta, {"bert": abstract_encoder})["bert"]


def restore_as(source, step, meta, wanted: dict) -> dict:
  """The parameters `wanted` names (top-level parts of checkpoint `step` of `source`;
  `meta`: its meta), in the shardings and the layer layout of `wanted`'s abstract trees.

  The same layout restores straight into those shardings. A checkpoint whose layers are
  laid out otherwise (`config.model.scan_layers`: one stacked `encoder/layers`, or
  `layer_{i}`) is restored in its own, replicated, then its layers are stacked or unstacked
  (`hf.convert.unscan` / `scan_like`) and placed: a scanned recipe's run fine-tunes or
  continues unscanned, and the other way.
  """
  own = abstract_params(registry.model_for(registry.config_for(meta), meta))
  mesh = jax.tree_util.tree_leaves(wanted)[0].sharding.mesh
  replicated = NamedSharding(mesh, PartitionSpec())
  target = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), own
  )
  relaid = {name for name in wanted if _layout(own.get(name)) != _layout(wanted[name])}
  target.update({name: like for name, like in wanted.items() if name not in relaid})
  restored, _ = source.restore(step, target)
  out = {name: restored[name] for name in wanted}
  if relaid:
    unrolled = hf_convert.unscan(restored)
    for name in relaid:
      encoder = hf_convert.scan_like(unrolled[name]["encoder"], wanted[name]["encoder"])
      out[name] = jax.device_put(
        {**unrolled[name], "encoder": encoder},
        jax.tree_util.tree_map(lambda a: a.sharding, wanted[name]),
      )
  return out


def _layout(part) -> str | None:
  """How an encoder-holding part (`bert`, `generator`) lays out its layers: "scanned"
  (`encoder/layers`, ModernBERT's `encoder/groups`), "unrolled", or None (no encoder).
  """
  encoder = part.get("encoder") if isinstance(part, dict) else None
  if encoder is None:
    return None
  return "scanned" if {"layers", "groups"} & set(encoder) else "unrolled"


def abstract_params(model: nn.Module):
  """The params tree of `model` as ShapeDtypeStructs (nothing allocated)."""
  return nn.meta.unbox(
    jax.eval_shape(lambda: model.init(jax.random.key(0), *registry.dummy_inputs(model))["params"])
  )
