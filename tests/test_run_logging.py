"""What a run logs: per-domain eval scalars and its mixture as hyperparameters,
in TensorBoard (always) and Weights & Biases (optional, offline mode here)."""

import importlib.util
import os
import sys
import time

import pytest

import run_events
from autoscale_jax import config as config_lib
from autoscale_jax import errors
from autoscale_jax.train import runlog, trainer, wandb_writer
from autoscale_jax.train.synthetic import SyntheticBatches

V, L, B = 256, 16, 8
DOMAINS = ("a", "b")


def _config():
  c = config_lib.base_config()
  c.study = "logtest"
  c.model.update(num_layers=1, d_model=32, num_heads=2, mlp_dim=64, max_len=L)
  c.train.update(seq_len=L, global_batch_size=B, learning_rate=3e-3)
  c.run.update(eval_batch_size=B, checkpoint_every_steps=4, log_every_steps=2)
  c.mesh.shape = [2, 2, 2]
  c.seed = 5
  return c


def _evals():
  return {d: SyntheticBatches(1, B, L, V).eval_set(8, seed=i + 1)
          for i, d in enumerate(DOMAINS)}


def _train(config, run_dir):
  batches = SyntheticBatches(4, B, L, V, seed=3, domains=DOMAINS)
  result = trainer.train_run(config, batches, _evals(), run_dir, vocab_size=V,
                             eval_every_steps=2)
  return batches, result


def _check_hparams(hparams, tokens, *, data_seed, init_seed):
  total = sum(tokens.values())
  assert hparams["budget_tokens"] == pytest.approx(total)
  assert hparams["data_seed"] == data_seed
  assert hparams["init_seed"] == init_seed
  for d, t in tokens.items():
    assert hparams[f"weight/{d}"] == pytest.approx(t / total)
    assert hparams[f"tokens/{d}"] == pytest.approx(t)


def test_run_hparams_are_the_mixture():
  hp = runlog.run_hparams({"x": 300, "y": 100}, data_seed=1, init_seed=None)
  assert hp == {"budget_tokens": 400.0, "data_seed": 1, "weight/x": 0.75,
                "weight/y": 0.25, "tokens/x": 300.0, "tokens/y": 100.0}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
  """One short run with eval every 2 steps; W&B on (offline) when installed."""
  root = tmp_path_factory.mktemp("logged")
  c = _config()
  wandb_dir = None
  if importlib.util.find_spec("wandb") is not None:
    wandb_dir = root / "wandb_files"
    wandb_dir.mkdir()
    c.log.wandb_project = "autoscale-test"
    config_lib.validate(c)
  env = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir),
         "WANDB_SILENT": "true"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    run_dir = root / "b0_base_s0-0123456789"
    batches, result = _train(c, run_dir)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return run_dir, wandb_dir, batches, result


def test_tensorboard_has_per_domain_eval_and_the_mixture(logged_run):
  run_dir, _, batches, result = logged_run
  scalars, hparams = run_events.tensorboard(run_dir)
  # Every evaluation (steps 2 and 4): the aggregate and each domain's metrics,
  # equal to the curve the run returns.
  assert [p["step"] for p in result["curve"]] == [2, 4]
  for point in result["curve"]:
    for m, v in point["aggregate"].items():
      assert scalars[f"eval/{m}"][point["step"]] == pytest.approx(v, rel=1e-6)
    for d in DOMAINS:
      for m, v in point["domains"][d].items():
        assert scalars[f"eval/{d}/{m}"][point["step"]] == pytest.approx(
            v, rel=1e-6)
  assert set(scalars["loss"]) == {2, 4}  # the train metrics stay
  _check_hparams(hparams, batches.tokens_per_domain, data_seed=3, init_seed=5)


def test_wandb_off_by_default_and_settings_from_config():
  c = _config()
  assert wandb_writer.WandbSettings.from_config(c) is None
  c.log.wandb_project = "p"
  c.log.wandb_mode = "offline"
  s = wandb_writer.WandbSettings.from_config(c)
  assert s == wandb_writer.WandbSettings(project="p", entity="",
                                         group="logtest", mode="offline")
  c.log.wandb_mode = "sometimes"
  with pytest.raises(config_lib.ConfigError, match="log.wandb_mode"):
    config_lib.validate(c)


def test_wandb_offline_run_holds_the_scalars_and_the_mixture(logged_run):
  pytest.importorskip("wandb")
  run_dir, wandb_dir, batches, result = logged_run
  # wandb's service process writes the file; wait for the run's last record.
  deadline = time.time() + 60
  while True:
    [run] = run_events.wandb_offline(wandb_dir)
    if run["exited"] or time.time() > deadline:
      break
    time.sleep(0.5)
  assert run["exited"]
  assert run["name"] == run_dir.name
  assert run["project"] == "autoscale-test" and run["group"] == "logtest"
  _check_hparams(run["config"], batches.tokens_per_domain, data_seed=3,
                 init_seed=5)
  assert run["config"]["model"]["d_model"] == 32  # the recipe
  for point in result["curve"]:
    row = run["history"][point["step"]]
    for d in DOMAINS:
      for m, v in point["domains"][d].items():
        assert row[f"eval/{d}/{m}"] == pytest.approx(v, rel=1e-6)
    assert row["eval/loss"] == pytest.approx(point["aggregate"]["loss"],
                                             rel=1e-6)
  assert "loss" in run["history"][2] and "lr" in run["history"][4]
  # Its files went to $WANDB_DIR, none into the run's directory.
  assert not (run_dir / "wandb").exists()


def test_wandb_project_without_wandb_is_a_one_line_user_error(monkeypatch,
                                                             tmp_path):
  monkeypatch.setitem(sys.modules, "wandb", None)  # wandb not importable
  c = _config()
  c.log.wandb_project = "myproj"
  # config.validate says so before any work ...
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert isinstance(e.value, errors.UserError)
  msg = str(e.value)
  assert "\n" not in msg and "log.wandb_project='myproj'" in msg
  assert "pip install 'autoscale_jax[wandb]'" in msg
  # ... and opening a run's writer does too (reached without validate).
  with pytest.raises(wandb_writer.WandbMissing, match="autoscale_jax.wandb.") as e:
    runlog.RunLog.for_run(c, tmp_path, {"a": 1.0}, data_seed=0, init_seed=0)
  assert isinstance(e.value, errors.UserError) and "\n" not in str(e.value)


def test_init_seed_argument_sets_the_initialization(tmp_path, logged_run):
  # train_run(init_seed=...) initializes from that seed, not config.seed (the
  # study passes each run's plan.init_seed): init_seed=5 (= config.seed)
  # repeats the logged run exactly, 6 trains another model on the same data
  # (after 4 steps the losses differ in the sixth digit, so compared exactly:
  # training on the CPU is deterministic), and the logs name the seed used.
  _, _, _, result = logged_run

  def run(init_seed):
    batches = SyntheticBatches(4, B, L, V, seed=3, domains=DOMAINS)
    out = trainer.train_run(_config(), batches, _evals(),
                            tmp_path / f"r{init_seed}", vocab_size=V,
                            eval_every_steps=2, init_seed=init_seed)
    _, hparams = run_events.tensorboard(tmp_path / f"r{init_seed}")
    _check_hparams(hparams, batches.tokens_per_domain, data_seed=3,
                   init_seed=init_seed)
    return out["final_eval"]["aggregate"]["loss"]

  logged = result["final_eval"]["aggregate"]["loss"]
  assert run(5) == logged
  assert run(6) != logged
