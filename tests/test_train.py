"""Trainer tests: schedule, decay mask, sharding, grad accumulation, train_run."""

import json
import logging
import math
import os
import re

import jax
from absl import logging as absl_logging
import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.train import cadence, checkpoint, optim, runlog, sharding, trainer
from autoscale_jax.train.batches import BatchSource
from autoscale_jax.train.synthetic import SyntheticBatches

V, L, B = 256, 32, 8
GOLDEN = os.path.join(os.path.dirname(__file__), "golden",
                      "partition_specs_gpt2_tiny.json")


def _config(mesh=(2, 2, 2), accum=1):
  c = config_lib.base_config()
  c.model.update(num_layers=1, d_model=32, num_heads=2, mlp_dim=64, max_len=L)
  c.train.update(seq_len=L, global_batch_size=B, grad_accum_steps=accum,
                 learning_rate=3e-3)
  c.run.update(eval_batch_size=B, checkpoint_every_steps=2, log_every_steps=2)
  c.mesh.shape = list(mesh)
  return c


def _single(config):
  return trainer.get_compiled(
      config, V, sharding.make_mesh([1, 1, 1], jax.devices()[:1]))


def _train(compiled, batches, steps):
  state = trainer.init_state(compiled, 0, steps)
  losses = []
  with jax.set_mesh(compiled.mesh):
    for s in range(steps):
      batch = sharding.put_batch(batches.batch(s), compiled.mesh)
      state, m = compiled.train_step(state, batch)
      losses.append(float(m["loss"]))
  return jax.device_get(state["params"]), losses


def _assert_trees_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol), a, b)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_warmup_then_decay_to_zero_over_this_run(kind):
  for total in (50, 200):
    lr = np.asarray([optim.lr_schedule(s, total, peak=1.0, warmup_frac=0.1,
                                       kind=kind) for s in range(total + 1)])
    warm = int(0.1 * total)
    assert np.all(np.diff(lr[:warm]) > 0) and lr[warm - 1] == pytest.approx(1.0)
    assert np.all(np.diff(lr[warm:]) < 0)
    assert lr[total] == pytest.approx(0.0, abs=1e-7) and lr[total - 1] > 0


def test_decay_mask_skips_biases_norms_and_positions():
  mask = optim.decay_mask({"embed": 0, "pos_embed": 0, "ln": {"scale": 0,
                           "bias": 0}, "fc": {"kernel": 0, "bias": 0},
                           "attn": {"query": 0, "query_bias": 0}})
  assert mask == {"embed": True, "pos_embed": False,
                  "ln": {"scale": False, "bias": False},
                  "fc": {"kernel": True, "bias": False},
                  "attn": {"query": True, "query_bias": False}}


def test_partition_specs_match_golden():
  mesh = sharding.make_mesh([2, 2, 2])
  specs = trainer.param_partition_specs(config_lib.base_config().model, 512,
                                        mesh)
  flat, _, _ = checkpoint.flatten(specs)
  got = {k: str(v) for k, v in sorted(flat.items())}
  if os.environ.get("REGEN_GOLDEN"):
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
  with open(GOLDEN) as f:
    assert got == json.load(f)


