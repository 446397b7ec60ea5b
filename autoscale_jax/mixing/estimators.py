"""Estimators of the target-budget mixture from DDO studies at small budgets.

One interface, :func:`estimate`, over a registry of estimators
(:data:`ESTIMATORS`, name -> function). Each takes an :class:`EstimatorInput`
(per DDO budget: the RUNS.json dict, the fitted DDO optimum as
``ddo.fit_and_solve`` returns it, and the base weights) and a target budget,
and returns a mixture dict in the mixture.json format (``budget_tokens``,
``weights``, ``tokens``, plus ``estimator`` and ``notes``).

* ``paper``: the paper's projection rule on the DDO optima
  (:func:`projection.project`, unchanged: the two-budget rule, its continuous
  form, least squares for three or more budgets).
* ``joint``: one law per domain in absolute tokens, shared by every budget,
  fitted to every run of every budget and seed at once, then optimised
  directly at the target (:func:`fit_joint`, :func:`optimize.solve`). The
  aggregate metric of run j is modelled as

      L_j = E_g(j) + sum_i k_i (u_ij + A_i)^(-B_i),   u_ij = N_ij / s_i

  with ``s_i = w0_i * N_min`` (domain i's base tokens at the smallest DDO
  budget, so u is of order 1), one additive offset ``E_g`` per (budget, seed)
  group (what is common to one seed's runs cancels, as in DDO's normalisation
  by its own seed's base run) eliminated in closed form, and ``k, A, B > 0``
  fitted by Levenberg-Marquardt on relative residuals ``(L - L_hat) / L`` in
  float64 from a grid of starts. The target problem keeps every domain at or
  above its smallest observed quantity and, with availability, at or below
  unique tokens x max_epochs.
* ``shrink``: each DDO optimum is first shrunk toward the base mixture by its
  own measured uncertainty, then projected with the paper's rule:
  ``w_shrunk = (1 - l) w + l w0`` with

      l = clip( sum_i sd_i^2 / ||w - w0||^2, 0, 1 ),

  ``sd_i`` the bootstrap standard deviation of weight i, read from the DDO
  interval as ``(hi - lo) / (2 z)`` (z the normal quantile of the interval's
  coverage). If ``w = w* + e`` with noise of total variance ``sum sd^2``,
  ``E ||w - w0||^2 = ||w* - w0||^2 + sum sd^2``, and this l is the plug-in
  estimate of the factor minimising the expected squared error of
  ``(1 - l) w + l w0`` (the positive-part James-Stein form). No interval
  (no noise estimate) means l = 0: exactly the paper's rule.
* ``project_shrink``: the paper's projection first, then the same shrinkage
  of the projected weights toward the base mixture (within availability
  caps), with ``sd_i`` from the projection's Monte Carlo band (which carries
  the rule's amplification of the DDO noise). No band means l = 0.
* ``ddo_last``: the largest budget's DDO weights reused at the target (no
  projection; the paper's "DDO weights at a different budget" baseline).

docs/method.md ("Estimators on the simulator") compares them on simulated
truths at the noise measured on the embedded corpus.

All estimators return weights summing to 1 and tokens summing to the target.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from statistics import NormalDist
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from autoscale_jax import names
from autoscale_jax.errors import UserError
from autoscale_jax.mixing import ddo, optimize, powerlaw, projection
from autoscale_jax.mixing.x64 import float64

# Joint fit: starts (A in units of s_i, B), LM iterations.
_JOINT_START_A = (0.05, 0.5, 3.0)
_JOINT_START_B = (0.2, 0.5, 1.0)
_JOINT_LM_ITERS = 100
_B_MIN, _B_MAX = 0.01, 5.0
_LOG_A_MIN, _LOG_A_MAX = math.log(1e-4), math.log(1e3)  # units of s_i


class EstimatorError(UserError, ValueError):
  """A user error about estimator inputs or names (one line)."""


@dataclasses.dataclass
class EstimatorInput:
  """What every estimator sees: the DDO study at each budget.

  Attributes:
    runs: per DDO budget, the RUNS.json dict (``{"metric", "runs": [...]}``).
    optima: per DDO budget, the fitted mixture dict (``ddo.fit_and_solve``),
      same order as ``runs``.
    base_weights: ``{domain: weight}`` of the base runs (normalised here).
    available_tokens: unique tokens per domain (None: no caps).
    max_epochs: allowed passes over a domain's unique tokens.
  """
  runs: Sequence[Mapping[str, Any]]
  optima: Sequence[Mapping[str, Any]]
  base_weights: Mapping[str, float]
  available_tokens: Mapping[str, float] | None = None
  max_epochs: float = 1.0

  def __post_init__(self):
    if len(self.runs) != len(self.optima):
      raise EstimatorError(
          f"estimator input has {len(self.runs)} runs file(s) but "
          f"{len(self.optima)} DDO optima; give one of each per DDO budget")
    if len(self.optima) < 2:
      raise EstimatorError(
          f"estimator input has {len(self.optima)} DDO budget(s); every "
          "estimator needs at least 2 (add a budget to config.ddo.budgets)")

  @property
  def domains(self) -> list[str]:
    return list(self.optima[0]["weights"])

  def w0(self) -> np.ndarray:
    doms = self.domains
    missing = [d for d in doms if not self.base_weights.get(d, 0) > 0]
    if missing:
      raise EstimatorError("base_weights lacks a weight > 0 for domain(s) "
                           + ", ".join(missing) + "; give one for each")
    v = np.array([float(self.base_weights[d]) for d in doms])
    return v / v.sum()


def _caps(inp: EstimatorInput, target: float) -> np.ndarray | None:
  if inp.available_tokens is None:
    return None
  missing = [d for d in inp.domains if d not in inp.available_tokens]
  if missing:
    raise EstimatorError("available_tokens lacks domain(s) " +
                         ", ".join(missing) + "; count every domain")
  caps = np.array([float(inp.available_tokens[d]) * float(inp.max_epochs)
                   for d in inp.domains])
  if caps.sum() < target * (1 - 1e-12):
    raise EstimatorError(
        f"target {target:.6g} tokens exceeds the available tokens x "
        f"max_epochs={inp.max_epochs:g} of all domains together "
        f"({caps.sum():.6g}); lower project.target_tokens or raise "
        "project.max_epochs")
  return caps


def _finish(domains: Sequence[str], tokens: np.ndarray, target: float,
            name: str, notes: list[str], **extra) -> dict[str, Any]:
  tokens = np.asarray(tokens, np.float64)
  if not np.all(np.isfinite(tokens)) or np.any(tokens < 0) or tokens.sum() <= 0:
    raise RuntimeError(f"estimator {name} produced invalid tokens {tokens}")
  w = tokens / tokens.sum()
  out = {"budget_tokens": float(target),
         "weights": {d: float(v) for d, v in zip(domains, w)},
         "tokens": {d: float(v) * float(target) for d, v in zip(domains, w)},
         "estimator": name}
  out.update(extra)
  out["notes"] = notes
  return out


# ------------------------------------------------------------------ paper


def _paper(inp: EstimatorInput, target: float, **_) -> dict[str, Any]:
  """The paper's rule, exactly :func:`projection.project`."""
  out = dict(projection.project(list(inp.optima), target,
                                inp.available_tokens, inp.max_epochs))
  notes = list(out.pop("notes", []))
  out["estimator"] = "paper"
  out["notes"] = notes
  return out


