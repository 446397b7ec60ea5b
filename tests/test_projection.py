"""Tests of stage 2 (projection), independent of the trainer and simulate.py."""

import json
import math

import numpy as np
import pytest

from autoscale_jax.mixing import projection as P

DOMAINS = ["arxiv", "books", "c4", "github"]


# A small self-contained simulator: separable per-domain power laws in
# ABSOLUTE tokens, L = sum_i k_i (N_i + A_i)^(-B_i). At the optimum of budget N
# every domain with N_i > 0 has k_i B_i (N_i + A_i)^(-B_i - 1) = lam.
K = np.array([30.0, 12.0, 8.0, 20.0])
B = np.array([0.30, 0.45, 0.25, 0.35])


def sim_optimum(budget, a=np.zeros(4)):
  def n_of(log_lam):
    return np.maximum((K * B / np.exp(log_lam))**(1 / (B + 1)) - a, 0.0)

  lo, hi = -200.0, 50.0
  for _ in range(300):
    mid = 0.5 * (lo + hi)
    if n_of(mid).sum() > budget:
      lo = mid
    else:
      hi = mid
  n = n_of(0.5 * (lo + hi))
  return n * budget / n.sum()


def mix(tokens, **extra):
  tokens = {d: float(v) for d, v in zip(DOMAINS, tokens)}
  total = sum(tokens.values())
  return {"budget_tokens": total, "tokens": tokens,
          "weights": {d: v / total for d, v in tokens.items()}, **extra}


def arr(d):
  return np.array([d[k] for k in DOMAINS])


N1 = np.array([10.0, 20.0, 30.0, 40.0])
N2 = np.array([30.0, 25.0, 45.0, 100.0])


@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_closed_form_cases(t):
  expected = {1.0: N2, 2.0: N2**2 / N1, 0.5: np.sqrt(N1 * N2)}[t]
  out = P.project([mix(N1), mix(N2)], expected.sum(),
                  allow_interpolation=True)
  assert out["method"] == "two-budget"
  assert out["t"] == pytest.approx(t, abs=1e-12)
  np.testing.assert_allclose(arr(out["tokens"]), expected, rtol=1e-12)
  assert sum(out["tokens"].values()) == pytest.approx(expected.sum(),
                                                      rel=1e-14)
  np.testing.assert_allclose(sum(out["weights"].values()), 1.0, rtol=1e-14)


def test_input_order_does_not_matter():
  a = P.project([mix(N1), mix(N2)], 1000.0)
  b = P.project([mix(N2), mix(N1)], 1000.0)
  np.testing.assert_allclose(arr(a["tokens"]), arr(b["tokens"]), rtol=1e-12)


def test_monotone_root_find_all_growing():
  targets = np.geomspace(150.0, 1e7, 15)
  ts = [P.project([mix(N1), mix(N2)], T, allow_interpolation=True)["t"]
        for T in targets]
  assert np.all(np.diff(ts) > 0)
  for T, t in zip(targets, ts):
    q = P.two_budget_quantities(dict(zip(DOMAINS, N1)), dict(zip(DOMAINS, N2)),
                                t)
    assert sum(q.values()) == pytest.approx(T, rel=1e-12)


def test_mixed_growth_and_shrink_root_on_increasing_branch():
  n1 = np.array([10.0, 50.0, 40.0, 5.0])
  n2 = np.array([60.0, 10.0, 50.0, 6.0])  # books shrinks, others grow
  log_r = np.log(n2 / n1)

  def total(t):
    return float(np.sum(n1 * np.exp(t * log_r)))

  # Convex total with an interior minimum: a target between the minimum and
  # N1 has two roots; the projection must take the one on the increasing
  # branch (t > t_min), which is also the unique one for larger targets.
  ts = np.linspace(-3, 3, 6001)
  t_min = ts[np.argmin([total(t) for t in ts])]
  s_min_total = min(total(t) for t in ts)
  for target in [total(0.0) - 1.0, total(0.5), 500.0, 1e5]:
    out = P.project([mix(n1), mix(n2)], target, allow_interpolation=True)
    assert out["t"] > t_min
    assert total(out["t"]) == pytest.approx(target, rel=1e-12)
  ts_out = [P.project([mix(n1), mix(n2)], T, allow_interpolation=True)["t"]
            for T in np.geomspace(s_min_total * 1.001, 1e6, 12)]
  assert np.all(np.diff(ts_out) > 0)
  with pytest.raises(P.ProjectionError, match="unreachable.*books"):
    P.project([mix(n1), mix(n2)], s_min_total * 0.9,
              allow_interpolation=True)
  notes = " ".join(P.project([mix(n1), mix(n2)], 500.0)["notes"])
  assert "books shrink" in notes


