"""Checkpoints: interrupted saves, and what a finished run keeps.

A micro run (12 steps, a checkpoint every 4) is interrupted at the orbax
boundary of its second save (step 8), then run again: it resumes from a
checkpoint, never from step 0. ``run.keep_after_finish`` ("params", "none",
"all") is applied to a finished run's directory.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import orbax.checkpoint as ocp
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.train import checkpoint
from autoscale_jax.train import trainer
from autoscale_jax.train.synthetic import SyntheticBatches

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _config():
  c = config_lib.base_config()
  c.model.update(num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
                 max_len=32)
  c.train.update(seq_len=32, global_batch_size=8)
  c.run.update(eval_batch_size=8, checkpoint_every_steps=4,
               log_every_steps=4, steps_per_call=1)
  return c


def _train(workdir):
  b = SyntheticBatches(12, 8, 32, 256, seed=9)
  return trainer.train_run(_config(), b, {"a": b.eval_set(8)}, str(workdir),
                           vocab_size=256)


def _steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit())


def _raise_in_second_save(monkeypatch):
  """A KeyboardInterrupt raised inside orbax's 2nd save, before it writes."""
  original = ocp.AsyncCheckpointer.save
  calls = []

  def save(self, directory, *args, **kwargs):
    calls.append(directory)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.AsyncCheckpointer, "save", save)
  return calls


def test_interrupt_inside_orbax_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "run"
  calls = _raise_in_second_save(monkeypatch)
  with pytest.raises(KeyboardInterrupt):
    _train(workdir)
  assert len(calls) == 2
  assert not (workdir / "result.json").exists()
  assert _steps(workdir) == [4]
  monkeypatch.undo()
  capsys.readouterr()
  result = _train(workdir)
  assert "resumed from step 4/12" in capsys.readouterr().out
  assert result["steps"] == 12


# A real SIGINT while the step-8 save is being started, in its own process
# (as Ctrl-C reaches a user's run), then the same run again.
DRIVER = textwrap.dedent("""
    import signal, sys
    # Python's Ctrl-C handler even when the tests run as a background job,
    # whose children inherit an ignored SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import orbax.checkpoint as ocp
    sys.path.insert(0, sys.argv[3])
    import test_checkpoint as t

    original, calls = ocp.AsyncCheckpointer.save, []
    def save(self, *args, **kwargs):
      calls.append(1)
      if len(calls) == 2 and sys.argv[2] == "interrupt":
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, to the main thread
      return original(self, *args, **kwargs)
    ocp.AsyncCheckpointer.save = save
    try:
      t._train(t.pathlib.Path(sys.argv[1]))
    except KeyboardInterrupt:
      print("INTERRUPTED at save", len(calls), flush=True)
      sys.exit(130)
""")


def _driver(tmp_path, mode):
  script = tmp_path / "driver.py"
  script.write_text(DRIVER)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([str(ROOT)] + [
                 p for p in [os.environ.get("PYTHONPATH")] if p]))
  return subprocess.run(
      [sys.executable, str(script), str(tmp_path / "run"), mode,
       str(ROOT / "tests")], env=env, capture_output=True, text=True,
      timeout=600)


def test_ctrl_c_during_a_save_keeps_it_and_the_previous_one(tmp_path):
  r = _driver(tmp_path, "interrupt")
  assert r.returncode == 130, r.stdout[-2000:] + r.stderr[-2000:]
  assert "INTERRUPTED at save 2" in r.stdout
  assert not (tmp_path / "run" / "result.json").exists()
  # The save in flight when Ctrl-C came was committed, the previous stays.
  assert _steps(tmp_path / "run") == [4, 8]
  r = _driver(tmp_path, "resume")
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert "resumed from step 8/12" in r.stdout


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished micro run (checkpoints at 4, 8 and 12) and its full state."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  result = _train(workdir)
  assert result["steps"] == 12 and _steps(workdir) == [8, 12]
  state = ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / "12" /
                                           "state")
  return workdir, state


@pytest.mark.parametrize("relative", [False, True], ids=["abs", "rel"])
@pytest.mark.parametrize("keep", ["params", "none", "all"])
def test_keep_after_finish(finished_run, tmp_path, keep, relative,
                           monkeypatch):
  source, state = finished_run
  run_dir = tmp_path / "run"
  shutil.copytree(source, run_dir)
  if relative:  # as `make demo` passes it: --workdir=workdir/demo
    monkeypatch.chdir(tmp_path)
    checkpoint.keep_after_finish(pathlib.Path("run"), keep)
  else:
    checkpoint.keep_after_finish(run_dir, keep)
  assert (run_dir / "result.json").exists()
  assert (run_dir / "checkpoints").exists() == (keep == "all")
  assert (run_dir / checkpoint.PARAMS_FILE).exists() == (keep == "params")
  if keep == "all":
    assert _steps(run_dir) == [8, 12]
  if keep == "params":
    params = dict(np.load(run_dir / checkpoint.PARAMS_FILE))
    want = {k[len("params."):]: v for k, v in state.items()
            if k.startswith("params.")}
    assert want and set(params) == set(want)
    assert any(not k.startswith("params.") for k in state)  # opt state gone
    for k, v in want.items():
      np.testing.assert_array_equal(params[k], np.asarray(v), err_msg=k)
  checkpoint.keep_after_finish(run_dir, keep)  # again: nothing changes
  assert (run_dir / checkpoint.PARAMS_FILE).exists() == (keep == "params")
