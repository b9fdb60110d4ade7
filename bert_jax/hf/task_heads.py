"""The fine-tuning head a Hugging Face checkpoint's config.json names: `*ForSequenceClassification`
(task classification, or regression: `problem_type` "regression", or one label),
`*ForTokenClassification` (tokens) and `*ForQuestionAnswering` (qa), with its labels
(`id2label`, in id order). `import-hf` keeps such a head in the run it writes, and `distill`
reads a classifier teacher with it (`import_hf.read_checkpoint`).

A multi-label classifier (`problem_type` "multi_label_classification") has no bert_jax task:
its head is not kept (`unkept_head` says so).
"""

import dataclasses
import types

from bert_jax.errors import UserError

# The end of an `architectures` name -> the task of its head.
_SUFFIXES = {
  "ForSequenceClassification": "classification",
  "ForTokenClassification": "tokens",
  "ForQuestionAnswering": "qa",
}
MULTI_LABEL = "multi_label_classification"


@dataclasses.dataclass(frozen=True)
class Head:
  """A checkpoint's fine-tuning head, as a fine-tuned run's meta records it."""

  architecture: str  # config.json's class, e.g. BertForSequenceClassification
  task: str  # classification | regression | tokens | qa (`model.tasks.TASKS`)
  labels: list[str] | None  # the label (tag) of each id; None: regression and qa

  @property
  def num_labels(self) -> int:
    """The head's outputs: the labels, 1 for regression, 2 (start, end) for qa."""
    return {"regression": 1, "qa": 2}.get(self.task) or len(self.labels)

  def meta(self) -> dict:
    """The checkpoint meta keys of a fine-tuned run with this head."""
    return {"task": self.task, "num_labels": self.num_labels, "labels": self.labels}

  def describe(self) -> str:
    """E.g. "the classification head (BertForSequenceClassification) with 3 labels: a, b, c"."""
    what = f"the {self.task} head ({self.architecture})"
    if not self.labels:
      return what
    kind = "tags" if self.task == "tokens" else "labels"
    shown = ", ".join(self.labels[:8]) + (", ..." if len(self.labels) > 8 else "")
    return f"{what} with {len(self.labels)} {kind}: {shown}"


def _architecture(hf: dict) -> tuple[str, str] | None:
  """(class name, task) of the first fine-tuning class config.json's `architectures` names."""
  names = hf.get("architectures")
  names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
  for name in map(str, names):
    for suffix, task in _SUFFIXES.items():
      if name.endswith(suffix):
        return name, task
  return None


def head_of(hf: dict) -> Head | None:
  """The fine-tuning head config.json names, or None: a base or pretraining model, or a
  multi-label classifier (`unkept_head`).

  Args:
    hf: a checkpoint's config.json, checked by `files.read_config`.

  Raises:
    UserError: `id2label` names a label twice.
  """
  found = _architecture(hf)
  if found is None or unkept_head(hf):
    return None
  architecture, task = found
  labels = labels_of(hf)
  if task == "classification" and (hf.get("problem_type") == "regression" or len(labels) == 1):
    return Head(architecture, "regression", None)
  return Head(architecture, task, None if task == "qa" else labels)


def unkept_head(hf: dict) -> str | None:
  """Why the fine-tuning head config.json names is not kept (a multi-label classifier),
  or None.
  """
  found = _architecture(hf)
  if found and found[1] == "classification" and hf.get("problem_type") == MULTI_LABEL:
    return (
      f"{found[0]} is a multi-label classifier (problem_type {MULTI_LABEL!r}), which bert_jax "
      f"does not fine-tune: its head is not kept"
    )
  return None


def labels_of(hf: dict) -> list[str]:
  """The label names by id: config.json's `id2label` (keys strings or ints), LABEL_i where
  it names none; as many as `id2label` has, else `num_labels` (else 2, transformers' default).

  Raises:
    UserError: a label named twice (a run's labels are distinct names).
  """
  id2label = hf.get("id2label") if isinstance(hf.get("id2label"), dict) else {}
  said = hf.get("num_labels")
  count = len(id2label) or (said if isinstance(said, int) and said > 0 else 2)
  labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]
  twice = sorted({name for name in labels if labels.count(name) > 1})
  if twice:
    raise UserError(
      f"config.json's id2label names the label {twice[0]!r} more than once; give each id "
      f"its own name there"
    )
  return labels


def naming(family, rows) -> types.SimpleNamespace:
  """The tensor naming `files.read_tensors` takes: the family's (`family.tensor_name`), and
  the names of `rows` the family leaves out (a task head's, e.g. `classifier.weight`) as
  they are.
  """
  names = {row.hf for row in rows}

  def tensor_name(name: str) -> str | None:
    found = family.tensor_name(name)
    return name if found is None and name in names else found

  return types.SimpleNamespace(tensor_name=tensor_name)
