"""The paper's speed-up of one mixture over a baseline, and a comparison table.

Speed-up (AutoScale paper, "Baselines"): ``1 - step_reach / step_final`` where
``step_final`` is the baseline's last evaluated step and ``step_reach`` the
first step at which the compared method's curve reaches the baseline's final
metric. Lower metric values are better (perplexity, loss, bits per byte).

Smoothing rule (applied to every curve, including the baseline's final
value): a trailing moving average over the last ``window`` evaluation points,
``v_s[j] = mean(v[max(0, j - window + 1) : j + 1])``; ``window = 1`` means no
smoothing. The crossing step is found by linear interpolation of the smoothed
curve between the two evaluation points that bracket the threshold; a method
whose smoothed curve is already at or below the threshold at its first point
reaches it at that step. A method that never reaches it gets ``None`` (shown
as "never").
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from autoscale_jax import errors


class SpeedupError(errors.UserError, ValueError):
  """A one-line user error about training curves."""


def smoothing_rule(window: int) -> str:
  """The documented smoothing rule as a sentence."""
  if window <= 1:
    return "no smoothing (raw evaluation points)"
  return (f"trailing moving average over the last {window} evaluation points "
          f"(fewer at the start); crossing steps linearly interpolated "
          f"between evaluation points")


def smooth(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing moving average over `window` points (fewer at the start)."""
  v = np.asarray(values, np.float64)
  if window <= 1:
    return v
  c = np.concatenate([[0.0], np.cumsum(v)])
  idx = np.arange(len(v))
  lo = np.maximum(0, idx - window + 1)
  return (c[idx + 1] - c[lo]) / (idx + 1 - lo)


def _series(name: str, curve: Sequence[Mapping[str, Any]], metric: str):
  if not curve:
    raise SpeedupError(f"curve {name!r} is empty")
  steps, tokens, values = [], [], []
  for k, point in enumerate(curve):
    try:
      step = float(point["step"])
      value = float(point["aggregate"][metric])
    except (KeyError, TypeError, ValueError):
      raise SpeedupError(
          f"curve {name!r} point {k}: needs 'step' and 'aggregate'."
          f"{metric!r}") from None
    if not (math.isfinite(step) and math.isfinite(value)):
      raise SpeedupError(f"curve {name!r} at step {point['step']}: "
                         f"{metric} is {value!r}")
    steps.append(step)
    tokens.append(float(point.get("tokens", float("nan"))))
    values.append(value)
  order = np.argsort(steps, kind="stable")
  steps = np.asarray(steps)[order]
  if np.any(np.diff(steps) == 0):
    raise SpeedupError(f"curve {name!r} has repeated steps")
  return steps, np.asarray(tokens)[order], np.asarray(values)[order]


def crossing(steps: np.ndarray, values: np.ndarray,
             threshold: float) -> tuple[float, float] | None:
  """First (step, fractional index) at which values fall to the threshold."""
  below = np.nonzero(values <= threshold)[0]
  if below.size == 0:
    return None
  j = int(below[0])
  if j == 0:
    return float(steps[0]), 0.0
  v0, v1 = values[j - 1], values[j]
  frac = (v0 - threshold) / (v0 - v1) if v0 != v1 else 1.0
  return float(steps[j - 1] + frac * (steps[j] - steps[j - 1])), j - 1 + frac


def speedup(method: Sequence[Mapping[str, Any]],
            baseline: Sequence[Mapping[str, Any]], metric: str,
            smoothing: int = 3) -> dict[str, Any]:
  """Speed-up of `method` over `baseline` on the aggregate `metric`.

  Returns:
    {"speedup": float | None, "reach_step": float | None, "reach_tokens",
    "baseline_final_step", "baseline_final": smoothed final metric}.
  """
  return _pair("method", method, "baseline", baseline, metric, smoothing)