# ----------------------------------------------------------------- shrink


def shrinkage(optimum: Mapping[str, Any], w0: Mapping[str, float]
              ) -> tuple[float, float, float]:
  """(l, sum of weight variances, ||w - w0||^2) of one DDO optimum.

  The variance of weight i is ``((hi - lo) / (2 z))^2`` from its bootstrap
  interval (coverage ``optimum["bootstrap"]["ci"]``, default 0.9); no
  interval counts as zero variance, so l = 0.
  """
  doms = list(optimum["weights"])
  w = np.array([float(optimum["weights"][d]) for d in doms])
  base = np.array([float(w0[d]) for d in doms])
  base = base / base.sum()
  iv = optimum.get("intervals") or {}
  ci = float((optimum.get("bootstrap") or {}).get("ci", 0.9))
  z = NormalDist().inv_cdf(0.5 + ci / 2)
  var = sum(((float(iv[d][1]) - float(iv[d][0])) / (2 * z)) ** 2
            for d in doms if d in iv)
  dist2 = float(np.sum((w - base) ** 2))
  if var <= 0:
    return 0.0, 0.0, dist2
  lam = 1.0 if dist2 <= 0 else min(1.0, var / dist2)
  return float(lam), float(var), dist2


def shrink_optimum(optimum: Mapping[str, Any], w0: Mapping[str, float],
                   lam: float) -> dict[str, Any]:
  """The optimum with weights and tokens moved a fraction lam toward w0."""
  doms = list(optimum["weights"])
  base = np.array([float(w0[d]) for d in doms])
  base = base / base.sum()
  w = np.array([float(optimum["weights"][d]) for d in doms])
  ws = (1 - lam) * w + lam * base
  budget = float(optimum["budget_tokens"])
  out = {k: v for k, v in optimum.items()
         if k not in ("intervals", "replication_intervals")}
  out["weights"] = {d: float(v) for d, v in zip(doms, ws)}
  out["tokens"] = {d: float(v) * budget for d, v in zip(doms, ws)}
  return out


