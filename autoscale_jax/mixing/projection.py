"""Stage 2 of AutoScale: project DDO optima to a larger training budget.

The paper's rule (../shared/PAPER.md, "Stage 2: projection") works on
ABSOLUTE per-domain token counts. With optima N1* (sum N1) and N2* (sum N2)::

    N_i(t) = N1*_i * (N2*_i / N1*_i) ** t,   sum_i N_i(t) = target

t = 1 gives N2*, t = 2 gives N2*^2 / N1*, t = 1/2 the geometric mean. With
three or more budgets every log N_i* is fitted as ``alpha_i + beta_i * s_k``
with one shared scale parameter s_k per budget (see `fit_log_linear`).

Both cases reduce to one problem: solve ``S(s) = sum_i exp(la_i + b_i s) =
target``. S is a sum of exponentials in s with positive coefficients, hence
convex (and so is log S: its second derivative is the softmax-weighted
variance of b). When every b_i >= 0, S is increasing everywhere and the root
is unique. When some domains shrink (b_i < 0) and others grow, S first falls
then rises: it has one minimum at s_min (where the softmax-weighted mean of b
is zero). Since the inputs are ordered by budget, the trajectory runs through
increasing budgets on the branch s >= s_min, where S is strictly increasing;
the root is taken there and is unique. A target below S(s_min) cannot be
reached by the rule and is an error.

Beyond the paper (always reported in "notes"): availability caps with
re-solving on the free domains, flags for domains pinned at a DDO bound,
confidence bands carried from the DDO intervals, and a held-out-budget check.

All maths runs in float64 inside :func:`x64.float64` (a scoped
``jax.enable_x64``); the global JAX setting is never changed.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoscale_jax import errors
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.fileio import atomic_write_text
from autoscale_jax.mixing import x64

_MAX_DOUBLINGS = 64
_BISECT_ITERS = 200
_TRAJECTORY_POINTS = 24
_BAND_DRAWS = 512
_BAND_LEVEL = 0.9

# Status codes of the jitted solver.
_OK = 0
_NO_GROWTH = 1
_BELOW_MIN = 2
_NOT_BRACKETED = 3
_ALL_CAPPED = 4


class ProjectionError(errors.UserError, ValueError):
  """A one-line user error about projection inputs."""


# --------------------------------------------------------------------------
# Jitted core: 1-D root find on the increasing branch, with caps.
# --------------------------------------------------------------------------


def _expand(pred, base, direction):
  """Finds x = base + direction * 2^k (k = 0..64) with pred(x) true."""

  def cond(c):
    k, x = c
    return (k < _MAX_DOUBLINGS) & ~pred(x)

  def body(c):
    k, _ = c
    return k + 1, base + direction * jnp.exp2(k + 1.0)

  _, x = jax.lax.while_loop(cond, body, (jnp.asarray(0.0), base + direction))
  return x, pred(x)


def _bisect(fn, lo, hi):
  """Bisection for an increasing fn with fn(lo) <= 0 <= fn(hi)."""

  def body(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    neg = fn(mid) <= 0
    return jnp.where(neg, mid, lo), jnp.where(neg, hi, mid)

  lo, hi = jax.lax.fori_loop(0, _BISECT_ITERS, body, (lo, hi))
  return 0.5 * (lo + hi)


def _solve_scale(log_a, b, free, log_target):
  """Solves log sum_{i free} exp(log_a_i + b_i s) = log_target for s.

  Returns (s, s_min, log_s_min_total, status); s_min is -inf when S has no
  interior minimum (every free b_i >= 0).
  """
  la = jnp.where(free, log_a, -jnp.inf)
  bb = jnp.where(free, b, 0.0)
  zero = jnp.asarray(0.0, la.dtype)

  def f(s):
    return jax.nn.logsumexp(la + bb * s) - log_target

  def g(s):  # d/ds log S(s): softmax-weighted mean of b, increasing in s
    return jnp.sum(jax.nn.softmax(la + bb * s) * bb)

  bmax = jnp.max(jnp.where(free, b, -jnp.inf))
  bmin = jnp.min(jnp.where(free, b, jnp.inf))
  has_min = (bmin < 0) & (bmax > 0)

  # Minimum of S (only meaningful when has_min).
  gl, okl = _expand(lambda x: g(x) <= 0, zero, -1.0)
  gh, okh = _expand(lambda x: g(x) >= 0, zero, 1.0)
  s_min = _bisect(g, gl, gh)
  s_min = jnp.where(has_min & okl & okh, s_min, -jnp.inf)

  # Lower bracket of the root on the increasing branch.
  lo_free, ok_lo_free = _expand(lambda x: f(x) <= 0, zero, -1.0)
  lo = jnp.where(has_min, s_min, lo_free)
  ok_lo = jnp.where(has_min, f(jnp.where(has_min, s_min, zero)) <= 0,
                    ok_lo_free)
  hi, ok_hi = _expand(lambda x: f(x) >= 0, jnp.where(ok_lo, lo, zero), 1.0)
  s = _bisect(f, lo, hi)
  status = jnp.where(
      bmax <= 0, _NO_GROWTH,
      jnp.where(~ok_lo, _BELOW_MIN, jnp.where(~ok_hi, _NOT_BRACKETED, _OK)))
  log_min_total = jnp.where(has_min, f(jnp.where(has_min, s_min, zero)),
                            -jnp.inf) + log_target
  return s, s_min, log_min_total, status


def _capped_core(log_a, b, log_cap, log_target):
  """Projection with availability caps, re-solving on the free domains.

  Domains whose projected quantity exceeds the cap are pinned at the cap and
  the remaining budget is re-solved on the others along the same rule, until
  no free domain exceeds its cap (at most m rounds).
  """
  m = log_a.shape[0]
  target = jnp.exp(log_target)
  caps = jnp.exp(log_cap)

  def solve(free):
    pinned_total = jnp.sum(jnp.where(free, 0.0, caps))
    remaining = target - pinned_total
    log_rem = jnp.log(jnp.maximum(remaining, 1e-300))
    s, s_min, log_min_total, status = _solve_scale(log_a, b, free, log_rem)
    status = jnp.where(jnp.any(free) & (remaining > 0), status, _ALL_CAPPED)
    return s, s_min, log_min_total, status

  def cond(c):
    k, _, changed, *_ = c
    return changed & (k <= m)

  def body(c):
    k, free, _, *_ = c
    s, s_min, log_min_total, status = solve(free)
    viol = free & (log_a + b * s > log_cap) & (status == _OK)
    return (k + 1, free & ~viol, jnp.any(viol), s, s_min, log_min_total,
            status)

  init = (jnp.asarray(0), jnp.ones(m, bool), jnp.asarray(True),
          jnp.asarray(0.0, log_a.dtype), jnp.asarray(0.0, log_a.dtype),
          jnp.asarray(0.0, log_a.dtype), jnp.asarray(_OK))
  _, free, _, s, s_min, log_min_total, status = jax.lax.while_loop(
      cond, body, init)
  tokens = jnp.where(free, jnp.exp(log_a + b * s), caps)
  return tokens, s, free, s_min, log_min_total, status


_capped_jit = jax.jit(_capped_core)
_capped_batch_targets = jax.jit(jax.vmap(_capped_core, in_axes=(None, None,
                                                                None, 0)))
_capped_batch_models = jax.jit(jax.vmap(_capped_core, in_axes=(0, 0, None,
                                                               None)))


# --------------------------------------------------------------------------
# Inputs.
# --------------------------------------------------------------------------


def _name(opt: Mapping[str, Any], k: int) -> str:
  return str(opt.get("_path", f"optimum[{k}]"))


def _tokens_of(opt: Mapping[str, Any], name: str) -> dict[str, float]:
  """Absolute per-domain tokens of one optimum, validated."""
  if not isinstance(opt, Mapping):
    raise ProjectionError(f"{name}: expected a JSON object (mixture.json)")
  tokens = opt.get("tokens")
  if tokens is None:
    weights, budget = opt.get("weights"), opt.get("budget_tokens")
    if weights is None or budget is None:
      raise ProjectionError(
          f"{name}: missing field 'tokens' (or 'weights' with "
          f"'budget_tokens')")
    if not isinstance(weights, Mapping) or not weights:
      raise ProjectionError(f"{name}: field 'weights' must be a non-empty "
                            f"object {{domain: weight}}")
    _check_number(budget, f"{name}: field 'budget_tokens'")
    total_w = sum(_check_number(w, f"{name}: weight of domain {d!r}")
                  for d, w in weights.items())
    if total_w <= 0:
      raise ProjectionError(f"{name}: weights sum to {total_w}; need > 0")
    tokens = {d: float(w) / total_w * float(budget) for d, w in
              weights.items()}
  if not isinstance(tokens, Mapping) or not tokens:
    raise ProjectionError(f"{name}: field 'tokens' must be a non-empty "
                          f"object {{domain: tokens}}")
  out = {}
  for d, v in tokens.items():
    v = _check_number(v, f"{name}: tokens of domain {d!r}")
    if v <= 0:
      raise ProjectionError(
          f"{name}: domain {d!r} has tokens {v:g}; the projection needs every "
          f"quantity > 0 (its log-linear rule is undefined at zero)")
    out[str(d)] = v
  _check_agreement(opt, out, name)
  return out


_AGREE_REL = 1e-6  # tokens sum vs budget_tokens, relative
_AGREE_ABS = 1e-6  # weights vs tokens / budget, absolute


def _check_agreement(opt: Mapping[str, Any], tokens: Mapping[str, float],
                     name: str) -> None:
  """Raises if an optimum's weights, tokens and budget_tokens disagree.

  Tokens must sum to budget_tokens (relative 1e-6) and every weight must be
  tokens / budget (absolute 1e-6); weights given alone must sum to 1.
  """
  total = sum(tokens.values())
  budget = opt.get("budget_tokens")
  if budget is not None:
    budget = _check_number(budget, f"{name}: field 'budget_tokens'")
    if not abs(total - budget) <= _AGREE_REL * abs(budget):
      rel = abs(total - budget) / abs(budget) if budget else math.inf
      raise ProjectionError(
          f"{name}: 'tokens' sum to {total:.9g} but 'budget_tokens' is "
          f"{budget:.9g} (relative difference {rel:.2g} > {_AGREE_REL:g}); "
          "correct one of them or write the file again with --stage=fit")
  else:
    budget = total
  weights = opt.get("weights")
  if weights is None:
    return
  if not isinstance(weights, Mapping):
    raise ProjectionError(f"{name}: field 'weights' must be an object "
                          "{domain: weight}")
  if set(map(str, weights)) != set(tokens):
    missing = sorted(set(tokens) - set(map(str, weights)))
    extra = sorted(set(map(str, weights)) - set(tokens))
    raise ProjectionError(
        f"{name}: 'weights' and 'tokens' name different domains ("
        + "; ".join(p for p in (
            "weights lack " + ", ".join(missing) if missing else "",
            "weights add " + ", ".join(extra) if extra else "") if p)
        + "); correct the file or write it again with --stage=fit")
  for d, w in weights.items():
    w = _check_number(w, f"{name}: weight of domain {d!r}")
    share = tokens[str(d)] / budget
    if abs(w - share) > _AGREE_ABS:
      raise ProjectionError(
          f"{name}: weight of domain {d!r} is {w:.9g} but tokens / "
          f"budget_tokens gives {share:.9g} (difference {abs(w - share):.2g} "
          f"> {_AGREE_ABS:g}); correct one of them or write the file again "
          "with --stage=fit")


def _check_number(v: Any, what: str) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)) or (
      not math.isfinite(float(v))):
    raise ProjectionError(f"{what} is {v!r}; expected a finite number")
  return float(v)


def load_optima(paths: Sequence[str], names: Sequence[str] | None = None
                ) -> list[dict[str, Any]]:
  """Reads and validates DDO optima (mixture.json files).

  Args:
    paths: two or more mixture.json paths.
    names: how the projection's outputs (``inputs``, notes) name each input,
      e.g. relative to a study's workdir; default its path. Errors while
      loading name the path.

  Returns:
    The mixture dicts, each with "_path" (its name) added, in the given
    order.

  Raises:
    ProjectionError: unreadable file, missing fields, a zero or negative
      quantity, different domain sets, or identical budgets.
  """
  optima = []
  for path in paths:
    try:
      opt = json.loads(fileio.read_text(path))
    except OSError as e:
      raise ProjectionError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
      raise ProjectionError(f"{path}: not valid JSON ({e.msg} at line "
                            f"{e.lineno})") from None
    if not isinstance(opt, dict):
      raise ProjectionError(f"{path}: expected a JSON object (mixture.json)")
    opt = dict(opt)
    opt["_path"] = str(path)
    optima.append(opt)
  _validated(optima)
  if names is not None:
    for opt, name in zip(optima, names, strict=True):
      opt["_path"] = str(name)
  return optima


def _validated(optima: Sequence[Mapping[str, Any]]):
  """Returns (domains, budgets, tokens_KxM, names, order) sorted by budget."""
  if len(optima) < 2:
    raise ProjectionError(
        f"the projection needs DDO optima at two or more budgets, got "
        f"{len(optima)}")
  names = [_name(o, k) for k, o in enumerate(optima)]
  toks = [_tokens_of(o, n) for o, n in zip(optima, names)]
  domains = list(toks[0])
  for n, t in zip(names[1:], toks[1:]):
    missing = sorted(set(domains) - set(t))
    extra = sorted(set(t) - set(domains))
    if missing or extra:
      parts = []
      if missing:
        parts.append("lacks " + ", ".join(missing))
      if extra:
        parts.append("adds " + ", ".join(extra))
      raise ProjectionError(
          f"{n} has a different domain set from {names[0]}: it "
          + " and ".join(parts))
  budgets = [sum(t.values()) for t in toks]
  order = sorted(range(len(optima)), key=lambda k: budgets[k])
  for a, b in zip(order, order[1:]):
    if math.isclose(budgets[a], budgets[b], rel_tol=1e-9):
      raise ProjectionError(
          f"{names[a]} and {names[b]} have the same budget "
          f"({budgets[a]:.6g} tokens); the projection needs distinct budgets")
  mat = np.array([[toks[k][d] for d in domains] for k in order], np.float64)
  return (domains, np.array([budgets[k] for k in order]), mat,
          [names[k] for k in order], order)


def _interval_of(val: Any) -> tuple[float, float] | None:
  if isinstance(val, Mapping):
    lo = next((val[k] for k in ("lo", "low", "lower") if k in val), None)
    hi = next((val[k] for k in ("hi", "high", "upper") if k in val), None)
  elif isinstance(val, (list, tuple)) and len(val) == 2:
    lo, hi = val
  else:
    return None
  try:
    lo, hi = float(lo), float(hi)
  except (TypeError, ValueError):
    return None
  if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or hi <= 0:
    return None
  return max(lo, 0.0), hi


# --------------------------------------------------------------------------
# Fits.
# --------------------------------------------------------------------------


def two_budget_quantities(n1: Mapping[str, float], n2: Mapping[str, float],
                          t: float) -> dict[str, float]:
  """The paper's rule at a given t: N_i(t) = N1_i (N2_i / N1_i)^t."""
  return {d: float(n1[d]) * (float(n2[d]) / float(n1[d]))**t for d in n1}