def _pair(mname, method, bname, baseline, metric, window):
  ms, mt, mv = _series(mname, method, metric)
  bs, _, bv = _series(bname, baseline, metric)
  mv_s, bv_s = smooth(mv, window), smooth(bv, window)
  threshold = float(bv_s[-1])
  final_step = float(bs[-1])
  cross = crossing(ms, mv_s, threshold)
  reach_step = reach_tokens = None
  if cross is not None:
    reach_step, fidx = cross
    if np.all(np.isfinite(mt)):
      reach_tokens = float(np.interp(fidx, np.arange(len(mt)), mt))
  return {
      "baseline_final_step": final_step,
      "baseline_final": threshold,
      "baseline_final_raw": float(bv[-1]),
      "reach_step": reach_step,
      "reach_tokens": reach_tokens,
      "speedup": None if reach_step is None or final_step <= 0 else
                 1.0 - reach_step / final_step,
  }


def comparison_table(curves: Mapping[str, Sequence[Mapping[str, Any]]],
                     metric: str, reference: str = "projected",
                     smoothing: int = 3) -> dict[str, Any]:
  """Speed-up of the reference mixture over every other curve.

  Args:
    curves: {name: [{"step", "tokens", "aggregate": {metric: value}}]}.
    metric: aggregate metric key (lower is better).
    reference: the mixture whose speed-up is measured.
    smoothing: trailing moving-average window in evaluation points.

  Returns:
    {"metric", "reference", "smoothing": {"window", "rule"}, "final":
    {name: {"step", "tokens", "metric", "metric_smoothed"}}, "rows": [one
    per baseline: "baseline", "baseline_final_step", "baseline_final",
    "baseline_final_raw", "reach_step", "reach_tokens", "speedup" (None =
    never), "status"]}.
  """
  if reference not in curves:
    raise SpeedupError(f"reference {reference!r} is not among the curves ("
                       + ", ".join(curves) + ")")
  if not isinstance(smoothing, int) or smoothing < 1:
    raise SpeedupError(f"smoothing is {smoothing!r}; expected an integer >= 1")
  final = {}
  for name, curve in curves.items():
    s, t, v = _series(name, curve, metric)
    final[name] = {"step": float(s[-1]),
                   "tokens": None if not math.isfinite(t[-1]) else float(t[-1]),
                   "metric": float(v[-1]),
                   "metric_smoothed": float(smooth(v, smoothing)[-1])}
  rows = []
  for name, curve in curves.items():
    if name == reference:
      continue
    row = {"baseline": name,
           **_pair(reference, curves[reference], name, curve, metric,
                   smoothing)}
    row["status"] = "reached" if row["speedup"] is not None else "never"
    rows.append(row)
  return {"metric": metric, "reference": reference,
          "smoothing": {"window": smoothing,
                        "rule": smoothing_rule(smoothing)},
          "lower_is_better": True, "final": final, "rows": rows}


def _fmt(v: Any, spec: str = ".4g") -> str:
  return "never" if v is None else format(v, spec)


def to_markdown(table: Mapping[str, Any]) -> str:
  """Markdown rendering of `comparison_table`'s output."""
  ref, metric = table["reference"], table["metric"]
  lines = [
      f"Speed-up of **{ref}** on aggregate `{metric}` (lower is better): "
      f"1 - (step at which {ref} first reaches the baseline's final value) / "
      f"(baseline's final step). Smoothing: {table['smoothing']['rule']}.",
      "",
      f"| baseline | final step | final {metric} (smoothed) | "
      f"{ref} reaches it at step | speed-up |",
      "|---|---:|---:|---:|---:|",
  ]
  for r in table["rows"]:
    sp = "never" if r["speedup"] is None else f"{r['speedup']:.1%}"
    lines.append(
        f"| {r['baseline']} | {r['baseline_final_step']:.0f} | "
        f"{r['baseline_final']:.4g} | {_fmt(r['reach_step'], '.1f')} | "
        f"{sp} |")
  lines += ["", f"| mixture | final step | final {metric} | "
                f"final {metric} (smoothed) |", "|---|---:|---:|---:|"]
  for name, f in table["final"].items():
    lines.append(f"| {name} | {f['step']:.0f} | {f['metric']:.4g} | "
                 f"{f['metric_smoothed']:.4g} |")
  return "\n".join(lines) + "\n"