def _shrink(inp: EstimatorInput, target: float, **_) -> dict[str, Any]:
  doms = inp.domains
  w0 = dict(zip(doms, inp.w0()))
  shrunk, per_budget = [], []
  for opt in inp.optima:
    lam, var, dist2 = shrinkage(opt, w0)
    if lam > 0:
      shrunk.append(shrink_optimum(opt, w0, lam))
    else:  # unchanged input: exactly the paper's rule
      shrunk.append(opt)
    per_budget.append({"budget_tokens": float(opt["budget_tokens"]),
                       "shrinkage": lam, "weight_variance": var,
                       "distance2_to_base": dist2,
                       "has_intervals": bool(opt.get("intervals"))})
  out = dict(projection.project(shrunk, target, inp.available_tokens,
                                inp.max_epochs))
  proj_notes = list(out.pop("notes", []))
  notes = ["Shrinkage toward the base mixture before the paper's rule: "
           "w_shrunk = (1 - l) w + l w0, l = clip(sum_i sd_i^2 / ||w - w0||^2,"
           " 0, 1) per budget, sd_i from the bootstrap interval; l = " +
           ", ".join(f"{p['shrinkage']:.3g} at {p['budget_tokens']:.3g}"
                     for p in per_budget) + "."]
  if any(not p["has_intervals"] for p in per_budget):
    notes.append("Budget(s) without intervals (no noise estimate) were not "
                 "shrunk.")
  out["estimator"] = "shrink"
  out["shrinkage"] = per_budget
  out["notes"] = notes + proj_notes
  return out


def capped_base(w0: np.ndarray, caps: np.ndarray | None, target: float
                ) -> np.ndarray:
  """Tokens of mixture w0 at the target, within caps (the rest re-spread
  over the uncapped domains in proportion to w0)."""
  tokens = w0 * target
  if caps is None:
    return tokens
  free = np.ones(len(w0), bool)
  for _ in range(len(w0)):
    rest = target - caps[~free].sum()
    tokens = np.where(free, w0 * rest / w0[free].sum(), caps)
    over = free & (tokens > caps)
    if not over.any():
      break
    free &= ~over
  return tokens


