"""benchmarks/cpu_step_profile.py on a one-layer model: XLA:CPU's per-op events are there,
and the script sorts them into groups that add up to the ops' total.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_profile_groups_the_ops_of_a_step():
  argv = "--layers 1 --hidden 64 --heads 2 --seq 32 --batch 4 --steps 1 --top 3".split()
  out = subprocess.run(
    [sys.executable, os.path.join(ROOT, "benchmarks", "cpu_step_profile.py"), *argv],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
  ).stdout
  total = float(re.search(r"^ops: ([\d.]+) ms a step", out, re.M).group(1))
  groups = dict(
    (name.strip(), float(ms))
    for name, ms in re.findall(r"^  ([a-z -]+?)\s+([\d.]+) ms$", out, re.M)
  )
  assert groups["dense matmuls"] > 0 and groups["attention"] > 0, out
  assert groups["dropout"] > 0 and groups["optimizer update"] > 0, out
  assert sum(groups.values()) == pytest.approx(total, rel=0.01, abs=0.5), (
    out
  )  # each printed to 0.1 ms
  assert len(re.findall(r"^\s+[\d.]+\s+\S+\s+\S+\[", out, re.M)) == 3, out  # the 3 slowest
