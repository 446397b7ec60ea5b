"""SIGTERM (preemption, scancel, kubectl delete) stops a study as Ctrl-C does.

It raises KeyboardInterrupt; one that comes while a checkpoint save is being
started is held until orbax has the save (also where SIGINT is ignored); the
CLI exits with 128 + 15 and one line, keeping every finished run.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from autoscale_jax import main as main_lib
from test_interrupt import wait_for_records
from autoscale_jax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sigterm_as_interrupt():
  terminated = []
  previous_int = signal.getsignal(signal.SIGINT)
  previous = main_lib._sigterm_as_interrupt(terminated)  # pylint: disable=protected-access
  yield terminated
  signal.signal(signal.SIGTERM, previous)
  signal.signal(signal.SIGINT, previous_int)


def _wait_for_signal() -> None:
  for _ in range(100):  # the handler runs at the next bytecode in this thread
    time.sleep(0.01)


def test_sigterm_raises_keyboard_interrupt(sigterm_as_interrupt) -> None:
  with pytest.raises(KeyboardInterrupt):
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for_signal()
  assert sigterm_as_interrupt == [signal.SIGTERM]


def test_sigterm_is_held_while_a_save_starts(sigterm_as_interrupt) -> None:
  reached_end_of_block = False
  with pytest.raises(KeyboardInterrupt):
    with checkpoint.interrupts_held():
      os.kill(os.getpid(), signal.SIGTERM)
      _wait_for_signal()
      reached_end_of_block = True
  assert reached_end_of_block
  assert sigterm_as_interrupt == [signal.SIGTERM]


def test_sigterm_stops_even_where_sigint_is_ignored(sigterm_as_interrupt
                                                    ) -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's SIGINT
  with pytest.raises(KeyboardInterrupt):
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for_signal()
  with pytest.raises(KeyboardInterrupt):  # also when held during a save
    with checkpoint.interrupts_held():
      os.kill(os.getpid(), signal.SIGTERM)
      _wait_for_signal()
  assert sigterm_as_interrupt == [signal.SIGTERM, signal.SIGTERM]


def test_an_ignored_sigint_held_during_a_save_stays_ignored() -> None:
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with checkpoint.interrupts_held():
      os.kill(os.getpid(), signal.SIGINT)
      _wait_for_signal()
    _wait_for_signal()  # nothing raised after the block either
  finally:
    signal.signal(signal.SIGINT, previous)


def test_main_exits_143_with_one_line(monkeypatch, capsys) -> None:
  def preempted(argv):
    del argv
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for_signal()
    raise AssertionError("SIGTERM did not stop the stage")

  monkeypatch.setattr(main_lib, "_run", preempted)
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_info:
    main_lib.main(["autoscale_jax.main"])
  assert exit_info.value.code == 128 + signal.SIGTERM
  assert capsys.readouterr().err.splitlines() == [
      "terminated (SIGTERM): finished runs and the last checkpoint of the run "
      "in progress are kept; run the same command again to continue."]
  assert signal.getsignal(signal.SIGTERM) is before  # restored


@pytest.mark.slow  # a micro DDO stage in a subprocess, about 20-60 s
def test_sigterm_keeps_finished_runs_exit_143(tmp_path) -> None:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, "-m", "autoscale_jax.main", "--stage=ddo",
         "--config=configs/micro.py", f"--workdir={tmp_path}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  store = tmp_path / "store"
  wait_for_records(proc, store, 2)
  assert proc.poll() is None, "the stage finished before the SIGTERM"
  kept_before = {p.name for p in store.glob("*.json")}
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  lines = [l for l in err.strip().splitlines() if l.strip()]
  assert lines[-1].startswith("terminated (SIGTERM): finished runs and the "
                              "last checkpoint"), err[-2000:]
  assert "Traceback" not in err
  assert kept_before <= {p.name for p in store.glob("*.json")}