def _project_shrink(inp: EstimatorInput, target: float, **_
                    ) -> dict[str, Any]:
  """The paper's projection, then shrunk toward the base by its own bands."""
  doms = inp.domains
  w0 = inp.w0()
  caps = _caps(inp, target)
  out = dict(projection.project(list(inp.optima), target,
                                inp.available_tokens, inp.max_epochs))
  proj_notes = list(out.pop("notes", []))
  wp = np.array([out["weights"][d] for d in doms])
  base = capped_base(w0, caps, target) / target
  bands = out.get("bands")
  dist2 = float(np.sum((wp - base) ** 2))
  if bands:
    z = NormalDist().inv_cdf(0.5 + float(bands["level"]) / 2)
    var = float(sum(((hi - lo) / (2 * z)) ** 2
                    for lo, hi in bands["weights"].values()))
    lam = 1.0 if dist2 <= 0 else min(1.0, var / dist2)
    note = (f"Shrinkage after the paper's rule: w = (1 - l) w_projected + l "
            f"w0 with l = clip(sum_i sd_i^2 / ||w_projected - w0||^2, 0, 1) ="
            f" {lam:.3g}, sd_i from the projection's Monte Carlo band "
            f"(sum of variances {var:.3g}, squared distance {dist2:.3g}).")
  else:
    var, lam = 0.0, 0.0
    note = ("No bands (the DDO optima have no intervals): no shrinkage, the "
            "paper's rule as it is.")
  if lam == 0:  # no shrinkage: exactly the paper's rule, not a round trip
    out.update(estimator="project_shrink", shrinkage=0.0,
               projected_variance=var, notes=[note] + proj_notes)
    return out
  tokens = ((1 - lam) * wp + lam * base) * target
  paper_fields = {key: out[key] for key in ("method", "t", "s", "bands",
                                            "capped_domains", "bound_flags")
                  if key in out}
  return _finish(doms, tokens, target, "project_shrink",
                 [note] + proj_notes, shrinkage=lam,
                 projected_variance=var, paper=dict(
                     paper_fields, weights=out["weights"]))


def _ddo_last(inp: EstimatorInput, target: float, **_) -> dict[str, Any]:
  """The largest budget's DDO weights reused at the target (no projection)."""
  doms = inp.domains
  last = max(inp.optima, key=lambda o: float(o["budget_tokens"]))
  w = np.array([float(last["weights"][d]) for d in doms])
  w = w / w.sum()
  caps = _caps(inp, target)
  notes = [f"The DDO optimum at the largest budget "
           f"({float(last['budget_tokens']):.6g} tokens) reused at "
           f"{target:.6g} tokens, without projection (the paper's 'DDO "
           "weights found at a different budget' baseline)."]
  tokens = capped_base(w, caps, target)
  if caps is not None and np.any(tokens < w * target * (1 - 1e-12)):
    notes.append("Availability caps bind; the capped domains' share was "
                 "re-spread over the others in proportion to these weights.")
  return _finish(doms, tokens, target, "ddo_last", notes,
                 source_budget_tokens=float(last["budget_tokens"]))


# ------------------------------------------------------------------ joint


def _joint_terms(theta, u):
  """k, A, B and the terms ``k_i (u_ij + A_i)^(-B_i)`` ``[J, m]``.

  Bounded parametrisation: log k in [-50, 50], log A in [log A_MIN, log
  A_MAX] and B in [B_MIN, B_MAX] through sigmoids (so a degenerate fit ends
  at a finite law, never at k = 0 or A = inf).
  """
  m = u.shape[-1]
  k = jnp.exp(50.0 * jnp.tanh(theta[:m] / 50.0))
  a = jnp.exp(_LOG_A_MIN + (_LOG_A_MAX - _LOG_A_MIN)
              * jax.nn.sigmoid(theta[m:2 * m]))
  b = _B_MIN + (_B_MAX - _B_MIN) * jax.nn.sigmoid(theta[2 * m:])
  return k, a, b, k[None, :] * jnp.power(u + a[None, :], -b[None, :])


