"""Noise screening of a study's stored DDO runs, per budget and metric.

For every DDO budget in a workdir's store and each metric (loss, ppl_tok,
ppl_seq, bpb): the spread across seeds of one run's log aggregate (raw) and of
log y (y = aggregate / the same seed's base aggregate, what the fit sees),
their ratio (1.41 for independent runs; lower means the common random numbers
pay), the mean 0.2x->3x effect, the domain signal and its signal / noise
(``mixing/noise.py``), the paired noise model's own and shared parts
(``ddo.paired_noise``), and the median 90% interval width of the DDO weights
with the ``replicates`` and the ``paired`` bootstrap. docs/results.md's
screening table was made with it:

    PYTHONPATH=$PWD .venv/bin/python bench/screen_noise.py workdir/demo [...]
"""

from __future__ import annotations

import collections
import glob
import json
import math
import sys

import numpy as np

from autoscale_jax.experiments import store as store_lib
from autoscale_jax.mixing import ddo, noise

METRICS = ("loss", "ppl_tok", "ppl_seq", "bpb")


def load_ddo_records(workdir: str) -> dict[str, list[dict]]:
  """``{budget prefix "b<k>": [store record with the prefix cut]}``."""
  by_budget = collections.defaultdict(list)
  for path in glob.glob(f"{workdir}/store/**/*.json", recursive=True):
    try:
      rec = json.load(open(path))
    except (OSError, json.JSONDecodeError):
      continue
    name = rec.get("name", "") if isinstance(rec, dict) else ""
    if "final_eval" in rec and name[:1] == "b" and "_" in name:
      k = name.split("_")[0]
      by_budget[k].append(dict(rec, name=name[len(k) + 1:]))
  return dict(by_budget)


def _pooled_sd(groups) -> float:
  ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2))
           for v in groups.values() if len(v) > 1)
  dof = sum(len(v) - 1 for v in groups.values() if len(v) > 1)
  return math.sqrt(ss / dof) if dof else float("nan")


def _median_width(mix) -> float:
  iv = mix.get("intervals") or {}
  return float(np.median([hi - lo for lo, hi in iv.values()])) if iv else \
      float("nan")


def screen(records: list[dict], metric: str, bootstrap: int = 200) -> dict:
  """The screening numbers of one budget's runs for one metric."""
  data = ddo.load_runs(store_lib.to_runs_json(records, metric))
  agg, base, _, _ = ddo.aggregates(data)
  raw, logy = collections.defaultdict(list), collections.defaultdict(list)
  for r in data.runs:
    if r["domain"] is None:
      continue
    key = (r["domain"], round(r["x"], 9))
    raw[key].append(math.log(agg[r["name"]]))
    logy[key].append(math.log(agg[r["name"]] / base[r["seed"]]))
  nz = noise.measure_noise(data)
  paired = ddo.paired_noise(data, agg, base) or {}
  rep = ddo.fit_and_solve(data, bootstrap=bootstrap, seed=0)
  pai = ddo.fit_and_solve(data, bootstrap=bootstrap, seed=0,
                          noise_model="paired")
  raw_sd, y_sd = _pooled_sd(raw), _pooled_sd(logy)
  return {"raw_sd": raw_sd, "y_sd": y_sd, "ratio": y_sd / raw_sd,
          "effect": nz["common_effect"], "domain_signal": nz["domain_signal"],
          "signal_to_noise": nz["signal_to_noise"],
          "own_sd": paired.get("sd"), "shared_sd": paired.get("shared_sd"),
          "width_replicates": _median_width(rep),
          "width_paired": _median_width(pai), "weights": pai["weights"]}


def main(argv: list[str]) -> None:
  for workdir in argv:
    for k, records in sorted(load_ddo_records(workdir).items()):
      print(f"== {workdir} budget {k}: {len(records)} runs")
      print("metric    raw_sd    y_sd  ratio  effect  signal  S/N  own_sd "
            "shared  width(repl)  width(paired)  weights")
      for metric in METRICS:
        r = screen(records, metric)
        print(f"{metric:8} {r['raw_sd']:7.4f} {r['y_sd']:7.4f} "
              f"{r['ratio']:6.2f} {r['effect']:7.4f} {r['domain_signal']:7.4f}"
              f" {r['signal_to_noise']:5.2f} {r['own_sd']:7.4f} "
              f"{r['shared_sd']:6.4f} {r['width_replicates']:11.3f} "
              f"{r['width_paired']:14.3f}  " + " ".join(
                  f"{d}={w:.3f}" for d, w in r["weights"].items()))


if __name__ == "__main__":
  main(sys.argv[1:])
