"""Host memory for XLA:CPU runs: keep freed memory in the process between steps.

XLA:CPU allocates each execution's scratch space (about 1 GB for a MiniLM fine-tuning step
of 16 x 128 tokens) with `malloc` from a worker thread and frees it at the end of the
step. glibc serves a block that large with a fresh `mmap` and unmaps it on `free`, so every
step faults the whole block in again, page by page, and the kernel zeroes each page: about
250,000 page faults and half a second of system time a step on 2 cores, about 17 % of
the step. `keep_freed_memory` sets three `mallopt` options so the block comes from the
heap and stays there:

- `M_ARENA_MAX` 1: one arena for every thread. Worker-thread arenas are mmapped heaps of at
  most 64 MB; blocks bigger than that are mmapped whatever `M_MMAP_MAX` says;
- `M_MMAP_MAX` 0: no block is mmapped; large ones come from the main heap (`brk`);
- `M_TRIM_THRESHOLD` -1: the heap's free top is never returned to the kernel.

The cost is host memory: the process keeps what it frees, and the one heap fragments, so a
run holds about twice its working set (MiniLM fine-tuning: 3.7 GB resident instead of 1.8,
flat over the steps; the sentence-embedding recipe, whose batches change shape, 14.5 GB
instead of 4.5). So a watcher thread bounds it: when the process's resident memory passes
half of the machine's (or of its cgroup's limit), glibc's defaults come back for the rest of
the run, with one note, and the heap's free pages go back (`malloc_trim`) whenever it is
past the budget.

It applies only where all of this holds: Linux with glibc; the run is on CPU
(`JAX_PLATFORMS` is "cpu", or it is unset and the machine has no GPU or TPU device files:
one arena would serialise the input threads of an accelerator host); and it is called
before JAX starts its CPU client, since arena limits bind threads when they first
allocate. `BERT_JAX_HOST_MALLOC=default` leaves glibc's defaults.
"""

import ctypes
import glob
import os
import sys
import threading
import time

# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# glibc's defaults, restored when the kept memory reaches its budget.
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
WATCH_EVERY_S = 1.0  # how often the watcher reads the resident memory

# NVIDIA GPUs, TPUs (v2-v3: accel, v4 and later: vfio), AMD GPUs (ROCm's kfd).
ACCELERATOR_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/kfd")


def runs_on_cpu(environ=os.environ) -> bool:
  """Whether JAX will compute on the CPU, judged without starting a JAX backend."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return {p.strip() for p in platforms.split(",")} == {"cpu"}
  return not any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICE_FILES)


def keep_freed_memory(environ=os.environ, budget: int | None = None) -> bool:
  """Sets glibc's allocator to keep freed memory (see the module docstring), up to
  `budget` resident bytes (None: `memory_budget()`).

  Returns whether it did: False off Linux/glibc, for accelerator runs, with
  `BERT_JAX_HOST_MALLOC=default`, or when `mallopt` refuses an option.
  """
  if environ.get("BERT_JAX_HOST_MALLOC", "") == "default":
    return False
  if not sys.platform.startswith("linux") or not runs_on_cpu(environ):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc (musl, ...)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  # mallopt returns 1 on success; all three are tried, then judged.
  results = [mallopt(M_ARENA_MAX, 1), mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, -1)]
  if not all(r == 1 for r in results):
    return False
  budget = budget or memory_budget()
  if budget:
    threading.Thread(
      target=_give_back_past, args=(budget, mallopt), name="bert_jax-host-memory", daemon=True
    ).start()
  return True


def memory_budget() -> int | None:
  """The resident bytes past which a process stops keeping freed memory: half of the
  machine's physical memory, or of the cgroup's limit where that is lower; None if unknown.
  """
  try:
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError):
    return None
  for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(limit_file) as f:
        said = f.read().strip()
    except OSError:
      continue
    if said.isdigit():
      total = min(total, int(said))
  return total // 2 if total > 0 else None


def resident_bytes() -> int:
  """This process's resident memory (Linux: /proc/self/statm)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _give_back_past(budget: int, mallopt) -> None:
  """Watches the resident memory. Past `budget` the first time: glibc's defaults come back
  (large blocks mapped and unmapped again, the heap's free top returned) with one note;
  then, whenever it is past `budget`, the heap's free pages go back (`malloc_trim`): a
  block freed below a live one is not at the heap's top.
  """
  told = False
  while True:
    time.sleep(WATCH_EVERY_S)
    if resident_bytes() <= budget:
      continue
    if not told:
      mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
      mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
      print(
        f"note: host memory reached {budget / 2**30:.1f} GiB, half of this machine's; freed "
        f"memory goes back to the system from now on (steps a little slower; "
        f"BERT_JAX_HOST_MALLOC=default does so from the start)",
        file=sys.stderr,
        flush=True,
      )
      told = True
    ctypes.CDLL("libc.so.6").malloc_trim(0)
