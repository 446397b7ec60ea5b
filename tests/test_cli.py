"""The command line: help, one-line user errors with exit status 2."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=120):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "autoscale_jax.main", *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)


def test_help_lists_stages():
  r = _cli("--help")
  assert r.returncode == 0
  for stage in ("ddo", "fit", "project", "train", "report", "all"):
    assert stage in r.stdout


def test_bad_config_value_is_one_line_exit_2(tmp_path):
  r = _cli("--stage=ddo", "--config=configs/micro.py",
           "--config.train.learning_rate=-1.0", f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert lines == [
      "error: config.train.learning_rate=-1.0 is invalid: must be a finite "
      "number > 0"]
  assert "Traceback" not in r.stderr


def test_unknown_stage_exit_2(tmp_path):
  r = _cli("--stage=everything", "--config=configs/micro.py",
           f"--workdir={tmp_path}")
  assert r.returncode == 2
  assert "Traceback" not in r.stderr
  assert "stage" in r.stderr


def test_missing_workdir_exit_2():
  r = _cli("--stage=ddo", "--config=configs/micro.py")
  assert r.returncode == 2
  assert "error: --workdir is required" in r.stderr


def test_missing_config_exit_2(tmp_path):
  r = _cli("--stage=train", f"--workdir={tmp_path}")
  assert r.returncode == 2
  assert "needs --config" in r.stderr


def test_unknown_config_key_exit_2(tmp_path):
  r = _cli("--stage=ddo", "--config=configs/micro.py",
           "--config.train.lr=0.1", f"--workdir={tmp_path}")
  assert r.returncode == 2
  assert "Traceback" not in r.stderr
  assert "lr" in r.stderr
