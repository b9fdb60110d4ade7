"""Helpers of the family parity tests (`test_family_*.py`): our models against Hugging Face's
PyTorch models on the same weights.

The truth is `transformers` (PyTorch, CPU, eager attention): a random tiny checkpoint, every
parameter perturbed so that LayerNorms and biases are not their initial ones / zeros, is
imported as import-hf does (`files.read_tensors`, the family's table, `convert.from_hf`) and
both models run on the same batch; the other way, our random parameters are exported as
export-hf does and reloaded by `transformers`. Equal means within `ATOL`.

Our models run through one jitted function per model and input shapes (`outputs`,
`logits`), so tests that share both compile once.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.errors import UserError
from bert_jax.hf import convert, files
from bert_jax.hf import families as hf_families
from bert_jax.model import families, tasks

torch = pytest.importorskip("torch", reason="parity tests need torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
transformers.logging.set_verbosity_error()

ATOL = 1e-4
HEADS = {  # our task -> (Hugging Face class suffix, num_labels)
  "classification": ("ForSequenceClassification", 3),
  "tokens": ("ForTokenClassification", 5),
  "qa": ("ForQuestionAnswering", 2),
}


def padded_vocab(vocab_size: int) -> int:
  """Our rows for a checkpoint's `vocab_size` (a multiple of 128, as import-hf pads)."""
  return -(-vocab_size // 128) * 128


def our_config(hf_module, hf: dict, **changes):
  """Our family config of config.json `hf` (its vocabulary padded), with `changes`."""
  kwargs = hf_module.model_kwargs(hf)
  kwargs["vocab_size"] = padded_vocab(kwargs["vocab_size"])
  return families.family(hf_module.ARCH).config(**{**kwargs, **changes})


def perturbed(model, seed=0, scale=0.05):
  """`model` in eval mode, every parameter (tied ones once) moved by N(0, scale) noise."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn(p.shape, generator=generator))
  return model.eval()


def random_hf_model(cls, config, seed, scale=0.05):
  """A `cls(config)` of seed `seed`, `perturbed` by N(0, scale) noise, in eval mode."""
  torch.manual_seed(seed)
  return perturbed(cls(config), seed, scale)


def save(model, path, torch_bin=False, extra=None):
  """`model` saved to `path`: `save_pretrained` (safetensors), or the legacy
  pytorch_model.bin (the whole state dict, tied copies included, plus `extra` tensors).
  """
  if torch_bin:
    path.mkdir()
    model.config.save_pretrained(path)
    torch.save({**model.state_dict(), **(extra or {})}, path / "pytorch_model.bin")
  else:
    model.save_pretrained(path)
  return str(path)


def padded_batch(rng, lengths, length, pad_id, vocab, cls_id=0, low=4):
  """(input_ids, attention_mask) of rows of `lengths` real tokens (ids in [low, vocab)),
  the first `cls_id`, padded with `pad_id`.
  """
  ids = rng.integers(low, vocab, size=(len(lengths), length))
  mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int64)
  ids[:, 0] = cls_id
  return np.where(mask == 1, ids, pad_id), mask


def pair_batch(vocab):
  """(ids, token types, mask): pairs with token types, padded: rows of 12, 9 and 5 tokens."""
  rng = np.random.default_rng(0)
  lengths = np.array([12, 9, 5])
  mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, vocab, size=(3, 12)).astype(np.int32) * mask
  types_ = ((np.arange(12)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
  return ids, types_, mask


def model_for(config, head="pretraining", num_labels=None):
  """Our pretraining model, or the fine-tuning model of task `head`."""
  if head == "pretraining":
    return families.family(config.arch).pretraining(config)
  return tasks.ForTask(config, head, num_labels)


@functools.cache
def param_shapes(model, num_inputs):
  """`model`'s parameters as shapes, boxed with their axis names (traced once per model);
  `num_inputs`: the positional inputs it takes (4 for a pretraining model, else 3).
  """
  ids = np.ones((1, 8), np.int32)
  inputs = (ids, ids, ids, ids[:, :1])[:num_inputs]
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs)["params"])


def _boxed(x):
  return isinstance(x, nn.Partitioned)


def shapes(model, num_inputs):
  """`model`'s parameter shapes and dtypes (a target for an import that reads them all)."""
  return nn.meta.unbox(param_shapes(model, num_inputs))


def random_params(model, num_inputs, seed=0, scale=0.1):
  """Random numpy values of `model`'s parameters, each of which has logical axis names:
  N(0, scale), LayerNorm scales around 1 (no initialisation to compile).
  """
  boxed = param_shapes(model, num_inputs)
  flat = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=_boxed)
  assert all(_boxed(leaf) for _, leaf in flat)  # every param named
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
    return (base + rng.normal(0.0, scale, leaf.value.shape)).astype(leaf.value.dtype)

  return jax.tree_util.tree_map_with_path(value, boxed, is_leaf=_boxed)


