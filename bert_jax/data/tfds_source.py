"""TensorFlow Datasets inputs, imported only when used (it imports TensorFlow): a dataset's
builder, prepared on demand with one clear error when that fails (offline, a download is
tried once), for pretraining corpora (`tfds:NAME`, `sources`) and fine-tuning tasks
(`finetune.tfds_tasks`); a pretraining input's parts and their documents.
"""

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bert_jax import errors
from bert_jax.data import corpus
from bert_jax.errors import UserError

if TYPE_CHECKING:
  import tensorflow_datasets as tfds


def builder(name: str, data_dir: str | None, *, prepare: bool = True) -> "tfds.core.DatasetBuilder":
  """The TensorFlow Datasets builder of `name` (pretraining corpora and fine-tuning tasks).

  Args:
    name: a TFDS name, e.g. "wikipedia/20230601.en" or "glue/sst2".
    data_dir: TFDS data directory; None for the TFDS default.
    prepare: download and prepare the dataset when it is not yet; False only
      looks it up (its name, version, features).

  Returns:
    A `tfds.core.DatasetBuilder`.

  Raises:
    UserError: TensorFlow Datasets is not installed, TFDS has no dataset (or
      config) `name`, or preparing it failed.
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise UserError(
      f"tfds:{name} needs TensorFlow Datasets; pip install tensorflow-datasets tensorflow"
    ) from None
  try:
    with _quiet_logs("absl"):  # "Variant folder ... has no dataset_info.json": not prepared
      dataset_builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
      f"TFDS has no dataset {name!r}; fix the tfds:NAME (tfds.list_builders() lists the "
      f"names, e.g. tfds:wikipedia/20230601.en)"
    ) from None
  except ValueError as e:
    reason = errors.first_line(e)
    raise UserError(f"TFDS dataset {name!r}: {reason}; fix the tfds:NAME/CONFIG") from None
  with _quiet_logs("absl"):  # as above, from the folder it looks in
    prepared = not prepare or dataset_builder.is_prepared()
  if not prepared:
    offline = _unreachable(*_DOWNLOAD_PROBE)
    print(
      f"TFDS: {name} is not prepared in {dataset_builder.data_dir}: downloading and preparing it"
      + (
        f" (this host cannot reach {_DOWNLOAD_PROBE[0]}: a download fails at once)"
        if offline
        else " (this needs network access)"
      ),
      file=sys.stderr,
      flush=True,
    )
    try:
      # Offline, TFDS's bars and its HTTP clients' retry warnings say only what the error
      # line says (and a download thread's warning could follow it): kept out of the output.
      quiet = _quiet_output() if offline else contextlib.nullcontext()
      with _download_retries(1 if offline else None), quiet:
        dataset_builder.download_and_prepare()
    except Exception as e:  # Network, Beam, manual download: all end here.
      why = f"; this host cannot reach {_DOWNLOAD_PROBE[0]} either" if offline else ""
      raise UserError(
        f"TFDS dataset {name!r} is not prepared in {dataset_builder.data_dir} and "
        f"preparing it failed ({errors.summary(e)}){why}; prepare it first where "
        f"there is a network (tfds build {name} --data_dir=DIR) and set "
        f"config.data.tfds_data_dir, or give local files instead (fine-tuning: "
        f"--config.data.train=FILE --config.data.eval=FILE; pretraining: "
        f"--config.data.input=FILES)"
      ) from None
  return dataset_builder


# Where TFDS looks first for a dataset to download. Unreachable (offline, and no proxy set),
# a download is tried once: TFDS's own 10 retries take 3.4 minutes to fail. A dataset that
# needs no download (a local builder) prepares as ever.
_DOWNLOAD_PROBE = ("storage.googleapis.com", 443)


@contextlib.contextmanager
def _quiet_logs(*names, level=logging.ERROR):
  """The loggers `names` below `level` in the body."""
  loggers = [logging.getLogger(n) for n in names]
  before = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(level)
  try:
    yield
  finally:
    for logger, was in zip(loggers, before):
      logger.setLevel(was)


@contextlib.contextmanager
def _quiet_output():
  """The body's stdout, stderr and warnings dropped (TFDS's progress bars and logs); the HTTP
  clients' loggers stay at ERROR after it, for the download threads that outlive it.
  """
  for name in ("urllib3", "requests"):
    logging.getLogger(name).setLevel(logging.ERROR)
  with (
    _quiet_logs("absl", "tensorflow_datasets"),
    open(os.devnull, "w") as devnull,
    contextlib.redirect_stdout(devnull),
    contextlib.redirect_stderr(devnull),
  ):
    yield


@contextlib.contextmanager
def _download_retries(count: int | None):
  """TFDS's HTTP retries set to `count` in the body (None: left as they are)."""
  from tensorflow_datasets.core.download import downloader

  before = downloader.MAX_RETRIES
  if count is not None:
    downloader.MAX_RETRIES = count
  try:
    yield
  finally:
    downloader.MAX_RETRIES = before


def _unreachable(host: str, port: int, timeout: float = 10.0) -> str | None:
  """Why `host:port` cannot be connected to ("" when it can, or when a proxy is set: the
  downloads then go through it).
  """
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
    return ""
  try:
    socket.create_connection((host, port), timeout=timeout).close()
  except OSError as e:
    return f"{type(e).__name__}: {e}"
  return ""


def parts(name: str, data_dir: str | None, split: str, text_field: str, num_units: int) -> int:
  """Prepares and checks a TFDS pretraining input; returns how many parts to cut it into
  (`sources.plan_units`: at most `num_units`, and no more than its items).
  """
  info = builder(name, data_dir).info
  fields = list(info.features.keys())
  if text_field not in fields:
    raise UserError(
      f"TFDS dataset {name!r} has no field {text_field!r}; set "
      f"config.data.text_field to one of {', '.join(fields)}"
    )
  if not info.splits:  # Splits unknown until prepared (or mocked).
    return num_units
  try:
    size = info.splits[split].num_examples
  except (KeyError, ValueError):
    raise UserError(
      f"TFDS dataset {name!r} has no split {split!r}; set "
      f"config.data.tfds_split to one of "
      f"{', '.join(info.splits)} (or a slice: train[:10%])"
    ) from None
  # An empty part is an error in TFDS: no more parts than items.
  return max(1, min(num_units, size))


def documents(unit, stats, strict) -> Iterator[list[str]]:
  """Part `unit.index` of `unit.count` of a TFDS split, one text per document."""
  import tensorflow_datasets as tfds

  split = tfds.even_splits(unit.split, n=unit.count)[unit.index]
  dataset = builder(unit.path, unit.data_dir).as_dataset(split=split, shuffle_files=False)
  for item in tfds.as_numpy(dataset):  # TFDS calls them examples: here, documents
    text = item[unit.text_field]
    if isinstance(text, bytes):
      try:
        text = text.decode("utf-8")
      except UnicodeDecodeError as e:
        if strict:
          raise UserError(
            f"tfds:{unit.path}: a text is not UTF-8 at byte {e.start}; set "
            f"config.data.strict=False to skip such texts"
          ) from None
        stats["invalid_utf8_lines"] += 1
        continue
    yield corpus.split_sentences(text)