def test_sharded_training_equals_single_device():
  batches = SyntheticBatches(3, B, L, V, seed=1, docs_per_row=2)
  p1, l1 = _train(_single(_config()), batches, 3)
  compiled = trainer.get_compiled(_config(), V)
  assert dict(compiled.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  p8, l8 = _train(compiled, batches, 3)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  _assert_trees_close(p1, p8, atol=2e-5)


def test_grad_accumulation_equals_big_batch():
  batches = SyntheticBatches(2, B, L, V, seed=2)
  p1, l1 = _train(_single(_config()), batches, 2)
  p2, l2 = _train(_single(_config(accum=2)), batches, 2)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  _assert_trees_close(p1, p2, atol=2e-5)


def test_domain_metrics_definitions():
  seq_loss = np.array([2.0, 6.0])
  seq_tok = np.array([2.0, 3.0])
  m = trainer.domain_metrics(seq_loss, seq_tok, np.array([4.0, 4.0]))
  assert m["loss"] == pytest.approx(8 / 5)
  assert m["ppl_tok"] == pytest.approx(math.exp(8 / 5))
  assert m["ppl_seq"] == pytest.approx((math.e + math.e ** 2) / 2)
  assert m["bpb"] == pytest.approx(8 / math.log(2) / 8)


@pytest.fixture
def verbose():
  """``--verbosity=1``: per-step lines and INFO notes are shown."""
  before = absl_logging.get_verbosity()
  absl_logging.set_verbosity(1)
  yield
  absl_logging.set_verbosity(before)


def test_train_run_contract_cache_and_finished_run(tmp_path, capsys, caplog,
                                                   verbose):
  caplog.set_level(logging.INFO)
  c = _config()
  batches = SyntheticBatches(4, B, L, V, seed=3, pad_final=True)
  evals = {"a": batches.eval_set(5), "b": batches.eval_set(9, seed=7)}
  r = trainer.train_run(c, batches, evals, tmp_path / "r1", vocab_size=V,
                        eval_every_steps=2, progress_label="t1")
  out = capsys.readouterr().out
  assert "partial" in caplog.text and re.search(r"\[t1\] \[#+\] step 4/4", out)
  assert r["steps"] == 4 and set(r["tokens_per_domain"]) == {"a", "b"}
  assert set(r["final_eval"]["domains"]) == {"a", "b"}
  agg = r["final_eval"]["aggregate"]
  for k in ("loss", "ppl_tok", "ppl_seq", "bpb"):
    vals = [r["final_eval"]["domains"][d][k] for d in ("a", "b")]
    assert agg[k] == pytest.approx(np.mean(vals))
  assert [p["step"] for p in r["curve"]] == [2, 4]
  assert r["curve"][-1]["tokens"] == pytest.approx(
      sum(r["tokens_per_domain"].values()))
  assert json.loads((tmp_path / "r1" / "result.json").read_text()) == r
  assert len((tmp_path / "r1" / "metrics.jsonl").read_text().splitlines()) == 2
  assert any(p.name.startswith("events.out.tfevents")
             for p in (tmp_path / "r1").iterdir())

  # A second run of the same shapes (different length) does not recompile.
  compiled = trainer.get_compiled(c, V)
  n_train = compiled.train_steps._cache_size()  # pylint: disable=protected-access
  n_eval = compiled.eval_step._cache_size()  # pylint: disable=protected-access
  r2 = trainer.train_run(c, SyntheticBatches(2, B, L, V, seed=4), evals,
                         tmp_path / "r2", vocab_size=V)
  assert n_train == 1
  assert compiled.train_steps._cache_size() == n_train  # pylint: disable=protected-access
  assert compiled.eval_step._cache_size() == n_eval  # pylint: disable=protected-access
  assert r2["steps"] == 2 and [p["step"] for p in r2["curve"]] == [2]

  # A finished run is returned as is, never retrained.
  assert trainer.train_run(c, batches, evals, tmp_path / "r1",
                           vocab_size=V) == r
  assert "already finished" in caplog.text


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
  c = _config()
  batches = SyntheticBatches(8, B, L, V, seed=5, nan_at_step=4)
  evals = {"a": batches.eval_set(4)}
  with pytest.raises(trainer.TrainingDiverged, match=r"step 5 of 8"):
    trainer.train_run(c, batches, evals, tmp_path, vocab_size=V)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 4
  assert not (tmp_path / "result.json").exists()
  import orbax.checkpoint as ocp
  flat = ocp.PyTreeCheckpointer().restore(tmp_path / "checkpoints" / "4" / "state")
  assert all(np.all(np.isfinite(v)) for v in flat.values())


def test_bert_bf16_remat_dropout_train_step_runs_sharded():
  c = _config()
  c.model.update(kind="bert", dtype="bfloat16", dropout=0.1)
  c.run.remat = True
  compiled = trainer.get_compiled(c, V)
  batches = SyntheticBatches(2, B, L, V, seed=6, kind="bert")
  _, losses = _train(compiled, batches, 2)
  assert all(np.isfinite(losses)) and abs(losses[0] - math.log(V)) < 1.0
  m = trainer.evaluate(compiled, trainer.init_state(compiled, 0, 2)["params"],
                       {"a": batches.eval_set(3)}, B)
  assert np.isfinite(m["aggregate"]["loss"])


def test_keep_jsonl_upto_drops_steps_a_crash_left_behind(tmp_path):
  path = runlog.epath.Path(tmp_path / "metrics.jsonl")
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                          for s in (2, 4, 6, 8)))
  assert [r["step"] for r in runlog.keep_jsonl_upto(path, 4)] == [2, 4]
  assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4]
  before = path.stat().mtime
  runlog.keep_jsonl_upto(path, 4)  # nothing to drop: file left as is
  assert path.stat().mtime == before
  assert runlog.keep_jsonl_upto(runlog.epath.Path(tmp_path / "none"), 3) == []


