"""Estimators of the target mixture (mixing/estimators.py) on simulated truths."""

import numpy as np
import pytest

from autoscale_jax.errors import UserError
from autoscale_jax.mixing import estimators, projection, simulate

DOMS = ["code", "techdocs", "books", "wiki", "legal", "qa", "latex"]
W0 = {d: 1.0 / len(DOMS) for d in DOMS}
BUDGETS = (1e5, 2e5)


def _study(seed, family="small_offset", noise=0.0, bootstrap=0):
  truth = simulate.random_truth(np.random.default_rng([seed, 7]), DOMS,
                                family, ref_budget=BUDGETS[0])
  runs, optima = simulate.simulate_study(truth, BUDGETS, W0, noise=noise,
                                         seed=seed, bootstrap=bootstrap)
  return truth, estimators.EstimatorInput(runs, optima, W0)


def _weights(mix):
  return np.array([mix["weights"][d] for d in DOMS])


def _true_weights(truth, target):
  opt = truth.optimum(target)
  return np.array([opt[d] for d in DOMS]) / target


def test_paper_is_the_projection_rule_unchanged():
  _, inp = _study(0, noise=0.01, bootstrap=30)
  target = 8e5
  got = estimators.estimate("paper", inp, target)
  want = projection.project(list(inp.optima), target)
  assert got["weights"] == want["weights"]
  assert got["tokens"] == want["tokens"]
  assert got["estimator"] == "paper"


def test_noise_free_recovery_small_offsets():
  truth, inp = _study(1)
  for target in (8e5, 2e6):
    w_true = _true_weights(truth, target)
    paper = _weights(estimators.estimate("paper", inp, target))
    joint = _weights(estimators.estimate("joint", inp, target))
    # The paper's rule is exact only for A -> 0 and its own unit-amplitude
    # form; here A is 10-100 tokens and amplitudes differ.
    assert np.abs(paper - w_true).max() < 0.03
    assert np.abs(joint - w_true).max() < 1e-3


def test_joint_recovers_large_offsets_where_paper_does_not():
  truth, inp = _study(2, family="large_offset")
  target = 2e6
  w_true = _true_weights(truth, target)
  joint = _weights(estimators.estimate("joint", inp, target))
  paper = _weights(estimators.estimate("paper", inp, target))
  assert np.abs(joint - w_true).max() < 5e-3
  assert np.abs(paper - w_true).max() > 10 * np.abs(joint - w_true).max()


def test_shrink_without_variance_is_the_paper_exactly():
  _, inp = _study(3)  # noise-free: no intervals, no variance
  assert all(not o["intervals"] for o in inp.optima)
  paper = estimators.estimate("paper", inp, 8e5)
  for name in ("shrink", "project_shrink"):
    got = estimators.estimate(name, inp, 8e5)
    assert got["weights"] == paper["weights"], name


def test_ddo_last_reuses_the_largest_budget_optimum():
  _, inp = _study(7, noise=0.01)
  got = estimators.estimate("ddo_last", inp, 2e6)
  assert got["weights"] == pytest.approx(inp.optima[-1]["weights"], abs=1e-12)


def test_shrinkage_formula():
  opt = {"weights": {"a": 0.6, "b": 0.4}, "budget_tokens": 100.0,
         "intervals": {"a": [0.5, 0.7], "b": [0.3, 0.5]},
         "bootstrap": {"ci": 0.9}}
  lam, var, dist2 = estimators.shrinkage(opt, {"a": 1.0, "b": 1.0})
  sd = 0.2 / (2 * 1.6448536269514722)
  assert var == pytest.approx(2 * sd ** 2, rel=1e-12)
  assert dist2 == pytest.approx(2 * 0.1 ** 2, rel=1e-12)
  assert lam == pytest.approx(var / dist2, rel=1e-12)
  shrunk = estimators.shrink_optimum(opt, {"a": 1.0, "b": 1.0}, lam)
  assert shrunk["weights"]["a"] == pytest.approx(0.6 - 0.1 * lam)
  assert sum(shrunk["tokens"].values()) == pytest.approx(100.0)
  wide = dict(opt, intervals={"a": [0.0, 1.0], "b": [0.0, 1.0]})
  assert estimators.shrinkage(wide, {"a": 1.0, "b": 1.0})[0] == 1.0


def test_every_estimator_sums_to_the_target():
  _, inp = _study(4, noise=0.05, bootstrap=30)
  target = 2e6
  out = estimators.estimate_all(inp.runs, inp.optima, W0, target)
  assert set(out) == set(estimators.NAMES)
  for name, mix in out.items():
    assert "error" not in mix, (name, mix)
    w = _weights(mix)
    assert np.all(np.isfinite(w)) and np.all(w >= 0), name
    assert w.sum() == pytest.approx(1.0, abs=1e-12), name
    assert sum(mix["tokens"].values()) == pytest.approx(target, rel=1e-12)
    assert mix["budget_tokens"] == target and mix["estimator"] == name
    assert mix["notes"], name


def test_availability_caps_hold():
  _, inp = _study(5, noise=0.01, bootstrap=30)
  target = 2e6
  free = estimators.recommend(inp.runs, inp.optima, W0, target,
                              estimator="joint")
  top = max(free["tokens"], key=free["tokens"].get)
  avail = {d: 1e7 for d in DOMS}
  avail[top] = 0.5 * free["tokens"][top]
  for name in estimators.NAMES:
    mix = estimators.recommend(inp.runs, inp.optima, W0, target, avail, 1.0,
                               estimator=name)
    assert mix["tokens"][top] <= avail[top] * (1 + 1e-9), name
    assert sum(mix["tokens"].values()) == pytest.approx(target, rel=1e-12)


def test_unknown_estimator_names_the_allowed_ones():
  _, inp = _study(6)
  with pytest.raises(estimators.EstimatorError) as e:
    estimators.estimate("median", inp, 8e5)
  assert isinstance(e.value, UserError)
  msg = str(e.value)
  assert "'median'" in msg and "\n" not in msg
  for name in estimators.NAMES:
    assert name in msg
  with pytest.raises(UserError):
    estimators.recommend(inp.runs, inp.optima, W0, 8e5, estimator="median")


def test_one_budget_is_a_user_error():
  _, inp = _study(6)
  with pytest.raises(estimators.EstimatorError, match="at least 2"):
    estimators.EstimatorInput(inp.runs[:1], inp.optima[:1], W0)


def test_noise_robust_estimators_beat_the_paper_on_average():
  """At 1% noise per run (the demo's loss noise) over fixed seeded studies,
  the joint fit and the shrunk projection err less than the paper's rule."""
  errs = {name: [] for name in ("paper", "joint", "project_shrink")}
  for seed in range(6):
    truth, inp = _study(100 + seed, noise=0.01, bootstrap=30)
    w_true = _true_weights(truth, 8e5)
    for name in errs:
      w = _weights(estimators.estimate(name, inp, 8e5))
      errs[name].append(np.abs(w - w_true).max())
  mean = {k: float(np.mean(v)) for k, v in errs.items()}
  assert mean["joint"] < mean["paper"], mean
  assert mean["project_shrink"] < mean["paper"], mean
