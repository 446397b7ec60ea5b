"""Synthetic truth for testing the mixing maths.

:class:`PowerLawTruth` is a separable loss in absolute tokens. Each evaluated
domain j (training domains, plus optional out-of-domain ones) has

    eval_j(N) = E_j + sum_i K[j, i] (N_i + A_i)^(-B_i)

so the aggregate over target weights t is ``const + sum_i k_i (N_i +
A_i)^(-B_i)`` with ``k = t @ K``: the optimal mixture changes with the budget,
which makes it a ground truth for both DDO and the projection. The paper's
relative surrogate is a special case (:meth:`PowerLawTruth.from_relative`), in
which the DDO fit recovers (a, b) exactly. Noise is Gaussian, relative to the
metric, per run.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from autoscale_jax.mixing import ddo, optimize


@dataclasses.dataclass
class PowerLawTruth:
  """Known per-domain power laws in absolute tokens.

  Attributes:
    domains: training domains (order of A, B and the columns of K).
    A, B: ``[m]`` offsets (tokens) and exponents.
    K: ``[e, m]`` amplitudes; row j is evaluated domain ``eval_domains[j]``.
    E: ``[e]`` irreducible parts.
    eval_domains: evaluated domains (default the training domains).
  """
  domains: list[str]
  A: np.ndarray
  B: np.ndarray
  K: np.ndarray
  E: np.ndarray
  eval_domains: list[str] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self.domains = list(self.domains)
    self.eval_domains = list(self.eval_domains or self.domains)
    self.A, self.B, self.K, self.E = (np.asarray(v, np.float64) for v in (
        self.A, self.B, self.K, self.E))
    m, e = len(self.domains), len(self.eval_domains)
    if self.K.ndim == 1:
      self.K = np.diag(self.K) if e == m else np.tile(self.K, (e, 1))
    if self.E.ndim == 0:
      self.E = np.full(e, float(self.E))
    assert self.A.shape == self.B.shape == (m,), (self.A.shape, m)
    assert self.K.shape == (e, m) and self.E.shape == (e,)

  @classmethod
  def separable(cls, domains: Sequence[str], k, A, B, E=0.0) -> PowerLawTruth:
    """Each domain's eval depends only on its own tokens (K diagonal)."""
    return cls(list(domains), np.asarray(A), np.asarray(B),
               np.diag(np.asarray(k, np.float64)),
               np.broadcast_to(np.asarray(E, np.float64), (len(domains),)))

  @classmethod
  def from_relative(cls, domains: Sequence[str], a, b, base_weights=None,
                    budget: float = 1e6, base_metric: float = 1.0
                    ) -> PowerLawTruth:
    """The paper's surrogate as truth: every eval equals the aggregate.

    ``metric(N) / metric(base) = 1 + sum_i [(x_i + a_i)^(-b_i) - (1 +
    a_i)^(-b_i)]`` with ``x_i = N_i / (w0_i budget)``, so a DDO fit at this
    budget recovers (a_i, b_i) exactly, with ``c_i = 1 - (1 + a_i)^(-b_i)``.
    """
    m = len(domains)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w0 = np.full(m, 1.0 / m) if base_weights is None else np.asarray(
        [base_weights[d] for d in domains] if isinstance(base_weights, Mapping)
        else base_weights, np.float64)
    w0 = w0 / w0.sum()
    scale = w0 * budget
    k = base_metric * np.power(scale, b)
    e_const = base_metric * (1.0 - np.sum(np.power(1.0 + a, -b)))
    return cls(list(domains), a * scale, b, np.tile(k, (m, 1)),
               np.full(m, e_const))

  def evals(self, tokens: Mapping[str, float]) -> dict[str, float]:
    """Noise-free eval of every evaluated domain for one run's tokens."""
    n = np.array([float(tokens[d]) for d in self.domains])
    terms = np.power(n + self.A, -self.B)
    vals = self.E + self.K @ terms
    return dict(zip(self.eval_domains, map(float, vals)))

  def aggregate(self, tokens: Mapping[str, float],
                targets: Mapping[str, float] | None = None) -> float:
    """Weighted mean of the evals over targets (default all, equal)."""
    ev = self.evals(tokens)
    t = targets or {d: 1.0 for d in self.eval_domains}
    return sum(t[d] * ev[d] for d in t) / sum(t.values())

  def amplitudes(self, targets: Mapping[str, float] | None = None
                 ) -> np.ndarray:
    t = targets or {d: 1.0 for d in self.eval_domains}
    tv = np.array([t.get(d, 0.0) for d in self.eval_domains])
    return (tv / tv.sum()) @ self.K

  def optimum(self, budget: float, lo: Mapping[str, float] | None = None,
              hi: Mapping[str, float] | None = None,
              targets: Mapping[str, float] | None = None) -> dict[str, float]:
    """True optimal tokens by domain at ``budget`` (absolute token bounds)."""
    lo_v = np.array([(lo or {}).get(d, 0.0) for d in self.domains])
    hi_v = np.array([(hi or {}).get(d, np.inf) for d in self.domains])
    sol = optimize.solve(self.A, self.B, lo_v, hi_v, total=budget,
                         k=self.amplitudes(targets), domains=self.domains,
                         tol=1e-7)
    return sol.n

  def optimum_relative(self, base_weights: Mapping[str, float], budget: float,
                       lo: float | Mapping[str, float] = 0.2,
                       hi: float | Mapping[str, float] = 3.0,
                       targets: Mapping[str, float] | None = None
                       ) -> dict[str, float]:
    """True optimal weights when n_i = N_i / (w0_i N) is kept in [lo, hi]."""
    w0 = np.array([base_weights[d] for d in self.domains], np.float64)
    w0 = w0 / w0.sum()
    get = lambda v, d: v[d] if isinstance(v, Mapping) else v
    lo_t = {d: get(lo, d) * w * budget for d, w in zip(self.domains, w0)}
    hi_t = {d: get(hi, d) * w * budget for d, w in zip(self.domains, w0)}
    opt = self.optimum(budget, lo_t, hi_t, targets)
    return {d: opt[d] / budget for d in self.domains}


