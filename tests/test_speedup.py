"""Tests of the speed-up measurement and the comparison table."""

import numpy as np
import pytest

from autoscale_jax.mixing import speedup as S


def curve(steps, fn, tokens_per_step=100):
  return [{"step": int(s), "tokens": int(s) * tokens_per_step,
           "aggregate": {"ppl": float(fn(s)), "loss": float(fn(s)) / 10.0}}
          for s in steps]


STEPS = np.arange(0, 1001, 10)


def base_fn(s):
  return 10.0 + 200.0 / (1.0 + s / 50.0)


def test_linear_curves_exact():
  base = curve(STEPS, lambda s: 100.0 - s / 10.0)
  meth = curve(STEPS, lambda s: 100.0 - s / 7.0)  # 30% fewer steps
  t = S.comparison_table({"projected": meth, "uniform": base}, "ppl",
                         smoothing=1)
  row = t["rows"][0]
  assert row["baseline"] == "uniform"
  assert row["reach_step"] == pytest.approx(700.0)
  assert row["speedup"] == pytest.approx(0.3, abs=1e-12)
  assert row["reach_tokens"] == pytest.approx(70000.0)
  # Trailing average of 3 points on a linear curve lags by one spacing (10):
  # threshold = f_b(990), reached when (x - 10) / 0.7 = 990.
  t3 = S.comparison_table({"projected": meth, "uniform": base}, "ppl",
                          smoothing=3)
  assert t3["rows"][0]["speedup"] == pytest.approx(1 - (0.7 * 990 + 10) / 1000,
                                                   abs=1e-12)


def test_shifted_curve_thirty_percent():
  base = curve(STEPS, base_fn)
  meth = curve(STEPS, lambda s: base_fn(s / 0.7))
  for window in [1, 3, 5]:
    row = S.comparison_table({"projected": meth, "llama": base}, "ppl",
                             smoothing=window)["rows"][0]
    assert row["speedup"] == pytest.approx(0.3, abs=0.01), window
    assert row["status"] == "reached"


def test_never_reaches_and_slower():
  base = curve(STEPS, base_fn)
  plateau = curve(STEPS, lambda s: max(base_fn(s), 20.0))
  slower = curve(STEPS, lambda s: base_fn(s / 1.2))
  t = S.comparison_table({"projected": plateau, "uniform": base}, "ppl")
  assert t["rows"][0]["speedup"] is None
  assert t["rows"][0]["status"] == "never"
  assert "never" in S.to_markdown(t)
  # A method reaching the target only with a longer curve has a negative
  # speed-up; here its curve ends at the same step, so it never reaches it.
  longer = curve(np.arange(0, 1401, 20), lambda s: base_fn(s / 1.2))
  row = S.comparison_table({"projected": longer, "uniform": base},
                           "ppl", smoothing=1)["rows"][0]
  assert row["speedup"] == pytest.approx(-0.2, abs=0.01)
  assert S.comparison_table({"projected": slower, "uniform": base},
                            "ppl", smoothing=1)["rows"][0]["speedup"] is None


def test_smoothing_rule():
  np.testing.assert_allclose(S.smooth([3, 1, 2, 6], 3), [3, 2, 2, 3])
  np.testing.assert_allclose(S.smooth([3, 1, 2], 1), [3, 1, 2])
  # A lucky last evaluation of the baseline is damped by the smoothing.
  rng = np.random.default_rng(0)
  noise = rng.normal(0, 0.05, STEPS.size)
  base = curve(STEPS, base_fn)
  for p, e in zip(base, noise):
    p["aggregate"]["ppl"] += e
  base[-1]["aggregate"]["ppl"] -= 4.0  # lucky last evaluation
  meth = curve(STEPS, lambda s: base_fn(s / 0.7))
  raw = S.comparison_table({"projected": meth, "b": base}, "ppl",
                           smoothing=1)["rows"][0]
  sm = S.comparison_table({"projected": meth, "b": base}, "ppl",
                          smoothing=5)["rows"][0]
  assert raw["status"] == "never"
  # The spike is spread over 5 points instead of deciding the result alone.
  assert sm["status"] == "reached" and 0.1 < sm["speedup"] < 0.3
  assert "trailing moving average over the last 5" in S.comparison_table(
      {"projected": meth, "b": base}, "ppl", smoothing=5)["smoothing"]["rule"]


def test_first_point_already_below_and_markdown():
  base = curve(STEPS, base_fn)
  good = curve(STEPS, lambda s: 5.0)
  t = S.comparison_table({"projected": good, "uniform": base,
                          "llama": base}, "loss", smoothing=2)
  assert [r["baseline"] for r in t["rows"]] == ["uniform", "llama"]
  assert t["rows"][0]["speedup"] == pytest.approx(1.0)
  md = S.to_markdown(t)
  assert md.count("| uniform |") == 2 and "100.0%" in md
  assert "lower is better" in md and "`loss`" in md
  assert set(t["final"]) == {"projected", "uniform", "llama"}


def test_errors():
  base = curve(STEPS, base_fn)
  with pytest.raises(S.SpeedupError, match="reference 'projected'.*uniform"):
    S.comparison_table({"uniform": base}, "ppl")
  with pytest.raises(S.SpeedupError,
                     match="needs .step. and .aggregate...bpb."):
    S.comparison_table({"projected": base, "uniform": base}, "bpb")
  with pytest.raises(S.SpeedupError, match="empty"):
    S.comparison_table({"projected": base, "uniform": []}, "ppl")
  bad = curve(STEPS, base_fn)
  bad[3]["aggregate"]["ppl"] = float("nan")
  with pytest.raises(S.SpeedupError, match="'uniform' at step 30"):
    S.comparison_table({"projected": base, "uniform": bad}, "ppl")
  with pytest.raises(S.SpeedupError, match="smoothing"):
    S.comparison_table({"projected": base, "uniform": base}, "ppl",
                       smoothing=0)
