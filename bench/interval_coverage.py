"""Calibration of the DDO weights' 90% intervals across replicate demos.

Loads each demo workdir's DDO runs per budget (``ddo/budget_<k>/runs.json``,
what ``--stage=ddo`` fitted), refits them with every candidate interval
method (fits only, nothing is trained) and prints per budget and method: the
median 90% interval width over domains and demos, and the cross-demo coverage:
the fraction of (demo X's point estimate inside demo Y's interval) over the
ordered demo pairs and domains, for the 90% intervals and for the replication
intervals made from them (``ddo.replication_intervals``: calibrated, 90%). Two independent estimates with a calibrated
interval of their own sd: ``P(|Z| < 1.645 / sqrt 2)`` = 75% (each interval
covering the truth 90%); an interval that also covers the other demo's
estimation noise would reach 90%. The point estimate is the same for every
method (the fit does not change); only the intervals do. docs/results.md's
"Interval calibration" table was made with:

    PYTHONPATH=$PWD .venv/bin/python bench/interval_coverage.py \\
        workdir/demoA:42 workdir/demoB:1042 workdir/demoC:42

(``:<seed>`` the bootstrap seed each demo used, its ``config.seed``.)

Candidates (``--methods``): ``replicates`` and ``paired`` (ddo.NOISE_MODELS
before this bench); ``paired_t`` (paired, each sd scaled by the t quantile of
its degrees of freedom over the normal one); ``paired_base`` (paired, the
shared part drawn once per seed for both factors, the way one base run's noise
enters every y of its seed); ``seed_boot`` (whole seeds resampled with
replacement: with 3 seeds only 10 distinct resamples, and the resampled mean's
spread is (S-1)/S of the sample's); ``bayes_seed`` (Dirichlet(1, ..., 1)
weights over seeds, the smoothed version); ``seed_vectors`` and
``seed_vectors_t`` (a Gaussian bootstrap over the seeds' residual vectors,
normal and t scale: :func:`seed_vector_draws`); ``floor`` (``replicates``
with each demo's noise raised to the pooled noise of the other demos:
:func:`floor_sds`). ``--tails`` adds per budget the spread of the demos'
noise and the excess kurtosis of the seed residuals (:func:`noise_tails`).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
from typing import Sequence

import numpy as np
from scipy import stats

from autoscale_jax.mixing import ddo, optimize, powerlaw

METHODS = ("replicates", "paired", "paired_t", "paired_base", "seed_boot",
           "bayes_seed", "seed_vectors", "seed_vectors_t", "floor")


def _study(data: ddo.RunsData):
  """What fit_and_solve fits: points, fits, bounds, base weights."""
  agg, base_agg, _, _ = ddo.aggregates(data)
  pts, meta = ddo.fit_points(data, agg, base_agg)
  domains = data.domains
  lo, hi = ddo._bounds(None, domains, {d: pts[d][0] for d in domains}, True)  # pylint: disable=protected-access
  fits = powerlaw.fit_powerlaws(pts, lower_limits=lo).fits
  a = {d: max(fits[d].a, -lo[d] + 1e-12 * (1 + abs(lo[d]))) for d in domains}
  b = {d: fits[d].b for d in domains}
  b0 = data.base_tokens(sorted(data.bases)[0])
  w0 = {d: b0[d] / sum(b0.values()) for d in domains}
  return agg, base_agg, pts, meta, fits, a, b, lo, hi, w0


def _cells(domains, pts, meta):
  """``{(domain index, x): {seed: [point index]}}`` of the perturbed points."""
  cells = collections.defaultdict(lambda: collections.defaultdict(list))
  for i, d in enumerate(domains):
    for j, (name, s) in enumerate(meta[d]):
      if name is not None:
        cells[(i, round(pts[d][0][j], 9))][s].append(j)
  return cells


def _seed_weight_draws(domains, pts, meta, weights: np.ndarray) -> np.ndarray:
  """y replicates whose every cell is the seed-weighted mean of its y."""
  x, y, _ = powerlaw.pad_points(pts, domains)
  seeds = sorted({s for d in domains for _, s in meta[d]})
  out = np.repeat(y[None], len(weights), axis=0)
  for (i, _), by_seed in _cells(domains, pts, meta).items():
    ys = np.array([np.mean(y[i, by_seed[s]]) for s in seeds])
    mean = weights @ ys
    for s in seeds:
      out[:, i, by_seed[s]] = mean[:, None]
  return out


def _pooled(noises: list[tuple[float, int]]) -> float:
  """The pooled sd of ``[(sd, dof)]``."""
  return math.sqrt(sum(s * s * n for s, n in noises)
                   / sum(n for _, n in noises))


def floor_sds(studies: list[ddo.RunsData]) -> list[float]:
  """Each study's noise raised to the pooled noise of the other studies.

  The ``floor`` candidate: a design-level noise (what replicate studies of
  one design measured) under each study's own three-seed estimate.
  """
  own = [ddo.replicate_noise(d, ddo.aggregates(d)[0]) for d in studies]
  return [max(sd, _pooled(own[:i] + own[i + 1:]))
          for i, (sd, _) in enumerate(own)]


def noise_tails(studies: list[ddo.RunsData]) -> dict[str, float]:
  """How the studies' seed noise is spread (``--tails``).

  Each study's ``replicates`` noise (min, max), their pooled value, and the
  excess kurtosis of the residuals of every run's log aggregate about its
  seeds' mean, scaled by sqrt(S / (S - 1)) and pooled over the studies (0
  for normal noise).
  """
  own, resid = [], []
  for d in studies:
    agg = ddo.aggregates(d)[0]
    own.append(ddo.replicate_noise(d, agg))
    for v in ddo.replicate_groups(d, agg):
      resid.extend((v - v.mean()) * math.sqrt(len(v) / (len(v) - 1)))
  return {"min_sd": min(s for s, _ in own), "max_sd": max(s for s, _ in own),
          "pooled_sd": _pooled(own), "residuals": len(resid),
          "excess_kurtosis": float(stats.kurtosis(resid))}


def refit(data: ddo.RunsData, method: str, reps: int, seed: int,
          noise_sd: float | None = None) -> tuple[dict, dict]:
  """(point weights, {domain: [lo, hi]}) of one budget's runs."""
  if method in ddo.NOISE_MODELS or method == "floor":
    mix = ddo.fit_and_solve(data, bootstrap=reps, seed=seed,
                            noise_sd=noise_sd,
                            noise_model="replicates" if method == "floor"
                            else method)
    return mix["weights"], mix["intervals"]
  agg, base_agg, pts, meta, fits, a, b, lo, hi, w0 = _study(data)
  domains = data.domains
  sol = optimize.solve(a, b, lo, hi, total=1.0, s=w0, domains=domains)
  wsum = sum(w0[d] * sol.n[d] for d in domains)
  point = {d: w0[d] * sol.n[d] / wsum for d in domains}
  rng = np.random.default_rng(seed)
  seeds = sorted(data.bases)
  n_seeds = len(seeds)
  kwargs = {}
  sd = 0.0
  if method in ("paired_t", "paired_base"):
    p = ddo.paired_noise(data, agg, base_agg)
    sd, shared = p["sd"], p["shared_sd"]
    if method == "paired_t":
      z = stats.norm.ppf(0.95)
      sd *= stats.t.ppf(0.95, p["dof"]) / z
      shared *= stats.t.ppf(0.95, p["shared_dof"]) / z
      kwargs["shared_sd"] = shared
    else:
      kwargs["y_draws"] = _paired_base_draws(domains, pts, meta, fits, sd,
                                             shared, reps, rng)
  elif method == "seed_boot":
    idx = rng.integers(n_seeds, size=(reps, n_seeds))
    w = np.stack([np.bincount(r, minlength=n_seeds) for r in idx]) / n_seeds
    kwargs["y_draws"] = _seed_weight_draws(domains, pts, meta, w)
  elif method == "bayes_seed":
    w = rng.dirichlet(np.ones(n_seeds), size=reps)
    kwargs["y_draws"] = _seed_weight_draws(domains, pts, meta, w)
  elif method in ("seed_vectors", "seed_vectors_t"):
    kwargs["y_draws"] = seed_vector_draws(
        domains, pts, meta, fits, reps, rng,
        t_scale=method == "seed_vectors_t")
  else:
    raise ValueError(f"unknown method {method!r}")
  ws = ddo._bootstrap(domains, pts, meta, fits, a, b, lo, hi, w0, sd, reps,  # pylint: disable=protected-access
                      seed, **kwargs)
  ok = np.all(np.isfinite(ws), axis=1)
  lo_q, hi_q = np.percentile(ws[ok], [5, 95], axis=0)
  return point, {d: [float(lo_q[i]), float(hi_q[i])]
                 for i, d in enumerate(domains)}


