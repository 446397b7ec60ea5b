"""Checkpoints: interrupted saves, and what a finished run keeps.

A micro run (12 steps, a checkpoint every 4) is interrupted at the orbax
boundary of its second save (step 8), then run again: it resumes from a
checkpoint, never from step 0. ``run.keep_after_finish`` ("params", "none",
"all") is applied to a finished run's directory.
"""

import os
import shutil
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.train import checkpoint
from autoscale_jax.train import trainer
from autoscale_jax.train.synthetic import SyntheticBatches


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


def _interrupt_second_save(monkeypatch, how):
  """Interrupts the 2nd orbax save: a real SIGINT, or an exception inside."""
  original = ocp.AsyncCheckpointer.save
  calls = []

  def save(self, directory, *args, **kwargs):
    calls.append(directory)
    if len(calls) == 2:
      if how == "signal":  # Ctrl-C arrives while the save is being started
        os.kill(os.getpid(), signal.SIGINT)
      else:  # Ctrl-C (or a crash) raised inside orbax, before it wrote
        raise KeyboardInterrupt
    return original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.AsyncCheckpointer, "save", save)
  return calls


@pytest.mark.parametrize("how,resume_step", [("signal", 8), ("raised", 4)])
def test_interrupted_save_resumes_from_a_checkpoint(tmp_path, monkeypatch,
                                                    capsys, how, resume_step):
  workdir = tmp_path / "run"
  calls = _interrupt_second_save(monkeypatch, how)
  with pytest.raises(KeyboardInterrupt):
    _train(workdir)
  assert len(calls) == 2
  assert not (workdir / "result.json").exists()
  # The previous checkpoint is there; a Ctrl-C signal waits for the save in
  # flight, so that one is committed too.
  assert _steps(workdir) == sorted({4, resume_step})
  monkeypatch.undo()
  capsys.readouterr()
  result = _train(workdir)
  assert f"resumed from step {resume_step}/12" in capsys.readouterr().out
  assert result["steps"] == 12


def test_sigint_held_raises_after_the_block():
  got = []
  with pytest.raises(KeyboardInterrupt):
    with checkpoint.sigint_held():
      os.kill(os.getpid(), signal.SIGINT)
      got.append("block finished")
  assert got == ["block finished"]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished micro run (checkpoints at 4, 8 and 12) and its full state."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  result = _train(workdir)
  assert result["steps"] == 12 and _steps(workdir) == [8, 12]
  state = ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / "12" /
                                           "state")
  return workdir, state


@pytest.mark.parametrize("keep", ["params", "none", "all"])
def test_keep_after_finish(finished_run, tmp_path, keep):
  source, state = finished_run
  run_dir = tmp_path / "run"
  shutil.copytree(source, run_dir)
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