def test_steps_per_call_trains_the_same_run(tmp_path):
  """1, 3 and 10 steps per compiled call: same losses, evals and parameters.

  Calls end at every log (5), eval (4) and checkpoint (6) step, so the chunks
  of a 13-step run are uneven and the last call of each is partly unused.
  """
  runs = {}
  for per_call in (1, 3, 10):
    c = _config()
    c.run.update(steps_per_call=per_call, log_every_steps=5,
                 checkpoint_every_steps=6)
    batches = SyntheticBatches(13, B, L, V, seed=9, pad_final=True)
    r = trainer.train_run(c, batches, {"a": batches.eval_set(6)},
                          tmp_path / f"k{per_call}", vocab_size=V,
                          eval_every_steps=4)
    lines = (tmp_path / f"k{per_call}" / "metrics.jsonl").read_text()
    runs[per_call] = (r, [json.loads(x) for x in lines.splitlines()])
  ref, ref_log = runs[1]
  assert [m["step"] for m in ref_log] == [5, 10, 13]
  assert [p["step"] for p in ref["curve"]] == [4, 8, 12, 13]
  for per_call in (3, 10):
    r, log = runs[per_call]
    assert [m["step"] for m in log] == [m["step"] for m in ref_log]
    for a, b in zip(log, ref_log):
      assert a["tokens"] == b["tokens"]
      np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
      np.testing.assert_allclose(a["lr"], b["lr"], rtol=1e-6)
    assert [p["step"] for p in r["curve"]] == [p["step"] for p in ref["curve"]]
    for a, b in zip(r["curve"], ref["curve"]):
      np.testing.assert_allclose(a["aggregate"]["loss"], b["aggregate"]["loss"],
                                 rtol=1e-5)


def test_batch_sources_satisfy_the_trainer_protocol(tmp_path):
  from autoscale_jax.data import pipeline
  c = _config()
  c.data.source = "fixture"
  c.data.domains = ("alpha", "beta")
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 2
  c.data.heldout_max_sequences = 2
  bundle = pipeline.prepare_data(c, str(tmp_path))
  quota = bundle.quota_batches({"alpha": 100, "beta": 50}, seed=0)
  for source in (quota, SyntheticBatches(2, B, L, V)):
    assert isinstance(source, BatchSource), type(source).__name__
  assert not isinstance(object(), BatchSource)


def test_calls_end_at_every_log_eval_and_checkpoint_stop():
  c = _config()
  c.run.update(log_every_steps=5, checkpoint_every_steps=6)
  settings = cadence.RunSettings.from_config(c, eval_every_steps=4)
  ends, s = [], 0
  while s < 13:
    s = settings.call_end(s, 13, per_call=10)
    ends.append(s)
  assert ends == [4, 5, 6, 8, 10, 12, 13]
  assert settings.call_end(0, 13, per_call=3) == 3
  assert [t for t in range(1, 14) if settings.evals_at(t, 13)] == [4, 8, 12]
  assert [t for t in range(1, 14) if settings.saves_at(t, 13)] == [6, 12, 13]
  assert [t for t in range(1, 14) if settings.logs_at(t, 13)] == [5, 10, 13]


def test_cached_program_ignores_edits_made_to_the_config_afterwards():
  # The step functions are traced at their first call, after get_compiled
  # returned; editing the caller's config in between must not reach them
  # (it once baked another test's learning rate into a cached program).
  c = _config(mesh=(1, 1, 1))
  c.train.learning_rate = 1e-3
  compiled = _single(c)
  c.train.learning_rate = 5.0
  state = trainer.init_state(compiled, 0, 10)
  with jax.set_mesh(compiled.mesh):
    batch = sharding.put_batch(SyntheticBatches(2, B, L, V).batch(0),
                               compiled.mesh)
    _, metrics = compiled.train_step(state, batch)
  assert float(metrics["lr"]) <= 1e-3 * (1 + 1e-6)