def _paired_base_draws(domains, pts, meta, fits, sd, shared_sd, reps, rng):
  """Paired draws whose shared part is one draw per seed (both factors)."""
  x, _, _ = powerlaw.pad_points(pts, domains)
  seeds = sorted({s for d in domains for _, s in meta[d]})
  own = rng.standard_normal((reps,) + x.shape)
  seed_z = rng.standard_normal((reps, len(seeds)))
  out = np.ones((reps,) + x.shape)
  for i, d in enumerate(domains):
    f = fits[d]
    for j, (name, s) in enumerate(meta[d]):
      if name is not None:
        mu = 1.0 + f(x[i, j]) - f(1.0)
        out[:, i, j] = mu * (1.0 + sd * own[:, i, j]
                             + shared_sd * seed_z[:, seeds.index(s)])
  return out


def seed_vector_draws(domains: Sequence[str], pts, meta, fits, reps: int,
                      rng: np.random.Generator, t_scale: bool = False,
                      ci: float = 0.9) -> np.ndarray | None:
  """Bootstrap y replicates from the seeds' own residual vectors; or None.

  Each seed's residual vector ``r_s`` holds, for every perturbed run of the
  design (domain x factor), its ``log y`` minus that run's mean over seeds.
  A replicate's seed ``s'`` gets ``log y = log mu + sum_s g[s', s] r_s /
  sqrt(S - 1)`` with ``g ~ N(0, 1)`` and ``mu`` the fitted surrogate: its
  noise has the seeds' sample covariance over all runs of the design, so
  whatever a seed's runs share (its base run, its data order, at every
  factor) keeps its correlation across domains and factors without a model
  of it (a smooth version of resampling whole seeds, which with 3 seeds has
  only 10 distinct resamples).

  Args:
    domains, pts, meta, fits: the fit's points and laws (``ddo.fit_points``).
    reps: replicates.
    rng: random generator.
    t_scale: scale the noise by ``t_{S-1}`` over the normal quantile at
      ``ci``: the sample covariance of S seeds has S - 1 degrees of freedom.
    ci: the interval's coverage (only for ``t_scale``).

  Returns:
    ``[reps, m, k]`` y replicates in ``powerlaw.pad_points``' layout (the
    base points stay 1), or None with fewer than 2 seeds.
  """
  x, _, _ = powerlaw.pad_points(pts, domains)
  seeds = sorted({s for d in domains for _, s in meta[d]})
  if len(seeds) < 2:
    return None
  cells = collections.defaultdict(lambda: collections.defaultdict(list))
  for i, d in enumerate(domains):
    for j, (name, s) in enumerate(meta[d]):
      if name is not None:
        cells[(i, round(float(x[i, j]), 9))][s].append(j)
  keys = sorted(cells)
  resid = np.zeros((len(seeds), len(keys)))
  for c, (i, _) in enumerate(keys):
    d = domains[i]
    by_seed = {s: np.mean(np.log(np.asarray(pts[d][1])[js]))
               for s, js in cells[keys[c]].items()}
    mean = np.mean(list(by_seed.values()))
    for n, s in enumerate(seeds):
      if s in by_seed and len(by_seed) > 1:
        resid[n, c] = by_seed[s] - mean
  scale = 1.0 / math.sqrt(len(seeds) - 1)
  if t_scale:
    q = 1 - (1 - ci) / 2
    scale *= stats.t.ppf(q, len(seeds) - 1) / stats.norm.ppf(q)
  g = rng.standard_normal((reps, len(seeds), len(seeds)))
  noise = scale * np.einsum("rab,bc->rac", g, resid)  # [reps, seed', cell]
  out = np.ones((reps,) + x.shape)
  for c, (i, _) in enumerate(keys):
    f = fits[domains[i]]
    for n, s in enumerate(seeds):
      for j in cells[keys[c]].get(s, []):
        mu = 1.0 + f(x[i, j]) - f(1.0)
        out[:, i, j] = mu * np.exp(noise[:, n, c])
  return out


