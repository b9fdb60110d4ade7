"""Opt-in pytest plugin: each test's CPU seconds, its own and its waited subprocesses', one
JSON line per test in the file $CPU_TIMES_LOG (appended; every xdist worker writes its own
lines). The suite's 15-minute budget on 2 cores is a CPU budget: wall times under three
workers mostly say what ran beside a test, CPU seconds what the test itself costs.

    CPU_TIMES_LOG=/tmp/cpu.jsonl python -m pytest -q -n 3 --dist loadfile -p tests.cpu_times
    python tests/cpu_times.py /tmp/cpu.jsonl    # the costliest tests, and by file

A module-scoped fixture counts in the first test that uses it.
"""

import collections
import json
import os
import resource
import sys
import time

import pytest


def _cpu_seconds() -> float:
  own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Times setup, call and teardown of `item` together."""
  del nextitem
  cpu, wall = _cpu_seconds(), time.time()
  yield
  line = {"id": item.nodeid, "cpu": _cpu_seconds() - cpu, "wall": time.time() - wall}
  line.update(worker=os.environ.get("PYTEST_XDIST_WORKER", "main"), end=time.time())
  with open(os.environ["CPU_TIMES_LOG"], "a") as f:
    f.write(json.dumps(line) + "\n")


def summary(path: str, top: int = 25) -> str:
  """The log at `path` as text: total CPU seconds, the `top` costliest tests and files."""
  rows = [json.loads(line) for line in open(path)]
  by_file = collections.Counter()
  for r in rows:
    by_file[r["id"].split("::")[0]] += r["cpu"]
  lines = [f"{sum(r['cpu'] for r in rows):.0f} CPU-s in {len(rows)} tests", "", "cpu-s  test"]
  lines += [f"{r['cpu']:5.1f}  {r['id']}" for r in sorted(rows, key=lambda r: -r["cpu"])[:top]]
  lines += ["", "cpu-s  file"] + [f"{s:5.1f}  {f}" for f, s in by_file.most_common(top)]
  if all("end" in r for r in rows):  # when each worker's last test ended
    start = min(r["end"] - r["wall"] for r in rows)
    ends = collections.defaultdict(float)
    for r in rows:
      ends[r["worker"]] = max(ends[r["worker"]], r["end"] - start)
    lines += ["", "worker  last test ended (s)"] + [
      f"{w}  {e:.0f}" for w, e in sorted(ends.items())
    ]
  return "\n".join(lines)


if __name__ == "__main__":
  print(summary(sys.argv[1]))