def test_two_budget_rule_exact_on_pure_power_laws():
  # With A_i = 0 the KKT optimum is exactly log-linear in one scalar, so the
  # paper's rule recovers the optimum at any target.
  o1, o2 = sim_optimum(1e6), sim_optimum(2e6)
  for target in [1.5e6, 8e6, 1e8]:
    out = P.project([mix(o1), mix(o2)], target, allow_interpolation=True)
    np.testing.assert_allclose(arr(out["tokens"]), sim_optimum(target),
                               rtol=1e-9)


def test_three_budget_least_squares_within_one_percent():
  # Offsets of 0-10% of the smallest optimum: not exactly log-linear.
  a = np.array([0.02, 0.1, 0.05, 0.0]) * sim_optimum(1e6)
  budgets = [1e6, 2e6, 4e6]
  optima = [mix(sim_optimum(n, a)) for n in budgets]
  out = P.project(optima, 4e6, allow_interpolation=True)
  assert out["method"] == "least-squares"
  assert out["s"] == pytest.approx(1.0, abs=0.02)
  assert set(out["fit"]["residuals_log"]) == set(DOMAINS)
  assert max(out["fit"]["max_abs_residual_log"].values()) < 0.01
  worst_ls, worst_two = 0.0, 0.0
  for target in np.geomspace(1e6, 4e6, 7):
    got = arr(P.project(optima, target, allow_interpolation=True)["tokens"])
    rel = np.abs(got / sim_optimum(target, a) - 1)
    assert rel.max() <= 0.01, (target, rel)
    two = arr(P.project([optima[0], optima[2]], target,
                         allow_interpolation=True)["tokens"])
    worst_ls = max(worst_ls, rel.max())
    worst_two = max(worst_two, np.abs(two / sim_optimum(target, a) - 1).max())
  # Using the middle budget too does better than the two end budgets alone.
  assert worst_ls < worst_two
  # Held-out-budget check is reported with per-domain errors.
  hc = out["heldout_check"]
  np.testing.assert_allclose([c["heldout_budget_tokens"] for c in hc], budgets,
                             rtol=1e-12)
  assert hc[1]["kind"] == "interpolation"
  assert set(hc[1]["relative_error"]) == set(DOMAINS)
  assert hc[1]["max_abs_relative_error"] < 0.01
  json.dumps(out, allow_nan=False)  # strict JSON for mixture.json
  assert all(c["max_abs_relative_error"] < 0.05 for c in hc)


def test_heldout_check_numbers():
  # Exactly log-linear optima at s = 0, 1, 2 except books, which is off by
  # +10% at the middle budget: the interpolation error of books is -1/1.1 + 1.
  n0 = np.array([10.0, 20.0, 30.0, 40.0])
  r = np.array([2.0, 1.5, 1.2, 3.0])
  n_mid = n0 * r * np.array([1.0, 1.1, 1.0, 1.0])
  n_hi = n0 * r**2
  hc = P.heldout_check(np.stack([n0, n_mid, n_hi]),
                       [n0.sum(), n_mid.sum(), n_hi.sum()], DOMAINS)
  mid = hc[1]["relative_error"]
  # Geometric mean of n0 and n_hi is n0 * r; predicted at n_mid's total, so
  # solve the same way here for the reference.
  out = P.project([mix(n0), mix(n_hi)], n_mid.sum(),
                  allow_interpolation=True)
  np.testing.assert_allclose(arr(mid), arr(out["tokens"]) / n_mid - 1,
                             rtol=1e-9)
  assert mid["books"] < -0.05


