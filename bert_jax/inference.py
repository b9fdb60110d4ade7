"""Inference from a run directory: load the latest parameters on one device, fill-mask.

Needs no TensorFlow: only the prepared data's tokenizer, the checkpoint and its metadata.
"""

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
from bert_jax.model import bert
from bert_jax.model import heads


def load_run(workdir, step=None):
  """(model config, parameters on the default device, tokenizer) of a pretraining run."""
  checkpoints, step = ckpt_lib.open_run(workdir, step)
  model_cfg = bert.BertConfig(**checkpoints.meta(step)["model"])
  model = heads.BertForPreTraining(model_cfg)
  ids = jnp.zeros((1, 8), jnp.int32)
  abstract = nn.meta.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), ids, ids, ids, ids[:, :1])["params"]))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
  params, _ = checkpoints.restore(step, target)
  data_dir = _data_dir(workdir)
  manifest = prepare.read_manifest(data_dir)
  if manifest is None:
    raise UserError(f"no prepared data (manifest.json) in {data_dir}: the run's tokenizer is "
                    f"there; restore that directory or fix config.data.prepared_dir")
  tokenizer = tokenizer_lib.load(os.path.join(data_dir, manifest["tokenizer_file"]),
                                 lowercase=manifest["settings"]["tokenizer"]["lowercase"])
  if tokenizer.fingerprint != checkpoints.meta(step)["tokenizer_fingerprint"]:
    raise UserError(f"the tokenizer in {data_dir} is not the one the checkpoint was trained "
                    f"with; point config.data.prepared_dir at that run's data")
  return model, params, tokenizer


def _data_dir(workdir):
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      prepared = json.load(f).get("data", {}).get("prepared_dir")
    if prepared:
      return prepared
  return os.path.join(workdir, "data")


def fill_mask(model, params, tokenizer, text, top_k=5):
  """Hugging Face fill-mask output for one text: a list per [MASK] of top-k dicts.

  Returns a list of {"token", "token_str", "score"} when the text has one [MASK], else a
  list of such lists (one per [MASK], in order), as `pipeline("fill-mask")` does.
  """
  ids = [tokenizer.cls_id] + tokenizer.encode(text) + [tokenizer.sep_id]
  ids = ids[:model.config.max_position_embeddings]
  positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
  if not positions:
    raise UserError(f"no [MASK] in {text!r}; write [MASK] where a token should be predicted")
  input_ids = jnp.asarray([ids], jnp.int32)
  mlm_logits, _ = model.apply({"params": params}, input_ids, jnp.zeros_like(input_ids),
                              jnp.ones_like(input_ids), jnp.asarray([positions], jnp.int32))
  # (masks, vocab): the embedding's padding rows are not tokens
  probs = np.asarray(jax.nn.softmax(mlm_logits[0, :, :tokenizer.vocab_size], axis=-1))
  results = []
  for row in probs:
    best = np.argsort(-row, kind="stable")[:top_k]
    results.append([{"token": int(i), "token_str": tokenizer.decode([int(i)]).strip(),
                     "score": float(row[i])} for i in best])
  return results[0] if len(results) == 1 else results


def main(workdir, texts, *, top_k=5, as_json=False):
  model, params, tokenizer = load_run(workdir)
  for text in texts:
    result = fill_mask(model, params, tokenizer, text, top_k)
    if as_json:
      print(json.dumps(result))
      continue
    print(text)
    for masks in ([result] if isinstance(result[0], dict) else result):
      for rank, r in enumerate(masks, 1):
        print(f"  {rank}. {r['token_str']!r:<20} {r['score']:.4f}")
