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
  for stage in ("ddo", "fit", "project", "final", "train", "report", "all"):
    assert stage in r.stdout


def test_stage_train_is_an_alias_of_final(tmp_path):
  r = _cli("--stage=train", f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert errors == ["error: --stage=final needs --config=configs/NAME.py "
                    "(see configs/ for the available studies)"], r.stderr


def test_bad_config_value_is_one_line_exit_2(tmp_path):
  r = _cli("--stage=ddo", "--config=configs/micro.py",
           "--config.train.learning_rate=-1.0", f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert lines == [
      "error: config.train.learning_rate=-1.0 is invalid: must be a finite "
      "number > 0"]
  assert "Traceback" not in r.stderr


def test_repeated_config_override_is_one_line_exit_2(tmp_path):
  """ml_collections would join two tuple values ((0,1) then (2,3) gave
  [0, 1, 2, 3]); a key given twice is refused, naming it."""
  r = _cli("--stage=ddo", "--config=configs/micro.py",
           "--config.final.seeds=(0,1)", "--config.train.seq_len=32",
           "--config.final.seeds=(2,3)", f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines() == [
      "error: --config.final.seeds is given twice; give it once (for a tuple "
      "the two values would be joined, not replaced)"]
  assert not os.listdir(tmp_path)  # refused before anything was written


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


@pytest.mark.parametrize("old_key,new_key,value", [
    ("train.swarm", "run.swarm", "off"),
    ("train.steps_per_call", "run.steps_per_call", "3"),
    ("train.log_every_steps", "run.log_every_steps", "3"),
    ("train.checkpoint_every_steps", "run.checkpoint_every_steps", "3"),
    ("train.keep_checkpoints", "run.keep_checkpoints", "3"),
    ("train.eval_batch_size", "run.eval_batch_size", "8"),
    ("model.remat", "run.remat", "True"),
])
def test_moved_config_key_names_its_new_place(tmp_path, old_key, new_key,
                                              value):
  r = _cli("--stage=ddo", "--config=configs/micro.py",
           f"--config.{old_key}={value}", f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert errors == [
      f"error: config.{old_key} moved to config.{new_key} (an execution "
      f"setting, not part of a run's recipe); use --config.{new_key}"
  ], r.stderr
  assert "Traceback" not in r.stderr


def test_fit_from_bad_runs_json_is_one_line_exit_2(tmp_path):
  runs = {"metric": "ppl", "runs": [
      {"name": "base", "tokens": {"a": 100.0, "b": 100.0},
       "eval": {"a": 10.0, "b": 12.0}},
      {"name": "a_lo", "tokens": {"a": 20.0, "b": 100.0},
       "eval": {"a": 11.0, "b": float("nan")}},
  ]}
  path = tmp_path / "runs.json"
  path.write_text(__import__("json").dumps(runs))
  r = _cli("--stage=fit", f"--results={path}", f"--workdir={tmp_path}/out")
  assert r.returncode == 2, r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "a_lo" in errors[0], r.stderr
  assert "Traceback" not in r.stderr


def test_fit_from_runs_json_writes_mixture(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from autoscale_jax.mixing import ddo, simulate  # pylint: disable=g-import-not-at-top
  domains = ["a", "b", "c"]
  plan = ddo.plan_runs(domains, 3000.0)
  truth = simulate.PowerLawTruth.from_relative(
      domains, a=[0.5, 1.0, 2.0], b=[0.6, 1.0, 0.3],
      base_weights=[1 / 3] * 3, budget=3000.0, base_metric=20.0)
  path = tmp_path / "runs.json"
  path.write_text(json.dumps(simulate.simulate_runs(plan, truth)))
  r = _cli("--stage=fit", f"--results={path}", f"--workdir={tmp_path}/out")
  assert r.returncode == 0, r.stderr
  mixture = json.loads((tmp_path / "out" / "mixture.json").read_text())
  assert set(mixture["weights"]) == set(domains)
  assert abs(sum(mixture["weights"].values()) - 1) < 1e-9


def test_project_bad_target_exit_2(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  for k, budget in enumerate((1000.0, 2000.0)):
    (tmp_path / f"m{k}.json").write_text(json.dumps({
        "budget_tokens": budget, "weights": {"a": 0.5, "b": 0.5},
        "tokens": {"a": budget / 2, "b": budget / 2}}))
  r = _cli("--stage=project", f"--optima={tmp_path}/m0.json,{tmp_path}/m1.json",
           "--target_tokens=-5", f"--workdir={tmp_path}/out")
  assert r.returncode == 2, r.stderr
  assert [l for l in r.stderr.splitlines() if l.startswith("error:")]


@pytest.mark.parametrize("content", [
    b'{"name": "b0_base_s0", "fingerprint": "0123',  # truncated by a crash
    b"\x00\xff\xfe garbage \x80",
    b'["a JSON list, not a record"]',
], ids=["truncated", "garbage", "not_a_record"])
def test_corrupt_store_record_is_one_line_exit_2(tmp_path, content):
  store = tmp_path / "store"
  store.mkdir()
  bad = store / "b0_base_s0__0123456789abcdef.json"
  bad.write_bytes(content)
  r = _cli("--stage=report", "--config=configs/micro.py",
           f"--workdir={tmp_path}")
  assert r.returncode == 2, r.stderr
  assert "Traceback" not in r.stderr
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and str(bad) in errors[0], r.stderr
