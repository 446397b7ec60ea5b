"""Per-domain power-law fits ``y_i(x) = (x + a_i)^(-b_i) + c_i`` in JAX.

The fit is a separable least-squares problem: for fixed ``(a, b)`` the best
``c`` is the mean residual, so it is eliminated in closed form (variable
projection) and Levenberg-Marquardt runs on two unconstrained parameters

    a = -lo + softplus(p)     (so x + a > 0 for every x >= lo)
    b = softplus(q)           (b > 0)

from a grid of starts. Everything is jitted and vmapped over domains and
starts, on a padded/masked ``[m, k]`` layout so domains with different numbers
of points (seeds, extra factors) share one compiled program. Shapes are
bucketed (m to a power of two, k to a multiple of 4) so repeated calls reuse
the compilation. With 3 distinct points and a convex decreasing response the
fit is the exact interpolant (residual ~1e-12); with more points it is the
least-squares fit. Runs in float64 (see :mod:`x64`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoscale_jax.mixing.x64 import float64

# Multi-start grid: (a + lo) as a multiple of the x span, and b.
_START_A = (0.01, 0.1, 0.5, 2.0, 10.0, 50.0)
_START_B = (0.05, 0.3, 1.0, 3.0, 10.0)
_LM_ITERS = 150

# Warning thresholds (relative metric units: y = metric / base metric).
FLAT_TOL = 1e-4
B_MAX_WARN = 50.0
B_MIN_WARN = 1e-4
A_REL_MAX_WARN = 1e4
A_REL_MIN_WARN = 1e-6
INTERP_TOL = 1e-8


@dataclasses.dataclass
class PowerLawFit:
  """One domain's fit. ``points`` are the (x, y) it was fitted to."""
  a: float
  b: float
  c: float
  rms: float
  converged: bool
  points: list[tuple[float, float]]
  ambiguity: float = 0.0

  def __call__(self, x):
    """Evaluates the fitted curve at ``x`` (numpy)."""
    return powerlaw(x, self.a, self.b, self.c)

  def to_dict(self) -> dict:
    return {"a": self.a, "b": self.b, "c": self.c, "rms": self.rms,
            "converged": self.converged, "ambiguity": self.ambiguity,
            "points": [[float(x), float(y)] for x, y in self.points]}


@dataclasses.dataclass
class FitReport:
  """Fits by domain plus human-readable warnings naming the domain."""
  fits: dict[str, PowerLawFit]
  warnings: list[str]


def powerlaw(x, a, b, c):
  """``(x + a)^(-b) + c`` in numpy (float64)."""
  x = np.asarray(x, np.float64)
  return np.power(x + a, -b) + c


def _softplus(v):
  return jnp.logaddexp(v, 0.0)


def _softplus_inv(v: np.ndarray) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return np.where(v > 30, v, np.log(np.expm1(np.minimum(v, 30))))


def _ab(theta, lo):
  return -lo + _softplus(theta[0]), _softplus(theta[1])


def _curve(theta, x, lo):
  a, b = _ab(theta, lo)
  z = jnp.maximum(x + a, 1e-300)
  return jnp.exp(jnp.clip(-b * jnp.log(z), -700.0, 700.0))


def _c_of(theta, x, y, w, lo):
  g = _curve(theta, x, lo)
  return jnp.sum(w * (y - g)) / jnp.sum(w)


def _residual(theta, x, y, w, lo):
  g = _curve(theta, x, lo)
  c = jnp.sum(w * (y - g)) / jnp.sum(w)
  return jnp.sqrt(w) * (y - g - c)


def _cost(theta, x, y, w, lo):
  r = _residual(theta, x, y, w, lo)
  return 0.5 * jnp.sum(r * r)


def _solve2(m, v):
  """Closed-form 2x2 solve (batched LAPACK calls are slow on CPU)."""
  det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
  return jnp.stack([m[1, 1] * v[0] - m[0, 1] * v[1],
                    m[0, 0] * v[1] - m[1, 0] * v[0]]) / det


