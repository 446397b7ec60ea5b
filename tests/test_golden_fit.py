"""Golden: one DDO fit + solve of a fixed simulated study gives stored numbers.

Pins what a refactor of the mixing maths must not change: the power-law fits
(a, b, c per domain), the solved weights and the bootstrap intervals, for a
RUNS.json simulated from a fixed separable truth with 2 seeds and noise (so
the least-squares path and the seed-based bootstrap both run). The values are
in ``tests/golden/fit.json``.

When a change is meant to alter these numbers (a new fitter start, another
bootstrap scheme), regenerate the file and commit it with the reason:

    REGEN_GOLDEN=1 python -m pytest tests/test_golden_fit.py
"""

import json
import os

import numpy as np
import pytest

from autoscale_jax.mixing import ddo, simulate

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "fit.json")
DOMAINS = ["code", "books", "wiki", "legal"]
# float64 maths; the margin covers XLA versions reordering a reduction and the
# fitter's convergence tolerance.
RTOL, ATOL = 1e-6, 1e-8
HOW_TO_UPDATE = (
    "If this change is meant to alter the DDO fit's numbers, regenerate the "
    "golden with `REGEN_GOLDEN=1 python -m pytest tests/test_golden_fit.py` "
    "and commit tests/golden/fit.json with the reason in the commit message; "
    "otherwise the change broke the fitter, the solver or the bootstrap.")


def _fit() -> dict[str, float]:
  truth = simulate.PowerLawTruth.separable(
      DOMAINS, k=[3.0, 2.0, 4.0, 2.5], A=[20.0, 50.0, 80.0, 30.0],
      B=[0.3, 0.45, 0.25, 0.5], E=1.0)
  plan = ddo.plan_runs(DOMAINS, 1e5, seeds=(0, 1))
  runs = simulate.simulate_runs(plan, truth, noise=0.002, seed=7)
  mixture = ddo.fit_and_solve(runs, bootstrap=40, seed=3)
  got = {}
  for d in DOMAINS:
    got[f"weight/{d}"] = float(mixture["weights"][d])
    lo, hi = mixture["intervals"][d]
    got[f"interval_lo/{d}"], got[f"interval_hi/{d}"] = float(lo), float(hi)
    for p in ("a", "b", "c"):
      got[f"fit_{p}/{d}"] = float(mixture["fits"][d][p])
  return got


def test_one_fit_matches_golden():
  got = _fit()
  if os.environ.get("REGEN_GOLDEN"):
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
      f.write("\n")
    pytest.skip(f"regenerated {GOLDEN}")
  with open(GOLDEN) as f:
    want = json.load(f)
  assert set(got) == set(want), f"golden keys differ. {HOW_TO_UPDATE}"
  for name, value in want.items():
    assert np.isclose(got[name], value, rtol=RTOL, atol=ATOL), (
        f"{name}: got {got[name]!r}, golden {value!r}. {HOW_TO_UPDATE}")