def _joint_params_inv(k, a, b):
  """theta of given (k, A, B) (inverse of :func:`_joint_terms`)."""
  logit = lambda p: jnp.log(p) - jnp.log1p(-p)
  lk = 50.0 * jnp.arctanh(jnp.clip(jnp.log(k) / 50.0, -0.999, 0.999))
  pa = (jnp.log(a) - _LOG_A_MIN) / (_LOG_A_MAX - _LOG_A_MIN)
  pb = (b - _B_MIN) / (_B_MAX - _B_MIN)
  return jnp.concatenate([lk, logit(jnp.clip(pa, 1e-6, 1 - 1e-6)),
                          logit(jnp.clip(pb, 1e-6, 1 - 1e-6))])


def _joint_resid(theta, u, y, w, groups):
  """Relative residuals with the group offsets eliminated (closed form)."""
  _, _, _, terms = _joint_terms(theta, u)
  s = jnp.sum(terms, axis=1)
  v = w / (y * y)
  off = (groups.T @ (v * (y - s))) / jnp.maximum(groups.T @ v, 1e-300)
  pred = s + groups @ off
  return jnp.sqrt(w) * (y - pred) / y


def _joint_cost(theta, *args):
  r = _joint_resid(theta, *args)
  return 0.5 * jnp.sum(r * r)


def _joint_init(a0, b0, u, y, w, groups):
  """Start theta at shared (A, B) = (a0, b0): k by weighted least squares."""
  m = u.shape[1]
  x = jnp.power(u + a0, -b0)  # [J, m]
  design = jnp.concatenate([x, groups], axis=1)
  v = w / (y * y)
  ata = design.T @ (v[:, None] * design)
  atb = design.T @ (v * y)
  ridge = 1e-10 * jnp.trace(ata) / ata.shape[0] * jnp.eye(ata.shape[0])
  coef = jnp.linalg.solve(ata + ridge, atb)
  k = coef[:m]
  kpos = jnp.maximum(k, 1e-3 * jnp.max(jnp.abs(k)) + 1e-12)
  return _joint_params_inv(kpos, jnp.full(m, a0), jnp.full(m, b0))


def _joint_resid_jac(theta, u, y, w, groups):
  """Residuals and their analytic Jacobian ``[J, 3m]`` (offsets profiled)."""
  m = u.shape[-1]
  k, a, b, terms = _joint_terms(theta, u)
  z = u + a[None, :]
  s = jnp.sum(terms, axis=1)
  v = w / (y * y)
  gv = jnp.maximum(groups.T @ v, 1e-300)
  off = (groups.T @ (v * (y - s))) / gv
  scale = jnp.sqrt(w) / y
  r = scale * (y - s - groups @ off)
  # d terms / d theta (the k, A and B blocks), each [J, m].
  sig = lambda v: jax.nn.sigmoid(v) * (1 - jax.nn.sigmoid(v))
  dlk = 1.0 - jnp.tanh(theta[:m] / 50.0) ** 2
  dla = (_LOG_A_MAX - _LOG_A_MIN) * sig(theta[m:2 * m])
  db = (_B_MAX - _B_MIN) * sig(theta[2 * m:])
  dk = terms * dlk[None, :]
  da = -b[None, :] * terms * (a * dla)[None, :] / z
  dq = -terms * jnp.log(z) * db[None, :]
  ds = jnp.concatenate([dk, da, dq], axis=1)  # d S_j / d theta
  # The profiled offset moves with S: d pred = dS - G (G^T V dS) / (G^T v).
  dpred = ds - groups @ ((groups.T @ (v[:, None] * ds)) / gv[:, None])
  return r, -scale[:, None] * dpred