def load_demo(workdir: str) -> dict[str, ddo.RunsData]:
  out = {}
  for k in sorted(os.listdir(os.path.join(workdir, "ddo"))):
    path = os.path.join(workdir, "ddo", k, "runs.json")
    if os.path.exists(path):
      out[k] = ddo.load_runs(json.load(open(path)))
  return out


def coverage(points: list[dict], intervals: list[dict]) -> tuple[int, int]:
  """(inside, checks) of X's point in Y's interval over ordered pairs."""
  inside = total = 0
  for x, px in enumerate(points):
    for y, iy in enumerate(intervals):
      if x == y:
        continue
      for d, v in px.items():
        total += 1
        inside += iy[d][0] <= v <= iy[d][1]
  return inside, total


def all_inside(points: list[dict], intervals: list[dict]) -> tuple[int, int]:
  """(ordered pairs with every one of X's weights in Y's intervals, pairs).

  Issue 13's replication test as one user would run it: a second demo passes
  when all its weights fall inside the first one's intervals.
  """
  whole = total = 0
  for x, px in enumerate(points):
    for y, iy in enumerate(intervals):
      if x != y:
        total += 1
        whole += all(iy[d][0] <= v <= iy[d][1] for d, v in px.items())
  return whole, total


def pooled_subsets(workdirs: list[str], k: str, size: int
                   ) -> list[tuple[frozenset, ddo.RunsData]]:
  """Every ``size``-seed subset of the pooled seeds of demos at budget k.

  Only demos that differ in data order alone are exchangeable (A and C: one
  initialization, seeds 0-2 and 3-5).
  """
  runs, metric = [], None
  for w in workdirs:
    doc = json.load(open(os.path.join(w, "ddo", k, "runs.json")))
    metric = doc["metric"]
    runs += doc["runs"]
  seeds = sorted({r.get("seed", 0) for r in runs})
  out = []
  for sub in itertools.combinations(seeds, size):
    doc = {"metric": metric,
           "runs": [r for r in runs if r.get("seed", 0) in sub]}
    out.append((frozenset(sub), ddo.load_runs(doc)))
  return out


