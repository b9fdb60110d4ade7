"""A thin wrapper over Orbax's CheckpointManager.

Each step folder `checkpoints/<step>/` holds three items: `params`, `opt_state` (both
sharded arrays, restored straight into the layout of whatever mesh asks) and `meta` (JSON:
the step, the data position, the model config and the tokenizer fingerprint). Keeping the
parameters apart lets export, `fill-mask` and `init_from` read them without the optimizer
state.
"""

import os

import orbax.checkpoint as ocp
from absl import logging

from bert_jax.errors import UserError


class Checkpoints:
  """Async, keep-last-N checkpoints in `directory`."""

  def __init__(self, directory, *, keep=3, async_save=True, read_only=False):
    self.directory = os.path.abspath(directory)  # tensorstore wants absolute paths
    level = logging.get_verbosity()
    if read_only:  # Orbax warns that a read-only manager neither saves nor deletes
      logging.set_verbosity(logging.ERROR)
    try:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
      )
      self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("params", "opt_state", "meta")
      )
    finally:
      logging.set_verbosity(level)

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state, meta):
    """Starts saving `state` (a TrainState) and `meta` at `step` (returns at once)."""
    self._manager.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave(meta),
      ),
      force=True,
    )

  def save_params(self, step, params, meta):
    """Saves parameters and `meta` only: a checkpoint to start from (`import-hf`), not to
    resume (it has no optimizer state).
    """
    self._manager.save(
      step,
      args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def meta(self, step):
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step, abstract_params, abstract_opt_state=None):
    """Restores params (and the optimizer state when its target is given) at `step`."""
    items = {"params": ocp.args.StandardRestore(abstract_params)}
    if abstract_opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["params"], restored.get("opt_state") if abstract_opt_state is not None else None

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def has_best(workdir):
  """Whether a fine-tuned run kept its best eval's parameters (WORKDIR/best/)."""
  directory = os.path.join(workdir_of(workdir), "best")
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def latest_meta(workdir):
  """The meta of the latest checkpoint in WORKDIR/checkpoints/, or None when there is none."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  checkpoints = Checkpoints(directory, read_only=True)
  step = checkpoints.latest_step()
  return None if step is None else checkpoints.meta(step)


def workdir_of(path):
  """The run directory of `path`, a workdir or its `checkpoints/` folder."""
  path = os.path.normpath(path)
  return os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path


def open_run(path, step=None, folder="checkpoints"):
  """Read-only checkpoints of a run and the step to use (the latest unless given).

  `path` is a workdir or its `checkpoints/` folder; `folder` is `best` for the best eval
  of a fine-tuned run. Raises UserError when there is no finished checkpoint, or none at
  `step` (listing the steps there are).
  """
  directory = os.path.join(workdir_of(path), folder)
  if not os.path.isdir(directory):
    raise UserError(f"{path} has no checkpoints/; train first: bert-jax pretrain --workdir {path}")
  checkpoints = Checkpoints(directory, read_only=True)
  steps = checkpoints.all_steps()
  if not steps:
    raise UserError(f"{directory} holds no finished checkpoint yet")
  step = max(steps) if step is None else step
  if step not in steps:
    raise UserError(f"no checkpoint at step {step} in {directory}; available: {sorted(steps)}")
  return checkpoints, step


def check_same_model(saved_model, model_dict, where):
  """Bad input: a checkpoint of another architecture in the workdir / init_from."""
  keys = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "scan_layers",
  )
  diff = {
    k: (saved_model.get(k), model_dict[k]) for k in keys if saved_model.get(k) != model_dict[k]
  }
  if diff:
    detail = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
    raise UserError(
      f"{where} holds a checkpoint of another model ({detail}); "
      f"use a new --workdir or the matching config.model settings"
    )
