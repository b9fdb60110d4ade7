"""Hugging Face <-> bert_jax parameters: explicit tables, one row per tensor.

Each family's table (`hf.families.<arch>.table`) has a row per tensor that names the
Hugging Face tensor, our parameter path and the rule between them: `COPY`, `LINEAR` (PyTorch's (out, in) weight is our (in, out)
kernel, transposed) and the attention rules that also split or merge the heads axis
(our query/key/value kernels are (embed, heads, head_dim), the output kernel
(heads, head_dim, embed)). Every tensor's shape is checked against the model's; nothing is
matched by guessing names.

The vocabulary rows are the one exception to "same shape": our embedding is padded to a
multiple of 128 rows (`config.model.vocab_multiple`). Export keeps the first `vocab_size`
rows; import pads with zero embeddings and an MLM bias of `PADDED_LOGIT_BIAS`, so padded ids
get no probability (those ids are never inputs nor targets).

The tables are for the unrolled layout (`encoder/layer_{i}`); `unscan` turns a checkpoint of
`config.model.scan_layers=True` (`encoder/layers`, a leading layer axis; ModernBERT's
`encoder/groups`) into it.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from bert_jax.errors import UserError

PADDED_LOGIT_BIAS = -1e4


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a tensor maps: `to_hf(ours)`, `from_hf(theirs, our_shape)`, `hf_shape(our_shape)`."""

  name: str
  to_hf: Callable[[np.ndarray], np.ndarray]
  from_hf: Callable[[np.ndarray, tuple], np.ndarray]
  hf_shape: Callable[[tuple], tuple]


def _prod(shape):
  return int(np.prod(shape))