def test_availability_caps_bind_named_total_preserved():
  o1, o2 = mix(N1), mix(N2)
  target = 2000.0
  free = P.project([o1, o2], target)
  # Cap github well below its uncapped projection.
  avail = {"arxiv": 1e6, "books": 1e6, "c4": 1e6, "github": 400.0}
  out = P.project([o1, o2], target, available_tokens=avail, max_epochs=2.0)
  assert free["tokens"]["github"] > 800.0
  assert out["capped_domains"] == ["github"]
  assert out["tokens"]["github"] == pytest.approx(800.0, rel=1e-12)
  assert sum(out["tokens"].values()) == pytest.approx(target, rel=1e-12)
  assert out["t"] > free["t"]
  notes = " ".join(out["notes"])
  assert "github" in notes and "Beyond the paper" in notes
  # Free domains follow the same rule at the re-solved t.
  q = P.two_budget_quantities(o1["tokens"], o2["tokens"], out["t"])
  for d in ["arxiv", "books", "c4"]:
    assert out["tokens"][d] == pytest.approx(q[d], rel=1e-10)
  # Trajectory respects caps too.
  assert all(p["weights"]["github"] * p["budget_tokens"] <= 800.0 * (1 + 1e-9)
             for p in out["trajectory"])


def test_caps_cascade_and_unreachable():
  o1, o2 = mix(N1), mix(N2)
  avail = {"arxiv": 300.0, "books": 1e6, "c4": 1e6, "github": 400.0}
  out = P.project([o1, o2], 3000.0, available_tokens=avail)
  assert sorted(out["capped_domains"]) == ["arxiv", "github"]
  assert sum(out["tokens"].values()) == pytest.approx(3000.0, rel=1e-12)
  with pytest.raises(P.ProjectionError, match="exceeds the available"):
    P.project([o1, o2], 1e7, available_tokens={d: 10.0 for d in DOMAINS})
  with pytest.raises(P.ProjectionError, match="lacks domain.*github"):
    P.project([o1, o2], 300.0, available_tokens={"arxiv": 1, "books": 1,
                                                 "c4": 1})
  none_bind = P.project([o1, o2], 300.0,
                        available_tokens={d: 1e9 for d in DOMAINS})
  assert none_bind["capped_domains"] == []
  assert any("none binds" in n for n in none_bind["notes"])


def test_bound_flags():
  # ddo.py's format: numeric "bounds" per domain must not be read as flags.
  o1 = mix(N1, bound_domains={"books": "lower"},
           bounds={d: [0.2, 3.0] for d in DOMAINS}, intervals={})
  o2 = mix(N2, bound_domains=["books", "c4"])
  out = P.project([o1, o2], 500.0)
  assert set(out["bound_flags"]) == {"books", "c4"}
  assert len(out["bound_flags"]["books"]) == 2
  assert out["bound_flags"]["books"][0]["bound"] == "lower"
  assert any("not valid" in n and "books" in n for n in out["notes"])
  assert P.project([mix(N1), mix(N2)], 500.0)["bound_flags"] == {}


def test_bands_from_intervals():
  w1, w2 = N1 / N1.sum(), N2 / N2.sum()
  iv1 = {d: [w * 0.9, w * 1.1] for d, w in zip(DOMAINS, w1)}
  iv2 = {d: {"lo": w * 0.9, "hi": w * 1.1} for d, w in zip(DOMAINS, w2)}
  out = P.project([mix(N1, intervals=iv1), mix(N2, intervals=iv2)], 1000.0)
  bands = out["bands"]
  assert bands["failed_draws"] == 0
  for d in DOMAINS:
    lo, hi = bands["weights"][d]
    assert lo < out["weights"][d] < hi
    assert hi - lo > 0.01
  assert any("confidence bands" in n for n in out["notes"])
  assert P.project([mix(N1), mix(N2)], 1000.0)["bands"] is None


