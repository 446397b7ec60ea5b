"""Ctrl-C during a study keeps every finished run; the next run continues."""

import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  return env


def wait_for_records(proc, store, count: int, timeout_s: float = 300) -> None:
  """Waits until ``store`` holds ``count`` records or ``proc`` has ended."""
  deadline = time.time() + timeout_s
  while time.time() < deadline and proc.poll() is None:
    if store.exists() and len(list(store.glob("*.json"))) >= count:
      return
    time.sleep(0.05)


def _with_ctrl_c(cmd):
  """``python -m MODULE ...`` with Python's Ctrl-C handler installed, even
  when the tests run as a background job (whose children inherit an ignored
  SIGINT, which Python then leaves ignored)."""
  assert cmd[1] == "-m"
  return [cmd[0], "-c",
          "import runpy, signal, sys; "
          "signal.signal(signal.SIGINT, signal.default_int_handler); "
          "sys.argv = sys.argv[1:]; "
          "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)",
          *cmd[2:]]


def test_ctrl_c_keeps_finished_runs(tmp_path):
  cmd = [sys.executable, "-m", "autoscale_jax.main", "--stage=ddo",
         "--config=configs/micro.py", f"--workdir={tmp_path}",
         # One run at a time, without run.swarm=auto's timing of every way
         # (half the test's time): the Ctrl-C comes after budget 1's second
         # run, 12 runs before the stage ends (a swarm's 7 records come at
         # once, and the stage can end before the signal lands;
         # test_swarm.py interrupts a swarm).
         "--config.run.swarm=off"]
  proc = subprocess.Popen(_with_ctrl_c(cmd), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  store = tmp_path / "store"
  wait_for_records(proc, store, 2)
  assert proc.poll() is None, "the stage finished before it could be interrupted"
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "interrupted: finished runs are kept" in err
  kept = sorted(p.name for p in store.glob("*.json"))
  assert len(kept) >= 2

  r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  reused = sum(int(n) for n in re.findall(
      r"\]: (\d+) of \d+ runs reused from the store", r.stdout))
  assert reused >= len(kept)
  assert (tmp_path / "ddo" / "budget_1" / "mixture.json").exists()
  # Records written before the interrupt are untouched by the second run.
  assert set(kept) <= {p.name for p in store.glob("*.json")}