def _joint_lm(theta0, u, y, w, groups, iters):
  n = theta0.shape[0]
  return powerlaw.levenberg_marquardt(
      theta0, lambda t: _joint_resid_jac(t, u, y, w, groups),
      lambda t: _joint_cost(t, u, y, w, groups),
      lambda m, v: jsl.cho_solve(jsl.cho_factor(m), v),
      lambda jtj: 1e-9 * jnp.trace(jtj) / n * jnp.eye(n), iters)


def _joint_fit_one(u, y, w, groups, iters):
  starts_a = jnp.asarray(np.repeat(_JOINT_START_A, len(_JOINT_START_B)),
                         u.dtype)
  starts_b = jnp.asarray(np.tile(_JOINT_START_B, len(_JOINT_START_A)),
                         u.dtype)
  theta0 = jax.vmap(_joint_init, in_axes=(0, 0, None, None, None, None))(
      starts_a, starts_b, u, y, w, groups)
  thetas, costs = jax.vmap(_joint_lm, in_axes=(0, None, None, None, None,
                                               None))(
      theta0, u, y, w, groups, iters)
  costs = jnp.where(jnp.isfinite(costs), costs, jnp.inf)
  best = jnp.argmin(costs)
  theta = thetas[best]
  k, a, b, _ = _joint_terms(theta, u)
  rms = jnp.sqrt(2 * costs[best] / jnp.maximum(jnp.sum(w), 1.0))
  return k, a, b, rms


@functools.partial(jax.jit, static_argnames="iters")
def _joint_fit_batch(u, y, w, groups, iters):
  return jax.vmap(_joint_fit_one, in_axes=(0, 0, 0, 0, None))(
      u, y, w, groups, iters)


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, (n - 1).bit_length()))


def fit_joint_arrays(u: np.ndarray, y: np.ndarray, groups: np.ndarray,
                     iters: int = _JOINT_LM_ITERS) -> dict[str, np.ndarray]:
  """Joint fits of a batch of studies (padded arrays).

  Args:
    u: ``[S, J, m]`` per-run quantities in units of s_i (> 0).
    y: ``[S, J]`` aggregate metric per run (> 0).
    groups: ``[S, J]`` integer group per run (budget x seed); -1 = padding.
    iters: Levenberg-Marquardt iterations per start.

  Returns:
    numpy float64 ``k, A, B`` (``[S, m]``, A in units of s_i) and ``rms``
    (``[S]``, the relative residual rms).
  """
  u = np.asarray(u, np.float64)
  y = np.asarray(y, np.float64)
  groups = np.asarray(groups)
  ns, nj, _ = u.shape
  jp = _bucket(nj, 8)
  ng = _bucket(int(groups.max()) + 1, 2)
  up = np.ones((ns, jp, u.shape[2])); yp = np.ones((ns, jp))
  wp = np.zeros((ns, jp)); gp = np.zeros((ns, jp, ng))
  up[:, :nj], yp[:, :nj] = u, y
  real = groups >= 0
  wp[:, :nj] = real
  gi = np.where(real, groups, 0)
  gp[:, :nj] = np.eye(ng)[gi] * real[..., None]
  with float64():
    k, a, b, rms = _joint_fit_batch(jnp.asarray(up), jnp.asarray(yp),
                                    jnp.asarray(wp), jnp.asarray(gp), iters)
    return {"k": np.asarray(k), "A": np.asarray(a), "B": np.asarray(b),
            "rms": np.asarray(rms)}


def _aggregate(run: Mapping[str, Any], targets: Mapping[str, float],
               have: str, want: str) -> float:
  vals = []
  for d, t in targets.items():
    v = float(run["eval"][d])
    if want != have:
      v = math.exp(v) if want == "ppl" else math.log(v)
    vals.append(t * v)
  return sum(vals) / sum(targets.values())