def levenberg_marquardt(theta0, resid_jac, cost_fn, solve, floor, iters):
  """Damped Gauss-Newton steps, each kept only when it lowers the cost.

  Args:
    theta0: start ``[p]``.
    resid_jac: ``theta -> (residuals [n], Jacobian [n, p])``.
    cost_fn: ``theta -> cost`` (non-finite costs are never accepted).
    solve: ``(matrix [p, p], rhs [p]) -> step``.
    floor: ``JtJ -> [p, p]`` damping floor added to ``diag(JtJ)``.
    iters: fixed number of iterations (a ``fori_loop``; jit-friendly).

  Returns:
    ``(theta, cost)`` at the end.
  """
  p = theta0.shape[0]

  def body(_, state):
    theta, mu, cost = state
    r, j = resid_jac(theta)
    jtj = j.T @ j
    g = j.T @ r
    damp = mu * (jnp.diag(jnp.diag(jtj)) + floor(jtj) + 1e-300 * jnp.eye(p))
    step = solve(jtj + damp, -g)
    step = jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)
    new = theta + step
    new_cost = cost_fn(new)
    ok = jnp.isfinite(new_cost) & (new_cost < cost)
    theta = jnp.where(ok, new, theta)
    cost = jnp.where(ok, new_cost, cost)
    mu = jnp.clip(jnp.where(ok, mu * 0.3, mu * 5.0), 1e-15, 1e15)
    return theta, mu, cost

  cost0 = cost_fn(theta0)
  cost0 = jnp.where(jnp.isfinite(cost0), cost0, jnp.inf)
  theta, _, cost = jax.lax.fori_loop(
      0, iters, body, (theta0, jnp.asarray(1e-3, theta0.dtype), cost0))
  return theta, cost


def _lm_one(theta0, x, y, w, lo, iters):
  """Levenberg-Marquardt on (p, q) for one domain and one start."""
  jac = jax.jacfwd(_residual)
  return levenberg_marquardt(
      theta0,
      lambda t: (_residual(t, x, y, w, lo), jac(t, x, y, w, lo)),
      lambda t: _cost(t, x, y, w, lo), _solve2,
      lambda jtj: 1e-12 * jnp.trace(jtj) * jnp.eye(2), iters)


def _fit_domain(starts, x, y, w, lo, iters, within_ss):
  """Best of the starts for one domain: (a, b, c, rms, converged, ambiguity).

  Three points can have two exact interpolants. Among the starts that reach
  the lowest cost (to 1e-6 relative), the one closest to (a, b) = (1, 1) --
  the default starting point of the reference's scipy ``curve_fit`` -- is
  kept, and ``ambiguity`` reports how far the other near-optimal curves are
  from it (max |y difference| on a grid over the data's x range).

  ``w`` may be counts of repeated x with ``y`` their mean; ``within_ss`` is
  then the points' sum of squares about those means, so costs, rms and the
  stationarity test are those of the ungrouped points (see
  :func:`group_repeated_x`).
  """
  thetas, costs = jax.vmap(
      _lm_one, in_axes=(0, None, None, None, None, None))(
          starts, x, y, w, lo, iters)
  costs = jnp.where(jnp.isfinite(costs), costs + 0.5 * within_ss, jnp.inf)
  best_cost = jnp.min(costs)
  near = costs <= best_cost * (1 + 1e-6) + 1e-24
  a_s, b_s = jax.vmap(_ab, in_axes=(0, None))(thetas, lo)
  dist = ((jnp.log(jnp.maximum(a_s + lo, 1e-300)) - jnp.log1p(lo)) ** 2
          + jnp.log(jnp.maximum(b_s, 1e-300)) ** 2)
  best = jnp.argmin(jnp.where(near, dist, jnp.inf))
  theta = thetas[best]
  xmax = jnp.max(jnp.where(w > 0, x, -jnp.inf))
  grid = lo + (xmax - lo) * jnp.linspace(0.0, 1.0, 17)
  def yhat(th):
    return _curve(th, grid, lo) + _c_of(th, x, y, w, lo)
  curves = jax.vmap(yhat)(thetas)
  diff = jnp.max(jnp.abs(curves - curves[best]), axis=1)
  ambiguity = jnp.max(jnp.where(near & jnp.isfinite(diff), diff, 0.0))
  a, b = _ab(theta, lo)
  c = _c_of(theta, x, y, w, lo)
  r = _residual(theta, x, y, w, lo)
  j = jax.jacfwd(_residual)(theta, x, y, w, lo)
  n = jnp.sum(w)
  rss = jnp.sum(r * r) + within_ss
  rms = jnp.sqrt(rss / n)
  ymean = jnp.sum(w * y) / n
  yscale = jnp.sqrt((jnp.sum(w * (y - ymean) ** 2) + within_ss) / n) + 1e-300
  # Stationarity: the residual is orthogonal to the Jacobian's columns.
  cosine = jnp.linalg.norm(j.T @ r) / (
      jnp.linalg.norm(j) * jnp.sqrt(rss) + 1e-300)
  converged = (rms <= 1e-11 * (1.0 + jnp.abs(ymean)) + 1e-9 * yscale) | (
      cosine < 1e-6)
  return a, b, c, rms, converged, ambiguity


