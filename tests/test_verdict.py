"""Verdicts over seeds (mixing/verdict.py): t-intervals, paired differences,
speed-up intervals and the sentences."""

import json
import re

import numpy as np
import pytest
from scipy import stats

from autoscale_jax.errors import UserError
from autoscale_jax.mixing import verdict as V

STEPS = np.arange(0, 1001, 50)


def _curve(fn, steps=STEPS, metric="ppl_seq"):
  return [{"step": int(s), "tokens": int(s) * 100,
           "aggregate": {metric: float(fn(s))}} for s in steps]


def _flat(values_by_seed):
  """Curves whose every point (so the final value) is the seed's value."""
  return {s: _curve(lambda _, v=v: v) for s, v in values_by_seed.items()}


# ------------------------------------------------------------- Student's t


@pytest.mark.parametrize("df", list(range(1, 51)))
def test_t_quantile_and_cdf_match_scipy(df):
  for p in (0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025, 1e-5):
    want = stats.t.ppf(p, df)
    assert V.t_quantile(p, df) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert V.t_cdf(want, df) == pytest.approx(p, rel=1e-9)


def test_t_fractional_and_large_df_and_errors():
  for df in (0.5, 2.7, 13.3, 1e4, 1e6, 2e6, 1e8, 1e12):
    assert V.t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df),
                                                    rel=1e-8)
  with pytest.raises(ValueError, match="p="):
    V.t_quantile(1.0, 3)
  with pytest.raises(ValueError, match="df="):
    V.t_quantile(0.9, 0)


# --------------------------------------------------------------- intervals


@pytest.mark.parametrize("n", [2, 3, 5])
def test_mean_interval_covers_95_percent(n):
  rng = np.random.default_rng(n)
  reps = 2000
  hits = 0
  for _ in range(reps):
    x = 10.0 + 3.0 * rng.standard_normal(n)
    lo, hi = V.mean_interval(x)["ci"]
    hits += lo <= 10.0 <= hi
  # Monte Carlo error of a 95% rate over 2000 draws: sd 0.0049.
  assert hits / reps == pytest.approx(0.95, abs=0.015)


def test_welch_interval_covers_about_95_percent():
  rng = np.random.default_rng(7)
  reps, hits = 2000, 0
  for _ in range(reps):
    a = 1.0 + 1.0 * rng.standard_normal(3)
    b = 0.0 + 3.0 * rng.standard_normal(5)
    lo, hi = V.welch_interval(a, b)
    hits += lo <= 1.0 <= hi
  assert hits / reps == pytest.approx(0.95, abs=0.02)


def test_mean_interval_one_value():
  out = V.mean_interval([4.0])
  assert out == {"n": 1, "mean": 4.0, "sd": None, "ci": None}


# ----------------------------------------------------------------- verdict


