"""DDO (stage 1): run design, RUNS.json parsing, fit + solve -> mixture.json.

The paper's design at one budget N with base mixture w0: a base run with
``N_i = w0_i N`` and, per domain i and factor f, a run where domain i gets
``f w0_i N`` tokens and every other domain keeps its absolute count. Per
domain, ``y_i(x) = (x + a_i)^(-b_i) + c_i`` is fitted to ``(x, y)`` with
``x = N_i / N_i(base)`` and ``y = aggregate / base aggregate`` (per seed),
then ``min sum_i (n_i + a_i)^(-b_i)`` is solved under the budget and bounds.

Our choices beyond the paper (documented in the output):

* Budget with a non-uniform base mixture: ``sum_i w0_i n_i = 1`` (the same
  total tokens); it is the paper's ``sum_i n_i = m`` when w0 is uniform.
* Repeated seeds and extra factors are fitted by least squares.
* Uncertainty: a parametric bootstrap over the runs. The relative noise of a
  run's aggregate is estimated from repeated seeds of the same run, else from
  the least-squares residuals; each replicate re-draws every run's metric
  (multiplicatively) around the fitted surrogate, renormalises by its own
  seed's re-drawn base, refits and re-solves. The 90% interval is the 5th to
  95th percentile of each optimal weight.
* Replication interval: where the optimum of a replicate study (the same
  design, new seeds) would fall, 90% of the time. A replicate's estimate has
  noise of its own, so the difference of two studies spreads sqrt(2) times as
  much as one estimate: the interval is ``w + sqrt(2) (q - w)`` for the
  bootstrap's 5th and 95th percentiles ``q`` (clipped to [0, 1]). A calibrated
  90% interval holds a replicate's optimum only about 75% of the time
  (``P(|Z| < 1.645 / sqrt 2)``); this one is the interval to check a second
  study against.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import threading
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from etils import epath

from autoscale_jax import errors
from autoscale_jax.experiments.results import AGGREGATE
from autoscale_jax.experiments.store import atomic_write_json
from autoscale_jax.mixing import optimize, powerlaw

_BASE_NAME = re.compile(r"^base(_s-?\d+)?$")
_REL = 1e-9


class RunsError(errors.UserError, ValueError):
  """A malformed RUNS.json (one line: the run and the field)."""


class AvailabilityError(errors.UserError, ValueError):
  """A domain has fewer unique tokens than the plan needs."""


# ----------------------------------------------------------------- run design


def _base_weights(domains: Sequence[str],
                  base_weights: Mapping[str, float] | None) -> dict[str, float]:
  if not base_weights:
    return {d: 1.0 / len(domains) for d in domains}
  bad = [d for d in domains if not base_weights.get(d, 0) > 0]
  if bad:
    raise ValueError("base_weights needs a weight > 0 for every domain; "
                     f"missing or zero: {', '.join(bad)}")
  extra = [d for d in base_weights if d not in domains]
  if extra:
    raise ValueError(f"base_weights has unknown domain(s): {', '.join(extra)}")
  total = sum(float(base_weights[d]) for d in domains)
  return {d: float(base_weights[d]) / total for d in domains}


def plan_runs(domains: Sequence[str], budget_tokens: float,
              base_weights: Mapping[str, float] | None = None,
              factors: Sequence[float] = (0.2, 3.0),
              seeds: Sequence[int] = (0,)) -> list[dict]:
  """The DDO runs at one budget: per seed, 1 base + m * len(factors) runs.

  Returns:
    Runs ``{"name", "tokens": {domain: int}, "seed", "domain", "factor"}``;
    the base run has ``domain=None, factor=1.0`` and is named ``base_s<seed>``,
    the others ``<domain>_x<factor>_s<seed>``.
  """
  domains = list(domains)
  w0 = _base_weights(domains, base_weights)
  base = {d: int(round(w0[d] * budget_tokens)) for d in domains}
  small = [d for d, t in base.items() if t < 1]
  if small:
    raise ValueError(f"budget {budget_tokens:g} gives no tokens to: "
                     f"{', '.join(small)}")
  plan = []
  for seed in seeds:
    plan.append({"name": f"base_s{seed}", "tokens": dict(base),
                 "seed": int(seed), "domain": None, "factor": 1.0})
    for d in domains:
      for f in factors:
        tokens = dict(base)
        tokens[d] = max(1, int(round(f * base[d])))
        plan.append({"name": f"{d}_x{f:g}_s{seed}", "tokens": tokens,
                     "seed": int(seed), "domain": d, "factor": float(f)})
  return plan


def check_availability(plan: Sequence[Mapping], available_tokens:
                       Mapping[str, int], allow_repeat: bool = False) -> None:
  """Raises AvailabilityError naming each domain that lacks unique tokens.

  With ``allow_repeat=True`` shortfalls are allowed (data is repeated, which
  the caller must log); unknown domains always raise.
  """
  need: dict[str, tuple[int, str]] = {}
  for run in plan:
    for d, t in run["tokens"].items():
      if d not in need or t > need[d][0]:
        need[d] = (int(t), run["name"])
  unknown = [d for d in need if d not in available_tokens]
  if unknown:
    raise AvailabilityError("no available-token count for domain(s): " +
                            ", ".join(unknown))
  short = [(d, t, r) for d, (t, r) in need.items()
           if t > available_tokens[d]]
  if short and not allow_repeat:
    parts = [f"{d} needs {t - available_tokens[d]:,} more tokens (largest "
             f"quota {t:,} in run {r!r}, {available_tokens[d]:,} available)"
             for d, t, r in short]
    raise AvailabilityError(
        "not enough unique tokens: " + "; ".join(parts) + ". Add data, lower "
        "the budget or the largest factor, or allow repetition explicitly "
        "(ddo.allow_repeat=True).")


# ------------------------------------------------------------------ RUNS.json


@dataclasses.dataclass
class RunsData:
  """Validated RUNS.json.

  ``runs`` entries: ``name, tokens, eval, seed, domain`` (the perturbed domain,
  None for a base run or replicate), ``x`` (its relative quantity, 1.0 for a
  base run). ``bases`` maps seed -> base run name.
  """
  metric: str
  domains: list[str]
  eval_domains: list[str]
  runs: list[dict]
  bases: dict[int, str]

  def base_tokens(self, seed: int) -> dict[str, float]:
    return next(r["tokens"] for r in self.runs if r["name"] == self.bases[seed])


def _num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _differs(t1: Mapping[str, float], t2: Mapping[str, float]) -> list[str]:
  return [d for d in t1 if abs(t1[d] - t2[d]) > _REL * max(abs(t1[d]),
                                                           abs(t2[d]))]


def _reference_keys(runs: list[dict], field: str) -> list[str]:
  for r in runs:
    if _BASE_NAME.match(r["name"]):
      return list(r[field])
  counts = collections.Counter(tuple(sorted(r[field])) for r in runs)
  best = counts.most_common(1)[0][0]
  first = next(r for r in runs if tuple(sorted(r[field])) == best)
  return list(first[field])


def load_runs(source: str | epath.PathLike | Mapping[str, Any],
              domains: Sequence[str] | None = None) -> RunsData:
  """Reads and validates RUNS.json; raises RunsError naming run and field.

  Args:
    source: a path (local or gs://) or the already-parsed dict.
    domains: the training domains if known (else inferred from the runs).
  """
  where = "RUNS.json"
  if isinstance(source, Mapping):
    doc = source
  else:
    path = epath.Path(source)
    where = str(path)
    if not path.exists():
      raise RunsError(f"{path}: no such results file")
    try:
      doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise RunsError(f"{path}: not valid JSON ({e}); pass a RUNS.json file "
                      '({"metric": "ppl" | "loss", "runs": [...]})') from None
  if not isinstance(doc, Mapping):
    raise RunsError(f"{where}: the top level must be an object with "
                    "'metric' and 'runs'")
  metric = doc.get("metric")
  if metric not in ("ppl", "loss"):
    raise RunsError(f"{where}: field metric={metric!r}: allowed 'ppl', "
                    "'loss'")
  raw = doc.get("runs")
  if not isinstance(raw, list) or not raw:
    raise RunsError(f"{where}: field runs must be a non-empty list")

  runs, names = [], set()
  for i, r in enumerate(raw):
    if not isinstance(r, Mapping):
      raise RunsError(f"run #{i}: must be an object with name, tokens, eval")
    name = r.get("name")
    if not isinstance(name, str) or not name:
      raise RunsError(f"run #{i}: field name must be a non-empty string")
    if name in names:
      raise RunsError(f"run {name!r}: field name is duplicated")
    names.add(name)
    for field in ("tokens", "eval"):
      if not isinstance(r.get(field), Mapping) or not r.get(field):
        raise RunsError(f"run {name!r}: field {field} must be a non-empty "
                        "object {domain: number}")
    seed = r.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
      raise RunsError(f"run {name!r}: field seed={seed!r} must be an integer")
    runs.append({"name": name, "tokens": dict(r["tokens"]),
                 "eval": dict(r["eval"]), "seed": seed})

  ref = list(domains) if domains else _reference_keys(runs, "tokens")
  ref_eval = _reference_keys(runs, "eval")
  for r in runs:
    name = r["name"]
    for d in r["tokens"]:
      if d not in ref:
        raise RunsError(f"run {name!r}: field tokens.{d}: unknown domain "
                        f"{d!r} (domains: {', '.join(ref)})")
    for d in ref:
      if d not in r["tokens"]:
        raise RunsError(f"run {name!r}: field tokens.{d}: missing domain {d!r}")
    for d, v in r["tokens"].items():
      if not _num(v) or not math.isfinite(v) or v <= 0:
        raise RunsError(f"run {name!r}: field tokens.{d}={v!r}: tokens must "
                        "be a finite number > 0")
      r["tokens"][d] = float(v)
    for d in r["eval"]:
      if d not in ref_eval:
        raise RunsError(f"run {name!r}: field eval.{d}: unknown eval domain "
                        f"{d!r} (other runs evaluate: {', '.join(ref_eval)})")
    for d in ref_eval:
      if d not in r["eval"]:
        raise RunsError(f"run {name!r}: field eval.{d}: missing domain {d!r}")
    for d, v in r["eval"].items():
      if not _num(v):
        raise RunsError(f"run {name!r}: field eval.{d}={v!r} must be a number")
      if math.isnan(v):
        raise RunsError(f"run {name!r}: field eval.{d} is NaN (a diverged or "
                        "failed run); re-run it or drop it")
      if not math.isfinite(v) or (metric == "ppl" and v <= 0):
        raise RunsError(f"run {name!r}: field eval.{d}={v!r} must be finite"
                        + (" and > 0 for ppl" if metric == "ppl" else ""))
      r["eval"][d] = float(v)

  by_seed: dict[int, list[dict]] = collections.defaultdict(list)
  for r in runs:
    by_seed[r["seed"]].append(r)
  bases = {}
  for seed, group in sorted(by_seed.items()):
    named = [r for r in group if _BASE_NAME.match(r["name"])]
    if named:
      base = named[0]
      for r in group:
        diff = _differs(base["tokens"], r["tokens"])
        if len(diff) > 1:
          raise RunsError(
              f"run {r['name']!r}: field tokens differs from base run "
              f"{base['name']!r} in {len(diff)} domains ({', '.join(diff)}); "
              "each DDO run changes exactly one domain")
    else:
      cands = [b for b in group if all(
          len(_differs(b["tokens"], r["tokens"])) <= 1 for r in group)]
      if not cands:
        # Blame the runs off the likeliest base (the one most runs differ
        # from in at most one domain), not whichever run came first.
        likely = max(group, key=lambda b: sum(
            len(_differs(b["tokens"], r["tokens"])) <= 1 for r in group))
        off = [r for r in group
               if len(_differs(likely["tokens"], r["tokens"])) > 1]
        if 2 * len(off) >= len(group):  # no run is a base for most others
          raise RunsError(
              f"run {group[0]['name']!r}: field name: no base run for seed "
              f"{seed} (no run that every other run differs from in exactly "
              "one domain); name the base run 'base'")
        diff = _differs(likely["tokens"], off[0]["tokens"])
        raise RunsError(
            f"run {off[0]['name']!r}: field tokens differs from the likely "
            f"base run {likely['name']!r} (seed {seed}) in {len(diff)} "
            f"domains ({', '.join(diff)}); each DDO run changes exactly one "
            "domain (name the base run 'base' to say which it is)")
      base = cands[0]
    bases[seed] = base["name"]
    for r in group:
      diff = _differs(base["tokens"], r["tokens"])
      r["domain"] = diff[0] if diff else None
      r["x"] = (r["tokens"][diff[0]] / base["tokens"][diff[0]] if diff
                else 1.0)

  for d in ref:
    xs = {round(r["x"], 9) for r in runs if r["domain"] == d}
    if not xs:
      raise RunsError(f"domain {d!r}: field tokens.{d} is never perturbed (no "
                      "run changes it relative to its base run)")
    if len(xs | {1.0}) < 3:
      raise RunsError(
          f"domain {d!r}: field tokens.{d} has only {len(xs | {1.0})} "
          f"distinct x ({', '.join(f'{x:g}' for x in sorted(xs | {1.0}))}); "
          "the 3-parameter fit needs >= 3 (the base and >= 2 factors)")
  return RunsData(metric=metric, domains=ref, eval_domains=ref_eval,
                  runs=runs, bases=bases)


# -------------------------------------------------------------- fit and solve


def _convert(v: float, have: str, want: str | None) -> float:
  if want in (None, have):
    return v
  return math.exp(v) if want == "ppl" else math.log(v)


def _norm_metric(metric: str | None) -> str | None:
  if metric is None:
    return None
  table = {"ppl": "ppl", "ppl_seq": "ppl", "ppl_tok": "ppl", "loss": "loss"}
  if metric not in table:
    raise ValueError(f"metric={metric!r}: allowed ppl, ppl_seq, ppl_tok, loss")
  return table[metric]


def _bounds(bounds, domains, xs_by_domain, upper_bound):
  if bounds is None:
    lo = {d: min(xs_by_domain[d]) for d in domains}
    hi = {d: max(xs_by_domain[d]) for d in domains}
  elif isinstance(bounds, Mapping):
    missing = [d for d in domains if d not in bounds]
    if missing:
      raise ValueError(f"bounds is missing domain(s): {', '.join(missing)}")
    lo = {d: float(bounds[d][0]) for d in domains}
    hi = {d: float(bounds[d][1]) for d in domains}
  else:
    lo = {d: float(bounds[0]) for d in domains}
    hi = {d: float(bounds[1]) for d in domains}
  if not upper_bound:
    hi = {d: math.inf for d in domains}
  return lo, hi


def default_targets(data: RunsData) -> dict[str, float]:
  """The fit's target without ``target_domains``: the runs' own aggregate
  (eval key ``"aggregate"``) when they give one, else every training domain,
  equally."""
  if AGGREGATE in data.eval_domains and AGGREGATE not in data.domains:
    return {AGGREGATE: 1.0}
  return {d: 1.0 for d in data.domains}


def aggregates(data: RunsData, metric: str | None = None,
               target_domains: Mapping[str, float] | None = None
               ) -> tuple[dict[str, float], dict[int, float], str,
                          dict[str, float]]:
  """Each run's aggregate metric, the way the fit's y is built from it.

  Args:
    data: validated runs of one budget (:func:`load_runs`).
    metric: ``ppl`` or ``loss`` (config names ppl_seq / ppl_tok accepted);
      None uses the file's.
    target_domains: ``{eval domain: weight}``; default
      :func:`default_targets` (the runs' ``aggregate``, else every training
      domain, equally).

  Returns:
    ``({run name: aggregate}, {seed: its base run's aggregate (mean over
    replicates)}, metric used, normalised target weights)``; a run's y is its
    aggregate divided by its seed's base aggregate.
  """
  want = _norm_metric(metric)
  targets = dict(target_domains) if target_domains else default_targets(data)
  unknown = [d for d in targets if d not in data.eval_domains]
  if unknown:
    raise RunsError(
        f"target domain(s) {', '.join(unknown)} not evaluated in the results "
        f"(eval domains: {', '.join(data.eval_domains)}); give their metric, "
        f"an {AGGREGATE!r} metric, or set ddo.target_domains to evaluated "
        "domains")
  if not all(v >= 0 for v in targets.values()) or sum(targets.values()) <= 0:
    raise ValueError(f"target_domains={targets}: weights must be >= 0, "
                     "one > 0")
  tsum = sum(targets.values())
  agg = {r["name"]: sum(w * _convert(r["eval"][d], data.metric, want)
                        for d, w in targets.items()) / tsum
         for r in data.runs}
  base_agg = {}
  for s in data.bases:
    reps = [agg[r["name"]] for r in data.runs
            if r["seed"] == s and r["domain"] is None]
    base_agg[s] = float(np.mean(reps))
  if any(v <= 0 for v in base_agg.values()):
    raise RunsError("base run: field eval gives a non-positive aggregate "
                    f"{base_agg}; y = aggregate / base needs it > 0")
  return agg, base_agg, want or data.metric, {
      d: w / tsum for d, w in targets.items()}


# How the bootstrap's per-run noise is estimated from repeated seeds:
# "replicates": the sd of log(aggregate) across seeds of each run, every run
# independent; "paired": the noise of log y (y = aggregate / its seed's base
# aggregate) split into a part shared by the seed's runs at one factor and a
# part of each run (paired_noise): what all runs of one seed share (common
# random numbers: one initialization, one window order per domain) cancels
# in y and is not counted as noise.
NOISE_MODELS = ("replicates", "paired")


def paired_noise(data: RunsData, agg: Mapping[str, float],
                 base_agg: Mapping[int, float]) -> dict[str, Any] | None:
  """The noise of log y in two parts, from the seed replicates; or None.

  Per factor ``x``, the perturbed runs form a domain x seed table of
  ``log y`` (replicates within a seed averaged). A two-way layout
  ``log y[d, s] = mean[d] + shared[s] + own[d, s]`` splits its noise: the
  interaction mean square estimates ``var(own)`` (pooled over factors,
  ``(m - 1)(S - 1)`` dof each), the seed mean square ``var(own) + m
  var(shared)``. ``shared`` (the seed's base run, and whatever the seed's
  runs at that factor have in common) moves every domain's y alike; ``own``
  is what separates the domains, the part the optimum is most sensitive to.

  Returns:
    ``{"sd": sd of own, "shared_sd": sd of shared, "dof", "shared_dof"}``
    (log units), or None with fewer than 2 seeds or 2 domains at a factor.
  """
  cells = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in data.runs:
    if r["domain"] is None:
      continue
    cells[(round(r["x"], 9), r["domain"])][r["seed"]].append(
        math.log(agg[r["name"]] / base_agg[r["seed"]]))
  ss_own = ss_seed = 0.0
  dof_own = dof_seed = 0
  pooled_m = []
  for x in sorted({x for x, _ in cells}):
    doms = [d for xx, d in cells if xx == x]
    seeds = sorted(set.intersection(*(set(cells[(x, d)]) for d in doms)))
    if len(doms) < 2 or len(seeds) < 2:
      continue
    t = np.array([[np.mean(cells[(x, d)][s]) for s in seeds] for d in doms])
    resid = (t - t.mean(axis=0, keepdims=True) - t.mean(axis=1, keepdims=True)
             + t.mean())
    ss_own += float(np.sum(resid ** 2))
    dof_own += (len(doms) - 1) * (len(seeds) - 1)
    seed_means = t.mean(axis=0)
    ss_seed += len(doms) * float(np.sum((seed_means - seed_means.mean()) ** 2))
    dof_seed += len(seeds) - 1
    pooled_m.append(len(doms))
  if dof_own < 1 or dof_seed < 1:
    return None
  ms_own, ms_seed = ss_own / dof_own, ss_seed / dof_seed
  shared_var = max(0.0, (ms_seed - ms_own) / float(np.mean(pooled_m)))
  return {"sd": math.sqrt(ms_own), "shared_sd": math.sqrt(shared_var),
          "dof": dof_own, "shared_dof": dof_seed}


def replicate_groups(data: RunsData, agg: Mapping[str, float]
                     ) -> list[np.ndarray]:
  """log(aggregate) of the repeated runs, one array per run (equal tokens:
  the seeds of one run); runs without a repeat are left out."""
  groups = collections.defaultdict(list)
  for r in data.runs:
    key = tuple(round(r["tokens"][d], 6) for d in data.domains)
    groups[key].append(math.log(agg[r["name"]]))
  return [np.array(v) for v in groups.values() if len(v) > 1]


def replicate_noise(data: RunsData, agg: Mapping[str, float]
                    ) -> tuple[float, int]:
  """(sd, dof) of log(aggregate) pooled over runs with equal tokens.

  The seed replicates' estimate of one run's relative noise; ``(0.0, 0)``
  without repeated runs.
  """
  groups = replicate_groups(data, agg)
  ss = sum(float(np.sum((v - v.mean()) ** 2)) for v in groups)
  dof = sum(len(v) - 1 for v in groups)
  return (math.sqrt(ss / dof), dof) if dof > 0 else (0.0, 0)


def _noise_estimate(data: RunsData, agg: dict[str, float],
                    base_agg: dict[int, float], fits,
                    model: str = "replicates") -> tuple[float, str]:
  """Relative sd of one run's aggregate: seed replicates, else residuals.

  Seed replicates: pooled sd of log(aggregate) over runs with equal tokens.
  Residuals: pooled rms of the fits (y is already relative to the base).
  ``model`` is only checked here; ``"paired"`` is :func:`paired_noise`.
  """
  if model not in NOISE_MODELS:
    raise ValueError(f"noise_model={model!r}: allowed "
                     f"{', '.join(NOISE_MODELS)}")
  sd, dof = replicate_noise(data, agg)
  if dof > 0:
    return sd, f"seed replicates ({dof} dof)"
  ss = sum(f.rms ** 2 * len(f.points) for f in fits.values())
  dof = sum(len(f.points) - 3 for f in fits.values())
  if dof > 0:
    return math.sqrt(ss / dof), f"fit residuals ({dof} dof)"
  return 0.0, "none"


def _check_points_finite(pts, meta, bases: Mapping[int, str]) -> None:
  """Raises RunsError naming a run whose relative metric is not finite."""
  for d, (_, ys) in pts.items():
    for y, (name, seed) in zip(ys, meta[d]):
      if not math.isfinite(y):
        raise RunsError(
            f"run {name!r}: field eval: aggregate / aggregate of base run "
            f"{bases[seed]!r} = {y!r} (out of float64 range); check both "
            "runs' eval values")


def _check_fitted(fits: Mapping[str, powerlaw.PowerLawFit]) -> None:
  """Raises RunsError when a domain's power law could not be fitted.

  The mixture needs every domain's curve, so one failed fit means nothing
  was fitted: ``--stage=fit`` must fail rather than write a mixture.
  """
  bad = [d for d, f in fits.items()
         if not all(math.isfinite(v) for v in (f.a, f.b, f.c, f.rms))]
  if bad:
    raise RunsError(
        f"domain(s) {', '.join(bad)}: no power law could be fitted (non-"
        "finite parameters), so no mixture was fitted; check these domains' "
        "runs in RUNS.json (eval values, tokens)")


def require_finished(planned: Sequence[str], finished: Iterable[str],
                     what: str) -> None:
  """Raises RunsError when planned runs have no finished record.

  For ``--stage=fit``: fitting with runs missing fits nothing, which is an
  error (exit 2), not a success.

  Args:
    planned: run names the fit needs.
    finished: names of the runs with a finished record.
    what: what is being fitted, e.g. ``"DDO budget 1 (4.1e+06 tokens)"``.
  """
  done = set(finished)
  missing = [n for n in planned if n not in done]
  if missing:
    raise RunsError(
        f"{what}: {len(missing)} of {len(planned)} planned runs have no "
        f"finished record ({', '.join(missing[:4])}"
        f"{' ...' if len(missing) > 4 else ''}), so nothing was fitted; "
        "train them with --stage=ddo (or wait until every worker is done), "
        "then run --stage=fit again")


def fit_points(data: RunsData, agg: Mapping[str, float],
               base_agg: Mapping[int, float]
               ) -> tuple[dict[str, tuple[list, list]], dict[str, list]]:
  """The fit's points per domain and what each point is.

  Returns:
    ``({domain: (xs, ys)}, {domain: [(run name | None, seed)]})``: one point
    ``(1, 1)`` per seed (its base run, name None), then every run perturbing
    the domain with ``y = aggregate / its seed's base aggregate``.
  """
  domains = data.domains
  pts: dict[str, tuple[list, list]] = {d: ([], []) for d in domains}
  meta: dict[str, list] = {d: [] for d in domains}
  for s in sorted(data.bases):
    for d in domains:
      pts[d][0].append(1.0); pts[d][1].append(1.0); meta[d].append((None, s))
  for r in data.runs:
    if r["domain"] is not None:
      d = r["domain"]
      pts[d][0].append(r["x"])
      pts[d][1].append(agg[r["name"]] / base_agg[r["seed"]])
      meta[d].append((r["name"], r["seed"]))
  return pts, meta


def fit_and_solve(runs: RunsData | str | Mapping[str, Any],
                  metric: str | None = None,
                  target_domains: Mapping[str, float] | None = None,
                  bounds=None, upper_bound: bool = True,
                  bootstrap: int = 200, seed: int = 0,
                  noise_sd: float | None = None,
                  ci: float = 0.9, noise_model: str = "replicates") -> dict:
  """Fits the per-domain laws, solves the mixture, bootstraps intervals.

  Args:
    runs: validated :class:`RunsData`, a RUNS.json path or its dict.
    metric: ``ppl`` or ``loss`` (config names ppl_seq / ppl_tok accepted);
      None uses the file's; a file in loss converts to ppl by exp and back.
    target_domains: ``{eval domain: weight}`` (out-of-domain allowed); default
      every training domain, equally.
    bounds: None (each domain's smallest and largest observed x), ``(lo,
      hi)`` for all, or ``{domain: (lo, hi)}``; in units of the base quantity.
    upper_bound: False drops the upper bounds.
    bootstrap: parametric bootstrap replicates (0 = no intervals).
    seed: bootstrap RNG seed.
    noise_sd: relative noise sd of a run's aggregate (default: estimated).
    ci: interval coverage.
    noise_model: how repeated seeds estimate the noise (:data:`NOISE_MODELS`):
      ``"replicates"`` treats every run as independent; ``"paired"`` models
      the noise of y itself, split into each run's own part and a part shared
      by one seed's runs at one factor (:func:`paired_noise`). Without
      repeated seeds both use the residuals.

  Returns:
    The mixture.json content (see docs/architecture.md).
  """
  data = runs if isinstance(runs, RunsData) else load_runs(runs)
  agg, base_agg, used_metric, targets = aggregates(data, metric,
                                                   target_domains)
  domains = data.domains

  seeds = sorted(data.bases)
  base0 = data.base_tokens(seeds[0])
  budget = float(np.mean([sum(data.base_tokens(s).values()) for s in seeds]))
  w0 = {d: base0[d] / sum(base0.values()) for d in domains}
  for s in seeds[1:]:
    bt = data.base_tokens(s)
    tot = sum(bt.values())
    if any(abs(bt[d] / tot - w0[d]) > 1e-6 for d in domains):
      raise RunsError(f"run {data.bases[s]!r}: field tokens: the base mixture "
                      f"of seed {s} differs from seed {seeds[0]}'s")

  pts, meta = fit_points(data, agg, base_agg)
  _check_points_finite(pts, meta, data.bases)
  lo, hi = _bounds(bounds, domains, {d: pts[d][0] for d in domains},
                   upper_bound)
  warm = None
  if bootstrap > 0 and any(len(pts[d][0]) > 3 for d in domains):
    warm = _warm_bootstrap(bootstrap, len(domains),
                           max(len(np.unique(pts[d][0])) for d in domains))
  report = powerlaw.fit_powerlaws(pts, lower_limits=lo)
  fits = report.fits
  _check_fitted(fits)
  warnings = list(report.warnings)
  a = {d: max(fits[d].a, -lo[d] + 1e-12 * (1 + abs(lo[d]))) for d in domains}
  b = {d: fits[d].b for d in domains}
  sol = optimize.solve(a, b, lo, hi, total=1.0, s=w0, domains=domains)
  wsum = sum(w0[d] * sol.n[d] for d in domains)
  weights = {d: w0[d] * sol.n[d] / wsum for d in domains}
  tokens = {d: weights[d] * budget for d in domains}
  predicted = 1.0 + sum(fits[d](sol.n[d]) - fits[d](1.0) for d in domains)

  # ---- uncertainty: parametric bootstrap over runs
  intervals: dict[str, list[float]] = {}
  replication: dict[str, list[float]] = {}
  sd, source = (noise_sd, "given") if noise_sd is not None else \
      _noise_estimate(data, agg, base_agg, fits, noise_model)
  paired = (paired_noise(data, agg, base_agg)
            if noise_sd is None and noise_model == "paired" else None)
  if paired is not None:
    sd = paired["sd"]
    source = (f"paired: each run's own noise of log y ({paired['dof']} dof) "
              f"plus a part shared by one seed's runs at one factor, sd "
              f"{paired['shared_sd']:.4g} ({paired['shared_dof']} dof); what "
              "all of a seed's runs share cancels in y")
  boot_info = {"replicates": 0, "noise_sd": sd, "noise_source": source,
               "ci": ci, "method": "parametric bootstrap over runs"}
  if paired is not None:
    boot_info["noise_sd_shared"] = paired["shared_sd"]
  if bootstrap > 0 and sd > 0:
    ws = _bootstrap(domains, pts, meta, fits, a, b, lo, hi, w0, sd,
                    bootstrap, seed, warm,
                    shared_sd=None if paired is None else paired["shared_sd"])
    ok = np.all(np.isfinite(ws), axis=1)
    if ok.mean() < 0.95:
      warnings.append(f"bootstrap: {int((~ok).sum())} of {bootstrap} "
                      "replicates gave no valid fit and were dropped")
    q = 100 * (1 - ci) / 2
    lo_q, hi_q = np.percentile(ws[ok], [q, 100 - q], axis=0)
    intervals = {d: [float(lo_q[i]), float(hi_q[i])]
                 for i, d in enumerate(domains)}
    replication = replication_intervals(weights, intervals)
    boot_info["replicates"] = int(ok.sum())
  elif bootstrap > 0:
    warnings.append("no noise estimate (one seed and exactly 3 points per "
                    "domain): no intervals; repeat seeds or add factors, or "
                    "pass noise_sd")

  return {
      "budget_tokens": budget,
      "weights": weights,
      "tokens": tokens,
      "base_weights": w0,
      "multipliers": dict(sol.n),
      "bounds": {d: [lo[d], hi[d] if math.isfinite(hi[d]) else None]
                 for d in domains},
      "fits": {d: fits[d].to_dict() for d in domains},
      "intervals": intervals,
      "replication_intervals": replication,
      "bound_domains": sol.bound_domains,
      "kkt": sol.kkt,
      "predicted_ratio": float(predicted),
      "bootstrap": boot_info,
      "warnings": warnings,
      "metric": used_metric,
      "target_domains": targets,
      "seeds": seeds,
      "budget_constraint": "sum_i w0_i n_i = 1 (= paper's sum n_i = m for "
                           "uniform w0)",
  }


def replication_intervals(weights: Mapping[str, float],
                          intervals: Mapping[str, Sequence[float]]
                          ) -> dict[str, list[float]]:
  """Where a replicate study's optimum would fall, from the optimum's interval.

  The difference of two independent estimates of one quantity spreads
  ``sqrt(2)`` times as much as one estimate, so each end moves ``sqrt(2)``
  times as far from the point estimate (module doc). Clipped to [0, 1].

  Args:
    weights: {domain: optimal weight} of this study.
    intervals: {domain: [lo, hi]}, this study's interval of each weight.

  Returns:
    {domain: [lo, hi]} for the domains with an interval.
  """
  out = {}
  for d, (lo, hi) in intervals.items():
    w = weights[d]
    out[d] = [max(0.0, w - math.sqrt(2.0) * (w - lo)),
              min(1.0, w + math.sqrt(2.0) * (hi - w))]
  return out


# Work per compiled bootstrap call, in point-iterations of the fitter (rows x
# (padded points + 16) x starts x iterations): about 0.1-0.3 s on one idle
# CPU core (512 rows of 3 distinct x), so Ctrl-C (seen between calls) acts
# well within 2 s, and the last, padded chunk wastes little.
_BOOT_CALL_WORK = 1 << 22
_BOOT_ITERS = 60


_BOOT_STARTS = 1 + 5  # the warm start plus every 7th start of the 30-grid


def _bootstrap_chunk(replicates: int, m: int, points: int) -> int:
  """Replicates per compiled call (whole rows of a power-of-two bucket).

  ``points``: the most distinct x of a domain (repeated x are merged). The
  per-row cost is taken as (padded points + 16) per start and iteration
  (the 2x2 Levenberg-Marquardt step costs about 16 points).
  """
  per_row = (4 * math.ceil(points / 4) + 16) * _BOOT_STARTS * _BOOT_ITERS
  rows = max(8, 1 << max(0, (_BOOT_CALL_WORK // per_row).bit_length() - 1))
  return max(1, min(replicates, rows // m))


def _warm_bootstrap(replicates: int, m: int, points: int
                    ) -> threading.Event:
  """Compiles the bootstrap's fitter and solver in a background thread.

  Runs while the main fit compiles on the other core, so the bootstrap
  itself is only short compiled calls (Ctrl-C acts between them). Returns
  an event set when the compilation is over; wait on it, not on the thread:
  an interrupted ``Thread.join`` marks a running thread as stopped (Python
  3.11, bpo-45274), and the interpreter would then tear XLA down under the
  compilation (abort) instead of waiting for it. Not a daemon for the same
  reason. Errors are left to the real calls.
  """
  chunk = _bootstrap_chunk(replicates, m, points)
  rows = chunk * m

  def compile_once():
    try:
      x = np.tile(np.arange(1.0, points + 1.0), (rows, 1))
      powerlaw.fit_padded(x, 1.0 / x, np.ones_like(x), np.full(rows, 0.5),
                          np.zeros((rows, _BOOT_STARTS, 2)),
                          iters=_BOOT_ITERS)
      optimize.solve_batch(np.ones((chunk, m)), np.ones((chunk, m)),
                           np.full(m, 0.5), np.full(m, 2.0), 1.0,
                           s=np.full(m, 1.0 / m))
    except Exception:  # pylint: disable=broad-except
      pass
    finally:
      done.set()

  done = threading.Event()
  threading.Thread(target=compile_once, name="bootstrap-compile").start()
  return done


def _bootstrap(domains, pts, meta, fits, a, b, lo, hi, w0, sd, reps, seed,
               warm: threading.Event | None = None,
               shared_sd: float | None = None,
               y_draws: np.ndarray | None = None) -> np.ndarray:
  """Optimal weights ``[reps, m]`` of parametric-bootstrap replicates.

  Every replicate's noise is drawn at once (one ``[reps, runs + seeds]``
  normal draw, as before); the replicates then go through the jitted fitter
  and solver in chunks of equal shape (one compilation each), so a Ctrl-C is
  seen between chunks. Repeated x (seeds of one run) are merged exactly by
  :func:`powerlaw.group_repeated_x`, so the cost does not grow with seeds.

  ``shared_sd`` None: every run and every seed's base get an independent
  draw of relative sd ``sd``. Given (the paired model, :func:`paired_noise`):
  y itself is redrawn, each perturbed run with its own draw of sd ``sd`` plus
  one draw of sd ``shared_sd`` shared by its seed's runs at the same x.
  ``y_draws`` given (``[reps, m, k]`` in :func:`powerlaw.pad_points`' layout;
  bench/interval_coverage.py's candidate noise models): those replicates are
  refitted as they are (``sd`` and ``shared_sd`` unused).
  """
  m = len(domains)
  x, _, mask = powerlaw.pad_points(pts, domains)
  k = x.shape[1]
  run_names = sorted({n for d in domains for n, _ in meta[d] if n})
  seeds = sorted({s for d in domains for _, s in meta[d]})
  rid = {n: i for i, n in enumerate(run_names)}
  sid = {s: len(run_names) + i for i, s in enumerate(seeds)}
  mu = np.ones((m, k)); run_ix = np.zeros((m, k), int)
  base_ix = np.zeros((m, k), int); is_base = np.ones((m, k), bool)
  for i, d in enumerate(domains):
    f = fits[d]
    for j, (name, s) in enumerate(meta[d]):
      base_ix[i, j] = sid[s]
      if name is not None:
        is_base[i, j] = False
        run_ix[i, j] = rid[name]
        mu[i, j] = 1.0 + f(x[i, j]) - f(1.0)
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((reps, len(run_names) + len(seeds)))
  if shared_sd is not None:
    groups = sorted({(s, round(float(x[i, j]), 9))
                     for i, d in enumerate(domains)
                     for j, (name, s) in enumerate(meta[d]) if name})
    gid = {g: n for n, g in enumerate(groups)}
    group_ix = np.zeros((m, k), int)
    for i, d in enumerate(domains):
      for j, (name, s) in enumerate(meta[d]):
        if name is not None:
          group_ix[i, j] = gid[(s, round(float(x[i, j]), 9))]
    z_shared = rng.standard_normal((reps, len(groups)))
  lo_v = np.array([min(lo[d], min(pts[d][0])) for d in domains])
  a_v = np.array([a[d] for d in domains]); b_v = np.array([b[d] for d in domains])
  starts = np.concatenate([powerlaw.starts_from(a_v, b_v, lo_v),
                           powerlaw.default_starts(x, mask, lo_v)[:, ::7]],
                          axis=1)
  assert starts.shape[1] == _BOOT_STARTS, starts.shape
  lo_b = np.array([lo[d] for d in domains]); hi_b = np.array([hi[d] for d in domains])
  s = np.array([w0[d] for d in domains])
  distinct = max(len(np.unique(pts[d][0])) for d in domains)
  chunk = _bootstrap_chunk(reps, m, distinct)
  if warm is not None:
    warm.wait()
  weights = np.empty((reps, m))
  for start in range(0, reps, chunk):
    # Every call has `chunk` replicates (the last one repeats its rows), so
    # the fitter and the solver compile once.
    idx = np.minimum(np.arange(start, start + chunk), reps - 1)
    zc = z[idx]
    if y_draws is not None:
      y = y_draws[idx]
    elif shared_sd is None:
      y = mu[None] * (1.0 + sd * zc[:, run_ix]) / (1.0 + sd * zc[:, base_ix])
    else:
      y = mu[None] * (1.0 + sd * zc[:, run_ix]
                      + shared_sd * z_shared[idx][:, group_ix])
    y = np.where(is_base[None], 1.0, y)
    out = powerlaw.fit_padded(
        np.tile(x, (chunk, 1)), y.reshape(chunk * m, k),
        np.tile(mask, (chunk, 1)), np.tile(lo_v, chunk),
        np.tile(starts, (chunk, 1, 1)), iters=_BOOT_ITERS)
    a_b = out["a"].reshape(chunk, m); b_b = out["b"].reshape(chunk, m)
    a_b = np.maximum(a_b, -lo_b + 1e-12 * (1 + np.abs(lo_b)))
    n = optimize.solve_batch(a_b, b_b, lo_b, hi_b, 1.0, s=s)
    w = n * s
    stop = min(start + chunk, reps)
    weights[start:stop] = (w / np.sum(w, axis=1, keepdims=True))[:stop - start]
  return weights


def write_mixture(path: epath.PathLike, mixture: Mapping[str, Any]
                  ) -> epath.Path:
  """Writes mixture.json atomically (temp + rename)."""
  return atomic_write_json(path, _jsonable(mixture))


def _jsonable(obj):
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.floating, np.integer)):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def run_fit_stage(results_path: epath.PathLike, workdir: epath.PathLike,
                  **kwargs) -> dict:
  """``--stage=fit``: RUNS.json -> ``workdir/mixture.json``; returns it.

  ``kwargs`` go to :func:`fit_and_solve` (metric, target_domains, bounds,
  upper_bound, bootstrap, seed, noise_sd).
  """
  mixture = fit_and_solve(load_runs(results_path), **kwargs)
  write_mixture(epath.Path(workdir) / "mixture.json", mixture)
  return mixture
