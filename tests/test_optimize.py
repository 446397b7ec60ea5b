"""Mixture solver: agreement with SLSQP, known optima, bounds, KKT, errors."""

import contextlib
import ctypes
import glob
import os

import numpy as np
import pytest
import scipy
from scipy.optimize import minimize

from autoscale_jax.mixing import optimize, simulate


@contextlib.contextmanager
def _one_blas_thread():
  """Single-threaded OpenBLAS for SLSQP (best effort).

  On a small shared machine, once XLA's thread pool has run, SLSQP's
  multi-threaded OpenBLAS calls are oversubscribed: 0.09 s becomes 1-16 s
  per m=200 instance.
  """
  libs = glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs",
                                "libscipy_openblas*.so*"))
  try:
    lib = ctypes.CDLL(libs[0])
    get, put = (lib.scipy_openblas_get_num_threads,
                lib.scipy_openblas_set_num_threads)
  except (IndexError, OSError, AttributeError):
    yield
    return
  old = get()
  put(1)
  try:
    yield
  finally:
    put(old)


def _slsqp(a, b, lo, hi, total, s=None, k=None):
  with _one_blas_thread():
    return _slsqp_run(a, b, lo, hi, total, s, k)


def _slsqp_run(a, b, lo, hi, total, s, k):
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


# --- projected gradient and the projection --------------------------------


def _project_ref(y, s, lo, hi, total):
  """Exact projection by sorting the breakpoints of ``s.clip(y - mu s)``."""
  g = lambda mu: s @ np.clip(y - mu * s, lo, hi) - total
  mus = np.unique(np.concatenate([(y - lo) / s, (y - hi) / s]))
  vals = np.array([g(mu) for mu in mus])
  j = int(np.searchsorted(-vals, 0.0))  # vals is non-increasing
  if j == 0 or vals[j] == 0:
    mu = mus[min(j, len(mus) - 1)]
  else:
    m0, m1, v0, v1 = mus[j - 1], mus[j], vals[j - 1], vals[j]
    mu = m0 + (m1 - m0) * v0 / (v0 - v1)
  return np.clip(y - mu * s, lo, hi)


@pytest.mark.parametrize("m", [2, 7, 50, 200])
def test_projected_gradient_matches_bisection_and_slsqp(m):
  rng = np.random.default_rng(100 + m)
  for _ in range(3):
    a = rng.uniform(-0.15, 2.0, m)
    b = rng.uniform(0.1, 2.0, m)
    lo, hi = np.full(m, 0.2), np.full(m, 3.0)
    pg = optimize.solve(a, b, lo, hi, method="projected_gradient")
    bi = optimize.solve(a, b, lo, hi, method="bisection")
    n = np.array(list(pg.n.values()))
    np.testing.assert_allclose(n, list(bi.n.values()), atol=1e-9)
    np.testing.assert_allclose(n, _slsqp(a, b, lo, hi, float(m)), atol=1e-6)
    assert pg.kkt["ok"] and pg.kkt["converged"]
    assert pg.kkt["method"] == "projected_gradient"
    assert pg.bound_domains == bi.bound_domains
    assert pg.lam == pytest.approx(bi.lam, rel=1e-9)


def test_projected_gradient_weighted_budget_and_no_upper_bound():
  rng = np.random.default_rng(3)
  for hi in (3.0, np.inf):
    m = 9
    a, b = rng.uniform(-0.1, 1, m), rng.uniform(0.05, 1.5, m)
    k, s = rng.uniform(0.5, 2, m), rng.dirichlet(np.ones(m))
    lo, hiv = np.full(m, 0.2), np.full(m, hi)
    pg = optimize.solve(a, b, lo, hiv, total=1.0, k=k, s=s,
                        method="projected_gradient")
    bi = optimize.solve(a, b, lo, hiv, total=1.0, k=k, s=s)
    np.testing.assert_allclose(list(pg.n.values()), list(bi.n.values()),
                               atol=1e-9)
    ref = _slsqp(a, b, lo, np.minimum(hiv, 1e3), 1.0, s=s, k=k)
    np.testing.assert_allclose(list(pg.n.values()), ref, atol=1e-6)


