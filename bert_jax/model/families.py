"""The encoder families: `config.model.arch` -> its config class and modules.

Each family lives in one module (`MODULES`; BERT's is `pretraining`, beside its pretraining
model) that defines `FAMILY`, a `Family`.
Every family's modules share BERT's interfaces, so the objectives, the loop, the
checkpoints and the commands do not care which one runs:

- `config`: a frozen dataclass deriving from `bert.BertConfig` (whose fields every family
  has) with `arch` defaulting to the family's name and the family's own fields after;
- `pretraining(config)`: called as `BertForPreTraining` is, with (input_ids, token_type_ids,
  attention_mask, masked_lm_positions, position_ids, deterministic); returns
  (mlm_logits (batch, predictions, vocab), sentence_logits (batch, 2)), both float32. A
  family without a sentence-pair head returns zeros for the latter (its data has labels -1);
- `encoder(config)`: the encoder module, called with (input_ids, token_type_ids,
  attention_mask, position_ids, deterministic) -> (hidden (batch, length, embed),
  pooled (batch, embed) or None when the family has no pooler). Its parameters sit under
  `bert/` in every model, its layers under `bert/encoder/layer_{i}` (or
  `bert/encoder/layers`, scanned);
- `sequence_head(config, num_labels)`: the classification / regression head, a module
  named `classifier` called with (hidden, pooled, attention_mask, deterministic) ->
  (batch, num_labels);
- `token_head(config, num_labels)`: the token-tagging and QA head, called with
  (hidden, deterministic) -> (batch, length, num_labels); None: dropout and a dense layer;
- `sentence_objectives`: the sentence-pair objectives its pretraining head trains
  (("nsp", "sop") for BERT, ("sop",) for ALBERT, () for MLM-only families).

Checkpoints store the config as a dict (`dataclasses.asdict`), `arch` included;
`config_from_dict` turns it back (a dict without `arch` is BERT's, as before families).
"""

import dataclasses
import importlib

MODULES = {
  "bert": "bert_jax.model.pretraining",
  "roberta": "bert_jax.model.roberta",
  "distilbert": "bert_jax.model.distilbert",
  "electra": "bert_jax.model.electra",
  "albert": "bert_jax.model.albert",
  "modernbert": "bert_jax.model.modernbert",
}
ARCHES = tuple(MODULES)


@dataclasses.dataclass(frozen=True)
class Family:
  """One encoder family's config class and modules (see the module docstring)."""

  name: str
  config: type
  encoder: type
  pretraining: object  # config -> the pretraining module (a class, or a function)
  sequence_head: object
  token_head: object = None
  sentence_objectives: tuple[str, ...] = ()


def family(arch: str) -> Family:
  """The family named `arch` (one of `ARCHES`).

  Raises:
    ValueError: an unknown `arch` (configs check it before, with a `UserError`).
  """
  if arch not in ARCHES:
    raise ValueError(f"unknown model arch {arch!r}; one of {', '.join(ARCHES)}")
  return importlib.import_module(MODULES[arch]).FAMILY


def config_from_dict(values: dict):
  """The family config a checkpoint's meta["model"] dict describes."""
  values = dict(values)
  return family(values.get("arch", "bert")).config(**values)
