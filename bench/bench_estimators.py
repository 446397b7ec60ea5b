"""Estimators of the target mixture compared on simulated truths.

For each row (truth family, noise, seeds, DDO budgets) ``--studies`` random
separable truths (:func:`simulate.random_truth`) get a simulated DDO study at
every budget (:func:`simulate.simulate_study`: the paper's design, relative
Gaussian noise per run, ``ddo.fit_and_solve`` with a parametric bootstrap),
then every estimator in :mod:`estimators` (``ddo_last`` is the largest
budget's DDO optimum reused) plus the reference ``base`` (the base mixture)
gives a mixture at 4x and 10x the largest budget. Reported per estimator: the median
and 90th percentile of the max-abs weight error against the truth's optimum,
and the truth's loss at the mixture relative to uniform's (median, and the
share of studies that beat uniform).

    .venv/bin/python bench/bench_estimators.py [--studies 100] [--quick]

A study's own design (``--noise``, given or not, selects it): its number of
domains, seeds, budgets, the measured per-run noise and the effect range of
the truths, one row per truth family, e.g. the demo's

    .venv/bin/python bench/bench_estimators.py --domains 4 --seeds 3 \
        --budgets 1.5e5,3e5 --noise 0.03 --effect 0.15,0.9
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from autoscale_jax.mixing import estimators, simulate

ALL_DOMAINS = ["code", "techdocs", "books", "wiki", "legal", "qa", "latex"]
DOMAINS = list(ALL_DOMAINS)  # the simulated study's domains (--domains)
EFFECT = (0.05, 0.3)  # random_truth's effect range (--effect)
TARGET_FACTORS = (4.0, 10.0)
REFERENCES = ("base",)


def _rows(quick: bool, design=None):
  if design is not None:
    noise, seeds, budgets = design
    return [(family, noise, tuple(range(seeds)), tuple(budgets))
            for family in ("small_offset", "large_offset")]
  rows = []
  for family in ("small_offset", "large_offset"):
    for noise in (0.0, 0.01, 0.02, 0.05):
      rows.append((family, noise, (0, 1), (1e5, 2e5)))
  if not quick:
    rows.append(("small_offset", 0.01, (0, 1, 2), (1e5, 2e5)))
    rows.append(("small_offset", 0.01, (0, 1), (1e5, 2e5, 4e5)))
  return rows


def _row(family, noise, seeds, budgets, studies, bootstrap):
  w0 = {d: 1.0 / len(DOMAINS) for d in DOMAINS}
  inputs, truths = [], []
  for s in range(studies):
    rng = np.random.default_rng([s, 7])
    truth = simulate.random_truth(rng, DOMAINS, family, ref_budget=budgets[0],
                                  effect=EFFECT)
    runs, optima = simulate.simulate_study(
        truth, budgets, w0, seeds=seeds, noise=noise, seed=s,
        bootstrap=bootstrap)
    inputs.append(estimators.EstimatorInput(runs, optima, w0))
    truths.append(truth)
  # Joint fits of all studies in one batched call.
  data = [estimators.joint_data(inp) for inp in inputs]
  fits = estimators.fit_joint_arrays(np.stack([d["u"] for d in data]),
                                     np.stack([d["y"] for d in data]),
                                     np.stack([d["groups"] for d in data]))
  names = list(estimators.NAMES) + list(REFERENCES)
  res = {(n, f): {"err": [], "rel": [], "fail": 0} for n in names
         for f in TARGET_FACTORS}
  for s, (inp, truth) in enumerate(zip(inputs, truths)):
    jf = {k: v[s] for k, v in fits.items()}
    for f in TARGET_FACTORS:
      target = f * max(budgets)
      opt = truth.optimum(target)
      w_true = np.array([opt[d] for d in DOMAINS]) / target
      loss_uniform = truth.aggregate({d: target / len(DOMAINS)
                                      for d in DOMAINS})
      for name in names:
        if name == "base":
          w = np.full(len(DOMAINS), 1.0 / len(DOMAINS))
        else:
          try:
            out = estimators.estimate(name, inp, target, joint_fit=jf)
            w = np.array([out["weights"][d] for d in DOMAINS])
            if out.get("fallback"):
              res[(name, f)]["fail"] += 1
          except Exception:  # pylint: disable=broad-except
            res[(name, f)]["fail"] += 1
            w = np.full(len(DOMAINS), 1.0 / len(DOMAINS))
        loss = truth.aggregate({d: wi * target for d, wi in zip(DOMAINS, w)})
        res[(name, f)]["err"].append(float(np.abs(w - w_true).max()))
        res[(name, f)]["rel"].append(loss / loss_uniform - 1.0)
  return names, res


def _signal(family, budgets, studies):
  """Noise-free mean 0.2x->3x effect and domain spread (relative units)."""
  eff, spread = [], []
  for s in range(studies):
    truth = simulate.random_truth(np.random.default_rng([s, 7]), DOMAINS,
                                  family, ref_budget=budgets[0], effect=EFFECT)
    n0 = budgets[0] / len(DOMAINS)
    base = {d: n0 for d in DOMAINS}
    l0 = truth.aggregate(base)
    e = []
    for d in DOMAINS:
      lo, hi = dict(base), dict(base)
      lo[d], hi[d] = 0.2 * n0, 3 * n0
      e.append((truth.aggregate(lo) - truth.aggregate(hi)) / l0)
    eff.append(np.mean(e)); spread.append(np.std(e))
  return float(np.mean(eff)), float(np.mean(spread))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--studies", type=int, default=100)
  p.add_argument("--bootstrap", type=int, default=30,
                 help="DDO bootstrap replicates per budget")
  p.add_argument("--quick", action="store_true",
                 help="only the 2-seed, 2-budget rows")
  p.add_argument("--domains", type=int, default=len(ALL_DOMAINS),
                 help="simulated domains (the first N of the demo's 7)")
  p.add_argument("--effect", default="0.05,0.3",
                 help="truths' effect range LO,HI (random_truth)")
  p.add_argument("--noise", type=float, default=None,
                 help="one design: this relative noise per run (with "
                 "--seeds and --budgets), one row per truth family")
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--budgets", default="1e5,2e5")
  args = p.parse_args(argv)
  global EFFECT
  DOMAINS[:] = ALL_DOMAINS[:args.domains]
  EFFECT = tuple(float(v) for v in args.effect.split(","))
  budgets = tuple(float(v) for v in args.budgets.split(","))
  design = (None if args.noise is None else
            (args.noise, args.seeds, budgets))
  t_start = time.time()
  print("command: python " + " ".join(sys.argv))
  print(f"machine: {platform.machine()} {platform.system()}, "
        f"{os.cpu_count()} cores (nproc), python {platform.python_version()}")
  for family in ("small_offset", "large_offset"):
    e, sp = _signal(family, budgets if design else (1e5, 2e5), args.studies)
    print(f"{family}: noise-free mean 0.2x->3x effect {e:.3f}, domain "
          f"spread {sp:.3f} (relative to the base run)")
  print()
  print("| truth | noise | seeds | budgets | estimator | max weight error "
        "4x: median (p90) | 10x: median (p90) | L vs uniform 4x: median "
        "(beats uniform) | 10x: median (beats uniform) | failed or fell back |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  print(f"{len(DOMAINS)} domains, truths' effect range {EFFECT}")
  for family, noise, seeds, budgets in _rows(args.quick, design):
    t0 = time.time()
    names, res = _row(family, noise, seeds, budgets, args.studies,
                      args.bootstrap)
    for name in names:
      cells = []
      for f in TARGET_FACTORS:
        err = np.array(res[(name, f)]["err"])
        cells.append(f"{np.median(err):.3f} ({np.percentile(err, 90):.3f})")
      for f in TARGET_FACTORS:
        rel = np.array(res[(name, f)]["rel"])
        cells.append(f"{100 * np.median(rel):+.2f}% "
                     f"({100 * np.mean(rel < 0):.0f}%)")
      fails = sum(res[(name, f)]["fail"] for f in TARGET_FACTORS)
      print(f"| {family} | {noise:g} | {len(seeds)} | "
            f"{'/'.join(f'{b:g}' for b in budgets)} | {name} | "
            + " | ".join(cells) + f" | {fails} |")
    print(f"<!-- row {family} {noise} {len(seeds)} seeds {len(budgets)} "
          f"budgets: {time.time() - t0:.0f} s -->", flush=True)
  print(f"\nwall time: {time.time() - t_start:.0f} s, {args.studies} studies "
        "per row")


if __name__ == "__main__":
  main()
