"""The TPU workers' install (`launch/tpu_worker.install_script`), run by bash in a home of
its own with only a few system tools on PATH: how it finds uv (on PATH, else `pip install
--user`, else uv's installer through curl), when it keeps ~/venv, and its one error when
every way fails. uv is tests/fake_cloud/uv; pip (through a `python3` that passes every other
call to this Python) and curl are fakes written here, each noting its call in calls.jsonl.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "launch"))
import tpu_worker  # noqa: E402

FAKE_UV = os.path.join(ROOT, "tests", "fake_cloud", "uv")
# What the script needs of the system; nothing else is on PATH (no uv, no real pip or curl).
TOOLS = ("bash", "sh", "env", "rm", "mkdir", "cp", "ln", "tail", "sed", "grep", "tr", "cat")
TOOLS += ("hostname", "chmod", "dirname", "readlink")

FAKE_PYTHON3 = f"""#!/bin/bash
# python3: `-m pip install --user -q uv` is faked (puts uv in ~/.local/bin, or fails
# with FAKE_PIP_FAIL); anything else is this test's Python.
if [ "$*" = "-m pip install --user -q uv" ]; then
  echo '["pip", "install", "--user", "uv"]' >> "$FAKE_CLOUD_DIR/calls.jsonl"
  if [ -n "$FAKE_PIP_FAIL" ]; then echo "error: $FAKE_PIP_FAIL" >&2; exit 1; fi
  mkdir -p "$HOME/.local/bin" && cp {FAKE_UV} "$HOME/.local/bin/uv"; exit 0
fi
exec {sys.executable} "$@"
"""
FAKE_CURL = f"""#!/bin/bash
# curl of uv's installer: prints a script that puts uv in ~/.local/bin and notes
# UV_NO_MODIFY_PATH, or fails as an offline curl does (FAKE_CURL_FAIL).
echo '["curl"]' >> "$FAKE_CLOUD_DIR/calls.jsonl"
if [ -n "$FAKE_CURL_FAIL" ]; then echo "curl: (6) $FAKE_CURL_FAIL" >&2; exit 6; fi
echo 'mkdir -p "$HOME/.local/bin" && cp {FAKE_UV} "$HOME/.local/bin/uv" &&'
echo 'echo "$UV_NO_MODIFY_PATH" > "$FAKE_CLOUD_DIR/no_modify_path"'
"""


@pytest.fixture
def worker(tmp_path):
  """(home, env): a worker's home with ~/bert_jax_run, and the environment of its shell."""
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  (home / "bert_jax_run").mkdir(parents=True)
  bin_dir.mkdir()
  for tool in TOOLS:
    os.symlink(shutil.which(tool), bin_dir / tool)
  for name, text in (("python3", FAKE_PYTHON3), ("curl", FAKE_CURL)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  env = {"HOME": str(home), "PATH": str(bin_dir), "FAKE_CLOUD_DIR": str(tmp_path)}
  return home, env


def _install(worker, **fakes):
  """(exit status, stdout, calls) of the install script on `worker`, then `echo installed`."""
  home, env = worker
  done = subprocess.run(
    ["bash", "-c", tpu_worker.install_script() + "echo installed"],
    cwd=home,
    env={**env, **fakes},
    capture_output=True,
    text=True,
    timeout=60,
  )
  calls_file = os.path.join(env["FAKE_CLOUD_DIR"], "calls.jsonl")
  calls = []
  if os.path.exists(calls_file):
    with open(calls_file) as f:
      calls = [json.loads(line) for line in f]
  return done.returncode, done.stdout, calls


def _uv_calls(home):
  """The two uv calls of an install in `home`: the venv, then bert_jax[tpu] into it."""
  venv = ["uv", "venv", "-q", "--python", ">=3.11", f"{home}/venv"]
  return venv, [
    "uv",
    "pip",
    "install",
    "-q",
    "--python",
    f"{home}/venv/bin/python",
    "./bert_jax[tpu]",
  ]


def _python_of_age(home, new_enough: bool):
  """A ~/venv whose python says it is >= 3.11 (exit 0), or older (exit 1)."""
  python = home / "venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(f"#!/bin/bash\nexit {0 if new_enough else 1}\n")
  python.chmod(0o755)


def test_uv_on_path_makes_the_venv_and_installs(worker):
  home, env = worker
  os.symlink(FAKE_UV, os.path.join(env["PATH"], "uv"))
  status, out, calls = _install(worker)
  assert (status, out) == (0, "installed\n")
  assert calls == [*_uv_calls(home)]  # neither pip nor curl


def test_without_uv_pip_installs_it_for_the_user(worker):
  home, _ = worker
  status, out, calls = _install(worker)
  assert (status, out) == (0, "installed\n")
  assert calls == [["pip", "install", "--user", "uv"], *_uv_calls(home)]
  assert (home / ".local" / "bin" / "uv").exists()


def test_without_uv_or_pip_uv_s_installer_installs_it_leaving_profiles_alone(worker, tmp_path):
  home, _ = worker
  status, out, calls = _install(worker, FAKE_PIP_FAIL="No module named pip")
  assert (status, out) == (0, "installed\n")
  assert calls == [
    ["pip", "install", "--user", "uv"],
    ["curl"],
    *_uv_calls(home),
  ]
  assert (tmp_path / "no_modify_path").read_text() == "1\n"  # no shell profile edited


def test_a_venv_of_python_3_11_is_kept_and_an_older_one_made_again(worker):
  home, env = worker
  os.symlink(FAKE_UV, os.path.join(env["PATH"], "uv"))
  _python_of_age(home, new_enough=True)
  status, _, calls = _install(worker)
  assert status == 0 and calls == [_uv_calls(home)[1]]
  shutil.rmtree(home / "venv")
  _python_of_age(home, new_enough=False)
  os.remove(os.path.join(env["FAKE_CLOUD_DIR"], "calls.jsonl"))
  status, _, calls = _install(worker)
  assert status == 0 and calls == [*_uv_calls(home)]
  assert os.path.islink(home / "venv" / "bin" / "python")  # uv's, not the old one


def test_no_way_to_uv_exits_4_with_its_last_lines_as_the_reason(worker):
  """Both pip and curl fail: the script stops before the run (no "installed"), exit status
  INSTALL_FAILED_EXIT_CODE, and the marked last lines of its log are what the launcher's
  error quotes (`install_failure`).
  """
  home, _ = worker
  status, out, calls = _install(
    worker, FAKE_PIP_FAIL="No module named pip", FAKE_CURL_FAIL="Could not resolve host"
  )
  assert status == tpu_worker.INSTALL_FAILED_EXIT_CODE
  assert "installed" not in out
  assert calls == [["pip", "install", "--user", "uv"], ["curl"]]  # uv was never there
  reason = tpu_worker.install_failure(out)
  assert "curl: (6) Could not resolve host" in reason, reason
  assert reason.endswith("uv: command not found"), reason
  assert len(reason.split(" / ")) == tpu_worker.INSTALL_LINES
  assert "No module named pip" in (home / "bert_jax_run" / "log").read_text()