def joint_data(inp: EstimatorInput) -> dict[str, Any]:
  """Runs of every budget as arrays: u ``[J, m]``, y ``[J]``, groups ``[J]``.

  The aggregate follows each budget's optimum: its ``metric`` (ppl or loss)
  and ``target_domains`` (default every training domain, equally).
  """
  doms = inp.domains
  w0 = inp.w0()
  rows, ys, groups = [], [], []
  group_of: dict[tuple[int, int], int] = {}
  budgets = []
  for k, (runs, opt) in enumerate(zip(inp.runs, inp.optima)):
    data = ddo.load_runs(runs, doms)
    want = opt.get("metric") or data.metric
    want = "loss" if want == "loss" else "ppl"
    targets = opt.get("target_domains") or {d: 1.0 for d in doms}
    budgets.append(float(opt["budget_tokens"]))
    for r in data.runs:
      g = group_of.setdefault((k, r["seed"]), len(group_of))
      rows.append([r["tokens"][d] for d in doms])
      ys.append(_aggregate(r, targets, data.metric, want))
      groups.append(g)
  scale = w0 * min(budgets)
  y = np.array(ys)
  if np.any(y <= 0):
    raise EstimatorError("the joint fit needs an aggregate metric > 0 in every"
                         " run; use ddo.metric ppl_seq or ppl_tok")
  return {"u": np.array(rows) / scale[None, :], "y": y,
          "groups": np.array(groups), "scale": scale,
          "budgets": budgets}


def _joint(inp: EstimatorInput, target: float,
           joint_fit: Mapping[str, np.ndarray] | None = None,
           **_) -> dict[str, Any]:
  """Joint fit (or ``joint_fit``: this study's row of
  :func:`fit_joint_arrays`, for batched callers), solved at the target."""
  doms = inp.domains
  data = joint_data(inp)
  if joint_fit is None:
    fit = fit_joint_arrays(data["u"][None], data["y"][None],
                           data["groups"][None])
    joint_fit = {key: v[0] for key, v in fit.items()}
  k, a, b = (np.asarray(joint_fit[key], np.float64) for key in ("k", "A", "B"))
  rms = float(joint_fit["rms"])
  caps = _caps(inp, target)
  scale = data["scale"]
  lo = data["u"].min(axis=0)
  hi = np.full(len(doms), np.inf) if caps is None else caps / scale
  notes = [
      "Joint fit over every run of every DDO budget and seed in absolute "
      "tokens: L = E_g + sum_i k_i (N_i/s_i + A_i)^(-B_i) with one offset "
      "E_g per (budget, seed) and k, A, B shared by all budgets (s_i = w0_i x"
      f" smallest budget); {len(data['y'])} runs, relative residual rms "
      f"{rms:.3g}; optimised directly at {target:.6g} tokens with each "
      "domain at or above its smallest observed quantity."]
  if not (np.all(np.isfinite(k)) and np.all(np.isfinite(a)) and
          np.all(np.isfinite(b))):
    notes.append("The joint fit failed (non-finite parameters); fell back "
                 "to the base mixture.")
    return _finish(doms, capped_base(inp.w0(), caps, target), target,
                   "joint", notes, fallback="base")
  lo = np.minimum(lo, target / scale / len(doms))
  if caps is not None:
    lo = np.minimum(lo, hi)
    notes.append(f"Availability caps (unique tokens x max_epochs="
                 f"{inp.max_epochs:g}) bound each domain from above.")
  try:
    sol = optimize.solve(a, b, lo, hi, total=float(target), k=k, s=scale,
                         domains=doms)
  except (ValueError, optimize.KKTError) as e:
    notes.append(f"The joint optimum could not be solved ({e}); fell back "
                 "to the base mixture.")
    return _finish(doms, capped_base(inp.w0(), caps, target), target,
                   "joint", notes, fallback="base")
  tokens = np.array([sol.n[d] for d in doms]) * scale
  fit_out = {"k": dict(zip(doms, map(float, k))),
             "A_tokens": dict(zip(doms, map(float, a * scale))),
             "B": dict(zip(doms, map(float, b))),
             "relative_rms": rms, "runs": int(len(data["y"])),
             "bound_domains": sol.bound_domains}
  return _finish(doms, tokens, target, "joint", notes, fit=fit_out)