@functools.partial(jax.jit, static_argnames="iters")
def _fit_padded_jit(x, y, w, lo, starts, iters, within_ss):
  return jax.vmap(_fit_domain, in_axes=(0, 0, 0, 0, 0, None, 0))(
      starts, x, y, w, lo, iters, within_ss)


def group_repeated_x(x: np.ndarray, y: np.ndarray, w: np.ndarray):
  """Merges points with equal x in each row: exact for least squares.

  ``sum_j (y_j - f(x_j))^2`` over points sharing one x equals ``n (ybar -
  f(x))^2`` plus their sum of squares about ``ybar``, which does not depend
  on the curve. So a row with repeated x (seeds of the same run) is fitted
  on its distinct x with counts as weights: the same minimiser, costs and
  rms, at a cost that no longer grows with the number of seeds.

  Args:
    x, y: ``[m, k]`` points; w: ``[m, k]`` 0/1 mask.

  Returns:
    ``(x, y, w, within_ss)``: ``[m, k']`` distinct x in order of first
    appearance, mean y, counts (0 = padding) and ``[m]`` sums of squares;
    the inputs unchanged (within_ss 0) when no row repeats an x.
  """
  m = x.shape[0]
  real = w > 0
  patterns: dict[bytes, list[int]] = {}  # rows with equal x and mask
  for i in range(m):
    patterns.setdefault(x[i].tobytes() + real[i].tobytes(), []).append(i)
  groups = []
  for rows in patterns.values():
    xi = x[rows[0], real[rows[0]]]
    ux, first, inv, cnt = np.unique(xi, return_index=True,
                                    return_inverse=True, return_counts=True)
    by_first = np.argsort(first)  # keep the order of first appearance
    rank = np.empty_like(by_first); rank[by_first] = np.arange(len(ux))
    groups.append((rows, xi, ux[by_first], rank[inv.reshape(-1)],
                   cnt[by_first]))
  if all(len(g[2]) == len(g[1]) for g in groups):
    return x, y, w, np.zeros(m)
  kg = max(len(g[2]) for g in groups)
  xg = np.ones((m, kg)); yg = np.zeros((m, kg)); wg = np.zeros((m, kg))
  within = np.zeros(m)
  for rows, xi, ux, gid, cnt in groups:
    n = len(ux)
    yi = y[rows][:, real[rows[0]]]  # [rows, points]
    onehot = np.zeros((len(xi), n)); onehot[np.arange(len(xi)), gid] = 1.0
    ybar = (yi @ onehot) / cnt
    xg[rows, :n], yg[rows, :n], wg[rows, :n] = ux, ybar, cnt
    within[rows] = np.sum((yi - ybar[:, gid]) ** 2, axis=1)
  return xg, yg, wg, within


def default_starts(x: np.ndarray, w: np.ndarray, lo: np.ndarray) -> np.ndarray:
  """Grid of starts ``[m, S, 2]`` in the unconstrained (p, q) space."""
  xmax = np.max(np.where(w > 0, x, -np.inf), axis=1)
  span = np.maximum(xmax - lo, 1e-12)
  a_plus = np.asarray(_START_A)[None, :, None] * span[:, None, None]
  bs = np.asarray(_START_B)[None, None, :]
  p = _softplus_inv(np.broadcast_to(a_plus, (len(lo), len(_START_A),
                                             len(_START_B))))
  q = _softplus_inv(np.broadcast_to(bs, p.shape))
  return np.stack([p, q], axis=-1).reshape(len(lo), -1, 2)