def fit_log_linear(tokens_KxM: np.ndarray) -> dict[str, np.ndarray]:
  """Least-squares fit of log N_ik = alpha_i + beta_i s_k (shared s_k).

  The scale parameters s_k are solved jointly with alpha and beta: the
  per-domain-centred log quantities are approximated by their best rank-1
  matrix (SVD, Eckart-Young), which minimises the total squared residual
  sum_ik (log N_ik - alpha_i - beta_i s_k)^2. Under the paper's separable
  power-law model the true s is -log(lambda) (lambda the KKT multiplier),
  which is unobserved, so it is estimated rather than set to log(budget).
  Normalisation: s = 0 at the smallest budget and s = 1 at the largest; with
  two budgets this is exactly the paper's t.

  Args:
    tokens_KxM: absolute quantities, rows sorted by increasing budget.

  Returns:
    {"alpha": [M], "beta": [M], "s": [K], "residuals": [K, M] (log space)}.
  """
  x = np.log(np.asarray(tokens_KxM, np.float64))
  k = x.shape[0]
  if k == 2:
    s = np.array([0.0, 1.0])
  else:
    xc = x - x.mean(axis=0, keepdims=True)  # centred over budgets
    u = np.linalg.svd(xc, full_matrices=False)[0][:, 0]  # s up to affine map
    span = u[-1] - u[0]
    if abs(span) < 1e-12 * max(1.0, np.abs(u).max()):
      raise ProjectionError(
          "the optima at the smallest and largest budgets coincide in log "
          "space; the shared scale parameter is undefined")
    s = (u - u[0]) / span
  sc = s - s.mean()
  beta = (sc @ (x - x.mean(axis=0))) / (sc @ sc)
  alpha = x.mean(axis=0) - beta * s.mean()
  resid = x - (alpha[None, :] + s[:, None] * beta[None, :])
  return {"alpha": alpha, "beta": beta, "s": s, "residuals": resid}