def imported(hf_dir, hf_module, task=None, num_labels=None):
  """Our model and params for the checkpoint in `hf_dir`, read as import-hf does (the
  vocabulary padded to a multiple of 128) and converted with the table of `task`; every
  row read.

  Returns:
    (model, params, ignored): ignored are the tensor names `read_tensors` did not use.
  """
  hf = files.read_config(hf_dir)
  assert hf_families.for_model_type(hf["model_type"]) is hf_module
  tensors, ignored = files.read_tensors(hf_dir, hf_module)
  config = our_config(hf_module, hf)
  head = task or "pretraining"
  model = model_for(config, head, num_labels)
  target = shapes(model, 4 if task is None else 3)
  params, missing = convert.from_hf(
    tensors, target, hf_module.table(config, head), hf["vocab_size"]
  )
  assert missing == [], missing
  return model, params, ignored


def import_over_random(tensors, model, hf_module, head, num_inputs, vocab, scale=0.1):
  """`tensors` read by the `head` table over `random_params` of `model` (the parameters
  the table does not read keep their random values); returns (params, missing groups).
  """
  target = random_params(model, num_inputs, seed=num_inputs, scale=scale)
  params, missing = convert.from_hf(tensors, target, hf_module.table(model.config, head), vocab)
  return merge(target, params), missing


def merge(base, new):
  """`base` with the leaves of `new` (from_hf returns only the table's parameters)."""
  if not isinstance(base, dict):
    return new
  return {k: merge(v, new[k]) if k in new else v for k, v in base.items()}


def state_tensors(hf_model, hf_module):
  """The model's tensors as the family's tables name them, heads included (import-hf lists
  those as not used).
  """
  tensors = {}
  for name, value in hf_model.state_dict().items():
    ours = hf_module.tensor_name(name)
    if ours != "":
      tensors[ours or name] = value.float().numpy()
  return tensors


@functools.partial(jax.jit, static_argnums=0)
def outputs(model, params, ids, types_, mask, *rest, position_ids=None):
  """(last hidden states, the model's outputs) of our `model` on (ids, types_, mask, *rest).

  Compiled once per model and input shapes (tests share both where they can).
  """

  def run(m):
    hidden, _ = m.bert(ids, types_, mask, position_ids)
    return hidden, m(ids, types_, mask, *rest, position_ids=position_ids)

  return model.apply({"params": params}, method=run)


@functools.partial(jax.jit, static_argnums=0)
def logits(model, params, *args):
  """Our model's outputs on `args` (a fine-tuning model's float32 logits)."""
  return model.apply({"params": params}, *args)


def ours_mlm(model, params, ids, mask, position_ids=None):
  """(last hidden states, MLM logits at every position) of our MLM-only pretraining model,
  whose sentence logits are zeros.
  """
  positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
  hidden, (mlm, sentence) = outputs(
    model, params, ids, ids * 0, mask, positions, position_ids=position_ids
  )
  np.testing.assert_array_equal(sentence, 0.0)  # MLM-only families: zero sentence logits
  return np.asarray(hidden), np.asarray(mlm)


def ours_task(model, params, ids, mask):
  """Our fine-tuning model's float32 logits."""
  return np.asarray(logits(model, params, ids, ids * 0, mask))


def _torch(array):
  return torch.from_numpy(np.asarray(array).astype(np.int64))


def hf_mlm(model, ids, mask, **kwargs):
  """(last hidden states, MLM logits) of a Hugging Face MLM model."""
  with torch.no_grad():
    out = model(
      input_ids=_torch(ids), attention_mask=_torch(mask), output_hidden_states=True, **kwargs
    )
  return out.hidden_states[-1].numpy(), out.logits.numpy()


def hf_task(model, task, ids, mask):
  """A Hugging Face head model's logits, shaped as ours."""
  with torch.no_grad():
    out = model(input_ids=_torch(ids), attention_mask=_torch(mask))
  if task == "qa":
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
  return out.logits.numpy()


