"""Proxy swarm: one vmapped program == the runs trained one by one."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import run_events
from autoscale_jax import config as config_lib
from autoscale_jax.train import swarm, trainer
from autoscale_jax.train.synthetic import SyntheticBatches

V, L, B = 256, 16, 8
STEPS = (5, 8, 11)


def _config():
  c = config_lib.base_config()
  c.model.update(num_layers=1, d_model=32, num_heads=2, mlp_dim=64, max_len=L)
  c.train.update(seq_len=L, global_batch_size=B, learning_rate=3e-3)
  c.run.update(eval_batch_size=B, checkpoint_every_steps=4, log_every_steps=4)
  c.mesh.shape = [2, 2, 2]
  return c


def _sources():
  # Different quotas: lengths, seeds and domain splits differ per run.
  return [SyntheticBatches(n, B, L, V, seed=10 + i,
                           domains=("a", "b") if i != 1 else ("a", "b", "c"),
                           pad_final=(i == 2))
          for i, n in enumerate(STEPS)]


def _evals():
  return {"a": SyntheticBatches(1, B, L, V).eval_set(12, seed=1),
          "b": SyntheticBatches(1, B, L, V).eval_set(8, seed=2)}


def _restore_flat(ckpt_dir, step):
  mgr = ocp.CheckpointManager(ckpt_dir, item_names=("state", "meta"))
  out = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  mgr.close()
  return {k: np.asarray(v) for k, v in out["state"].items()}


def _assert_results_close(a, b):
  assert a["steps"] == b["steps"]
  assert a["tokens_per_domain"] == b["tokens_per_domain"]
  for d in a["final_eval"]["domains"]:
    for m in ("loss", "ppl_seq", "bpb"):
      np.testing.assert_allclose(a["final_eval"]["domains"][d][m],
                                 b["final_eval"]["domains"][d][m], rtol=1e-5)
  assert [p["step"] for p in a["curve"]] == [p["step"] for p in b["curve"]]


def _assert_params_match_sequential(stacked, root, runs):
  """Stack position j holds run ``runs[j]``'s final one-by-one parameters."""
  for j, i in enumerate(runs):
    single = _restore_flat(root / f"seq{i}" / "checkpoints", STEPS[i])
    for name, v in single.items():
      # key_bias has an exactly-zero true gradient (softmax is shift
      # invariant), so both runs hold Adam-amplified rounding noise (~1e-6).
      atol = 2e-5 if name.endswith("key_bias") else 1e-6
      np.testing.assert_allclose(stacked[name][j], v, rtol=1e-5, atol=atol,
                                 err_msg=f"run {i} {name}")


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
  """The 3 runs trained one by one with ``train_run`` (the reference)."""
  root = tmp_path_factory.mktemp("seq")
  c, evals = _config(), _evals()
  results = [trainer.train_run(c, b, evals, root / f"seq{i}", vocab_size=V)
             for i, b in enumerate(_sources())]
  return root, results


def test_swarm_equals_sequential_and_finished_runs_freeze(tmp_path,
                                                          sequential):
  c, evals = _config(), _evals()
  root, seq = sequential
  dirs = [tmp_path / f"sw{i}" for i in range(3)]
  got = swarm.train_swarm(c, _sources(), evals, dirs, vocab_size=V,
                          swarm_dir=tmp_path / "swarm", compaction="never")
  for i, (a, b) in enumerate(zip(got, seq)):
    _assert_results_close(a, b)
    assert json.loads((dirs[i] / "result.json").read_text()) == a
    # Each member's TensorBoard: its per-domain evals and its own mixture.
    scalars, hparams = run_events.tensorboard(dirs[i])
    for d, values in a["final_eval"]["domains"].items():
      for m, v in values.items():
        assert scalars[f"eval/{d}/{m}"][STEPS[i]] == pytest.approx(v, rel=1e-6)
    src = _sources()[i]
    assert hparams["data_seed"] == src.seed and hparams["init_seed"] == c.seed
    for d, t in src.tokens_per_domain.items():
      assert hparams[f"tokens/{d}"] == pytest.approx(t)
      assert hparams[f"weight/{d}"] == pytest.approx(
          t / sum(src.tokens_per_domain.values()))
  stacked = _restore_flat(tmp_path / "swarm" / "checkpoints", max(STEPS))
  # Each member stopped at its own last step (5 and 8 of the swarm's 11).
  np.testing.assert_array_equal(stacked["step"], STEPS)
  _assert_params_match_sequential(stacked, root, range(3))
  # A finished swarm returns its results without training.
  again = swarm.train_swarm(c, _sources(), evals, dirs, vocab_size=V,
                            swarm_dir=tmp_path / "swarm")
  assert again == got


class _Crash(SyntheticBatches):
  """Raises once at ``crash_at`` (an interrupted swarm)."""
  crash_at = None

  def batch(self, step, shard=0, num_shards=1):
    if step == self.crash_at:
      raise KeyboardInterrupt
    return super().batch(step, shard, num_shards)


