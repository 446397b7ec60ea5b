"""Verdicts over seeds: is one mixture's final metric really better?

The final stage trains every mixture with several seeds. From the curves
``{mixture: {seed: [{"step", "tokens", "aggregate": {metric: value}}]}}``
this module computes (lower metric values are better):

* per mixture: the mean final value over seeds and a t-interval;
* per baseline: the paired differences of the reference mixture against it on
  the seeds both have (a seed's data order and initialization are shared by
  both, so their common part cancels): mean difference, mean relative
  difference in % of the baseline (per seed, then averaged), both with
  t-intervals; "significant" when the relative interval excludes 0. The
  unpaired (Welch) interval is kept for comparison;
* the speed-up (:func:`autoscale_jax.mixing.speedup.speedup`, the paper's
  definition) of the seed-averaged reference curve over the seed-averaged
  baseline curve, with an interval;
* one verdict sentence per baseline and a markdown table.

Speed-up interval: centred on the averaged-curve speed-up, half-width
``t(S - 1) * sd / sqrt(S)`` from the per-seed paired speed-ups (each seed's
reference curve against the same seed's baseline curve). A bootstrap over
seeds was rejected: with the 3 seeds a demo affords it has only 10 distinct
resamples, and its percentile interval ignores the t-factor (4.3 at 2 dof),
so it would be about 3x too narrow. The point estimate comes from the
averaged curves, whose crossing step is less noisy than any one seed's. When
a seed's reference curve never reaches its baseline's final value there is
no per-seed speed-up and no interval (the notes say so).

Student-t quantiles are computed here (regularized incomplete beta by its
continued fraction, inverted by bisection), so scipy is not needed at run
time; for df above 1e6 the normal quantile with its first two Cornish-Fisher
corrections in 1 / df is used.
"""

from __future__ import annotations

import functools
import math
import statistics
from typing import Any, Mapping, Sequence

import numpy as np

from autoscale_jax.errors import UserError
from autoscale_jax.mixing import speedup as speedup_lib

MIN_SEEDS = 2
RECOMMENDED_SEEDS = 3


class VerdictError(UserError, ValueError):
  """Curves that cannot give a verdict (one line: which curve, what fix)."""


# ------------------------------------------------------------- Student's t


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta (modified Lentz)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 1000):
    m2 = 2 * m
    for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
               -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + aa * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + aa / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < eps:
      break
  return h