def test_trajectory_spans_inputs_to_target():
  out = P.project([mix(N1), mix(N2)], 5000.0)
  budgets = [p["budget_tokens"] for p in out["trajectory"]]
  assert budgets[0] == pytest.approx(N1.sum())
  assert budgets[-1] == pytest.approx(5000.0)
  assert np.all(np.diff(budgets) > 0)
  np.testing.assert_allclose(arr(out["trajectory"][-1]["weights"]),
                             arr(out["weights"]), rtol=1e-12)
  mid = [p for p in out["trajectory"] if p["budget_tokens"] == pytest.approx(
      N2.sum())][0]
  np.testing.assert_allclose(arr(mid["weights"]), N2 / N2.sum(), rtol=1e-10)


def _write(tmp_path, name, obj):
  p = tmp_path / name
  p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
  return str(p)


def test_errors_name_file_and_domain(tmp_path):
  a = _write(tmp_path, "a.json", mix(N1))
  b = _write(tmp_path, "b.json", mix(N2))
  zero = mix(N2)
  zero["tokens"]["books"] = 0.0
  z = _write(tmp_path, "zero.json", zero)
  with pytest.raises(P.ProjectionError, match=r"zero\.json.*'books'.*0"):
    P.load_optima([a, z])
  neg = mix(N2)
  neg["tokens"]["c4"] = -5.0
  with pytest.raises(P.ProjectionError, match=r"neg\.json.*'c4'"):
    P.load_optima([a, _write(tmp_path, "neg.json", neg)])
  other = mix(N2)
  other["tokens"]["wiki"] = other["tokens"].pop("github")
  other["weights"]["wiki"] = other["weights"].pop("github")
  with pytest.raises(P.ProjectionError,
                     match=r"other\.json.*lacks github.*adds wiki"):
    P.load_optima([a, _write(tmp_path, "other.json", other)])
  same = mix(N1 * 1.0)
  with pytest.raises(P.ProjectionError, match=r"same budget"):
    P.load_optima([a, _write(tmp_path, "same.json", same)])
  with pytest.raises(P.ProjectionError, match=r"missing\.json.*missing field"):
    P.load_optima([a, _write(tmp_path, "missing.json", {"budget_tokens": 5})])
  with pytest.raises(P.ProjectionError, match=r"bad\.json.*not valid JSON"):
    P.load_optima([a, _write(tmp_path, "bad.json", "{nope")])
  with pytest.raises(P.ProjectionError, match=r"nofile\.json.*cannot read"):
    P.load_optima([a, str(tmp_path / "nofile.json")])
  with pytest.raises(P.ProjectionError, match="two or more"):
    P.load_optima([a])
  optima = P.load_optima([a, b])
  for bad in [0.0, -10.0, float("nan")]:
    with pytest.raises(P.ProjectionError, match="target_tokens"):
      P.project(optima, bad)
  with pytest.raises(P.ProjectionError, match="max_epochs"):
    P.project(optima, 500.0, {d: 1e6 for d in DOMAINS}, max_epochs=0.0)
  for e in [P.ProjectionError("x")]:
    assert isinstance(e, ValueError)


def test_weights_only_input_and_run_stage(tmp_path):
  w1 = {"budget_tokens": N1.sum(),
        "weights": dict(zip(DOMAINS, (N1 / N1.sum()).tolist()))}
  a = _write(tmp_path, "a.json", w1)
  b = _write(tmp_path, "b.json", mix(N2))
  out = P.run_project_stage([a, b], (N2**2 / N1).sum(), str(tmp_path / "out"),
                            available_tokens={d: 1e9 for d in DOMAINS})
  written = json.loads((tmp_path / "out" / "mixture.json").read_text())
  assert written["method"] == "two-budget"
  assert written["t"] == pytest.approx(2.0, abs=1e-9)
  assert set(written["weights"]) == set(DOMAINS)
  assert math.isclose(sum(written["tokens"].values()), written["budget_tokens"],
                      rel_tol=1e-12)
  assert written["inputs"][0]["path"] == a
  assert out["weights"] == written["weights"]
  assert not list((tmp_path / "out").glob(".tmp_*"))


