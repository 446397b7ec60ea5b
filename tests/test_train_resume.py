"""Resume equals unbroken: a real subprocess SIGKILLed between checkpoints."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

DRIVER = textwrap.dedent('''
    import os, sys, time
    from autoscale_jax import config as config_lib
    from autoscale_jax.train import trainer
    from autoscale_jax.train.synthetic import SyntheticBatches

    workdir, hang_at = sys.argv[1], int(sys.argv[2])

    class Batches(SyntheticBatches):
      def batch(self, step, shard=0, num_shards=1):
        if step == hang_at and getattr(self, "armed", False):  # wait here to be killed (between checkpoints)
          open(os.path.join(workdir, "HANGING"), "w").close()
          time.sleep(600)
        return super().batch(step, shard, num_shards)

    c = config_lib.base_config()
    c.model.update(num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
                   max_len=32, dropout=0.1)
    c.train.update(seq_len=32, global_batch_size=8)
    c.run.update(eval_batch_size=8, checkpoint_every_steps=4, log_every_steps=4)
    c.mesh.shape = [2, 2, 2]
    b = Batches(12, 8, 32, 256, seed=9)
    b.armed = True
    trainer.train_run(c, b, {"a": b.eval_set(8)}, workdir, vocab_size=256)
''')


def _run(driver, workdir, hang_at):
  return subprocess.Popen([sys.executable, driver, str(workdir), str(hang_at)],
                          env=dict(os.environ), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _final_state(workdir):
  import orbax.checkpoint as ocp
  return ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / "12" / "state")


@pytest.mark.slow
def test_resume_after_sigkill_equals_unbroken(tmp_path):
  driver = tmp_path / "driver.py"
  driver.write_text(DRIVER)
  broken, unbroken = tmp_path / "broken", tmp_path / "unbroken"
  broken.mkdir()
  ref = _run(driver, unbroken, -1)
  proc = _run(driver, broken, 6)  # checkpoint at 4, killed during step 7
  deadline = time.time() + 300
  # Wait until the process hangs in step 7 and checkpoint 4 is committed.
  while not ((broken / "HANGING").exists()
             and (broken / "checkpoints" / "4").exists()):
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() < deadline
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (broken / "result.json").exists()
  assert (broken / "checkpoints" / "4").exists()
  resumed = _run(driver, broken, -1)
  out = resumed.communicate(timeout=300)[0]
  assert resumed.returncode == 0, out
  assert "resumed from step 4/12" in out
  assert ref.wait(timeout=300) == 0, ref.stdout.read()

  a, b = _final_state(broken), _final_state(unbroken)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
  import json
  ra = json.loads((broken / "result.json").read_text())
  rb = json.loads((unbroken / "result.json").read_text())
  assert ra["final_eval"] == rb["final_eval"]
  la = [json.loads(x) for x in (broken / "metrics.jsonl").read_text().splitlines()]
  lb = [json.loads(x) for x in (unbroken / "metrics.jsonl").read_text().splitlines()]
  assert la[-1]["loss"] == lb[-1]["loss"]
  # The steps logged before the kill and past checkpoint 4 are not repeated.
  assert [r["step"] for r in la] == [r["step"] for r in lb]