@pytest.mark.parametrize("method", optimize.METHODS)
def test_bounds_bind_for_both_methods(method):
  sol = optimize.solve({"weak": 0.5, "p": 0.2, "q": 0.3},
                       {"weak": 0.01, "p": 1.0, "q": 1.2}, lo=0.2, hi=3.0,
                       method=method)
  assert sol.bound_domains == {"weak": "lower"}
  assert sol.n["weak"] == pytest.approx(0.2, abs=1e-12)
  assert sol.kkt["marginal_gain"]["weak"] <= sol.lam
  sol = optimize.solve({"strong": 0.2, "p": 2.0, "q": 2.0},
                       {"strong": 2.0, "p": 0.1, "q": 0.1}, lo=0.2, hi=1.2,
                       method=method)
  assert sol.bound_domains == {"strong": "upper"}
  assert sol.n["strong"] == pytest.approx(1.2, abs=1e-12)
  assert sol.kkt["marginal_gain"]["strong"] >= sol.lam
  # Several domains at each bound at once.
  a = np.array([0.5, 0.5, 0.2, 0.2, 1.0, 1.0])
  b = np.array([0.01, 0.02, 2.0, 1.8, 0.5, 0.6])
  sol = optimize.solve(a, b, lo=0.2, hi=1.5, method=method)
  assert sol.bound_domains == {"d0": "lower", "d1": "lower", "d2": "upper",
                               "d3": "upper"}
  n = np.array(list(sol.n.values()))
  np.testing.assert_allclose(n, _slsqp(a, b, np.full(6, 0.2), np.full(6, 1.5),
                                       6.0), atol=1e-6)


@pytest.mark.parametrize("method", optimize.METHODS)
@pytest.mark.parametrize("hi", [3.0, np.inf])
def test_two_domains_one_at_lower_bound(method, hi):
  # The other domain is then fixed by the budget; it is free and sets lambda
  # (regression: the solver's multiplier was off there and failed the KKT).
  sol = optimize.solve([0.5, 0.2], [0.01, 1.0], lo=0.2, hi=hi, method=method)
  assert sol.n["d0"] == pytest.approx(0.2, abs=1e-12)
  assert sol.n["d1"] == pytest.approx(1.8, abs=1e-12)
  assert sol.bound_domains == {"d0": "lower"}
  assert sol.lam == pytest.approx(sol.kkt["marginal_gain"]["d1"], rel=1e-12)


def test_projection_is_exact_on_random_inputs():
  rng = np.random.default_rng(11)
  for m in (1, 2, 7, 50, 1000):
    for _ in range(4):
      y = rng.normal(0.0, 3.0, m)
      s = rng.uniform(0.1, 2.0, m)
      lo = rng.uniform(-1.0, 0.5, m)
      hi = lo + rng.uniform(0.0, 2.0, m)
      total = float(s @ (lo + rng.uniform(0, 1) * (hi - lo)))
      x, mu = optimize.project(y, lo, hi, total, s=s)
      assert np.all(x >= lo) and np.all(x <= hi)
      assert abs(s @ x - total) <= 1e-12 * (1 + abs(total) + s @ np.abs(x))
      np.testing.assert_allclose(x, np.clip(y - mu * s, lo, hi), atol=1e-12)
      np.testing.assert_allclose(x, _project_ref(y, s, lo, hi, total),
                                 atol=1e-10)
      # Closest point: (y - x).(z - x) <= 0 for feasible z.
      for _ in range(5):
        z = _project_ref(rng.normal(0.0, 3.0, m), s, lo, hi, total)
        assert (y - x) @ (z - x) <= 1e-9 * (1 + np.abs(y - x) @ np.abs(z - x))


def test_projection_matches_a_qp_solver():
  rng = np.random.default_rng(12)
  m = 12
  y, s = rng.normal(1.0, 2.0, m), rng.uniform(0.2, 1.5, m)
  lo, hi = np.zeros(m), np.full(m, 2.0)
  total = 0.8 * float(s @ hi)
  x, _ = optimize.project(y, lo, hi, total, s=s)
  with _one_blas_thread():
    r = minimize(lambda v: 0.5 * np.sum((v - y) ** 2), np.clip(y, lo, hi),
                 jac=lambda v: v - y, method="SLSQP",
                 bounds=list(zip(lo, hi)),
                 constraints=[{"type": "eq", "fun": lambda v: s @ v - total,
                               "jac": lambda v: s}],
                 options={"ftol": 1e-15, "maxiter": 1000})
  assert r.success, r.message
  np.testing.assert_allclose(x, r.x, atol=1e-7)
  # The weighted metric: the same as the Euclidean projection of sqrt(w) y.
  w = rng.uniform(0.1, 10.0, m)
  xw, _ = optimize.project(y, lo, hi, total, s=s, w=w)
  q = np.sqrt(w)
  zw, _ = optimize.project(q * y, q * lo, q * hi, total, s=s / q)
  np.testing.assert_allclose(xw, zw / q, atol=1e-10)


def test_unknown_method_is_rejected():
  with pytest.raises(ValueError, match="unknown method"):
    optimize.solve([0.5, 0.5], [1.0, 1.0], method="adam")
