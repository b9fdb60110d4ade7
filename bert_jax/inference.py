"""Inference from a run directory: load a checkpoint's parameters on one device, fill-mask.

Needs no TensorFlow: only the prepared data's tokenizer, the checkpoint and its metadata.
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import checkpoint as ckpt_lib
from bert_jax.data import prepare
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import UserError
from bert_jax.model import bert, heads

TOKENIZER_DIR = "tokenizer"  # in a workdir: the tokenizer of an imported checkpoint
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model")  # by preference


@dataclasses.dataclass
class Run:
  """A run's checkpoint loaded on one device: the model, its parameters and tokenizer."""

  model: heads.BertForPreTraining | heads.BertForTask
  params: dict
  tokenizer: object  # tokenizer.Tokenizer | tokenizer.WordPieceTokenizer
  meta: dict
  step: int


def load_run(workdir, step=None):
  """The run in `workdir` at `step`, parameters on one device. Without `step`: the best
  eval's parameters of a fine-tuned run (WORKDIR/best/), else the latest checkpoint.

  Works for a checkpoint saved on any mesh (Orbax restores into the single-device layout)
  and for one written by `import-hf` (parameters only).
  """
  best = step is None and ckpt_lib.has_best(workdir)
  checkpoints, step = ckpt_lib.open_run(workdir, step, "best" if best else "checkpoints")
  meta = checkpoints.meta(step)
  model = heads.model_for(bert.BertConfig(**meta["model"]), meta)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_params(model)
  )
  params, _ = checkpoints.restore(step, target)
  tokenizer = run_tokenizer(workdir)
  if tokenizer.fingerprint != meta["tokenizer_fingerprint"]:
    raise UserError(
      f"the tokenizer {tokenizer.model_path} is not the one the checkpoint of "
      f"{workdir} was trained with; restore the run's own tokenizer (or point "
      f"config.data.prepared_dir at that run's data)"
    )
  return Run(model, params, tokenizer, meta, step)


def abstract_params(model):
  """The params tree of `model` as ShapeDtypeStructs (nothing allocated)."""
  return nn.meta.unbox(
    jax.eval_shape(lambda: model.init(jax.random.key(0), *heads.dummy_inputs(model))["params"])
  )


def run_tokenizer_path(workdir):
  """The tokenizer file of a run: `DIR/tokenizer/` (imported runs), else its prepared data."""
  own = os.path.join(workdir, TOKENIZER_DIR)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(own, name)):
      return os.path.join(own, name), None
  data_dir = _data_dir(workdir)
  manifest = prepare.read_manifest(data_dir)
  if manifest is None:
    raise UserError(
      f"no tokenizer for {workdir}: neither {own}/ nor prepared data "
      f"(manifest.json) in {data_dir}; restore that directory or fix "
      f"config.data.prepared_dir"
    )
  return (
    os.path.join(data_dir, manifest["tokenizer_file"]),
    manifest["settings"]["tokenizer"]["lowercase"],
  )


def inherit_tokenizer(config):
  """With config.model.size='checkpoint' and no config.tokenizer.path, the tokenizer of
  config.init_from: a model continues with the vocabulary it was trained on.
  """
  if config.model.size != "checkpoint" or not config.init_from or config.tokenizer.path:
    return
  path, lowercase = run_tokenizer_path(ckpt_lib.workdir_of(config.init_from))
  config.tokenizer.path = path
  config.tokenizer.lowercase = lowercase
  config.tokenizer.vocab_size = tokenizer_lib.load(path, lowercase=lowercase).vocab_size


def _data_dir(workdir):
  """The prepared data of a pretraining run: its config's prepared_dir, else DIR/data."""
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      prepared = json.load(f).get("data", {}).get("prepared_dir")
    if prepared:
      return prepared
  return os.path.join(workdir, "data")


def run_tokenizer(workdir):
  path, lowercase = run_tokenizer_path(workdir)
  return tokenizer_lib.load(path, lowercase=lowercase)


def fill_mask(model, params, tokenizer, text, top_k=5):
  """Hugging Face fill-mask output for one text: a list per [MASK] of top-k dicts.

  Returns a list of {"token", "token_str", "score"} when the text has one [MASK], else a
  list of such lists (one per [MASK], in order), as `pipeline("fill-mask")` does.
  """
  ids = [tokenizer.cls_id] + tokenizer.encode(text) + [tokenizer.sep_id]
  ids = ids[: model.config.max_position_embeddings]
  positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
  if not positions:
    raise UserError(f"no [MASK] in {text!r}; write [MASK] where a token should be predicted")
  input_ids = jnp.asarray([ids], jnp.int32)
  mlm_logits, _ = model.apply(
    {"params": params},
    input_ids,
    jnp.zeros_like(input_ids),
    jnp.ones_like(input_ids),
    jnp.asarray([positions], jnp.int32),
  )
  # (masks, vocab): the embedding's padding rows are not tokens
  probs = np.asarray(jax.nn.softmax(mlm_logits[0, :, : tokenizer.vocab_size], axis=-1))
  results = []
  for row in probs:
    best = np.argsort(-row, kind="stable")[:top_k]
    results.append(
      [
        {"token": int(i), "token_str": tokenizer.decode([int(i)]).strip(), "score": float(row[i])}
        for i in best
      ]
    )
  return results[0] if len(results) == 1 else results


def main(workdir, texts, *, top_k=5, as_json=False):
  run = load_run(workdir)
  for text in texts:
    result = fill_mask(run.model, run.params, run.tokenizer, text, top_k)
    if as_json:
      print(json.dumps(result))
      continue
    print(text)
    for masks in [result] if isinstance(result[0], dict) else result:
      for rank, r in enumerate(masks, 1):
        print(f"  {rank}. {r['token_str']!r:<20} {r['score']:.4f}")