def _betainc(a: float, b: float, x: float) -> float:
  """Regularized incomplete beta ``I_x(a, b)``."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
               a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_upper_tail(t: float, df: float) -> float:
  """``P(T > t)`` for ``t >= 0``."""
  return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
  """Student-t cumulative distribution function."""
  if df <= 0 or math.isnan(df):
    raise ValueError(f"df={df!r}: degrees of freedom must be > 0")
  if math.isinf(t):
    return 1.0 if t > 0 else 0.0
  tail = _t_upper_tail(abs(t), df)
  return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
  """Student-t quantile: the t with ``t_cdf(t, df) == p``."""
  if not 0.0 < p < 1.0:
    raise ValueError(f"p={p!r}: must be in (0, 1)")
  if df <= 0 or math.isnan(df):
    raise ValueError(f"df={df!r}: degrees of freedom must be > 0")
  if df > 1e6:  # the continued fraction loses digits; the expansion does not
    z = statistics.NormalDist().inv_cdf(p)
    return (z + (z ** 3 + z) / (4 * df) +
            (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2))
  if p == 0.5:
    return 0.0
  tail = min(p, 1.0 - p)
  lo, hi = 0.0, 1.0
  while _t_upper_tail(hi, df) > tail:
    lo, hi = hi, 2.0 * hi
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if _t_upper_tail(mid, df) > tail:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-14 * hi:
      break
  q = 0.5 * (lo + hi)
  return q if p > 0.5 else -q


# --------------------------------------------------------------- intervals


def _t_interval(mean: float, se: float, df: float, confidence: float
                ) -> list[float]:
  half = t_quantile(0.5 + confidence / 2.0, df) * se
  return [mean - half, mean + half]


def mean_interval(values: Sequence[float], confidence: float = 0.95
                  ) -> dict[str, Any]:
  """Mean, sd and t-interval of the mean (None with fewer than 2 values)."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    raise ValueError("mean_interval needs at least one value")
  sd = float(np.std(v, ddof=1)) if v.size > 1 else None
  ci = (_t_interval(float(v.mean()), sd / math.sqrt(v.size), v.size - 1,
                    confidence) if sd is not None else None)
  return {"n": int(v.size), "mean": float(v.mean()), "sd": sd, "ci": ci}


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = 0.95) -> list[float] | None:
  """Unpaired (Welch) t-interval of ``mean(a) - mean(b)``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or b.size < 2:
    return None
  va, vb = np.var(a, ddof=1) / a.size, np.var(b, ddof=1) / b.size
  diff = float(a.mean() - b.mean())
  den = va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)
  df = (va + vb) ** 2 / den if den > 0 else a.size + b.size - 2
  return _t_interval(diff, math.sqrt(va + vb), df, confidence)


# ------------------------------------------------------------------ curves


def _points(mixture: str, seed: int, curve: Sequence[Mapping[str, Any]],
            metric: str) -> dict[float, tuple[float, float]]:
  """``{step: (tokens, value)}`` of one run's curve."""
  if not curve:
    raise VerdictError(f"mixture {mixture!r} seed {seed}: the curve is empty; "
                       "re-run its final training")
  out = {}
  for k, point in enumerate(curve):
    try:
      step, value = float(point["step"]), float(point["aggregate"][metric])
    except (KeyError, TypeError, ValueError):
      raise VerdictError(
          f"mixture {mixture!r} seed {seed} point {k}: needs 'step' and "
          f"'aggregate'.{metric!r}; re-run its final training") from None
    if not math.isfinite(value):
      raise VerdictError(f"mixture {mixture!r} seed {seed} at step "
                         f"{step:g}: {metric} is {value!r} (a diverged run)")
    out[step] = (float(point.get("tokens", math.nan)), value)
  return out


def average_curve(curves: Mapping[int, Sequence[Mapping[str, Any]]],
                  metric: str, mixture: str = "mixture"
                  ) -> list[dict[str, Any]]:
  """The seed-averaged curve on the steps every seed evaluated.

  Args:
    curves: ``{seed: [{"step", "tokens", "aggregate": {metric: value}}]}``.
    metric: the aggregate key to average.
    mixture: name used in error messages.

  Returns:
    ``[{"step", "tokens", "aggregate": {metric: mean over seeds}}]`` in step
    order (tokens averaged too).
  """
  if not curves:
    raise VerdictError(f"mixture {mixture!r} has no seeds")
  pts = [_points(mixture, s, c, metric) for s, c in curves.items()]
  steps = sorted(set.intersection(*(set(p) for p in pts)))
  if not steps:
    raise VerdictError(f"mixture {mixture!r}: its seeds share no evaluation "
                       "step; give every seed the same final.eval_every_steps")
  return [{"step": s, "tokens": float(np.mean([p[s][0] for p in pts])),
           "aggregate": {metric: float(np.mean([p[s][1] for p in pts]))}}
          for s in steps]


def _final_value(mixture: str, seed: int, curve, metric: str) -> float:
  pts = _points(mixture, seed, curve, metric)
  return pts[max(pts)][1]


# ----------------------------------------------------------------- verdict