def simulate_runs(plan: Sequence[Mapping], truth: PowerLawTruth,
                  noise: float = 0.0, seed: int = 0,
                  metric: str = "ppl") -> dict:
  """RUNS.json-like dict for a run plan under ``truth``.

  Args:
    plan: runs with ``name``, ``tokens`` and optional ``seed`` (as
      :func:`autoscale_jax.mixing.ddo.plan_runs` returns).
    truth: the known laws.
    noise: relative Gaussian sd per run (one draw per run, shared by its
      domains, so the aggregate is perturbed by ``noise`` relative).
    seed: RNG seed of the noise; runs also mix in their own ``seed``.
    metric: the RUNS.json metric label.
  """
  runs = []
  for i, run in enumerate(plan):
    ev = truth.evals(run["tokens"])
    if noise:
      rng = np.random.default_rng([seed, int(run.get("seed", 0)), i])
      factor = 1.0 + noise * rng.standard_normal()
      ev = {d: v * factor for d, v in ev.items()}
    out = {"name": run["name"], "tokens": dict(run["tokens"]), "eval": ev}
    if "seed" in run:
      out["seed"] = int(run["seed"])
    runs.append(out)
  return {"metric": metric, "runs": runs}


TRUTH_FAMILIES = {
    # name: (A low, A high) in tokens.
    "small_offset": (10.0, 100.0),   # the paper's assumption: its rule is exact
    "large_offset": (1e4, 1e5),      # offsets comparable to the DDO quantities
}


def random_truth(rng: np.random.Generator, domains: Sequence[str],
                 family: str = "small_offset", ref_budget: float = 1e5,
                 factors: tuple[float, float] = (0.2, 3.0),
                 effect: tuple[float, float] = (0.05, 0.3),
                 exponent: tuple[float, float] = (0.2, 0.6)
                 ) -> PowerLawTruth:
  """A random separable truth ``1 + sum_i k_i (N_i + A_i)^(-B_i)``.

  Every evaluated domain equals that aggregate (so any target weighting gives
  the same metric). ``B ~ U(exponent)``, ``A ~ U(TRUTH_FAMILIES[family])``
  tokens, and ``k_i`` such that domain i's drop between ``factors[0]`` and
  ``factors[1]`` times its uniform share of ``ref_budget`` is ``c_i (f0^-B -
  f1^-B)`` with ``c_i ~ U(effect)``: the drop a zero-offset law with the
  amplitude ``c_i`` at the base quantity would give, so both families have
  the same distribution of DDO effects and differ in shape only.
  """
  m = len(domains)
  lo_a, hi_a = TRUTH_FAMILIES[family]
  b = rng.uniform(*exponent, m)
  a = rng.uniform(lo_a, hi_a, m)
  c = rng.uniform(*effect, m)
  n0 = ref_budget / m
  f0, f1 = factors
  drop = np.power(f0 * n0 + a, -b) - np.power(f1 * n0 + a, -b)
  k = c * (np.power(f0, -b) - np.power(f1, -b)) / drop
  return PowerLawTruth(list(domains), a, b, np.tile(k, (m, 1)), np.ones(m))


def simulate_study(truth: PowerLawTruth, budgets: Sequence[float],
                   base_weights: Mapping[str, float] | None = None,
                   factors: Sequence[float] = (0.2, 3.0),
                   seeds: Sequence[int] = (0, 1), noise: float = 0.0,
                   seed: int = 0, bootstrap: int = 200, metric: str = "ppl"
                   ) -> tuple[list[dict], list[dict]]:
  """Simulated DDO studies at each budget: (RUNS.json dicts, DDO optima).

  Each budget's runs get their own noise draws (``seed`` and the budget's
  index); the optima are :func:`ddo.fit_and_solve` on them.
  """
  runs, optima = [], []
  for j, budget in enumerate(budgets):
    plan = ddo.plan_runs(truth.domains, budget, base_weights, factors, seeds)
    r = simulate_runs(plan, truth, noise, seed=seed * 1009 + j, metric=metric)
    runs.append(r)
    optima.append(ddo.fit_and_solve(r, bootstrap=bootstrap, seed=seed))
  return runs, optima