# --------------------------------------------------------------------------
# Projection.
# --------------------------------------------------------------------------


def _solve_status_message(status: int, target: float, s_min: float,
                          log_min_total: float, domains: Sequence[str],
                          beta: np.ndarray, var: str) -> str:
  if status == _NO_GROWTH:
    return (f"no domain grows along the fitted trajectory (every N_i shrinks "
            f"with {var}); the rule cannot reach {target:.6g} tokens")
  if status == _BELOW_MIN:
    shrink = [d for d, b in zip(domains, beta) if b < 0]
    if math.isfinite(s_min):
      return (f"target {target:.6g} tokens is unreachable: the trajectory's "
              f"smallest total is {math.exp(log_min_total):.6g} tokens at "
              f"{var}={s_min:.4g} (domains shrinking with the budget: "
              f"{', '.join(shrink)})")
    return (f"target {target:.6g} tokens is below what the trajectory can "
            f"reach (it only tends to the total of the non-growing domains)")
  if status == _NOT_BRACKETED:
    return (f"target {target:.6g} tokens needs |{var}| > 2^64; the optima "
            f"barely differ between budgets")
  if status == _ALL_CAPPED:
    return (f"target {target:.6g} tokens exceeds the available tokens of all "
            f"domains together")
  return f"projection failed with status {status}"