def _speedup_block(method: Mapping[int, Sequence], baseline: Mapping[int,
                   Sequence], seeds: Sequence[int], metric: str, smoothing: int,
                   confidence: float, names: tuple[str, str]
                   ) -> dict[str, Any]:
  avg = speedup_lib.speedup(
      average_curve({s: method[s] for s in seeds}, metric, names[0]),
      average_curve({s: baseline[s] for s in seeds}, metric, names[1]),
      metric, smoothing)
  per_seed = [speedup_lib.speedup(method[s], baseline[s], metric,
                                  smoothing)["speedup"] for s in seeds]
  ci, note = None, None
  if avg["speedup"] is not None and len(seeds) >= MIN_SEEDS:
    if all(v is not None for v in per_seed):
      sd = float(np.std(per_seed, ddof=1))
      ci = _t_interval(avg["speedup"], sd / math.sqrt(len(seeds)),
                       len(seeds) - 1, confidence)
    else:
      never = sum(v is None for v in per_seed)
      note = (f"{never} of {len(seeds)} seeds never reach the baseline's "
              "final value: no speed-up interval")
  return {"speedup": avg["speedup"], "ci": ci, "reach_step": avg["reach_step"],
          "reach_tokens": avg["reach_tokens"],
          "baseline_final": avg["baseline_final"],
          "baseline_final_step": avg["baseline_final_step"],
          "per_seed": per_seed, "note": note}


def seed_verdict(curves: Mapping[str, Mapping[int, Sequence[Mapping]]],
                 metric: str, reference: str = "projected",
                 baselines: Sequence[str] | None = None,
                 finals: Mapping[str, Mapping[int, float]] | None = None,
                 smoothing: int = 3, confidence: float = 0.95
                 ) -> dict[str, Any]:
  """Mixtures' final values over seeds and the reference's paired verdicts.

  Args:
    curves: ``{mixture: {seed: curve}}``, a curve being the store record's
      ``[{"step", "tokens", "aggregate": {metric: value}}]``.
    metric: aggregate metric key (lower is better), e.g. ``ppl_seq``.
    reference: the mixture compared with every other.
    baselines: mixtures to compare against (default: all others, in order).
    finals: ``{mixture: {seed: final value}}``; default each curve's last
      point.
    smoothing: speed-up smoothing window (:mod:`speedup`'s rule).
    confidence: interval coverage.

  Returns:
    A JSON-ready dict (comparison.json's ``"seeds"`` block): ``metric,
    reference, confidence, lower_is_better, smoothing, mixtures`` (per
    mixture ``seeds, values, n, mean, sd, ci``), ``comparisons`` (per
    baseline ``baseline, seeds, n, reference_mean, baseline_mean, diff,
    diff_ci, unpaired_diff_ci, relative_pct, relative_pct_ci, significant,
    speedup`` (``speedup, ci, reach_step, reach_tokens, baseline_final,
    baseline_final_step, per_seed, note``)), ``sentences`` and ``notes``.
  """
  if reference not in curves:
    raise VerdictError(f"reference mixture {reference!r} has no curves "
                       f"(mixtures: {', '.join(curves)})")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence!r}: must be in (0, 1)")
  if not isinstance(smoothing, int) or smoothing < 1:
    raise ValueError(f"smoothing={smoothing!r}: must be an integer >= 1")
  baselines = [b for b in (baselines or curves) if b != reference]
  missing = [b for b in baselines if b not in curves]
  if missing:
    raise VerdictError(f"baseline mixture(s) {', '.join(missing)} have no "
                       f"curves (mixtures: {', '.join(curves)})")
  curves = {name: {int(s): c for s, c in by_seed.items()}
            for name, by_seed in curves.items()}
  finals = {name: {int(s): v for s, v in by_seed.items()}
            for name, by_seed in (finals or {}).items()}
  values: dict[str, dict[int, float]] = {}
  for name, by_seed in curves.items():
    given = finals.get(name, {})
    values[name] = {s: float(given[s]) if s in given else
                    _final_value(name, s, c, metric)
                    for s, c in sorted(by_seed.items())}
  mixtures = {}
  for name, vals in values.items():
    if not vals:
      raise VerdictError(f"mixture {name!r} has no seeds")
    mixtures[name] = {"seeds": list(vals), "values": list(vals.values()),
                      **mean_interval(list(vals.values()), confidence)}
  notes = []
  comparisons = []
  ref_vals = values[reference]
  for b in baselines:
    seeds = [s for s in ref_vals if s in values[b]]
    row: dict[str, Any] = {"baseline": b, "seeds": seeds, "n": len(seeds)}
    if not seeds:
      row.update(reference_mean=None, baseline_mean=None, diff=None,
                 diff_ci=None, unpaired_diff_ci=None, relative_pct=None,
                 relative_pct_ci=None, significant=None, speedup=None)
      notes.append(f"{reference} and {b} share no seed: no paired comparison")
      comparisons.append(row)
      continue
    r = np.array([ref_vals[s] for s in seeds])
    bv = np.array([values[b][s] for s in seeds])
    diff = mean_interval(r - bv, confidence)
    rel = mean_interval(100.0 * (r - bv) / bv, confidence)
    sig = (None if rel["ci"] is None else
           bool(rel["ci"][0] > 0 or rel["ci"][1] < 0))
    row.update(
        reference_mean=float(r.mean()), baseline_mean=float(bv.mean()),
        diff=diff["mean"], diff_ci=diff["ci"],
        unpaired_diff_ci=welch_interval(list(values[reference].values()),
                                        list(values[b].values()), confidence),
        relative_pct=rel["mean"], relative_pct_ci=rel["ci"], significant=sig,
        speedup=_speedup_block(curves[reference], curves[b], seeds, metric,
                               smoothing, confidence, (reference, b)))
    if row["speedup"]["note"]:
      notes.append(f"{reference} vs {b}: {row['speedup']['note']}")
    comparisons.append(row)
  few = min([len(c["seeds"]) for c in comparisons] or
            [len(ref_vals)])
  if few < MIN_SEEDS:
    notes.append(f"a verdict needs >= {MIN_SEEDS} seeds per mixture "
                 f"({RECOMMENDED_SEEDS} recommended); set config.final.seeds")
  elif few < RECOMMENDED_SEEDS:
    notes.append(f"{few} seeds: intervals are wide (t with {few - 1} dof); "
                 f"{RECOMMENDED_SEEDS} or more recommended")
  out = {"metric": metric, "reference": reference, "confidence": confidence,
         "lower_is_better": True,
         "smoothing": {"window": smoothing,
                       "rule": speedup_lib.smoothing_rule(smoothing)},
         "mixtures": mixtures, "comparisons": comparisons, "notes": notes}
  out["sentences"] = verdict_sentences(out)
  return out


