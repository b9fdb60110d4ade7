"""`bert-jax fill-mask`: the top predictions for each [MASK] of a text, as Hugging Face's
fill-mask pipeline gives them.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import run as run_lib
from bert_jax.errors import UserError


def fill_mask(model, params, tokenizer, text: str, top_k: int = 5) -> list:
  """Hugging Face fill-mask output for one text: a list per [MASK] of top-k dicts.

  Args:
    model: a `BertForPreTraining` (its MLM head gives the predictions).
    params: the model's parameters.
    tokenizer: the run's tokenizer; `[MASK]` typed in `text` encodes to its mask id.
    text: the text, with at least one `[MASK]`; cut to the model's positions.
    top_k: predictions per [MASK], best first.

  Returns:
    A list of {"token", "token_str", "score"} when the text has one [MASK], else a list of
    such lists (one per [MASK], in order), as `pipeline("fill-mask")` does.

  Raises:
    UserError: the text has no [MASK].
  """
  ids = [tokenizer.cls_id] + tokenizer.encode(text) + [tokenizer.sep_id]
  ids = ids[: model.config.max_length]
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


def main(workdir: str, texts: list[str], *, top_k: int = 5, as_json: bool = False) -> None:
  """`bert-jax fill-mask`: prints the predictions for each text.

  Args:
    workdir: a pretraining run (or an imported one).
    texts: texts with [MASK] in them.
    top_k: predictions per [MASK]; at least 1.
    as_json: one JSON list per text instead of ranked lines.

  Raises:
    UserError: `top_k` below 1 (checked before the run is loaded), no checkpoint, or a
      text without [MASK].
  """
  if top_k < 1:
    raise UserError(f"--top-k {top_k} must be at least 1 (the predictions shown per [MASK])")
  run = run_lib.load(workdir)
  for text in texts:
    result = fill_mask(run.model, run.params, run.tokenizer, text, top_k)
    if as_json:
      print(json.dumps(result))
      continue
    print(text)
    for masks in [result] if isinstance(result[0], dict) else result:
      for rank, r in enumerate(masks, 1):
        print(f"  {rank}. {r['token_str']!r:<20} {r['score']:.4f}")