def _run_core(log_a, b, log_cap, target):
  with x64.float64():
    out = _capped_jit(jnp.asarray(log_a, jnp.float64),
                      jnp.asarray(b, jnp.float64),
                      jnp.asarray(log_cap, jnp.float64),
                      jnp.asarray(math.log(target), jnp.float64))
    tokens, s, free, s_min, log_min_total, status = jax.device_get(out)
  return (np.asarray(tokens, np.float64), float(s), np.asarray(free),
          float(s_min), float(log_min_total), int(status))


def _model(tokens_KxM: np.ndarray):
  """(log_a, b, fit) of the projection rule for the given optima."""
  if tokens_KxM.shape[0] == 2:
    log_a = np.log(tokens_KxM[0])
    b = np.log(tokens_KxM[1] / tokens_KxM[0])
    return log_a, b, None
  fit = fit_log_linear(tokens_KxM)
  return fit["alpha"], fit["beta"], fit


def _project_tokens(tokens_KxM: np.ndarray, target: float,
                    domains: Sequence[str], log_cap: np.ndarray | None = None):
  """Projected tokens (exactly summing to target), s, free mask."""
  log_a, b, _ = _model(tokens_KxM)
  if log_cap is None:
    log_cap = np.full(len(domains), np.inf)
  var = "t" if tokens_KxM.shape[0] == 2 else "s"
  tokens, s, free, s_min, log_min_total, status = _run_core(
      log_a, b, log_cap, target)
  if status != _OK:
    raise ProjectionError(_solve_status_message(
        status, target, s_min, log_min_total, domains, b, var))
  fixed = tokens[~free].sum()
  tokens = np.where(free, tokens * (target - fixed) / tokens[free].sum(),
                    tokens)
  return tokens, s, free