# ----------------------------------------------------------------- wording


def _pct(v: float) -> str:
  return f"{v:+.1f}%"


def _speed_clause(base: str, sp: Mapping[str, Any] | None, level: str,
                  with_ci: bool) -> str:
  if not sp:
    return ""
  v = sp["speedup"]
  if v is None:
    return f", never reaches {base}'s final value"
  words = (f"{v:.0%} sooner" if v >= 0 else f"{-v:.0%} later")
  ci = sp.get("ci")
  tail = (f" ({level} CI {ci[0]:+.0%} to {ci[1]:+.0%})" if with_ci and ci
          else "")
  return f", reaches {base}'s final value {words}{tail}"


def verdict_sentences(verdict: Mapping[str, Any]) -> list[str]:
  """One sentence per baseline from :func:`seed_verdict`'s dict.

  Examples: "projected vs uniform: -1.0% ppl_seq (95% CI -1.6% to -0.4%),
  reaches uniform's final value 9% sooner (95% CI +2% to +16%)";
  "projected vs uniform: no significant difference (+0.7% ppl_seq, 95% CI
  -1.2% to +2.6%)"; with one seed, that a verdict needs >= 2 seeds, and the
  single numbers.
  """
  ref, metric = verdict["reference"], verdict["metric"]
  level = f"{verdict['confidence']:.0%}"
  out = []
  for c in verdict["comparisons"]:
    b = c["baseline"]
    head = f"{ref} vs {b}: "
    if c["n"] == 0:
      out.append(head + "no common seeds; a verdict needs >= "
                 f"{MIN_SEEDS} seeds of both ({RECOMMENDED_SEEDS} recommended)")
    elif c["n"] < MIN_SEEDS:
      out.append(
          head + f"a verdict needs >= {MIN_SEEDS} seeds ({RECOMMENDED_SEEDS} "
          f"recommended); one seed ({c['seeds'][0]}) gives "
          f"{_pct(c['relative_pct'])} {metric}"
          + _speed_clause(b, c["speedup"], level, with_ci=False))
    elif c["significant"]:
      lo, hi = c["relative_pct_ci"]
      out.append(head + f"{_pct(c['relative_pct'])} {metric} ({level} CI "
                 f"{_pct(lo)} to {_pct(hi)})"
                 + _speed_clause(b, c["speedup"], level, with_ci=True))
    else:
      lo, hi = c["relative_pct_ci"]
      out.append(head + f"no significant difference "
                 f"({_pct(c['relative_pct'])} {metric}, {level} CI "
                 f"{_pct(lo)} to {_pct(hi)})")
  return out