def assert_close(ours, theirs, mask=None):
  """Equal within ATOL (at the real tokens where `mask` is given; our extra vocabulary
  rows dropped).
  """
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  ours = ours[..., : theirs.shape[-1]]
  if mask is not None:
    real = mask.astype(bool)
    ours, theirs = ours[real], theirs[real]
  np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


def check(model, params, args, hf_model, head, positions):
  """Our last hidden states and `head`'s outputs on `args` (ids, token types, mask, ...)
  equal `hf_model`'s at the tokens that are not padding: pretraining, the MLM logits at
  `positions` and the sentence logits (SOP where `hf_model` has it, zeros for an MLM-only
  family); the per-token logits of "tokens", "qa" and "discriminator".
  """
  ids, types_, mask = args[:3]
  with torch.no_grad():
    out = hf_model(
      _torch(ids),
      attention_mask=_torch(mask),
      token_type_ids=_torch(types_),
      output_hidden_states=True,
    )
  hidden, ours = jax.tree_util.tree_map(np.asarray, outputs(model, params, *args))
  assert_close(hidden, out.hidden_states[-1].numpy(), mask)
  if head == "pretraining":
    mlm, sentence = ours
    theirs = out.prediction_logits if hasattr(out, "sop_logits") else out.logits
    assert_close(mlm, np.take_along_axis(theirs.numpy(), positions[..., None], 1))
    if hasattr(out, "sop_logits"):
      assert_close(sentence, out.sop_logits.numpy())
    elif not families.family(model.config.arch).sentence_objectives:
      assert np.array_equal(sentence, np.zeros((len(ids), 2)))
  elif head == "qa":
    assert_close(ours, np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1), mask)
  elif head == "classification":
    assert_close(ours, out.logits.numpy())
  else:  # tokens, discriminator: logits per token
    assert_close(ours, out.logits.numpy(), mask)


def export(out, params, hf_module, config, head, vocab, tokenizer, labels=None):
  """Our `params` written to the new directory `out` as `export-hf` does (`labels`: a
  fine-tuning head's); returns its path.
  """
  out.mkdir()
  tensors = convert.to_hf(params, hf_module.table(config, head), vocab)
  hf = {"architectures": [hf_module.ARCHITECTURES[head]]}
  hf.update(hf_module.hf_config(config, vocab, tokenizer))
  if labels is not None:
    hf = files.task_config(hf, head, labels)
  files.write(str(out), tensors, hf)
  return str(out)


def reload(auto_class, path, **kwargs):
  """`auto_class.from_pretrained(path)` in eval mode, asserting that every tensor was used
  and set.
  """
  model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
  assert not any(info.values()), info  # missing, unexpected, mismatched, error messages
  return model.eval()


def assert_one_line_error(path, match):
  """`files.read_config(path)` raises one UserError line matching `match`."""
  with pytest.raises(UserError, match=match) as e:
    files.read_config(str(path))
  assert "\n" not in str(e.value)


@dataclasses.dataclass(frozen=True)
class Family:
  """One family's parity set-up: its table module (`bert_jax.hf.families.*`), the
  vocabulary of its random models, and the MLM positions `check` compares. Random models,
  theirs and ours, move every parameter by N(0, `scale`) noise: 0.2 makes each one matter
  at `ATOL` (Hugging Face's init is N(0, 0.02) with zero biases).
  """

  hf_module: object
  vocab: int
  positions: np.ndarray
  scale: float = 0.2

  def random_hf(self, cls, config, seed):
    """A random Hugging Face `cls` of `config`."""
    return random_hf_model(cls, config, seed, scale=self.scale)

  def our_config(self, hf_config, **changes):
    """Our config of a `transformers` config object, as import-hf reads it."""
    return our_config(self.hf_module, hf_config.to_dict(), **changes)

  def model(self, config, head, labels):
    """Our module for `head` and its inputs (`pair_batch`'s, and `positions` to pretrain)."""
    ids, types_, mask = pair_batch(self.vocab)
    if head == "pretraining":
      return model_for(config), (ids, types_, mask, self.positions)
    return model_for(config, head, labels), (ids, types_, mask)

  def init(self, model, args):
    """Random parameters of `model` (LayerNorm scales near 1)."""
    return random_params(model, len(args), seed=len(args), scale=self.scale)

  def import_over_init(self, tensors, model, head, args):
    """`tensors` read by `head`'s table over `init`'s parameters: (params, missing)."""
    return import_over_random(
      tensors, model, self.hf_module, head, len(args), self.vocab, scale=self.scale
    )

  def check(self, model, params, args, hf_model, head):
    """`check` at this family's positions."""
    check(model, params, args, hf_model, head, self.positions)
