"""A recipe and its overrides from the command line: `--config configs/RECIPE.py[:ARG]
--workdir DIR --config.KEY=VALUE ...` read with ml_collections' config flags.

Bad input is one line (`UserError`) that names the fix: a recipe that does not load, an
override of a key the recipe lacks (the whole key, and the keys it may mean), a value of
the wrong type, a recipe of another command. `config_text` lists a config as the
`KEY = VALUE` lines `--help` prints, each key dotted as an override spells it.
"""

import difflib
import os
import re
import sys

from bert_jax.errors import UserError


def parse_config(command, argv, default_recipe, usage, workdir=True):
  """(config, workdir) from `--config FILE[:ARG] --workdir DIR --config.KEY=VALUE ...`.

  Without --config: `default_recipe`. Returns None after printing `usage` and the config
  for --help. With `workdir=False` the command takes no --workdir (returns None for it).
  """
  from absl import flags, logging

  logging.set_verbosity(logging.WARNING)
  argv = _resolve_recipe(argv)
  help_asked = bool({"-h", "--help"} & set(argv))
  argv = [a for a in argv if a not in ("-h", "--help")]
  unset = [a for a in argv if a.startswith("--config.") and a.partition("=")[2] == "None"]
  argv = [a for a in argv if a not in unset]  # (config_flags parses None as the key's type)
  try:
    fv, rest = _parse_flags(command, argv, default_recipe, workdir)
    config = fv.config
    config.get("seed")  # a config file that failed to load raises here
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
    if line := _option_error(command, e):  # a command-line option, not the recipe's
      raise UserError(line) from None
    overrides = [a for a in argv if a.startswith("--config.")]
    recipe = _recipe_alone(command, argv, default_recipe, workdir, overrides)
    if recipe is None:  # the recipe itself raised (e.g. a :ARG it does not take): its words
      raise UserError(f"{_recipe_file(argv) or default_recipe}: {_one_line(e)}") from None
    _check_recipe_kind(command, recipe, argv, default_recipe)
    if line := _unknown_key(command, recipe, overrides):  # (a dashed key fails to parse)
      raise UserError(line) from None
    unknown = "unknown config key " if isinstance(e, (KeyError, AttributeError)) else ""
    raise UserError(f"{unknown}{_one_line(e)} (keys and defaults: bert_jax/config.py)") from None
  _check_recipe_kind(command, config, argv, default_recipe)
  for override in unset:
    _set_none(command, config, override)
  if len(rest) > 1:
    raise UserError(f"unexpected arguments {rest[1:]}; options look like --config.train.steps=100")
  if help_asked:
    print(
      usage
      + "\n\nThe config, each key as --config.KEY=VALUE overrides it:\n\n"
      + config_text(config)
    )
    return None
  if not workdir:
    return config, None
  if not fv.workdir:
    raise UserError("--workdir is required: the folder for data, checkpoints and metrics")
  from bert_jax import run as run_lib

  run_lib.check_workdir(fv.workdir)
  return config, fv.workdir


def _set_none(command, config, override) -> None:
  """Applies `--config.KEY=None` to a key that may be None (a `placeholder`: "None: ..."
  in bert_jax/config.py), e.g. to take a size preset's layers where a recipe sets them.
  """
  from ml_collections import FieldReference

  key = override[len("--config.") :].partition("=")[0]
  if line := _unknown_key(command, config, [override]):
    raise UserError(line)
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  if not isinstance(node._fields.get(leaf), FieldReference) and node[leaf] is not None:
    raise UserError(
      f"config.{key} cannot be None; give it a value (`bert-jax {command} --help` lists "
      f"the keys and their values)"
    )
  node[leaf] = None


def _parse_flags(command, argv, default_recipe, workdir):
  """(FlagValues, the arguments left) of `argv`: the recipe, its overrides, --workdir."""
  from absl import flags
  from ml_collections import config_flags

  fv = flags.FlagValues()
  saved_argv, sys.argv = sys.argv, [f"bert-jax {command}"] + argv
  try:
    # config_flags reads --config.KEY overrides from sys.argv while defining the flag.
    config_flags.DEFINE_config_file(
      "config",
      str(default_recipe),
      "Recipe file (configs/*.py[:ARG]).",
      flag_values=fv,
      lock_config=True,
    )
    if workdir:
      flags.DEFINE_string(
        "workdir", None, "Run directory: data, checkpoints, metrics.", flag_values=fv
      )
    return fv, fv(sys.argv)
  finally:
    sys.argv = saved_argv


def _option_error(command, error) -> str | None:
  """The line for a command-line option of `command` that is unknown or lacks its value
  (`--steps 5`, a bare `--workdir`), or None for an error of the recipe or an override.
  """
  from absl import flags

  name = getattr(error, "flagname", None)
  if isinstance(error, flags.UnrecognizedFlagError) and name and not name.startswith("config."):
    return (
      f"unknown option --{name}; settings are overrides like --config.train.steps=100 "
      f"(`bert-jax {command} --help` lists them)"
    )
  missing = re.match(r"Missing value for flag (-+[\w.-]+)", str(error))
  if missing:
    return f"{missing[1]} needs a value (`bert-jax {command} --help`)"
  return None


