"""Seed noise and domain signal of a DDO budget (mixing/noise.py)."""

import copy

import numpy as np
import pytest
from scipy import stats

from autoscale_jax.mixing import ddo, noise, simulate

DOMS = ["a", "b", "c", "d", "e", "f"]
BUDGET = 6e5  # w0 * budget and 0.2 / 3 of it are integers: x is exact
SIGMA = 0.01  # relative noise of one run's metric


def _truth(k_scale=(1, 1, 1, 1, 1, 1)):
  """Identical laws except the amplitudes: a domain's effect is k-linear."""
  k = 50.0 * np.asarray(k_scale, np.float64)
  return simulate.PowerLawTruth.separable(
      DOMS, k, A=np.full(len(DOMS), 1000.0), B=np.full(len(DOMS), 0.4), E=1.0)


def _runs(truth, seeds, sigma=SIGMA, rng_seed=0):
  plan = ddo.plan_runs(DOMS, BUDGET, seeds=seeds)
  return simulate.simulate_runs(plan, truth, noise=sigma, seed=rng_seed)


def _true_y(truth):
  """Noise-free y by (domain, factor)."""
  plan = ddo.plan_runs(DOMS, BUDGET)
  base = truth.aggregate(plan[0]["tokens"])
  return {(r["domain"], r["factor"]): truth.aggregate(r["tokens"]) / base
          for r in plan[1:]}


def test_y_is_the_fits_y():
  truth = _truth((1, 1.2, 0.8, 1, 1.1, 0.9))
  runs = _runs(truth, seeds=(0, 1))
  runs["metric"] = "loss"  # the conversion to ppl must match too
  for r in runs["runs"]:
    r["eval"] = {d: float(np.log(v)) for d, v in r["eval"].items()}
  targets = {"a": 2.0, "c": 1.0}
  data = ddo.load_runs(runs)
  y, metric, weights = noise.normalised_values(data, "ppl_seq", targets)
  mix = ddo.fit_and_solve(data, metric="ppl_seq", target_domains=targets,
                          bootstrap=0)
  assert metric == mix["metric"] == "ppl"
  assert weights == pytest.approx(mix["target_domains"])
  by_name = {r["name"]: r for r in data.runs}
  for d in DOMS:
    ours = sorted([(1.0, 1.0)] * 2 + [
        (by_name[n]["x"], v) for n, v in y.items()
        if by_name[n]["domain"] == d])
    fit = sorted(tuple(p) for p in mix["fits"][d]["points"])
    np.testing.assert_allclose(ours, fit, rtol=1e-12)


def test_recovers_noise_and_effects_over_many_seeds():
  truth = _truth((1, 1, 1.3, 0.7, 1.15, 0.85))
  seeds = tuple(range(40))
  out = noise.measure_noise(_runs(truth, seeds))
  true_y = _true_y(truth)
  assert out["num_seeds"] == 40 and out["seeds"] == list(seeds)
  # y = run / base, each with relative noise SIGMA: sd(y) ~ sqrt(2) SIGMA y.
  want_noise = np.sqrt(2 * np.mean([v ** 2 for v in true_y.values()])) * SIGMA
  assert out["seed_noise"] == pytest.approx(want_noise, rel=0.1)
  assert out["seed_noise_dof"] == 2 * len(DOMS) * 39
  for row in out["runs"]:
    assert row["seeds"] == 40
    assert row["sd"] == pytest.approx(
        np.sqrt(2) * SIGMA * true_y[(row["domain"], row["x"])], rel=0.35)
  # One seed's effect: the seed's base noise cancels, leaving the two runs'.
  want_v = SIGMA ** 2 * np.mean([true_y[(d, 0.2)] ** 2 + true_y[(d, 3.0)] ** 2
                                 for d in DOMS])
  assert out["effect_noise_sd"] == pytest.approx(np.sqrt(want_v), rel=0.1)
  assert out["effect_noise_dof"] == (len(DOMS) - 1) * 39
  true_effect = {d: true_y[(d, 0.2)] - true_y[(d, 3.0)] for d in DOMS}
  common = np.mean(list(true_effect.values()))
  assert out["common_effect"] == pytest.approx(common, abs=4 * out[
      "effect_se"] / np.sqrt(len(DOMS)))
  for d, row in out["domains"].items():
    assert (row["low_x"], row["high_x"], row["seeds"]) == (0.2, 3.0, 40)
    assert row["effect"] == pytest.approx(true_effect[d], abs=4 * row["se"])
    assert row["specific_effect"] == pytest.approx(
        true_effect[d] - common, abs=4 * row["se"])
  assert set(out["signal_domains"]) >= {"c", "d", "e", "f"}
  assert out["domain_signal"] == pytest.approx(
      np.std(list(true_effect.values()), ddof=1), rel=0.1)


def _replicate(truth, reps, seeds=(0, 1, 2)):
  return [noise.measure_noise(_runs(truth, seeds, rng_seed=r))
          for r in range(reps)]