def _dict(domains: Sequence[str], values) -> dict[str, float]:
  return {d: float(v) for d, v in zip(domains, values)}


def project(optima: Sequence[Mapping[str, Any]], target_tokens: float,
            available_tokens: Mapping[str, float] | None = None,
            max_epochs: float = 1.0,
            allow_interpolation: bool = False) -> dict[str, Any]:
  """Projects DDO optima at two or more budgets to the target budget.

  Args:
    optima: mixture dicts (mixture.json content) at distinct budgets.
    target_tokens: total training tokens of the target run.
    available_tokens: unique training tokens per domain; with it, no domain
      is asked for more than available * max_epochs (beyond the paper).
    max_epochs: how many passes over a domain's unique tokens are allowed.
    allow_interpolation: allow a target at or below the largest input
      budget (the rule is meant to extrapolate to larger budgets).

  Returns:
    mixture.json content: "budget_tokens", "weights", "tokens", "method",
    "t" (two budgets) or "s" (least squares; after any capping), "fit"
    (least squares: alpha, beta, s per budget, per-domain log residuals),
    "trajectory" (weights over a geometric grid of budgets from the smallest
    input to the target), "capped_domains", "caps" and "uncapped" (with
    available_tokens), "bound_flags" ({domain: [{budget_tokens, bound,
    path}]}), "bands" (None without intervals), "heldout_check" (None with
    two budgets), "inputs", "extrapolation_factor", "notes" (plain sentences,
    every step beyond the paper named).

  Raises:
    ProjectionError: bad inputs, a target not above the inputs' budgets
      (without allow_interpolation), an unreachable target, or a result
      that overflows.
  """
  target = _check_number(target_tokens, "target_tokens")
  if target <= 0:
    raise ProjectionError(f"target_tokens is {target:g}; must be > 0")
  domains, budgets, mat, names, order = _validated(optima)
  _check_target_range(target, budgets, names, allow_interpolation)
  sorted_optima = [optima[k] for k in order]
  k_budgets = len(budgets)
  method = "two-budget" if k_budgets == 2 else "least-squares"
  var = "t" if k_budgets == 2 else "s"
  notes: list[str] = []

  # Availability caps.
  log_cap = np.full(len(domains), np.inf)
  caps: dict[str, float] | None = None
  if available_tokens is not None:
    epochs = _check_number(max_epochs, "max_epochs")
    if epochs <= 0:
      raise ProjectionError(f"max_epochs is {epochs:g}; must be > 0")
    missing = [d for d in domains if d not in available_tokens]
    if missing:
      raise ProjectionError("available_tokens lacks domain(s) "
                            + ", ".join(missing))
    caps = {}
    for d in domains:
      v = _check_number(available_tokens[d],
                        f"available tokens of domain {d!r}")
      if v <= 0:
        raise ProjectionError(f"available tokens of domain {d!r} is {v:g}; "
                              f"must be > 0")
      caps[d] = v * epochs
    if sum(caps.values()) < target * (1 - 1e-12):
      raise ProjectionError(
          f"target {target:.6g} tokens exceeds the available tokens x "
          f"max_epochs={epochs:g} of all domains together "
          f"({sum(caps.values()):.6g})")
    log_cap = np.log(np.array([caps[d] for d in domains]))

  # Point projection, uncapped first (the paper's rule), then capped.
  log_a, b, fit = _model(mat)
  tokens_raw, s_raw, _ = _project_tokens(mat, target, domains)
  if caps is not None:
    tokens, s, free = _project_tokens(mat, target, domains, log_cap)
  else:
    tokens, s, free = tokens_raw, s_raw, np.ones(len(domains), bool)
  capped = [d for d, f in zip(domains, free) if not f]

  if k_budgets == 2:
    notes.append(
        f"Two-budget rule of the paper on absolute tokens: N_i(t) = N1*_i "
        f"(N2*_i/N1*_i)^t with t = {s_raw:.6g} solved so that the total is "
        f"{target:.6g} tokens (t = 2 is the paper's N2*^2/N1*).")
  else:
    notes.append(
        f"Least-squares fit of log N_i* = alpha_i + beta_i s over "
        f"{k_budgets} budgets with the scale parameter s solved jointly "
        f"(rank-1 SVD; s = 0 at the smallest and 1 at the largest budget); "
        f"projected at s = {s_raw:.6g}. The paper states the fit but not the "
        f"choice of s (our choice).")
    if np.any(np.diff(fit["s"]) <= 0):
      notes.append("The fitted scale parameter is not increasing with the "
                   "budget: the optima do not follow one trajectory well.")
  shrinking = [d for d, bi in zip(domains, b) if bi < 0]
  if shrinking and any(bi > 0 for bi in b):
    notes.append(
        "Domain(s) " + ", ".join(shrinking) + " shrink as the budget grows; "
        f"the total is not monotone in {var}, so the root was taken on the "
        f"increasing branch (the minimum of the total is the branch point).")

  out: dict[str, Any] = {
      "budget_tokens": target,
      "weights": _dict(domains, tokens / target),
      "tokens": _dict(domains, tokens),
      "method": method,
      var: s,
      "inputs": [{"path": n, "budget_tokens": float(bt)}
                 for n, bt in zip(names, budgets)],
      "extrapolation_factor": target / float(budgets[-1]),
  }
  if fit is not None:
    out["fit"] = {
        "alpha": _dict(domains, fit["alpha"]),
        "beta": _dict(domains, fit["beta"]),
        "s": [float(v) for v in fit["s"]],
        "residuals_log": {d: [float(v) for v in fit["residuals"][:, i]]
                          for i, d in enumerate(domains)},
        "max_abs_residual_log": _dict(domains,
                                      np.abs(fit["residuals"]).max(axis=0)),
    }

  # Caps.
  out["capped_domains"] = capped
  if caps is not None:
    out["caps"] = {"max_epochs": float(max_epochs), "tokens": caps}
    out["uncapped"] = {"weights": _dict(domains, tokens_raw / target),
                       var: s_raw}
    if capped:
      notes.append(
          "Beyond the paper: availability caps (unique tokens x max_epochs="
          f"{float(max_epochs):g}) bind for " + ", ".join(
              _cap_phrase(d, tokens_raw[domains.index(d)], caps[d])
              for d in capped)
          + f"; the rest of the budget was re-solved on the free domains "
          f"along the same rule ({var} = {s:.6g}).")
    else:
      notes.append(
          "Beyond the paper: availability caps (unique tokens x max_epochs="
          f"{float(max_epochs):g}) were checked; none binds at the target.")

  # Bound flags.
  flags: dict[str, list[dict[str, Any]]] = {}
  for opt, n, bt in zip(sorted_optima, names, budgets):
    for d, which in records.bound_domains(opt).items():
      if d not in domains:
        continue
      flags.setdefault(d, []).append({"budget_tokens": float(bt),
                                      "bound": which, "path": n})
  out["bound_flags"] = flags
  if flags:
    notes.append(
        "Beyond the paper: " + ", ".join(sorted(flags)) + " sat at a DDO "
        "bound at some input budget; the projection rule is not valid for "
        "them (a domain pinned at both budgets keeps a constant share, one "
        "pinned only at the larger budget is driven towards zero).")

  # Trajectory.
  out["trajectory"] = _trajectory(mat, budgets, target, domains, log_cap,
                                  notes, var)

  # Bands.
  out["bands"] = _bands(sorted_optima, names, domains, budgets, target,
                        log_cap, notes)

  # Held-out check.
  if k_budgets >= 3:
    out["heldout_check"] = heldout_check(mat, budgets, domains)
    errs = [c["max_abs_relative_error"] for c in out["heldout_check"]]
    worst = max((e for e in errs if e is not None), default=None)
    failed = sum(e is None for e in errs)
    notes.append(
        "Held-out-budget check: each input budget was predicted from the "
        "others; the worst per-domain relative error is "
        + ("n/a" if worst is None else f"{worst:.3g}")
        + (f" ({failed} budget(s) could not be predicted)" if failed else "")
        + " (see heldout_check).")
  else:
    out["heldout_check"] = None
  if target <= float(budgets[-1]):
    notes.append(
        f"Interpolation: the target {target:.6g} tokens is not above the "
        f"largest input budget {float(budgets[-1]):.6g} "
        "(allow_interpolation=True).")
  out["notes"] = notes
  _check_finite(out, target)
  return out