def _recipe_alone(command, argv, default_recipe, workdir, overrides):
  """The recipe's config without the overrides, or None when it does not load either."""
  try:
    fv, _ = _parse_flags(command, [a for a in argv if a not in overrides], default_recipe, workdir)
    config = fv.config
    config.get("seed")
    return config
  except Exception:  # the recipe itself is broken: the caller reports the first error
    return None


# Each job's recipes have a key the others lack: which command a recipe is for.
_RECIPE_KINDS = {"finetune": "task", "distill": "teacher"}


def _check_recipe_kind(command, config, argv, default_recipe):
  """Refuses a recipe of another command (a pretraining recipe given to finetune, ...)."""
  kind = next((name for name, key in _RECIPE_KINDS.items() if key in config), "pretrain")
  if kind == "finetune" and "teacher" in config:
    kind = "distill"
  if kind == command or (kind == "pretrain" and command in ("prepare", "compile")):
    return
  given = _recipe_file(argv, with_arg=True) or str(default_recipe)
  raise UserError(
    f"{_as_typed(given)} is a recipe for bert-jax {kind}, not {command}; run "
    f"bert-jax {kind} --config {_as_typed(given)} (or give a {command} recipe)"
  )


def _recipe_file(argv, with_arg=False) -> str | None:
  """The recipe file --config names in `argv` (without its :ARG unless `with_arg`), or
  None.
  """
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      value = arg[len("--config=") :]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    return value if with_arg else value.partition(":")[0]
  return None


def _as_typed(path: str) -> str:
  """`path` relative to the working directory when it is below it (as users type it)."""
  file, colon, arg = path.partition(":")
  relative = os.path.relpath(file)
  return (file if relative.startswith("..") else relative) + colon + arg


# Names other trainers (Hugging Face's TrainingArguments, ...) give keys of ours: offered
# first when a key is unknown (pretraining counts steps: `epochs` is fine-tuning's).
_OTHER_NAMES = {
  "epochs": ("epochs", "steps"),
  "num_train_epochs": ("epochs", "steps"),
  "max_steps": ("steps",),
  "lr": ("learning_rate",),
  "per_device_train_batch_size": ("batch_size",),
  "train_batch_size": ("batch_size",),
  "warmup_ratio": ("warmup_fraction",),
  "max_length": ("max_seq_length",),
  "seq_len": ("max_seq_length",),
  "seq_length": ("max_seq_length",),
  "gradient_accumulation_steps": ("accum_steps",),
}


def _unknown_key(command, config, overrides) -> str | None:
  """The error line of the first override whose key the recipe does not have: the whole
  key, and the keys it may have meant (dashes as underscores, a close spelling, the same
  name in another section, or a longer key that starts with it); None when all are known.
  """
  keys = _dotted_keys(config)
  for override in overrides:
    key = override[len("--config.") :].partition("=")[0]
    if key in keys or any(k.startswith(key + ".") for k in keys):
      continue
    section, _, leaf = key.rpartition(".")
    word = leaf.split("_")[0]
    underscored = [key.replace("-", "_")] if key.replace("-", "_") in keys else []
    named = [k for k in keys if k.rpartition(".")[2] in _OTHER_NAMES.get(leaf, ())]
    underscored += [k for k in named if k.startswith(section + ".")] or named
    close = (
      underscored
      + difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
      + [
        k
        for k in keys
        if k.rpartition(".")[2] == leaf  # the same name in another section
        or k.startswith(key + "_")  # a longer name: data.label -> data.label_column
        or k.startswith(f"{section}.{word}_")  # train.warmup_steps -> train.warmup_fraction
      ]
    )
    close = list(dict.fromkeys(close))[:3]
    hint = f"; did you mean {' or '.join(repr(k) for k in close)}?" if close else ""
    return (
      f"unknown config key {key!r}{hint} (`bert-jax {command} --help` lists every key; "
      f"defaults: bert_jax/config.py)"
    )
  return None


def config_text(config) -> str:
  """`config` as the lines `KEY = VALUE`, each key dotted as an override spells it."""
  return "\n".join(f"{key} = {_lookup(config, key)!r}" for key in _dotted_keys(config))


def _lookup(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def _dotted_keys(config, prefix="") -> list[str]:
  """Every leaf key of a ConfigDict, dotted: ["data.input", ...]."""
  out = []
  for key, value in config.items():
    if hasattr(value, "items") and not isinstance(value, dict | str):
      out += _dotted_keys(value, f"{prefix}{key}.")
    else:
      out.append(prefix + key)
  return out


def _resolve_recipe(argv):
  """`argv` with its --config file resolved (`config.recipe_path`) and checked to load."""
  from bert_jax import config as config_lib

  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      index, value = i, arg[len("--config=") :]
    elif arg == "--config" and i + 1 < len(out):
      index, value = i + 1, out[i + 1]
    else:
      continue
    file, sep, recipe_arg = value.partition(":")
    file = config_lib.recipe_path(file)
    config_lib.check_recipe(file)
    out[index] = ("--config=" if index == i else "") + file + sep + recipe_arg
  return out


def _one_line(error):
  """An exception's message as one line (ml_collections' are multi-line, repr-quoted)."""
  text = str(error).replace("\\n", "\n").strip()
  if "Traceback (most recent call last)" in text:  # a config file raised: keep its message
    text = text.splitlines()[-1]
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]
  text = re.sub(r"^[A-Za-z]*Error: ", "", text)  # a recipe's own ValueError: its message
  return " ".join(text.replace("\\'", "'").split()) or type(error).__name__