# -------------------------------------------------------------- registry


Estimator = Callable[..., dict]

ESTIMATORS: dict[str, Estimator] = {
    "paper": _paper,
    "joint": _joint,
    "shrink": _shrink,
    "project_shrink": _project_shrink,
    "ddo_last": _ddo_last,
}
NAMES = names.ESTIMATOR_NAMES  # the config checks these without this module
if tuple(ESTIMATORS) != NAMES:
  raise ImportError(f"estimators registry {tuple(ESTIMATORS)} differs from "
                    f"names.ESTIMATOR_NAMES {NAMES}; keep them equal")


def check_name(name: str) -> None:
  """Raises :class:`EstimatorError` naming the allowed estimators."""
  if name not in ESTIMATORS:
    raise EstimatorError(f"unknown estimator {name!r}; allowed: " +
                         ", ".join(NAMES))


def estimate(name: str, inp: EstimatorInput, target_tokens: float,
             **options) -> dict[str, Any]:
  """The mixture recommended by estimator ``name`` at ``target_tokens``.

  ``options`` go to the estimator (e.g. ``joint_fit`` for ``joint``);
  estimators ignore options that are not theirs.
  """
  check_name(name)
  target = float(target_tokens)
  if not (math.isfinite(target) and target > 0):
    raise EstimatorError(f"target_tokens={target_tokens!r} must be a finite "
                         "number > 0")
  out = ESTIMATORS[name](inp, target, **options)
  w = np.array(list(out["weights"].values()))
  if not (np.all(np.isfinite(w)) and abs(w.sum() - 1) < 1e-9):
    raise RuntimeError(f"estimator {name} returned weights {w}")
  return out


def recommend(runs_json: Sequence[Mapping[str, Any]],
              mixtures: Sequence[Mapping[str, Any]],
              base_weights: Mapping[str, float], target_tokens: float,
              available_tokens: Mapping[str, float] | None = None,
              max_epochs: float = 1.0, estimator: str = "paper"
              ) -> dict[str, Any]:
  """The study stages' entry point: one estimator's mixture dict.

  Args:
    runs_json: per DDO budget, the RUNS.json dict.
    mixtures: per DDO budget, the DDO mixture dict (same order).
    base_weights: base mixture of the DDO runs.
    target_tokens: target budget.
    available_tokens: unique tokens per domain (None: no caps).
    max_epochs: allowed passes over a domain's unique tokens.
    estimator: a name in :data:`NAMES` (``config.project.estimator``).
  """
  check_name(estimator)
  inp = EstimatorInput(list(runs_json), list(mixtures), dict(base_weights),
                       available_tokens, max_epochs)
  return estimate(estimator, inp, target_tokens)


def estimate_all(runs_json: Sequence[Mapping[str, Any]],
                 mixtures: Sequence[Mapping[str, Any]],
                 base_weights: Mapping[str, float], target_tokens: float,
                 available_tokens: Mapping[str, float] | None = None,
                 max_epochs: float = 1.0) -> dict[str, dict[str, Any]]:
  """Every registered estimator's recommendation (for a side-by-side).

  An estimator that fails on these inputs gives ``{"estimator", "error"}``
  instead of a mixture, so one failure does not hide the others.
  """
  inp = EstimatorInput(list(runs_json), list(mixtures), dict(base_weights),
                       available_tokens, max_epochs)
  out = {}
  for name in NAMES:
    try:
      out[name] = estimate(name, inp, target_tokens)
    except (UserError, ValueError, RuntimeError) as e:
      out[name] = {"estimator": name, "error": f"{type(e).__name__}: {e}"}
  return out