def test_paired_difference_cancels_a_shared_seed_offset():
  rng = np.random.default_rng(0)
  offset = {s: 8.0 * rng.standard_normal() for s in (0, 1, 2)}
  ref = {s: 90.0 + offset[s] + 0.05 * rng.standard_normal() for s in offset}
  base = {s: 91.0 + offset[s] for s in offset}
  out = V.seed_verdict({"projected": _flat(ref), "uniform": _flat(base)},
                       "ppl_seq")
  c = out["comparisons"][0]
  d = np.array([ref[s] - base[s] for s in offset])
  assert c["diff"] == pytest.approx(d.mean())
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
  assert c["diff_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
  assert c["diff_ci"][1] < 0 and c["significant"] is True
  rel = 100 * d / np.array([base[s] for s in offset])
  assert c["relative_pct"] == pytest.approx(rel.mean())
  # The unpaired interval carries the offsets' spread and spans 0.
  lo, hi = c["unpaired_diff_ci"]
  assert lo < 0 < hi and hi - lo > 20 * (c["diff_ci"][1] - c["diff_ci"][0])
  m = out["mixtures"]["uniform"]
  v = np.array([base[s] for s in offset])
  assert m["mean"] == pytest.approx(v.mean())
  assert m["ci"] == pytest.approx(list(stats.t.interval(
      0.95, 2, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(3))))


def _linear(slope_by_seed, offset_by_seed=None):
  off = offset_by_seed or {s: 0.0 for s in slope_by_seed}
  return {s: _curve(lambda t, k=k, o=off[s]: 200.0 + o - k * t)
          for s, k in slope_by_seed.items()}


def test_speedup_of_averaged_curves_with_known_crossing():
  eps = {0: 0.0, 1: 0.1, 2: -0.05}
  offset = {0: 0.0, 1: 3.0, 2: -2.0}
  method = _linear({s: (1 + e) / 7 for s, e in eps.items()}, offset)
  base = _linear({s: 1 / 10 for s in eps}, offset)
  out = V.seed_verdict({"projected": method, "uniform": base}, "ppl_seq",
                       smoothing=1)
  sp = out["comparisons"][0]["speedup"]
  # Averaged curves are linear: slope mean((1 + e) / 7) vs 1 / 10, both from
  # 200 + mean(offset); the method reaches the baseline's final value (100
  # lower) at 100 / slope.
  slope = np.mean([(1 + e) / 7 for e in eps.values()])
  want = 1 - (100.0 / slope) / 1000.0
  assert sp["speedup"] == pytest.approx(want, abs=1e-9)
  per_seed = [1 - 700.0 / (1 + eps[s]) / 1000.0 for s in (0, 1, 2)]
  assert sp["per_seed"] == pytest.approx(per_seed, abs=1e-9)
  half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
  assert sp["ci"] == pytest.approx([want - half, want + half], abs=1e-9)
  assert sp["reach_step"] == pytest.approx(100.0 / slope, abs=1e-6)


def test_speedup_never_reached_gives_no_interval():
  method = _linear({0: 1 / 7, 1: 1 / 12, 2: 1 / 7})  # seed 1 is slower
  base = _linear({0: 1 / 10, 1: 1 / 10, 2: 1 / 10})
  out = V.seed_verdict({"projected": method, "uniform": base}, "ppl_seq",
                       smoothing=1)
  sp = out["comparisons"][0]["speedup"]
  assert sp["per_seed"][1] is None and sp["ci"] is None
  assert sp["speedup"] is not None
  assert any("1 of 3 seeds never reach" in n for n in out["notes"])


def test_average_curve_uses_common_steps_and_names_bad_input():
  a = _curve(lambda s: 10.0 - s / 100, steps=[0, 10, 20, 30])
  b = _curve(lambda s: 12.0 - s / 100, steps=[0, 20, 30])
  avg = V.average_curve({0: a, 1: b}, "ppl_seq")
  assert [p["step"] for p in avg] == [0, 20, 30]
  assert [p["aggregate"]["ppl_seq"] for p in avg] == pytest.approx(
      [11.0, 10.8, 10.7])
  with pytest.raises(V.VerdictError, match=r"mixture 'x' seed 3: the curve "
                     "is empty"):
    V.average_curve({3: []}, "ppl_seq", "x")
  with pytest.raises(UserError, match=r"seed 0 point 0: needs 'step' and "
                     r"'aggregate'\.'loss'"):
    V.average_curve({0: a}, "loss")
  with pytest.raises(V.VerdictError, match="share no evaluation step"):
    V.average_curve({0: a[:1], 1: b[1:]}, "ppl_seq")


def test_unknown_mixtures_raise():
  curves = {"uniform": _flat({0: 1.0})}
  with pytest.raises(V.VerdictError, match="reference mixture 'projected'"):
    V.seed_verdict(curves, "ppl_seq")
  with pytest.raises(V.VerdictError, match="baseline mixture"):
    V.seed_verdict({"projected": _flat({0: 1.0}), **curves}, "ppl_seq",
                   baselines=["uniform", "nope"])


# ------------------------------------------------------------------ wording

PCT = r"[+-]\d+\.\d%"


def test_sentence_significant_with_speedup():
  method = _linear({0: 1 / 7, 1: 1.05 / 7, 2: 0.95 / 7})
  base = _linear({s: 1 / 10 for s in (0, 1, 2)})
  out = V.seed_verdict({"projected": method, "uniform": base}, "ppl_seq",
                       smoothing=1)
  c = out["comparisons"][0]
  (s,) = out["sentences"]
  assert c["significant"] is True
  lo, hi = c["relative_pct_ci"]
  sp = c["speedup"]
  assert s == (f"projected vs uniform: {c['relative_pct']:+.1f}% ppl_seq "
               f"(95% CI {lo:+.1f}% to {hi:+.1f}%), reaches uniform's final "
               f"value {sp['speedup']:.0%} sooner (95% CI {sp['ci'][0]:+.0%} "
               f"to {sp['ci'][1]:+.0%})")
  assert re.match(rf"projected vs uniform: {PCT} ppl_seq \(95% CI {PCT} to "
                  rf"{PCT}\), reaches uniform's final value 30% sooner", s)


def test_sentence_not_significant():
  ref = {0: 95.0, 1: 90.0, 2: 93.0}
  base = {0: 93.0, 1: 92.0, 2: 92.0}
  out = V.seed_verdict({"projected": _flat(ref), "uniform": _flat(base)},
                       "ppl_seq")
  c = out["comparisons"][0]
  assert c["significant"] is False
  lo, hi = c["relative_pct_ci"]
  assert lo < 0 < hi
  assert out["sentences"] == [
      f"projected vs uniform: no significant difference "
      f"({c['relative_pct']:+.1f}% ppl_seq, 95% CI {lo:+.1f}% to {hi:+.1f}%)"]


def test_sentences_with_one_seed_give_the_single_numbers():
  method = _linear({42: 1 / 7})
  base = _linear({42: 1 / 10})
  out = V.seed_verdict({"projected": method, "uniform": base,
                        "ddo_small": _linear({42: 1 / 10})}, "ppl_seq",
                       smoothing=1)
  c = out["comparisons"][0]
  assert c["n"] == 1 and c["significant"] is None and c["diff_ci"] is None
  assert c["speedup"]["ci"] is None
  assert out["mixtures"]["projected"]["ci"] is None
  rel = 100 * ((200 - 1000 / 7) - 100) / 100  # final 57.1 vs 100
  assert c["relative_pct"] == pytest.approx(rel)
  assert out["sentences"][0] == (
      f"projected vs uniform: a verdict needs >= 2 seeds (3 recommended); "
      f"one seed (42) gives {rel:+.1f}% ppl_seq, reaches uniform's final "
      "value 30% sooner")
  assert len(out["sentences"]) == 2
  assert any(">= 2 seeds" in n for n in out["notes"])


def test_no_common_seed():
  out = V.seed_verdict({"projected": _flat({0: 1.0, 1: 2.0}),
                        "uniform": _flat({5: 1.0, 6: 1.0})}, "ppl_seq")
  c = out["comparisons"][0]
  assert c["n"] == 0 and c["speedup"] is None
  assert "no common seeds" in out["sentences"][0]


def test_two_seeds_note_and_finals_override_and_string_seeds():
  ref = _flat({0: 10.0, 1: 11.0})
  curves = {"projected": {str(s): c for s, c in ref.items()},
            "uniform": _flat({0: 12.0, 1: 12.5})}
  out = V.seed_verdict(curves, "ppl_seq",
                       finals={"uniform": {"0": 20.0, "1": 21.0}})
  assert out["mixtures"]["projected"]["seeds"] == [0, 1]
  assert out["mixtures"]["uniform"]["values"] == [20.0, 21.0]
  assert out["comparisons"][0]["diff"] == pytest.approx(-10.0)
  assert any("2 seeds: intervals are wide" in n for n in out["notes"])


def test_json_ready_and_markdown():
  rng = np.random.default_rng(1)
  curves = {m: _linear({s: (1 / k) * (1 + 0.02 * rng.standard_normal())
                        for s in (0, 1, 2)})
            for m, k in (("projected", 7), ("uniform", 10), ("ddo_small", 9))}
  out = V.seed_verdict(curves, "ppl_seq")
  assert json.loads(json.dumps(out)) == out
  md = V.to_markdown(out)
  lines = md.splitlines()
  assert lines[0].startswith("**Verdict over seeds**")
  assert lines[2:4] == [f"- {s}" for s in out["sentences"]]
  for name, m in out["mixtures"].items():
    row = next(ln for ln in lines if ln.startswith(f"| {name} | 3 |"))
    assert f"{m['mean']:.4g}" in row
    assert f"{m['ci'][0]:.4g} to {m['ci'][1]:.4g}" in row
  for c in out["comparisons"]:
    row = next(ln for ln in lines if ln.startswith(f"| {c['baseline']} | 3 "
                                                   f"| {c['diff']:+.4g}"))
    assert f"{c['speedup']['speedup']:.1%}" in row
