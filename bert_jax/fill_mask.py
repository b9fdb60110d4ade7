"""`bert-jax fill-mask`: the top predictions for each [MASK] of a text, as Hugging Face's
fill-mask pipeline gives them.

The model runs as one compiled program per input shape: a text is padded up to a multiple
of `LENGTH_BUCKET` tokens and its [MASK] positions to a multiple of `MASK_BUCKET`, so texts
of similar lengths share a program, and the next command loads it from the compile cache
(`bert_jax/compile_cache.py`). Padding is masked out, so it changes no prediction.
"""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import run as run_lib
from bert_jax.errors import UserError

LENGTH_BUCKET = 32
MASK_BUCKET = 4


def fill_mask(model, params, tokenizer, text: str, top_k: int = 5, ids=None) -> list:
  """Hugging Face fill-mask output for one text: a list per [MASK] of top-k dicts.

  Args:
    model: a `BertForPreTraining` (its MLM head gives the predictions).
    params: the model's parameters.
    tokenizer: the run's tokenizer; `[MASK]` typed in `text` encodes to its mask id (also
      where its mask token is another, such as RoBERTa's `<mask>`).
    text: the text, with at least one `[MASK]` within the model's positions (it is cut to
      them).
    top_k: predictions per [MASK], best first.
    ids: `masked_ids` of the text, when the caller has them already.

  Returns:
    A list of {"token", "token_str", "score"} when the text has one [MASK], else a list of
    such lists (one per [MASK], in order), as `pipeline("fill-mask")` does.

  Raises:
    UserError: the text has no [MASK], or none within the model's positions.
  """
  limit = model.config.max_length
  ids = masked_ids(tokenizer, text, limit) if ids is None else ids
  dropped = ids[limit:].count(tokenizer.mask_id)
  if dropped:
    print(
      f"note: the text is {len(ids)} tokens: its last {dropped} [MASK]s, past the model's "
      f"{limit} positions, are not predicted",
      file=sys.stderr,
    )
  ids = ids[:limit]
  positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
  length = min(_round_up(len(ids), LENGTH_BUCKET), model.config.max_length)
  input_ids = np.full((1, length), tokenizer.pad_id, np.int32)
  input_ids[0, : len(ids)] = ids
  attention_mask = (np.arange(length) < len(ids)).astype(np.int32)[None]
  masked = np.zeros((1, _round_up(len(positions), MASK_BUCKET)), np.int32)
  masked[0, : len(positions)] = positions
  mlm_logits = _mlm_logits(model, params, input_ids, attention_mask, masked)
  # (masks, vocab): the embedding's padding rows are not tokens
  probs = np.asarray(jax.nn.softmax(mlm_logits[0, : len(positions), : tokenizer.vocab_size], -1))
  results = []
  for row in probs:
    best = np.argsort(-row, kind="stable")[:top_k]
    results.append(
      [
        {"token": int(i), "token_str": tokenizer.decode([int(i)]), "score": float(row[i])}
        for i in best
      ]
    )
  return results[0] if len(results) == 1 else results


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@functools.partial(jax.jit, static_argnums=0)
def _mlm_logits(model, params, input_ids, attention_mask, masked_positions):
  """(1, masks, vocab) MLM logits at `masked_positions` of one padded row."""
  mlm_logits, _ = model.apply(
    {"params": params}, input_ids, jnp.zeros_like(input_ids), attention_mask, masked_positions
  )
  return mlm_logits


def masked_ids(tokenizer, text: str, limit: int) -> list[int]:
  """The ids of `text` between [CLS] and [SEP] (`[MASK]` typed as the tokenizer's mask).

  Raises:
    UserError: the text has no [MASK], or none within the model's `limit` positions.
  """
  mask = tokenizer.id_to_piece(tokenizer.mask_id)  # `<mask>` for RoBERTa's tokenizers
  ids = [tokenizer.cls_id] + tokenizer.encode(text.replace("[MASK]", mask)) + [tokenizer.sep_id]
  if tokenizer.mask_id not in ids:
    shown = text if len(text) <= 60 else text[:57] + "..."
    spelled = "[MASK]" + (f" (or {mask})" if mask != "[MASK]" else "")
    raise UserError(f"no {spelled} in {shown!r}; write it where a token should be predicted")
  if tokenizer.mask_id not in ids[:limit]:
    raise UserError(
      f"the text is {len(ids)} tokens and its first [MASK] is token {ids.index(tokenizer.mask_id)}, "
      f"beyond the model's {limit} positions; shorten the text before the [MASK]"
    )
  return ids


def main(workdir: str, texts: list[str], *, top_k: int = 5, as_json: bool = False) -> None:
  """`bert-jax fill-mask`: prints the predictions for each text.

  Args:
    workdir: a pretraining run (or an imported one).
    texts: texts with [MASK] in them.
    top_k: predictions per [MASK]; at least 1.
    as_json: one JSON list per text instead of ranked lines.

  Raises:
    UserError: `top_k` below 1 (checked before the run is loaded), no checkpoint, a
      fine-tuned run, or a text without [MASK].
  """
  if top_k < 1:
    raise UserError(f"--top-k {top_k} must be at least 1 (the predictions shown per [MASK])")
  run = run_lib.load(workdir)
  if "task" in run.meta:
    source = run.meta.get("init_from")
    what = "an imported checkpoint fine-tuned" if run.meta.get("imported_from") else "fine-tuned"
    raise UserError(
      f"{workdir} is {what} for {run.meta['task']!r} and has no masked-LM head; "
      f"fill-mask takes a pretraining run, or an import of a pretrained (masked-LM) model"
      + (f", such as the one it started from: --workdir {source}" if source else "")
    )
  if "mlm" in run.meta.get("initialized", ()):
    print(
      f"note: {run.meta['imported_from']} has no masked-LM head, so import-hf initialised "
      f"one at random: these predictions mean nothing until it is trained (bert-jax "
      f"pretrain --config configs/continue_pretraining.py --config.init_from={workdir})",
      file=sys.stderr,
    )
  # Every text checked before any is predicted.
  encoded = [masked_ids(run.tokenizer, text, run.model.config.max_length) for text in texts]
  for text, ids in zip(texts, encoded):
    result = fill_mask(run.model, run.params, run.tokenizer, text, top_k, ids=ids)
    if as_json:
      print(json.dumps(result))
      continue
    print(text)
    for masks in [result] if isinstance(result[0], dict) else result:
      for rank, r in enumerate(masks, 1):
        print(f"  {rank}. {r['token_str']!r:<20} {r['score']:.4f}")