# ----------------------------------------- file-only validation (issue 17)


def test_target_must_exceed_largest_budget_unless_interpolation_allowed(
    tmp_path):
  a = _write(tmp_path, "a.json", mix(N1))
  b = _write(tmp_path, "b.json", mix(N2))
  for target in (N2.sum(), 0.5 * N2.sum(), N1.sum() / 2):
    with pytest.raises(P.ProjectionError) as e:
      P.run_project_stage([a, b], target, str(tmp_path / "out"))
    msg = str(e.value)
    assert "\n" not in msg and f"target_tokens={target:.6g}" in msg
    assert f"largest input budget {N2.sum():.6g}" in msg and "b.json" in msg
    assert "allow_interpolation=True" in msg
  assert not (tmp_path / "out" / "mixture.json").exists()
  out = P.run_project_stage([a, b], np.sqrt(N1 * N2).sum(),
                            str(tmp_path / "out"), allow_interpolation=True)
  assert out["t"] == pytest.approx(0.5, abs=1e-12)
  assert any("Interpolation" in n for n in out["notes"])
  above = P.project(P.load_optima([a, b]), N2.sum() * 1.01)
  assert not any("Interpolation" in n for n in above["notes"])


def test_overflow_is_an_error_never_infinity(tmp_path):
  a = _write(tmp_path, "a.json", mix(N1))
  b = _write(tmp_path, "b.json", mix(N2))
  for target in (1e300, 1.7e308):
    with pytest.raises(P.ProjectionError) as e:
      P.run_project_stage([a, b], target, str(tmp_path / "out"))
    assert "\n" not in str(e.value) and "overflows" in str(e.value)
    assert f"target_tokens={target:.6g}" in str(e.value)
  assert not (tmp_path / "out").exists()
  out = P.run_project_stage([a, b], 1e15, str(tmp_path / "out"))
  json.loads((tmp_path / "out" / "mixture.json").read_text(),
             parse_constant=lambda c: pytest.fail(f"non-finite {c}"))
  assert sum(out["tokens"].values()) == pytest.approx(1e15, rel=1e-12)


def test_weights_tokens_and_budget_must_agree(tmp_path):
  a = _write(tmp_path, "a.json", mix(N1))

  def refused(name, obj, *phrases):
    path = _write(tmp_path, name, obj)
    with pytest.raises(P.ProjectionError) as e:
      P.load_optima([a, path])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path), msg
    for p in phrases:
      assert p in msg, msg

  budget = mix(N2)
  budget["budget_tokens"] *= 1.01
  refused("budget.json", budget, "'tokens' sum to 200",
          "'budget_tokens' is 202", "relative difference 0.0099")
  weight = mix(N2)
  weight["weights"]["c4"] += 0.01
  refused("weight.json", weight, "weight of domain 'c4' is 0.235",
          "tokens / budget_tokens gives 0.225")
  names = mix(N2)
  names["weights"]["wiki"] = names["weights"].pop("github")
  refused("names.json", names, "weights lack github", "weights add wiki")
  unnormalised = {"budget_tokens": N2.sum(),
                  "weights": dict(zip(DOMAINS, (2 * N2 / N2.sum()).tolist()))}
  refused("unnormalised.json", unnormalised, "weight of domain 'arxiv'")
  # Within the tolerances (what --stage=fit writes after a JSON round trip).
  close = mix(N2)
  close["budget_tokens"] *= 1 + 5e-7
  close["weights"]["c4"] += 5e-7
  P.load_optima([a, _write(tmp_path, "close.json", close)])