COPY = Rule("copy", lambda a: a, lambda x, shape: x, lambda s: tuple(s))
# (in, out) kernel <-> (out, in) weight.
LINEAR = Rule("transpose", lambda a: a.T, lambda x, shape: x.T, lambda s: (s[1], s[0]))
# (embed, heads, head_dim) kernel <-> (heads * head_dim, embed) weight.
HEADS_IN = Rule(
  "merge heads, transpose",
  lambda a: a.reshape(a.shape[0], -1).T,
  lambda x, shape: x.T.reshape(shape),
  lambda s: (_prod(s[1:]), s[0]),
)
# (heads, head_dim) bias <-> (heads * head_dim,) bias.
HEADS_BIAS = Rule(
  "merge heads", lambda a: a.reshape(-1), lambda x, shape: x.reshape(shape), lambda s: (_prod(s),)
)
# (heads, head_dim, embed) kernel <-> (embed, heads * head_dim) weight.
HEADS_OUT = Rule(
  "merge heads, transpose",
  lambda a: a.reshape(-1, a.shape[-1]).T,
  lambda x, shape: x.T.reshape(shape),
  lambda s: (s[-1], _prod(s[:-1])),
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One tensor of the table: its Hugging Face name, our path and the rule between them."""

  hf: str  # Hugging Face name, as the family's pretraining class names it
  ours: tuple[str, ...]  # path in our params tree
  rule: Rule
  group: str  # encoder | pooler | mlm | nsp | head...: what import reports as missing
  vocab_pad: float | None = None  # vocabulary-sized: the value of padded rows on import


def get_path(tree, path):
  """The entry of nested dicts `tree` at the keys `path`."""
  for key in path:
    tree = tree[key]
  return tree


def set_path(tree, path, value):
  """Sets the entry of nested dicts `tree` at the keys `path`, making dicts on the way."""
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _group_member(g: int, j: int, size: int) -> str:
  """The unrolled name of layer_{j} of ModernBERT's scanned group g (groups of `size`,
  after layer 0).
  """
  return f"layer_{1 + g * size + j}"


def unscan(params: dict) -> dict:
  """A scanned params tree -> `encoder/layer_{i}`, for the encoder (`bert/`) and an ELECTRA
  generator's (`generator/`): `encoder/layers` (a leading layer axis) are layers 0, 1, ...;
  ModernBERT's `encoder/groups` (a leading group axis over `layer_{j}`, j < n) are layers
  1 + g n + j, between its unrolled `layer_0` and the layers after the groups.

  Args:
    params: our params tree, scanned or not.

  Returns:
    The unrolled tree (`params` itself when it is not scanned).
  """
  import jax

  def take(tree, index):
    return jax.tree_util.tree_map(lambda a: a[index], tree)

  unrolled = dict(params)
  for part in ("bert", "generator"):
    encoder = params.get(part, {}).get("encoder", {})
    if "layers" in encoder:
      stacked = encoder["layers"]
      count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
      layers = {f"layer_{i}": take(stacked, i) for i in range(count)}
    elif "groups" in encoder:
      groups = encoder["groups"]
      count, size = jax.tree_util.tree_leaves(groups)[0].shape[0], len(groups)
      layers = {name: value for name, value in encoder.items() if name != "groups"}
      for g in range(count):
        for j in range(size):
          layers[_group_member(g, j, size)] = take(groups[f"layer_{j}"], g)
    else:
      continue
    unrolled[part] = {**params[part], "encoder": layers}
  return unrolled


def scan_like(layers: dict, target: dict) -> dict:
  """Unrolled layers (`layer_{i}`: trees) laid out as `target`, an encoder tree of either
  kind (`unscan`'s inverse for one encoder): stacked into `layers` or ModernBERT's `groups`.
  """
  import jax

  def stack(names):  # numpy stays numpy; device arrays stack on the device
    def join(*a):
      return np.stack(a) if isinstance(a[0], np.ndarray) else jax.numpy.stack(a)

    return jax.tree_util.tree_map(join, *(layers[name] for name in names))

  if "layers" in target:
    return {"layers": stack(f"layer_{i}" for i in range(len(layers)))}
  out = {name: layers[name] for name in target if name != "groups"}
  if "groups" in target:
    size = len(target["groups"])
    count = jax.tree_util.tree_leaves(target["groups"])[0].shape[0]
    out["groups"] = {
      f"layer_{j}": stack(_group_member(g, j, size) for g in range(count)) for j in range(size)
    }
  return out


def to_hf(params: dict, rows: list[Row], vocab_size: int) -> dict:
  """Our (unrolled) params -> {Hugging Face name: float32 numpy array}.

  Args:
    params: our unrolled params tree (`unscan` first).
    rows: the family's table for the model and its head (`families.<arch>.table`).
    vocab_size: the rows of the vocabulary tensors kept (the tokenizer's, without padding).

  Returns:
    {Hugging Face name: C-contiguous float32 numpy array}.
  """
  tensors = {}
  for row in rows:
    value = np.asarray(get_path(params, row.ours), dtype=np.float32)
    if row.vocab_pad is not None:
      value = value[:vocab_size]
    tensors[row.hf] = np.ascontiguousarray(row.rule.to_hf(value))
  return tensors


def from_hf(
  tensors: dict, target: dict, rows: list[Row], vocab_size: int
) -> tuple[dict, list[str]]:
  """Hugging Face tensors -> our params, shaped like `target` (a tree of arrays or shapes).

  Args:
    tensors: {table name: numpy array}; rows that are absent keep `target`'s value (e.g.
      an initialised head).
    target: our params tree (arrays with `.shape` and `.dtype`), unrolled layout.
    rows: the family's pretraining table for the model (`families.<arch>.table`).
    vocab_size: the real vocabulary rows; the rows after them get the padding values, in
      tensors read and initialised alike (so import -> export -> import is exact).

  Returns:
    (params, missing): a new tree of numpy arrays, and the sorted groups (e.g. pooler, mlm,
    nsp) with at least one tensor absent from `tensors`.

  Raises:
    UserError: a tensor whose shape differs from the model's, naming both shapes, or
      encoder tensors missing.
  """
  params, missing = {}, {}
  for row in rows:
    current = get_path(target, row.ours)
    shape = tuple(current.shape)
    want = row.rule.hf_shape(shape)
    if row.hf in tensors:
      value = np.asarray(tensors[row.hf], dtype=np.float32)
    else:
      missing.setdefault(row.group, []).append(row.hf)
      value = row.rule.to_hf(np.asarray(current, dtype=np.float32))
    if row.vocab_pad is not None and value.shape[1:] == want[1:] and value.shape[0] <= want[0]:
      value = value[:vocab_size]
      pad = np.full((want[0] - value.shape[0],) + value.shape[1:], row.vocab_pad, np.float32)
      value = np.concatenate([value, pad])
    if value.shape != want:
      raise UserError(
        f"tensor {row.hf} has shape {list(value.shape)}, but the model needs "
        f"{list(want)} (rule: {row.rule.name}); the checkpoint's config.json does "
        f"not describe its weights"
      )
    set_path(params, row.ours, row.rule.from_hf(value, shape).astype(current.dtype))
  if "encoder" in missing:
    names = missing["encoder"]
    raise UserError(
      f"the checkpoint lacks {len(names)} encoder tensors (first: {names[0]}); "
      f"it is not a complete checkpoint of its model_type"
    )
  return params, sorted(missing)
