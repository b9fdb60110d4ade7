"""Where `bert-jax` keeps JAX's persistent compilation cache (bert_jax/compile_cache.py),
and a second process loading what the first stored, with the CPU backend alone (no libtpu
probe) as the command starts it.
"""

import os
import re
import subprocess
import sys

import pytest

from bert_jax import cli, compile_cache

# What `bert-jax` does before its command (cli.main), then one program big enough to store.
PROCESS = """
from bert_jax import cli, compile_cache
print(compile_cache.enable(), cli.cpu_alone_without_accelerators())
import jax, jax.numpy as jnp
print(jax.jit(lambda a: jnp.tanh(a @ a).sum())(jnp.ones((64, 64))))
"""


@pytest.mark.parametrize(
  "environ, folder",
  [
    ({"HOME": "/home/u"}, "/home/u/.cache/bert_jax/xla"),
    ({"HOME": "/home/u", "XDG_CACHE_HOME": "/c"}, "/c/bert_jax/xla"),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "gs://b/xla"}, "gs://b/xla"),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "off"}, None),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "OFF"}, None),
    ({"HOME": "/home/u", "BERT_JAX_COMPILE_CACHE": "0"}, None),
    # JAX's own variable: JAX reads it, bert-jax leaves it.
    ({"HOME": "/home/u", "JAX_COMPILATION_CACHE_DIR": "/j"}, None),
    ({"HOME": "/home/u", "JAX_COMPILATION_CACHE_DIR": "/j", "BERT_JAX_COMPILE_CACHE": "/b"}, None),
  ],
)
def test_the_cache_folder(environ, folder, monkeypatch):
  monkeypatch.setenv("HOME", environ["HOME"])  # expanduser reads the process's HOME
  assert compile_cache.directory(environ) == folder


@pytest.mark.parametrize("folder, bounded", [("/c/xla", True), ("gs://b/xla", False)])
def test_a_bucket_cache_is_not_bounded_by_a_local_lock(folder, bounded, monkeypatch):
  """JAX bounds a cache by evicting under a file lock, local only: for gs:// it made an empty
  `./gs:` folder (and locked nothing between hosts), so a bucket's cache is left unbounded.
  """
  updates = {}
  monkeypatch.setattr(compile_cache.jax.config, "update", updates.__setitem__)
  assert compile_cache.enable({"BERT_JAX_COMPILE_CACHE": folder}) == folder
  assert updates["jax_compilation_cache_dir"] == folder
  assert ("jax_compilation_cache_max_size" in updates) == bounded


def test_the_command_turns_both_on_before_it_runs(monkeypatch):
  """cli.main as the process's command (argv None); not when called with arguments."""
  calls = []
  monkeypatch.setattr(compile_cache, "enable", lambda: calls.append("cache"))
  monkeypatch.setattr(cli, "cpu_alone_without_accelerators", lambda: calls.append("cpu"))
  monkeypatch.setattr(cli.host_memory, "keep_freed_memory", lambda: False)
  monkeypatch.setattr(cli.gc, "freeze", lambda: None)
  monkeypatch.setattr(cli, "COMMANDS", {"noop": lambda argv: calls.append("command")})
  monkeypatch.setattr(sys, "argv", ["bert-jax", "noop"])
  assert cli.main() == 0 and calls == ["cache", "cpu", "command"]
  calls.clear()
  assert cli.main(["noop"]) == 0 and calls == ["command"]


def test_a_second_process_loads_what_the_first_stored(tmp_path):
  env = {
    **os.environ,
    "JAX_PLATFORMS": "",  # as a user has it: bert-jax picks the CPU on this host
    "JAX_COMPILATION_CACHE_DIR": "",  # the tests' own cache (conftest) off: bert-jax's rules
    "BERT_JAX_COMPILE_CACHE": str(tmp_path),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # a small program compiles fast
    "JAX_LOG_COMPILES": "1",
  }
  runs = [
    subprocess.run([sys.executable, "-c", PROCESS], env=env, capture_output=True, text=True)
    for _ in range(2)
  ]
  for run in runs:
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0] == f"{tmp_path} True"
    assert "TPU" not in run.stderr  # the test extra's libtpu did not probe for a TPU
  assert runs[0].stdout == runs[1].stdout
  assert "Persistent compilation cache hit" not in runs[0].stderr
  assert any(name.startswith("jit__lambda-") for name in os.listdir(tmp_path))
  assert re.search(r"Persistent compilation cache hit for 'jit__lambda'", runs[1].stderr)
