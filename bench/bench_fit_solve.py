"""Fit + solve time after compilation: JAX (float64, jitted) vs scipy.

Usage: .venv/bin/python bench/bench_fit_solve.py [--m 7 1000] [--repeats 5]

For each m, a synthetic DDO problem from the simulator (paper design: 3
points per domain, x in {0.2, 1, 3}) is fitted and solved by
``powerlaw.fit_powerlaws`` + ``optimize.solve`` (first call compiles and is
excluded; median of the repeats), and by the reference approach: scipy
``curve_fit`` per domain (p0 = 1, as the reference notebook) + SLSQP.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
from scipy.optimize import curve_fit, minimize

from autoscale_jax.mixing import optimize, powerlaw


def _problem(m: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  a, b = rng.uniform(0.0, 1.5, m), rng.uniform(0.2, 1.5, m)
  xs = np.array([0.2, 1.0, 3.0])
  return {f"d{i}": (xs, 1 + powerlaw.powerlaw(xs, a[i], b[i], 0)
                    - powerlaw.powerlaw(1.0, a[i], b[i], 0))
          for i in range(m)}


def _jax(points):
  rep = powerlaw.fit_powerlaws(points)
  a = {d: f.a for d, f in rep.fits.items()}
  b = {d: f.b for d, f in rep.fits.items()}
  return optimize.solve(a, b, lo=0.2, hi=3.0)


def _scipy(points):
  model = lambda x, a, b, c: np.power(np.maximum(x + a, 1e-12), -b) + c
  a, b = [], []
  for xs, ys in points.values():
    try:
      p, _ = curve_fit(model, xs, ys, p0=[1.0, 1.0, 1.0], maxfev=5000)
    except RuntimeError:
      p = [1.0, 1.0, 0.0]
    a.append(max(p[0], -0.2 + 1e-9)); b.append(max(p[1], 1e-6))
  a, b = np.array(a), np.array(b)
  m = len(a)
  return minimize(lambda v: np.sum((v + a) ** -b), np.ones(m),
                  jac=lambda v: -b * (v + a) ** (-b - 1), method="SLSQP",
                  bounds=[(0.2, 3.0)] * m,
                  constraints=[{"type": "eq", "fun": lambda v: v.sum() - m,
                                "jac": lambda v: np.ones(m)}],
                  options={"maxiter": 1000})


def _time(fn, arg, repeats):
  out = []
  for _ in range(repeats):
    t = time.perf_counter(); fn(arg); out.append(time.perf_counter() - t)
  return statistics.median(out)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--m", type=int, nargs="+", default=[7, 1000])
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  warnings.simplefilter("ignore")
  import jax
  print("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
  print(f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}")
  print("| m | JAX compile (s) | JAX fit+solve (ms) | scipy curve_fit+SLSQP (ms) "
        "| max |n_jax - n_scipy| |")
  print("|---|---|---|---|---|")
  for m in args.m:
    pts = _problem(m)
    t = time.perf_counter(); sol = _jax(pts); first = time.perf_counter() - t
    tj = _time(_jax, pts, args.repeats)
    ts = _time(_scipy, pts, max(1, min(args.repeats, 2 if m > 100 else 5)))
    ref = _scipy(pts)
    diff = float(np.max(np.abs(np.array(list(sol.n.values())) - ref.x)))
    print(f"| {m} | {first:.2f} | {1e3 * tj:.1f} | {1e3 * ts:.1f} | "
          f"{diff:.2g} |", flush=True)


if __name__ == "__main__":
  main()