def test_snr_flags_the_distinct_domains_at_the_nominal_rates():
  # e and f respond +-50% (equal and opposite): the common effect is a-d's.
  truth = _truth((1, 1, 1, 1, 1.5, 0.5))
  outs = _replicate(truth, 150)
  m, seeds, dof = len(DOMS), 3, (len(DOMS) - 1) * 2
  # Each domain-specific effect over its SE is t-distributed with the
  # interaction's dof: central for a-d, noncentral for e and f.
  true_y = _true_y(truth)
  effect = {d: true_y[(d, 0.2)] - true_y[(d, 3.0)] for d in DOMS}
  v = SIGMA ** 2 * np.mean([true_y[(d, 0.2)] ** 2 + true_y[(d, 3.0)] ** 2
                            for d in DOMS])
  se = np.sqrt(v * (1 - 1 / m) / seeds)
  for d in "ef":
    ncp = abs(effect[d] - np.mean(list(effect.values()))) / se
    power = stats.nct.sf(2.0, dof, ncp) + stats.nct.cdf(-2.0, dof, ncp)
    hit = np.mean([o["domains"][d]["signal"] for o in outs])
    assert hit == pytest.approx(power, abs=0.06), d
  false = np.mean([o["domains"][d]["signal"] for o in outs for d in "abcd"])
  assert false == pytest.approx(2 * stats.t.sf(2.0, dof), abs=0.035)


def test_signal_to_noise_ratio_is_f_distributed_without_domain_signal():
  outs = _replicate(_truth(), 300)
  f = np.array([o["signal_to_noise"] ** 2 for o in outs])
  d1, d2 = len(DOMS) - 1, (len(DOMS) - 1) * 2
  assert f.mean() == pytest.approx(d2 / (d2 - 2), abs=0.25)
  assert np.mean(f > stats.f.ppf(0.95, d1, d2)) == pytest.approx(0.05,
                                                                 abs=0.035)


def test_seed_shared_noise_cancels_in_the_domain_specific_effects():
  truth = _truth((1, 1.2, 0.8, 1, 1.1, 0.9))
  runs = _runs(truth, (0, 1, 2, 3), sigma=0.0)
  rng = np.random.default_rng(0)
  shift = {s: 1.0 + 0.05 * rng.standard_normal() for s in range(4)}
  for r in runs["runs"]:  # every perturbed run of a seed moves together
    if not r["name"].startswith("base"):
      r["eval"] = {d: v * shift[r["seed"]] for d, v in r["eval"].items()}
  out = noise.measure_noise(runs)
  naive = np.sqrt(2 / 4) * out["seed_noise"]
  assert out["seed_noise"] > 0.01
  assert out["effect_se"] < 0.1 * naive
  assert "interaction" in out["se_method"]


def test_falls_back_to_seed_noise_when_no_two_seeds_are_complete():
  runs = _runs(_truth(), (0, 1))
  runs["runs"] = [r for r in runs["runs"] if r["name"] != "a_x3_s1"]
  out = noise.measure_noise(runs)
  assert "independent runs" in out["se_method"]
  assert out["effect_noise_sd"] == pytest.approx(
      np.sqrt(2) * out["seed_noise"])
  assert out["domains"]["a"]["seeds"] == 1
  assert out["domains"]["b"]["seeds"] == 2
  assert out["domains"]["a"]["se"] > out["domains"]["b"]["se"]
  assert any("independent runs" in n for n in out["notes"])


def test_one_seed_leaves_noise_unknown():
  out = noise.measure_noise(_runs(_truth((1, 1, 1.3, 0.7, 1, 1)), (5,)))
  assert out["num_seeds"] == 1 and out["seeds"] == [5]
  for key in ("seed_noise", "effect_se", "signal_to_noise",
              "signal_to_seed_noise", "effect_noise_sd"):
    assert out[key] is None, key
  assert out["seed_noise_dof"] == 0 and out["se_method"] == "none"
  assert out["signal_domains"] == []
  for row in out["domains"].values():
    assert row["se"] is None and row["snr"] is None and row["signal"] is None
    assert row["effect"] > 0  # the effects themselves are data
  assert any("one seed (5)" in n and "unknown" in n for n in out["notes"])
  text = noise.format_noise_table(out)
  assert "noise unknown" in text and "n/a" in text


def test_threshold_and_table():
  runs = _runs(_truth((1, 1, 1.3, 0.7, 1, 1)), (0, 1, 2))
  out = noise.measure_noise(runs)
  assert set(out["signal_domains"]) >= {"c", "d"}
  strict = noise.measure_noise(runs, snr_threshold=1e6)
  assert strict["signal_domains"] == [] and strict["snr_threshold"] == 1e6
  assert any("follows noise" in n for n in strict["notes"])
  with pytest.raises(ValueError, match="snr_threshold"):
    noise.measure_noise(runs, snr_threshold=0.0)
  text = noise.format_noise_table(out, title="DDO budget 1")
  lines = text.splitlines()
  assert lines[0].startswith("DDO budget 1, ppl (3 seeds): seed noise ")
  assert "0.2x->3x" in lines[0]
  body = lines[2:2 + len(DOMS)]
  assert [ln.split()[0] for ln in body] == DOMS
  for ln, d in zip(body, DOMS):
    assert ln.split()[-1] == ("yes" if out["domains"][d]["signal"] else "no")
  assert len(lines) == 2 + len(DOMS) + len(out["notes"])


def test_result_is_json_ready():
  import json  # pylint: disable=g-import-not-at-top
  out = noise.measure_noise(_runs(_truth(), (0, 1)))
  assert json.loads(json.dumps(out)) == out
  untouched = copy.deepcopy(out)
  noise.format_noise_table(out)
  assert out == untouched