def starts_from(a: np.ndarray, b: np.ndarray, lo: np.ndarray) -> np.ndarray:
  """Starts ``[m, 1, 2]`` at given (a, b): warm starts for refits."""
  p = _softplus_inv(np.maximum(np.asarray(a) + lo, 1e-12))
  q = _softplus_inv(np.maximum(np.asarray(b), 1e-12))
  return np.stack([p, q], axis=-1)[:, None, :]


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, (n - 1).bit_length()))


def fit_padded(x: np.ndarray, y: np.ndarray, mask: np.ndarray,
               lo: np.ndarray | None = None,
               starts: np.ndarray | None = None,
               iters: int = _LM_ITERS) -> dict[str, np.ndarray]:
  """Fits every row of a padded layout.

  Args:
    x: ``[m, k]`` relative quantities (padding anywhere, masked out).
    y: ``[m, k]`` relative metric.
    mask: ``[m, k]`` 1 for a real point, 0 for padding (>= 3 real points/row).
    lo: ``[m]`` lower limit for x (a > -lo); default each row's smallest x.
    starts: ``[m, S, 2]`` starts in (p, q) space; default the grid, plus
      nothing else. Pass :func:`starts_from` stacked with a small grid for
      warm refits.
    iters: Levenberg-Marquardt iterations per start (fewer for warm refits).

  Returns:
    numpy float64 arrays ``a, b, c, rms``, bool ``converged`` and
    ``ambiguity`` (see :func:`_fit_domain`), each ``[m]``.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  w = (np.asarray(mask) > 0).astype(np.float64)
  if np.any(w.sum(axis=1) < 3):
    raise ValueError("every row needs at least 3 points to fit 3 parameters")
  if lo is None:
    lo = np.min(np.where(w > 0, x, np.inf), axis=1)
  lo = np.asarray(lo, np.float64)
  if starts is None:
    starts = default_starts(x, w, lo)
  starts = np.asarray(starts, np.float64)
  x, y, w, within_ss = group_repeated_x(x, y, w)
  m, k = x.shape
  # Bucket shapes so repeated calls reuse the compiled program.
  mp, kp = _bucket(m, 8), 4 * math.ceil(k / 4)
  xp = np.ones((mp, kp)); yp = np.zeros((mp, kp)); wp = np.zeros((mp, kp))
  xp[:m, :k], yp[:m, :k], wp[:m, :k] = x, y, w
  xp[:m, k:] = np.max(np.where(w > 0, x, -np.inf), axis=1)[:, None]
  lop = np.ones(mp); lop[:m] = lo
  sp = np.zeros((mp,) + starts.shape[1:]); sp[:m] = starts
  ssp = np.zeros(mp); ssp[:m] = within_ss
  # Padding rows copy row 0 so they are well-posed; their results are dropped.
  xp[m:], yp[m:], wp[m:], lop[m:], sp[m:] = xp[0], yp[0], wp[0], lop[0], sp[0]
  ssp[m:] = ssp[0]
  with float64():
    out = _fit_padded_jit(jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(wp),
                          jnp.asarray(lop), jnp.asarray(sp), iters,
                          jnp.asarray(ssp))
    out = [np.asarray(v)[:m] for v in out]
  return dict(zip(("a", "b", "c", "rms", "converged", "ambiguity"), out))


def pad_points(points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               domains: Sequence[str]):
  """Packs ``{domain: (xs, ys)}`` into padded ``x, y, mask`` arrays."""
  k = max(len(points[d][0]) for d in domains)
  x = np.ones((len(domains), k)); y = np.zeros_like(x); mask = np.zeros_like(x)
  for i, d in enumerate(domains):
    xs, ys = (np.asarray(v, np.float64) for v in points[d])
    if xs.shape != ys.shape:
      raise ValueError(f"domain {d!r}: {len(xs)} x values but {len(ys)} y")
    x[i, :len(xs)], y[i, :len(ys)], mask[i, :len(xs)] = xs, ys, 1.0
  return x, y, mask


def _mean_by_x(xs: np.ndarray, ys: np.ndarray):
  ux = np.unique(np.round(xs, 12))
  uy = np.array([ys[np.isclose(np.round(xs, 12), u)].mean() for u in ux])
  return ux, uy


def diagnose(domain: str, xs: np.ndarray, ys: np.ndarray, fit: PowerLawFit,
             lo: float, flat_tol: float = FLAT_TOL) -> list[str]:
  """Warnings for one domain's data and fit (each names the domain)."""
  out = []
  ux, uy = _mean_by_x(np.asarray(xs), np.asarray(ys))
  span = float(ux[-1] - lo) if len(ux) else 1.0
  spread = float(uy.max() - uy.min()) if len(uy) else 0.0
  if spread < flat_tol:
    out.append(f"domain {domain!r}: flat response (metric varies by "
               f"{spread:.2g} < {flat_tol:g} over x in [{ux[0]:g}, {ux[-1]:g}]);"
               " its fit carries no signal")
  else:
    for i in range(len(ux) - 1):
      if uy[i + 1] > uy[i] + 1e-12:
        out.append(f"domain {domain!r}: non-monotone data: more data makes the "
                   f"metric worse (x={ux[i]:g} -> y={uy[i]:.6g}, x={ux[i + 1]:g}"
                   f" -> y={uy[i + 1]:.6g}); a decreasing power law cannot "
                   "follow it")
        break
  if len(ux) == 3 and len(xs) == 3 and fit.rms > INTERP_TOL:
    out.append(f"domain {domain!r}: no curve (x+a)^-b+c passes through the 3 "
               "points (the paper's form has unit amplitude, so it cannot "
               "follow every convex decreasing response); least-squares fit "
               f"has rms {fit.rms:.3g}")
  if fit.b > B_MAX_WARN or fit.b < B_MIN_WARN:
    out.append(f"domain {domain!r}: exponent b={fit.b:.3g} at its limit "
               f"(outside [{B_MIN_WARN:g}, {B_MAX_WARN:g}]); the fit is "
               "degenerate")
  if fit.a + lo < A_REL_MIN_WARN * span:
    out.append(f"domain {domain!r}: a={fit.a:.6g} at its bound -{lo:g} "
               "(the curve is singular at the smallest x)")
  elif fit.a > A_REL_MAX_WARN * span:
    out.append(f"domain {domain!r}: a={fit.a:.3g} at its limit (the curve is "
               "nearly linear); the fit is degenerate")
  if fit.ambiguity > max(1e-6, 0.01 * spread):
    out.append(f"domain {domain!r}: the data fit several curves equally well "
               f"(they differ by up to {fit.ambiguity:.3g} in y between the "
               "points); kept the one nearest a=1, b=1; more factors or seeds "
               "would identify it")
  if not fit.converged:
    out.append(f"domain {domain!r}: the fit did not converge (rms "
               f"{fit.rms:.3g}); treat its optimum with caution")
  return out


