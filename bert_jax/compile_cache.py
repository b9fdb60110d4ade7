"""JAX's persistent compilation cache for `bert-jax` commands.

A command's programs (the train step, the eval forward, the finiteness check) compile in
seconds each: the MiniLM fine-tuning step takes 5.8 s of XLA on 2 cores. With the cache,
the next run of the same program (the same model, shapes, mesh and flags: JAX's key holds
them all) loads the executable from disk instead. `predict`, `evaluate` and a rerun or
resume of a training command start that much sooner.

`enable` points JAX at a folder, the first of:

- none when `BERT_JAX_COMPILE_CACHE` is `off` (or `0`): every program compiles;
- JAX's own `JAX_COMPILATION_CACHE_DIR` when it is set: left to JAX, which reads it;
- `BERT_JAX_COMPILE_CACHE` when it names a folder (a local path or gs://);
- `$XDG_CACHE_HOME/bert_jax/xla`, else `~/.cache/bert_jax/xla`.

Programs that compile in under `MIN_COMPILE_SECONDS` are not stored (they cost more to look
up than to build; JAX's `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` overrides it), and a
local folder is kept under `MAX_BYTES`, the least recently used entries going first. A
bucket's is not: JAX's eviction locks a local file named as the URL (an empty `./gs:`
folder, and no lock between hosts); a bucket has its own lifecycle rules for that.
"""

import os

import jax

MIN_COMPILE_SECONDS = 0.5
MAX_BYTES = 2 * 1024**3
OFF = ("off", "0")


def directory(environ=os.environ) -> str | None:
  """The folder `enable` uses under `environ`, or None (off, or left to JAX's variable)."""
  setting = environ.get("BERT_JAX_COMPILE_CACHE", "")
  if setting.lower() in OFF or environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  if setting:
    return setting
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bert_jax", "xla")


def enable(environ=os.environ) -> str | None:
  """Turns the cache on (see the module docstring) before anything compiles; returns its
  folder, or None where it stays off or JAX's own variable rules.
  """
  folder = directory(environ)
  if folder is None:
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  if "://" not in folder:
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return folder