def _num(v: float | None, spec: str = ".4g") -> str:
  return "n/a" if v is None else format(v, spec)


def _range(ci: Sequence[float] | None, spec: str = ".4g") -> str:
  return "n/a" if ci is None else f"{ci[0]:{spec}} to {ci[1]:{spec}}"


def to_markdown(verdict: Mapping[str, Any]) -> str:
  """The verdict sentences, then mean and interval per mixture, then the
  paired differences per baseline."""
  metric, ref = verdict["metric"], verdict["reference"]
  level = f"{verdict['confidence']:.0%}"
  lines = [f"**Verdict over seeds** (final aggregate `{metric}`, lower is "
           f"better; {level} t-intervals over seeds):", ""]
  lines += [f"- {s}" for s in verdict["sentences"]]
  lines += ["", f"| mixture | seeds | mean final {metric} | {level} CI | "
                "per seed |", "|---|---:|---:|---:|---|"]
  for name, m in verdict["mixtures"].items():
    per = ", ".join(f"{v:.4g} (s{s})" for s, v in zip(m["seeds"],
                                                       m["values"]))
    lines.append(f"| {name} | {m['n']} | {m['mean']:.4g} | "
                 f"{_range(m['ci'])} | {per} |")
  lines += ["", f"| {ref} vs | paired seeds | mean difference | relative | "
                f"{level} CI (relative) | significant | speed-up "
                f"({level} CI) |", "|---|---:|---:|---:|---:|---|---:|"]
  for c in verdict["comparisons"]:
    sig = {True: "yes", False: "no", None: "n/a"}[c["significant"]]
    sp = c["speedup"] or {}
    if not sp:
      speed = "n/a"
    elif sp["speedup"] is None:
      speed = "never"
    else:
      speed = f"{sp['speedup']:.1%}" + (
          f" ({sp['ci'][0]:.1%} to {sp['ci'][1]:.1%})" if sp["ci"] else "")
    rel = "n/a" if c["relative_pct"] is None else _pct(c["relative_pct"])
    rel_ci = ("n/a" if c["relative_pct_ci"] is None else
              f"{_pct(c['relative_pct_ci'][0])} to "
              f"{_pct(c['relative_pct_ci'][1])}")
    lines.append(f"| {c['baseline']} | {c['n']} | {_num(c['diff'], '+.4g')} "
                 f"| {rel} | {rel_ci} | {sig} | {speed} |")
  if verdict.get("notes"):
    lines += [""] + [f"Note: {n}" for n in verdict["notes"]]
  return "\n".join(lines) + "\n"