def _check_target_range(target: float, budgets: np.ndarray,
                        names: Sequence[str],
                        allow_interpolation: bool) -> None:
  """The rule extrapolates: the target must exceed every input budget."""
  largest = float(budgets[-1])
  if target <= largest and not allow_interpolation:
    raise ProjectionError(
        f"target_tokens={target:.6g} is not above the largest input budget "
        f"{largest:.6g} ({names[-1]}); the projection extrapolates to larger "
        "budgets: pick a larger target, or pass allow_interpolation=True to "
        "project within the inputs' budgets")


def _check_finite(out: Any, target: float, where: str = "") -> None:
  """Raises if any number in the output is NaN or infinite (an overflow)."""
  if isinstance(out, Mapping):
    for k, v in out.items():
      _check_finite(v, target, f"{where}.{k}" if where else str(k))
  elif isinstance(out, (list, tuple)):
    for i, v in enumerate(out):
      _check_finite(v, target, f"{where}[{i}]")
  elif isinstance(out, (float, np.floating)) and not math.isfinite(out):
    raise ProjectionError(
        f"target_tokens={target:.6g} overflows the projection ({where} is "
        f"{float(out)!r}); use a target within the float64 range of the rule "
        "(a smaller target)")


def _cap_phrase(domain: str, asked: float, cap: float) -> str:
  if asked > cap:
    return (f"{domain} (capped at {cap:.6g}; the uncapped rule asks "
            f"{asked:.6g})")
  return (f"{domain} (capped at {cap:.6g}; binds only once the others are "
          f"capped)")


