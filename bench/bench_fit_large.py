"""DDO fit from a large RUNS.json: wall time and peak memory.

Usage: .venv/bin/python bench/bench_fit_large.py [--runs 10000]
    [--replicates 200] [--domains 7] [--keep FILE]

Writes a RUNS.json of at least ``--runs`` runs with the simulator (the
paper's design, factors 0.2 and 3, ``--domains`` domains, as many seeds as
needed: 7 domains give 15 runs per seed, so 10,000 asks 667 seeds = 10,005
runs) with 0.3% relative noise, then runs ``ddo.run_fit_stage`` on it with
``--replicates`` bootstrap replicates in a fresh child process (so its peak
RSS is the fit's alone, compilation included) and prints the command, the
machine, the wall time of the fit stage and the child's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _write_runs(path: str, runs: int, domains: int) -> int:
  # pylint: disable-next=g-import-not-at-top
  from autoscale_jax.mixing import ddo, simulate
  names = [f"d{i}" for i in range(domains)]
  per_seed = 1 + 2 * domains
  seeds = range(-(-runs // per_seed))
  budget = 1000.0 * domains
  rng = np.random.default_rng(0)
  truth = simulate.PowerLawTruth.from_relative(
      names, rng.uniform(0.0, 1.5, domains), rng.uniform(0.2, 1.5, domains),
      budget=budget, base_metric=30.0)
  plan = ddo.plan_runs(names, budget, factors=(0.2, 3.0), seeds=seeds)
  doc = simulate.simulate_runs(plan, truth, noise=0.003, seed=1)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(doc, f)
  return len(doc["runs"])


def _fit(path: str, replicates: int) -> None:
  """Child process: the fit stage alone; prints one JSON line."""
  from autoscale_jax.mixing import ddo  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    mix = ddo.run_fit_stage(path, out, bootstrap=replicates, seed=0)
    wall = time.perf_counter() - start
  print(json.dumps({"wall_s": wall,
                    "replicates": mix["bootstrap"]["replicates"],
                    "noise_sd": mix["bootstrap"]["noise_sd"],
                    "intervals": mix["intervals"]}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=10000)
  parser.add_argument("--replicates", type=int, default=200)
  parser.add_argument("--domains", type=int, default=7)
  parser.add_argument("--keep", default=None,
                      help="write the RUNS.json here (default: a temp file)")
  parser.add_argument("--fit", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.fit:
    _fit(args.fit, args.replicates)
    return

  print("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
  print(f"machine: nproc={os.cpu_count()}, CPU {_cpu_model()}, "
        f"python {platform.python_version()}")
  with tempfile.TemporaryDirectory() as tmp:
    path = args.keep or os.path.join(tmp, "RUNS.json")
    n = _write_runs(path, args.runs, args.domains)
    size_mb = os.path.getsize(path) / 2**20
    start = time.perf_counter()
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--fit", path,
         "--replicates", str(args.replicates)],
        check=True, capture_output=True, text=True)
    total = time.perf_counter() - start
  res = json.loads(child.stdout.strip().splitlines()[-1])
  peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  print()
  print("| runs | domains | replicates (valid) | fit stage wall | process "
        "wall (incl. imports) | peak RSS |")
  print("|---|---|---|---|---|---|")
  print(f"| {n:,} ({size_mb:.1f} MB) | {args.domains} | {args.replicates} "
        f"({res['replicates']}) | {res['wall_s']:.1f} s | {total:.1f} s | "
        f"{peak_mb:.0f} MB |")
  print()
  print(f"noise sd estimate {res['noise_sd']:.4g} (true 0.003); 90% "
        "intervals: " + ", ".join(f"{d} [{lo:.4f}, {hi:.4f}]" for d, (lo, hi)
                                   in res["intervals"].items()))


if __name__ == "__main__":
  main()