def test_interrupted_swarm_resumes_exactly(tmp_path, sequential):
  c, evals = _config(), _evals()
  _, ref = sequential
  srcs = [_Crash(n, B, L, V, seed=10 + i,
                 domains=("a", "b") if i != 1 else ("a", "b", "c"),
                 pad_final=(i == 2)) for i, n in enumerate(STEPS)]
  srcs[2].crash_at = 9  # after the step-8 checkpoint; run 0 (5) is finished
  dirs = [tmp_path / f"r{i}" for i in range(3)]
  with pytest.raises(KeyboardInterrupt):
    swarm.train_swarm(c, srcs, evals, dirs, vocab_size=V,
                      swarm_dir=tmp_path / "swarm", compaction="never")
  assert (dirs[0] / "result.json").exists()
  assert not (dirs[2] / "result.json").exists()
  srcs[2].crash_at = None
  got = swarm.train_swarm(c, srcs, evals, dirs, vocab_size=V,
                          swarm_dir=tmp_path / "swarm", compaction="never")
  for a, b in zip(got, ref):
    _assert_results_close(a, b)


def test_finished_runs_leave_the_program(tmp_path, sequential, capsys):
  """compaction="always": the stack shrinks 3 -> 2 -> 1, results unchanged."""
  c, evals = _config(), _evals()
  root, seq = sequential
  srcs = [_Crash(n, B, L, V, seed=10 + i,
                 domains=("a", "b") if i != 1 else ("a", "b", "c"),
                 pad_final=(i == 2)) for i, n in enumerate(STEPS)]
  srcs[2].crash_at = 10  # after the step-8 checkpoint of the 1-member stack
  dirs = [tmp_path / f"r{i}" for i in range(3)]
  with pytest.raises(KeyboardInterrupt):
    swarm.train_swarm(c, srcs, evals, dirs, vocab_size=V,
                      swarm_dir=tmp_path / "swarm", compaction="always")
  out = capsys.readouterr().out
  assert "swarm step 5: 2 runs left in the program" in out
  assert "swarm step 8: 1 runs left in the program" in out
  ckpt = tmp_path / "swarm" / "checkpoints"
  # The step-8 checkpoint holds only the run still training.
  assert _restore_flat(ckpt, 8)["step"].tolist() == [8]
  srcs[2].crash_at = None
  got = swarm.train_swarm(c, srcs, evals, dirs, vocab_size=V,
                          swarm_dir=tmp_path / "swarm", compaction="always")
  assert "swarm resumed from step 8/11 (1 runs)" in capsys.readouterr().out
  for a, b in zip(got, seq):
    _assert_results_close(a, b)
  _assert_params_match_sequential(_restore_flat(ckpt, max(STEPS)), root, [2])


@pytest.mark.parametrize("size,live,left,step_s,compile_s,pays", [
    (15, 14, 100, 1.0, 5.0, True),    # 100 * 1/15 = 6.7 s saved > 5 s
    (15, 14, 50, 1.0, 5.0, False),    # 3.3 s saved < 5 s
    (15, 7, 10, 1.0, 0.0, True),      # cached size: any saving pays
    (4, 4, 10, 1.0, 0.0, False),      # nothing finished
    (4, 0, 10, 1.0, 0.0, False),      # nothing left to train
])
def test_compaction_pays(size, live, left, step_s, compile_s, pays):
  assert swarm.compaction_pays(size, live, left, step_s, compile_s) is pays


@pytest.mark.parametrize("kwargs,words", [
    (dict(compaction="sometimes"), "compaction='sometimes' is invalid"),
    (dict(layout="pmap"), "layout='pmap' is invalid"),
])
def test_bad_swarm_option_is_named(tmp_path, kwargs, words):
  with pytest.raises(ValueError, match=words):
    swarm.train_swarm(_config(), _sources(), _evals(),
                      [tmp_path / f"x{i}" for i in range(3)], vocab_size=V,
                      **kwargs)


def test_calibrate_times_one_by_one_and_both_layouts():
  m = swarm.calibrate(_config(), V, _sources(), steps=2)
  assert m["runs"] == 3
  assert min(m["single_s"], m["vmap_s"], m["scan_s"]) > 0
  assert m["swarm_s"] == m[f"{m['layout']}_s"] == min(m["vmap_s"], m["scan_s"])
  assert m["speedup"] == pytest.approx(3 * m["single_s"] / m["swarm_s"])


def test_scan_layout_equals_sequential(tmp_path, sequential):
  """Members one after another in one program; finished ones are skipped."""
  c, evals = _config(), _evals()
  root, seq = sequential
  got = swarm.train_swarm(c, _sources(), evals,
                          [tmp_path / f"s{i}" for i in range(3)], vocab_size=V,
                          swarm_dir=tmp_path / "swarm", layout="scan")
  for a, b in zip(got, seq):
    _assert_results_close(a, b)
  stacked = _restore_flat(tmp_path / "swarm" / "checkpoints", max(STEPS))
  np.testing.assert_array_equal(stacked["step"], STEPS)  # no compaction
  _assert_params_match_sequential(stacked, root, range(3))


def test_stack_memory_counts_every_member():
  compiled = trainer.get_compiled(_config(), V)
  one, limit = swarm.stack_memory(compiled, 1)
  three, _ = swarm.stack_memory(compiled, 3)
  params = sum(x.size for x in jax.tree.leaves(
      trainer.abstract_params(_config().model, V)[1]))
  # params + Adam's two moments, float32, split over the 8 test devices.
  assert one >= 3 * 4 * params // 8
  assert abs(three - 3 * one) <= 3
  assert limit is None or limit > 0


def test_calibrate_refuses_a_stack_that_cannot_fit(monkeypatch):
  monkeypatch.setattr(swarm, "stack_memory",
                      lambda compiled, num: (3 * 2**30, 4 * 2**30))
  with pytest.raises(MemoryError, match=r"3 stacked train states need about "
                     r"3\.0 GiB per device of 4\.0 GiB: .*swarm=off"):
    swarm.calibrate(_config(), V, _sources())