def _trajectory(mat, budgets, target, domains, log_cap, notes, var):
  """Weights over a geometric grid of budgets spanning inputs and target."""
  lo = min(float(budgets[0]), target)
  hi = max(float(budgets[-1]), target)
  grid = np.geomspace(lo, hi, _TRAJECTORY_POINTS)
  grid = np.unique(np.concatenate([grid, budgets, [target]]))
  log_a, b, _ = _model(mat)
  with x64.float64():
    res = _capped_batch_targets(jnp.asarray(log_a, jnp.float64),
                                jnp.asarray(b, jnp.float64),
                                jnp.asarray(log_cap, jnp.float64),
                                jnp.asarray(np.log(grid), jnp.float64))
    tokens, s, free, _, _, status = jax.device_get(res)
  traj = []
  skipped = 0
  for n, tok, sv, fr, st in zip(grid, tokens, s, free, status):
    if int(st) != _OK:
      skipped += 1
      continue
    tok = np.asarray(tok, np.float64)
    traj.append({"budget_tokens": float(n), var: float(sv),
                 "weights": _dict(domains, tok / tok.sum()),
                 "capped_domains": [d for d, f in zip(domains, fr) if not f]})
  if skipped:
    notes.append(f"{skipped} trajectory budget(s) are not reachable by the "
                 f"rule and were left out of the trajectory.")
  return traj


