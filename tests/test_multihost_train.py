"""trainer.train_run on 2 processes x 2 CPU devices equals 1 process x 4.

Both groups train the same tiny GPT-2 for a few steps on SyntheticBatches (in
the 2-process group each process reads only its shard of every batch), with
an orbax checkpoint mid-run, a mid-run eval and a final eval whose held-out
sets span several eval batches. Losses, eval curves and the final parameters
(restored from the checkpoint every host wrote) must agree to float
tolerance, and process 1 must not duplicate process 0's logs in the shared
run directory. ``distributed.agree`` gives every process process 0's choice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import multiproc

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150
NUM_STEPS = 4
EVAL_EVERY = 2

# argv: process_id num_processes port run_dir out_dir
CHILD = textwrap.dedent("""
  import json, sys
  import numpy as np
  from autoscale_jax import distributed as dist

  pid, nproc, port = (int(a) for a in sys.argv[1:4])
  run_dir, out_dir = sys.argv[4:6]
  if nproc > 1:
    info = dist.maybe_initialize(f"localhost:{port}", nproc, pid,
                                 initialization_timeout=60)
  else:
    info = dist.maybe_initialize(env={})
  assert info.initialized == (nproc > 1), info

  import jax
  import orbax.checkpoint as ocp
  from jax.experimental import multihost_utils
  from autoscale_jax.train import checkpoint, synthetic, trainer
  from configs import micro

  assert jax.process_count() == nproc and jax.device_count() == 4
  assert jax.local_device_count() == 4 // nproc
  # A locally measured choice becomes process 0's everywhere.
  assert dist.agree(pid == 0) is True and dist.agree(pid != 0) is False

  c = micro.get_config()
  c.model.num_layers = 2
  c.run.log_every_steps = 1
  c.run.checkpoint_every_steps = 2
  c.run.eval_batch_size = 8
  vocab = 64
  batches = synthetic.SyntheticBatches(@STEPS@, 8, 32, vocab, seed=3,
                                       domains=("alpha", "beta"))
  # 12 held-out sequences per domain: two eval batches of 8 (one padded).
  eval_sets = {d: batches.eval_set(12, seed=100 + i)
               for i, d in enumerate(("alpha", "beta"))}

  # Count every batch row this process reads.
  orig = batches.batch
  seen = []
  def spy(step, shard=0, num_shards=1):
    out = orig(step, shard=shard, num_shards=num_shards)
    seen.append((step, shard, num_shards, len(out["inputs"])))
    return out
  batches.batch = spy

  from absl import logging as absl_logging
  absl_logging.set_verbosity(1)  # per-step lines, as --verbosity=1 prints
  result = trainer.train_run(c, batches, eval_sets, run_dir, vocab_size=vocab,
                             eval_every_steps=@EVERY@)
  assert [s[1:] for s in seen] == [(pid, nproc, 8 // nproc)] * @STEPS@, seen

  # Final parameters from the checkpoint all hosts wrote (orbax restore).
  compiled = trainer.get_compiled(c, vocab)
  mgr = ocp.CheckpointManager(
      (trainer.epath.Path(run_dir) / "checkpoints").resolve(),
      item_names=("state", "meta"))
  assert mgr.latest_step() == @STEPS@, mgr.all_steps()
  with jax.set_mesh(compiled.mesh):
    abstract = jax.eval_shape(compiled.init, jax.random.PRNGKey(0),
                              np.int32(@STEPS@))
    state, meta = checkpoint.restore(mgr, @STEPS@, compiled.state_shardings,
                                     abstract)
  mgr.close()
  flat, _, _ = checkpoint.flatten(state["params"])
  params = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
            for k, v in flat.items()}
  np.savez(f"{out_dir}/params_p{pid}.npz", **params)
  with open(f"{out_dir}/result_p{pid}.json", "w") as f:
    json.dump(dict(result=result, meta=meta), f)
  print("CHILD DONE", pid, flush=True)
""").replace("@STEPS@", str(NUM_STEPS)).replace(
    "@EVERY@", str(EVAL_EVERY))


def _start_group(script: Path, nproc: int, run_dir: Path, out_dir: Path
                 ) -> list[tuple[subprocess.Popen, Path]]:
  port = multiproc.free_port()
  env = multiproc.child_env(4 // nproc)
  out_dir.mkdir(parents=True, exist_ok=True)
  group = []
  for i in range(nproc):
    log = out_dir / f"log_p{i}.txt"
    with open(log, "w") as f:  # the child keeps its own descriptor
      group.append((subprocess.Popen(
          [sys.executable, str(script), str(i), str(nproc), str(port),
           str(run_dir), str(out_dir)], env=env, cwd=str(REPO), stdout=f,
          stderr=subprocess.STDOUT), log))
  return group


def _tails(group: list[tuple[subprocess.Popen, Path]]) -> str:
  return "\n".join(f"--- process {i} (exit {p.poll()}):\n"
                   f"{log.read_text()[-4000:]}"
                   for i, (p, log) in enumerate(group))


def _finish(group: list[tuple[subprocess.Popen, Path]], deadline: float
            ) -> list[str]:
  """Waits for every process; a failure or the deadline stops the group.

  A crashed process leaves its peers blocked in a collective (until JAX's
  own shutdown barrier times out), so a non-zero exit kills the rest at once.
  """
  try:
    while any(p.poll() is None for p, _ in group):
      if any(p.poll() not in (None, 0) for p, _ in group):
        pytest.fail("a process failed:\n" + _tails(group))
      if time.time() > deadline:
        pytest.fail(f"{len(group)}-process group did not finish in "
                    f"{TIMEOUT_S} s:\n" + _tails(group))
      time.sleep(0.2)
  finally:
    for p, _ in group:
      if p.poll() is None:
        p.kill()
        p.wait()
  outs = [log.read_text() for _, log in group]
  for i, ((p, _), out) in enumerate(zip(group, outs)):
    assert p.returncode == 0, "process failed:\n" + _tails(group)
    assert f"CHILD DONE {i}" in out, out[-3000:]
  return outs


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multihost")
  script = tmp / "child.py"
  script.write_text(CHILD)
  # Both groups at once: the 2-process group spends much of its time waiting
  # on collectives, so 3 processes fit the 2 cores.
  deadline = time.time() + TIMEOUT_S
  two = _start_group(script, 2, tmp / "run2", tmp / "out2")
  one = _start_group(script, 1, tmp / "run1", tmp / "out1")
  try:
    two_out = _finish(two, deadline)
    one_out = _finish(one, deadline)
  finally:
    for p, _ in two + one:
      if p.poll() is None:
        p.kill()
        p.wait()
  return tmp, two_out, one_out


def _load(out: Path, pid: int) -> tuple[dict, dict]:
  res = json.loads((out / f"result_p{pid}.json").read_text())
  with np.load(out / f"params_p{pid}.npz") as z:
    params = {k: z[k] for k in z.files}
  return res, params


def _jsonl(path: Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines() if l]


def test_two_processes_train_like_one(groups) -> None:
  tmp, _, _ = groups
  (r1, p1), (r2a, p2a), (r2b, p2b) = (
      _load(tmp / "out1", 0), _load(tmp / "out2", 0), _load(tmp / "out2", 1))
  # The two processes of a group return the same result and parameters.
  assert r2a == r2b
  assert p2a.keys() == p2b.keys() == p1.keys() and len(p1) > 4
  for k in p1:
    np.testing.assert_array_equal(p2a[k], p2b[k], err_msg=k)
  # 2 x 2 devices == 1 x 4 devices.
  one, two = r1["result"], r2a["result"]
  assert one["steps"] == two["steps"] == NUM_STEPS
  assert one["tokens_per_domain"] == two["tokens_per_domain"]
  assert r1["meta"] == r2a["meta"]  # step, num_steps, tokens counted
  l1 = [m["loss"] for m in _jsonl(tmp / "run1" / "metrics.jsonl")]
  l2 = [m["loss"] for m in _jsonl(tmp / "run2" / "metrics.jsonl")]
  assert len(l1) == NUM_STEPS
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  assert [c["step"] for c in two["curve"]] == [c["step"] for c in one["curve"]]
  assert [c["step"] for c in one["curve"]] == [EVAL_EVERY, NUM_STEPS]
  for c1, c2 in zip(one["curve"], two["curve"]):
    for d in ("alpha", "beta"):
      for m in ("loss", "ppl_seq", "bpb"):
        np.testing.assert_allclose(c2["domains"][d][m], c1["domains"][d][m],
                                   rtol=1e-5, err_msg=f"{c1['step']} {d} {m}")
  np.testing.assert_allclose(two["final_eval"]["aggregate"]["loss"],
                             one["final_eval"]["aggregate"]["loss"], rtol=1e-5)
  for k in p1:
    np.testing.assert_allclose(p2a[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert l1[-1] < l1[0]  # it trains


def test_process_1_writes_no_logs(groups) -> None:
  """Shared run dir: one metrics/curve line per step/eval, one event file."""
  tmp, _, _ = groups
  run = tmp / "run2"
  steps = [m["step"] for m in _jsonl(run / "metrics.jsonl")]
  assert steps == list(range(1, NUM_STEPS + 1)), (
      f"metrics.jsonl has steps {steps}: more than one process appends to it")
  curve = [c["step"] for c in _jsonl(run / "curve.jsonl")]
  assert curve == [EVAL_EVERY, NUM_STEPS], (
      f"curve.jsonl has steps {curve}: more than one process appends to it")
  events = sorted(p.name for p in run.rglob("events.out.tfevents*"))
  assert len(events) == 1, events
  assert (run / "result.json").exists()
  assert not list(run.glob(".result.json.tmp-*"))


def test_process_1_prints_no_progress(groups) -> None:
  _, (out0, out1), _ = groups
  progress = f"step {NUM_STEPS}/{NUM_STEPS}"
  assert progress in out0 and "eval step" in out0
  assert progress not in out1 and "eval step" not in out1, out1[-2000:]
