"""Fine-tuning labels: a label's name (a JSON number's text), and `LabelMap`, the names <->
ids of a classification or tokens run, saved with its checkpoint so that predictions come
back as names.
"""

import re

from bert_jax.errors import UserError
from bert_jax.finetune import data as data_lib


def label_name(value) -> str:
  """The name of a label: a JSON number's text, a whole float's without ".0" (1, 1.0 and
  "1" are the label "1", never the id 1); a CSV cell "1.0" is "1" as JSON's 1.0 is.
  """
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  if isinstance(value, str) and _WHOLE_DECIMAL.fullmatch(value):
    return str(int(value.split(".")[0]))  # as the number it writes: "-0.0" is "0"
  return str(value)


_WHOLE_DECIMAL = re.compile(r"[+-]?\d+\.0+")


class LabelMap:
  """Label names <-> ids. Saved with the checkpoint, so predictions come back as names.

  A file's labels are names, JSON numbers too (`label_name`) (TFDS class ids are named
  when read: `data.read`).

  Attributes:
    names: the label of each id.
    ids: the id of each label.
    from_config: named by config.data.labels (not yet trained with).
    source: the train data the labels were found in (not yet trained with), or None.
    teacher: the distillation teacher whose labels these are, or None.
    unlabelled_id: the id of a row without a label (`read(partly_labelled=True)`), or None.
  """

  def __init__(
    self,
    names,
    from_config: bool = False,
    source: str | None = None,
    teacher: str | None = None,
    unlabelled_id: int | None = None,
  ):
    self.names = [str(n) for n in names]
    self.ids = {n: i for i, n in enumerate(self.names)}
    self.from_config, self.source, self.teacher = from_config, source, teacher
    self.unlabelled_id = unlabelled_id

  @classmethod
  def infer(cls, examples: data_lib.Examples, config) -> "LabelMap":
    """The label map of a train set.

    Returns:
      config.data.labels, else the source's label names (TFDS), else the sorted labels of
      the rows (numerically when they are all integers).
    """
    if config.data.labels:
      return cls([n.strip() for n in config.data.labels.split(",")], from_config=True)
    if examples.label_names:
      return cls(examples.label_names)
    key = "tags" if config.task == "tokens" else "label"
    values = set()
    for r in examples.rows:
      values.update(r[key] if config.task == "tokens" else [r[key]])
    # Named before the set: 1 == 1.0 == True would make one of them.
    names = {label_name(v) for v in values if v is not None}
    numeric = all(v.lstrip("-").isdigit() for v in names)
    return cls(sorted(names, key=int if numeric else None), source=examples.source)

  def encode(self, label, where: str) -> int:
    """The id of a label name (a JSON number is its name: 5 is "5", not the id 5).

    Args:
      label: a name.
      where: the source and row of the label (`Examples.where`), for the error.

    Raises:
      UserError: naming `where`, the label and the known labels.
    """
    if label is None and self.unlabelled_id is not None:
      return self.unlabelled_id
    name = label_name(label)
    if name in self.ids:
      return self.ids[name]
    if isinstance(label, str) and label in self.ids:  # a model named it "1.0" (before 2026-11-30)
      return self.ids[label]
    shown = f"{', '.join(self.names[:10])}{' ...' if len(self.names) > 10 else ''}"
    if self.from_config:
      raise UserError(
        f"{where}: label {label!r} is not one of the {len(self.names)} labels of "
        f"config.data.labels ({shown}); add it there, or fix the data"
      )
    if self.source:
      raise UserError(
        f"{where}: label {label!r} is not one of the {len(self.names)} labels of the train "
        f"data {self.source} ({shown}); fix the data, or name every label in "
        f"config.data.labels"
      )
    if self.teacher:
      raise UserError(
        f"{where}: label {label!r} is not one of the {len(self.names)} labels of the teacher "
        f"{self.teacher} ({shown}); a student learns its teacher's labels: fix the data, or "
        f"fine-tune a teacher with it"
      )
    raise UserError(
      f"{where}: label {label!r} is not one of the {len(self.names)} labels the "
      f"model was trained with ({shown}); fix the data or "
      f"fine-tune with it (config.data.labels)"
    )
