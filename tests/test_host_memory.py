"""host_memory: a CPU run keeps XLA's per-step scratch memory instead of faulting it in again
each step; the kernel's page-fault counter is the judge.
"""

import gc
import subprocess
import sys
import textwrap

import pytest

from bert_jax import cli, host_memory

# Runs one jitted program with 32 MiB of scratch (the cumsum) and a scalar result 20 times
# (the kept heap settles after a few calls), then prints the median minor page faults of 7
# more calls (the kept heap still grows now and then, and faults in that call).
FAULTS_PER_CALL = textwrap.dedent("""
  import resource, sys
  from bert_jax import host_memory
  print(host_memory.keep_freed_memory() if sys.argv[1] == "keep" else "default")
  import jax, jax.numpy as jnp
  f = jax.jit(lambda x: jnp.tanh(jnp.cumsum(x, axis=0)).sum())
  x = jnp.ones((4096, 2048), jnp.float32)
  for _ in range(20):
    f(x).block_until_ready()
  faults = []
  for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  print(sorted(faults)[3])
""")


def _faults_per_call(mode):
  out = subprocess.run(
    [sys.executable, "-c", FAULTS_PER_CALL, mode],
    capture_output=True,
    text=True,
    check=True,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  ).stdout.split()
  return out[-2], float(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.slow
def test_freed_scratch_stays_in_the_process():
  applied, kept = _faults_per_call("keep")
  _, default = _faults_per_call("default")
  assert applied == "True"
  # glibc's default maps the scratch afresh each call: 8,192 pages of 4 KiB or more.
  assert default > 8000, default
  assert kept < default / 10, (kept, default)


# Keeps freed memory up to a budget 300 MiB above the start (or none), allocates 400 MiB
# and a small block above it, frees the 400 MiB, then prints how much the process still holds.
HELD_AFTER_FREE = textwrap.dedent("""
  import sys, time
  import numpy as np
  from bert_jax import host_memory
  start = host_memory.resident_bytes()
  budget = start + (300 << 20) if sys.argv[1] == "budget" else 1 << 60
  host_memory.WATCH_EVERY_S = 0.05
  assert host_memory.keep_freed_memory({"JAX_PLATFORMS": "cpu"}, budget=budget)
  block = np.ones(400 << 17)  # 400 MiB of float64, from the heap
  above = np.ones(1000)  # a live block above it: freeing it leaves no free top to trim
  time.sleep(0.5)
  del block
  time.sleep(0.5)
  print((host_memory.resident_bytes() - start) >> 20)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("budget", [True, False], ids=["past-the-budget", "no-budget"])
def test_kept_memory_past_its_budget_goes_back_to_the_system(budget):
  done = subprocess.run(
    [sys.executable, "-c", HELD_AFTER_FREE, "budget" if budget else "none"],
    capture_output=True,
    text=True,
    check=True,
    env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
  )
  held_mib = int(done.stdout.split()[-1])
  if budget:
    assert held_mib < 100, held_mib
    assert "note: host memory reached" in done.stderr and "BERT_JAX_HOST_MALLOC" in done.stderr
  else:
    assert held_mib > 350, held_mib  # kept: the heap's free top is not trimmed
    assert not done.stderr


def test_the_budget_is_half_the_memory():
  import os

  total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  assert 0 < host_memory.memory_budget() <= total // 2


def test_runs_on_cpu_reads_jax_platforms():
  assert host_memory.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert host_memory.runs_on_cpu({"JAX_PLATFORMS": " cpu "})
  assert not host_memory.runs_on_cpu({"JAX_PLATFORMS": "cuda"})
  assert not host_memory.runs_on_cpu({"JAX_PLATFORMS": "tpu,cpu"})


def test_runs_on_cpu_without_jax_platforms_looks_for_accelerator_devices(monkeypatch, tmp_path):
  monkeypatch.setattr(host_memory, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "accel[0-9]*"),))
  assert host_memory.runs_on_cpu({})
  (tmp_path / "accel0").touch()
  assert not host_memory.runs_on_cpu({})


def test_accelerator_runs_and_the_opt_out_keep_glibc_defaults():
  assert not host_memory.keep_freed_memory({"JAX_PLATFORMS": "tpu"})
  opt_out = {"JAX_PLATFORMS": "cpu", "BERT_JAX_HOST_MALLOC": "default"}
  assert not host_memory.keep_freed_memory(opt_out)


def test_only_the_command_line_entry_tunes_the_process(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1))
  monkeypatch.setattr(sys, "argv", ["bert-jax"])
  assert cli.main() == 2  # the usage line: no command
  assert calls == [1]
  assert cli.main([]) == 2  # a caller's process (tests, notebooks) keeps its allocator
  assert calls == [1]


def test_only_the_command_line_entry_skips_the_collection_at_exit(monkeypatch):
  """After its command, `bert-jax` freezes the collector (the interpreter's exit then walks
  none of the run's objects); `cli.main([...])` in a caller's process leaves it alone.
  """
  monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: False)
  gc.unfreeze()
  assert cli.main(["pretrain", "--help"]) == 0
  assert gc.get_freeze_count() == 0
  monkeypatch.setattr(sys, "argv", ["bert-jax", "pretrain", "--help"])
  try:
    assert cli.main() == 0
    assert gc.get_freeze_count() > 0
  finally:
    gc.unfreeze()