def leave_seeds_out(workdirs: list[str], methods: list[str], reps: int
                    ) -> None:
  """Coverage between disjoint seed subsets of pooled exchangeable demos."""
  budgets = sorted(set.intersection(*(set(load_demo(w)) for w in workdirs)))
  print("leave-seeds-out: disjoint 3-seed subsets of the pooled seeds of "
        + ", ".join(workdirs))
  for method in methods:
    for k in budgets:
      subsets = pooled_subsets(workdirs, k, 3)
      fitted = {sub: refit(data, method, reps, 0) for sub, data in subsets}
      inside = total = 0
      widths = []
      for sx, (px, _) in fitted.items():
        widths += [hi - lo for lo, hi in fitted[sx][1].values()]
        for sy, (_, iy) in fitted.items():
          if sx & sy:
            continue
          i, t = coverage([px, px], [iy, iy])
          inside += i // 2; total += t // 2
      print(f"{method:15} {k:9} {np.median(widths):12.3f}  "
            f"{inside:3d}/{total} {inside / total:4.0%}", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("demos", nargs="+", help="workdir[:bootstrap seed]")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--reps", type=int, default=200)
  parser.add_argument("--tails", action="store_true",
                      help="also print each budget's noise spread over the "
                      "demos and the excess kurtosis of its residuals")
  parser.add_argument("--pool", default="",
                      help="comma-separated workdirs of exchangeable demos: "
                      "also run the leave-seeds-out check on their seeds")
  args = parser.parse_args()
  if args.pool:
    leave_seeds_out(args.pool.split(","), args.methods.split(","), args.reps)
    return
  demos = [(w.split(":")[0], int(w.split(":")[1]) if ":" in w else 0)
           for w in args.demos]
  data = {w: load_demo(w) for w, _ in demos}
  budgets = sorted(set.intersection(*(set(v) for v in data.values())))
  print("method          budget    median width  coverage    replication "
        "coverage (mixing.ddo.replication_intervals)  all inside (ordered "
        "demo pairs whose every weight is inside, of the 90% and the "
        "replication intervals)  per-domain width "
        "(median over demos)")
  for method in args.methods.split(","):
    for k in budgets:
      points, ivs = [], []
      sds = (floor_sds([data[w][k] for w, _ in demos]) if method == "floor"
             else [None] * len(demos))
      for (w, seed), sd in zip(demos, sds):
        p, iv = refit(data[w][k], method, args.reps, seed, sd)
        points.append(p); ivs.append(iv)
      widths = [hi - lo for iv in ivs for lo, hi in iv.values()]
      inside, total = coverage(points, ivs)
      rep_ivs = [ddo.replication_intervals(p, iv)
                 for p, iv in zip(points, ivs)]
      rep_inside, _ = coverage(points, rep_ivs)
      per = {d: float(np.median([iv[d][1] - iv[d][0] for iv in ivs]))
             for d in points[0]}
      whole, n_pairs = all_inside(points, ivs)
      whole_rep, _ = all_inside(points, rep_ivs)
      print(f"{method:15} {k:9} {np.median(widths):12.3f}  "
            f"{inside:3d}/{total} {inside / total:4.0%}  replication "
            f"{rep_inside:3d}/{total} {rep_inside / total:4.0%}  "
            f"all inside {whole:3d}/{n_pairs} {whole / n_pairs:4.0%} "
            f"(replication {whole_rep:3d}/{n_pairs} {whole_rep / n_pairs:4.0%})"
            "   "
            + " ".join(f"{d}={v:.3f}" for d, v in per.items()), flush=True)
  if args.tails:
    for k in budgets:
      t = noise_tails([data[w][k] for w, _ in demos])
      print(f"noise {k}: replicates sd {t['min_sd']:.4f}-{t['max_sd']:.4f} "
            f"over the demos, pooled {t['pooled_sd']:.4f}; excess kurtosis "
            f"of {t['residuals']} residuals {t['excess_kurtosis']:.2f}")


if __name__ == "__main__":
  main()
