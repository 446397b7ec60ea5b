"""Mixture solver: agreement with SLSQP, known optima, bounds, KKT, errors."""

import numpy as np
import pytest
from scipy.optimize import minimize

from autoscale_jax.mixing import optimize, simulate


def _slsqp(a, b, lo, hi, total, s=None, k=None):
  m = len(a)
  s = np.ones(m) if s is None else s
  k = np.ones(m) if k is None else k
  x0 = np.full(m, total / s.sum())
  r = minimize(lambda v: np.sum(k * (v + a) ** -b), x0,
               jac=lambda v: -k * b * (v + a) ** (-b - 1), method="SLSQP",
               bounds=list(zip(lo, hi)),
               constraints=[{"type": "eq", "fun": lambda v: s @ v - total,
                             "jac": lambda v: s}],
               options={"ftol": 1e-15, "maxiter": 2000})
  assert r.success, r.message
  return r.x


@pytest.mark.parametrize("m", [2, 7, 50, 200])
def test_matches_slsqp_on_random_convex_instances(m):
  rng = np.random.default_rng(m)
  for _ in range(3):
    a = rng.uniform(-0.15, 2.0, m)
    b = rng.uniform(0.1, 2.0, m)
    lo, hi = np.full(m, 0.2), np.full(m, 3.0)
    sol = optimize.solve(a, b, lo, hi)
    n = np.array(list(sol.n.values()))
    ref = _slsqp(a, b, lo, hi, float(m))
    np.testing.assert_allclose(n, ref, atol=1e-6)
    assert optimize.objective(n, a, b) <= optimize.objective(ref, a, b) + 1e-12
    assert sol.kkt["ok"]


def test_weighted_budget_and_amplitudes_match_slsqp():
  rng = np.random.default_rng(0)
  m = 7
  a, b = rng.uniform(0, 1, m), rng.uniform(0.2, 1.5, m)
  k, s = rng.uniform(0.5, 2, m), rng.dirichlet(np.ones(m))
  lo, hi = np.full(m, 0.2), np.full(m, 3.0)
  sol = optimize.solve(a, b, lo, hi, total=1.0, k=k, s=s)
  ref = _slsqp(a, b, lo, hi, 1.0, s=s, k=k)
  np.testing.assert_allclose(list(sol.n.values()), ref, atol=1e-6)


def test_finds_simulator_optimum_against_brute_force():
  truth = simulate.PowerLawTruth.separable(
      ["x", "y"], k=[3.0, 1.0], A=[100.0, 5000.0], B=[0.4, 0.7], E=1.0)
  budget = 1e5
  opt = truth.optimum(budget)
  grid = np.linspace(1.0, budget - 1.0, 200001)
  agg = [truth.aggregate({"x": g, "y": budget - g}) for g in grid[::100]]
  coarse = grid[::100][int(np.argmin(agg))]
  fine = grid[np.abs(grid - coarse) < 200]
  best = fine[int(np.argmin([truth.aggregate({"x": g, "y": budget - g})
                             for g in fine]))]
  assert abs(opt["x"] - best) < 1.0
  assert abs(opt["x"] + opt["y"] - budget) < 1e-6


def test_lower_bound_binds_where_it_should():
  # Domain "weak" has a tiny exponent: its unconstrained optimum is below lo.
  a = {"weak": 0.5, "p": 0.2, "q": 0.3}
  b = {"weak": 0.01, "p": 1.0, "q": 1.2}
  free = optimize.solve(a, b, lo={d: 0.01 - v for d, v in a.items()},
                        hi=np.inf)
  assert free.n["weak"] < 0.2
  sol = optimize.solve(a, b, lo=0.2, hi=3.0)
  assert sol.bound_domains == {"weak": "lower"}
  assert sol.n["weak"] == pytest.approx(0.2, abs=1e-12)
  assert sum(sol.n.values()) == pytest.approx(3.0, abs=1e-12)
  gains = sol.kkt["marginal_gain"]
  assert gains["weak"] <= sol.lam
  assert gains["p"] == pytest.approx(gains["q"], rel=1e-9)


def test_upper_bound_binds():
  sol = optimize.solve({"strong": 0.2, "p": 2.0, "q": 2.0},
                       {"strong": 2.0, "p": 0.1, "q": 0.1}, lo=0.2, hi=1.2)
  assert sol.bound_domains["strong"] == "upper"
  assert sol.n["strong"] == pytest.approx(1.2, abs=1e-12)
  assert sol.kkt["marginal_gain"]["strong"] >= sol.lam


def test_kkt_certificate_rejects_a_wrong_point():
  a, b = np.array([0.1, 0.5, 1.0]), np.array([0.5, 1.0, 1.5])
  lo, hi = np.full(3, 0.2), np.full(3, 3.0)
  sol = optimize.solve(a, b, lo, hi)
  n = np.array(list(sol.n.values()))
  assert sol.kkt["max_rel_gap_free"] < 1e-9
  assert sol.kkt["budget_error"] < 1e-12
  bad = n + np.array([1e-3, -1e-3, 0.0])
  with pytest.raises(optimize.KKTError, match="marginal gains differ"):
    optimize.certify(bad, a, b, lo, hi, 3.0, sol.lam, ["d0", "d1", "d2"])


def test_infeasible_bounds_raise_clear_errors():
  a, b = [0.5, 0.5], [1.0, 1.0]
  with pytest.raises(optimize.InfeasibleError, match="lower bounds need 3"):
    optimize.solve(a, b, lo=1.5, hi=3.0)
  with pytest.raises(optimize.InfeasibleError, match="upper bounds allow only 1"):
    optimize.solve(a, b, lo=0.2, hi=0.5)
  with pytest.raises(optimize.InfeasibleError, match="undefined at the lower"):
    optimize.solve([-0.3, 0.5], b, lo=0.2, hi=3.0)


def test_batch_equals_single():
  rng = np.random.default_rng(5)
  a, b = rng.uniform(0, 1, (4, 7)), rng.uniform(0.2, 1.5, (4, 7))
  nb = optimize.solve_batch(a, b, 0.2, 3.0, 7.0)
  for i in range(4):
    n1 = optimize.solve(a[i], b[i], 0.2, 3.0).n
    np.testing.assert_allclose(nb[i], list(n1.values()), atol=1e-10)
