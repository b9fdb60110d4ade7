"""A thin wrapper over Orbax's CheckpointManager.

Each step folder `checkpoints/<step>/` holds three items: `params`, `opt_state` (both
sharded arrays, restored straight into the layout of whatever mesh asks) and `meta` (JSON:
the step, the data position, the model config and the tokenizer fingerprint). Keeping the
parameters apart lets export, `fill-mask` and `init_from` read them without the optimizer
state.
"""

import orbax.checkpoint as ocp
from absl import logging

from bert_jax import storage


class Checkpoints:
  """Async, keep-last-N checkpoints in `directory`."""

  def __init__(self, directory, *, keep=3, async_save=True, read_only=False):
    self.directory = storage.absolute(directory)  # tensorstore wants absolute paths
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