def fit_powerlaws(points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                  lower_limits: Mapping[str, float] | None = None,
                  flat_tol: float = FLAT_TOL) -> FitReport:
  """Fits every domain's ``(xs, ys)`` and diagnoses the fits.

  Args:
    points: ``{domain: (xs, ys)}`` with >= 3 points (>= 3 distinct x) each.
    lower_limits: ``{domain: lo}``; the fit keeps ``a > -lo`` so the curve is
      finite for every ``x >= lo`` (default: the domain's smallest x).
    flat_tol: spread of y below which a response is called flat.

  Returns:
    A :class:`FitReport` with fits and warnings by domain name.
  """
  domains = list(points)
  x, y, mask = pad_points(points, domains)
  for i, d in enumerate(domains):
    if len(np.unique(np.round(x[i, mask[i] > 0], 12))) < 3:
      raise ValueError(f"domain {d!r}: need >= 3 distinct x to fit 3 "
                       "parameters")
  lo = np.array([
      min((lower_limits or {}).get(d, np.inf), float(np.min(points[d][0])))
      for d in domains])
  out = fit_padded(x, y, mask, lo)
  fits, warnings = {}, []
  for i, d in enumerate(domains):
    xs, ys = (np.asarray(v, np.float64) for v in points[d])
    fit = PowerLawFit(a=float(out["a"][i]), b=float(out["b"][i]),
                      c=float(out["c"][i]), rms=float(out["rms"][i]),
                      converged=bool(out["converged"][i]),
                      ambiguity=float(out["ambiguity"][i]),
                      points=[(float(u), float(v)) for u, v in zip(xs, ys)])
    fits[d] = fit
    warnings += diagnose(d, xs, ys, fit, float(lo[i]), flat_tol)
  return FitReport(fits=fits, warnings=warnings)