def _bands(optima, names, domains, budgets, target, log_cap, notes):
  """Monte Carlo bands at the target from per-domain weight intervals."""
  intervals = []
  for opt, n in zip(optima, names):
    raw = records.weight_intervals(opt)
    if not raw:
      intervals.append(None)
      continue
    iv = {d: _interval_of(raw[d]) for d in domains if d in raw}
    intervals.append({d: v for d, v in iv.items() if v is not None})
  if all(iv is None or not iv for iv in intervals):
    return None
  rng = np.random.default_rng(0)
  k_b, m = len(budgets), len(domains)
  draws = np.empty((_BAND_DRAWS, k_b, m))
  for k, (opt, iv) in enumerate(zip(optima, intervals)):
    tok = _tokens_of(opt, names[k])
    w = np.array([tok[d] for d in domains]) / budgets[k]
    los = np.array([(iv or {}).get(d, (wi, wi))[0] for d, wi in
                    zip(domains, w)])
    his = np.array([(iv or {}).get(d, (wi, wi))[1] for d, wi in
                    zip(domains, w)])
    los = np.maximum(los, 1e-6 * w)  # keep every quantity > 0
    u = rng.uniform(size=(_BAND_DRAWS, m))
    wd = los + u * (his - los)
    draws[:, k, :] = wd / wd.sum(axis=1, keepdims=True) * budgets[k]
  log_as, bs = [], []
  for j in range(_BAND_DRAWS):
    try:
      la, bb, _ = _model(draws[j])
    except ProjectionError:
      la, bb = np.full(m, np.nan), np.full(m, np.nan)
    log_as.append(la)
    bs.append(bb)
  with x64.float64():
    res = _capped_batch_models(jnp.asarray(np.array(log_as), jnp.float64),
                               jnp.asarray(np.array(bs), jnp.float64),
                               jnp.asarray(log_cap, jnp.float64),
                               jnp.asarray(math.log(target), jnp.float64))
    tokens, _, _, _, _, status = jax.device_get(res)
  tokens = np.asarray(tokens, np.float64)
  ok = (np.asarray(status) == _OK) & np.all(np.isfinite(tokens), axis=1)
  if not np.any(ok):
    notes.append("Confidence bands could not be computed: no Monte Carlo "
                 "draw reached the target.")
    return None
  w = tokens[ok] / tokens[ok].sum(axis=1, keepdims=True)
  q = (1 - _BAND_LEVEL) / 2
  lo_w, med_w, hi_w = np.quantile(w, [q, 0.5, 1 - q], axis=0)
  with_iv = [n for n, iv in zip(names, intervals) if iv]
  notes.append(
      "Beyond the paper: confidence bands at the target from "
      f"{_BAND_DRAWS} Monte Carlo draws of the input weights, uniform within "
      f"each reported interval (inputs with intervals: {', '.join(with_iv)}; "
      "domains or inputs without one held at their point estimate), each "
      f"draw projected by the same rule; bands are the central "
      f"{_BAND_LEVEL:.0%} of the projected weights.")
  return {
      "method": "monte-carlo over input weight intervals (uniform), "
                "renormalised per budget",
      "level": _BAND_LEVEL,
      "draws": _BAND_DRAWS,
      "failed_draws": int((~ok).sum()),
      "weights": {d: [float(lo_w[i]), float(hi_w[i])] for i, d in
                  enumerate(domains)},
      "median_weights": _dict(domains, med_w),
      "tokens": {d: [float(lo_w[i] * target), float(hi_w[i] * target)] for i,
                 d in enumerate(domains)},
  }


def heldout_check(tokens_KxM: np.ndarray, budgets: Sequence[float],
                  domains: Sequence[str]) -> list[dict[str, Any]]:
  """Predicts each input budget from the others (leave one budget out).

  Args:
    tokens_KxM: absolute optima, rows sorted by budget (K >= 3).
    budgets: the K totals.
    domains: M domain names.

  Returns:
    One entry per held-out budget: "heldout_budget_tokens", "fitted_on",
    "method", "relative_error" {d: predicted / actual - 1},
    "max_abs_relative_error".
  """
  out = []
  for k in range(len(budgets)):
    keep = [j for j in range(len(budgets)) if j != k]
    entry: dict[str, Any] = {
        "heldout_budget_tokens": float(budgets[k]),
        "fitted_on": [float(budgets[j]) for j in keep],
        "method": "two-budget" if len(keep) == 2 else "least-squares",
        "kind": ("interpolation" if 0 < k < len(budgets) - 1 else
                 "extrapolation"),
    }
    try:
      pred, _, _ = _project_tokens(tokens_KxM[keep], float(budgets[k]),
                                   domains)
    except ProjectionError as e:
      entry.update(relative_error=None, max_abs_relative_error=None,
                   error=str(e))
      out.append(entry)
      continue
    rel = pred / tokens_KxM[k] - 1
    entry["relative_error"] = _dict(domains, rel)
    entry["max_abs_relative_error"] = float(np.abs(rel).max())
    out.append(entry)
  return out


def run_project_stage(optima_paths: Sequence[str], target_tokens: float,
                      workdir: str,
                      available_tokens: Mapping[str, float] | None = None,
                      max_epochs: float = 1.0,
                      allow_interpolation: bool = False) -> dict[str, Any]:
  """Loads optima, projects them and writes workdir/mixture.json atomically.

  Args:
    optima_paths: mixture.json files of DDO optima at distinct budgets.
    target_tokens: target budget in tokens.
    workdir: output directory (created if needed).
    available_tokens: unique tokens per domain, for availability caps.
    max_epochs: allowed passes over each domain's unique tokens.
    allow_interpolation: allow a target at or below the largest input budget.

  Returns:
    The written mixture dict.
  """
  optima = load_optima(optima_paths)
  mixture = project(optima, target_tokens, available_tokens, max_epochs,
                    allow_interpolation=allow_interpolation)
  atomic_write_text(os.path.join(workdir, "mixture.json"),
                     json.dumps(mixture, indent=2, sort_keys=False) + "\n")
  return mixture
