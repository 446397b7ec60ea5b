"""The report's figures (matplotlib, Agg backend), drawn from plain data.

Each ``draw_*`` function takes the :class:`~autoscale_jax.report.data.
StudyFiles` and the output directory, writes one PNG there and returns a
:class:`Figure` (its file name, caption and the labels of its legend, so a
test can check every mixture is named), or None when the study has nothing
to draw for it yet.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Callable, Sequence

import numpy as np

from autoscale_jax import fileio
from autoscale_jax.report import data as data_lib

_DPI = 90


@dataclasses.dataclass(frozen=True)
class Figure:
  """One written figure: ``file`` (relative to report/), its caption and the
  labels of its legend entries."""
  key: str
  file: str
  caption: str
  labels: tuple[str, ...] = ()


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _ticker():
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  return matplotlib.ticker


def _save(fig, out, key: str, file: str, caption: str, axes=()) -> Figure:
  labels: list[str] = []
  for ax in axes:
    for label in ax.get_legend_handles_labels()[1]:
      if label not in labels:
        labels.append(label)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=_DPI)
  fileio.atomic_write_bytes(out / file, buf.getvalue())
  _pyplot().close(fig)
  return Figure(key, file, caption, tuple(labels))


def _power_law(f: dict[str, float], x):
  return (np.asarray(x, float) + f["a"]) ** (-f["b"]) + f["c"]


# ------------------------------------------------------------ final runs


def _seed_series(by_seed, metric: str):
  """Steps every seed evaluated: (tokens mean, values [seeds, steps])."""
  pts = [{float(p["step"]): (float(p.get("tokens", math.nan)),
                             float(p["aggregate"][metric])) for p in r.curve}
         for r in by_seed.values()]
  steps = sorted(set.intersection(*(set(p) for p in pts)))
  tokens = np.array([np.mean([p[s][0] for p in pts]) for s in steps])
  values = np.array([[p[s][1] for s in steps] for p in pts])
  return tokens, values


def draw_final_curves(files: data_lib.StudyFiles, out) -> Figure | None:
  """Aggregate metric against tokens, one line per mixture (seed mean, band
  min..max), full run on a log axis and the second half zoomed, with the
  reference's speed-up crossings marked."""
  if not files.final_runs:
    return None
  plt, ticker = _pyplot(), _ticker()
  metric = files.metric
  fig, (full, zoom) = plt.subplots(1, 2, figsize=(11, 4.2))
  colors = {n: f"C{i}" for i, n in enumerate(files.final_runs)}
  max_seeds = 1
  zoom_lo, zoom_vals = math.inf, []
  final_tokens = 0.0
  for name, by_seed in files.final_runs.items():
    tokens, values = _seed_series(by_seed, metric)
    if not len(tokens):
      continue  # its seeds share no evaluation step
    max_seeds = max(max_seeds, len(values))
    mean = values.mean(axis=0)
    half = tokens >= tokens[-1] / 2
    zoom_lo = min(zoom_lo, float(tokens[half][0]))
    final_tokens = max(final_tokens, float(tokens[-1]))
    # The y range follows the last 30% of training (an early spike in the
    # zoomed window is clipped rather than flattening the ends).
    zoom_vals += list(values[:, tokens >= 0.7 * tokens[-1]].ravel())
    for ax in (full, zoom):
      ax.plot(tokens, mean, color=colors[name], label=name, lw=1.6)
      if len(values) > 1:
        ax.fill_between(tokens, values.min(axis=0), values.max(axis=0),
                        color=colors[name], alpha=0.12, lw=0)
  reference = files.reference
  for comp in (files.verdict or {}).get("comparisons", []):
    sp = comp.get("speedup") or {}
    if sp.get("reach_tokens") is None or sp.get("speedup") is None:
      continue
    base = comp["baseline"]
    for ax in (full, zoom):
      ax.axhline(sp["baseline_final"], color=colors.get(base, "gray"),
                 ls=":", lw=0.9)
      ax.plot([sp["reach_tokens"]], [sp["baseline_final"]], marker="v",
              ms=8, mfc=colors.get(base, "gray"), mec="k", ls="none",
              label=(f"{reference} reaches {base}'s final value "
                     f"{sp['speedup']:.0%} sooner") if ax is zoom else None)
  full.set_xscale("log")
  full.set_yscale("log")
  for axis in (full.xaxis, full.yaxis):
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
  full.set_title("whole run (log-log)", fontsize=10)
  zoom.set_xlim(zoom_lo, final_tokens * 1.01)
  if zoom_vals:
    lo, hi = min(zoom_vals), max(zoom_vals)
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    zoom.set_ylim(lo - pad, hi + pad)
  zoom.set_title("second half of training (zoomed)", fontsize=10)
  for ax in (full, zoom):
    ax.set_xlabel("training tokens")
    ax.set_ylabel(f"aggregate {metric} (lower is better)")
    ax.grid(alpha=0.3)
  full.legend(fontsize=8)
  if zoom.get_legend_handles_labels()[1]:
    zoom.legend(fontsize=7, loc="best", framealpha=0.85)
  band = (f"lines: mean over {max_seeds} seeds, bands: min to max"
          if max_seeds > 1 else "one seed")
  fig.suptitle(f"Final runs at {files.config.project.target_tokens:.4g} "
               f"tokens ({band})\ntriangles: where {reference} reaches a "
               "baseline's final value (dotted line)", fontsize=10)
  return _save(fig, out, "final_curves", "final_curves.png",
               "Final runs: validation curves against tokens.", (full,))


def draw_per_domain(files: data_lib.StudyFiles, out) -> Figure | None:
  """Per-domain final eval of each mixture relative to the bar baseline."""
  base = files.baseline_for_bars
  if base is None:
    return None
  plt = _pyplot()
  metric = files.metric
  groups = files.domains + ["aggregate"]

  def value(rec, g):
    ev = rec.final_eval
    return (ev["aggregate"] if g == "aggregate" else ev["domains"][g])[metric]

  others = [n for n in files.final_runs if n != base]
  width = 0.8 / max(1, len(others))
  fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups)), 3.8))
  colors = {n: f"C{i}" for i, n in enumerate(files.final_runs)}
  for j, name in enumerate(others):
    seeds = [s for s in files.final_runs[name] if s in files.final_runs[base]]
    if not seeds:
      continue
    rel = np.array([[100.0 * (value(files.final_runs[name][s], g) /
                              value(files.final_runs[base][s], g) - 1.0)
                     for g in groups] for s in seeds])
    xs = np.arange(len(groups)) + (j - (len(others) - 1) / 2) * width
    mean = rel.mean(axis=0)
    ax.bar(xs, mean, width, label=name, color=colors[name])
    if len(seeds) > 1:
      ax.errorbar(xs, mean, yerr=[mean - rel.min(axis=0),
                                  rel.max(axis=0) - mean],
                  fmt="none", ecolor="k", capsize=2, lw=0.8)
  ax.axhline(0.0, color="k", lw=0.8)
  ax.set_xticks(np.arange(len(groups)), groups, rotation=20, fontsize=8)
  ax.set_ylabel(f"final {metric} vs {base} (%)")
  ax.set_title(f"Per-domain final {metric} relative to {base} (below 0: "
               "better)\npaired seeds; bars: mean, whiskers: min to max",
               fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  return _save(fig, out, "per_domain", "per_domain.png",
               f"Per-domain result of each mixture relative to {base}.",
               (ax,))


# ------------------------------------------------------------------- fits


def _base_aggregate(files: data_lib.StudyFiles, k: int, mix) -> float | None:
  """The base run's aggregate (fit metric) at budget ``k``, if the runs
  file is there and in the fit's metric; None otherwise."""
  runs = files.runs.get(k)
  targets = mix.extra.get("target_domains") or {}
  base_w = mix.extra.get("base_weights") or {}
  if not runs or not targets or not base_w or \
      runs.get("metric") != mix.extra.get("metric"):
    return None
  total = sum(base_w.values())
  want = {d: base_w[d] / total * mix.budget_tokens for d in base_w}
  aggs = [sum(w * r["eval"][d] for d, w in targets.items())
          for r in runs["runs"]
          if all(abs(r["tokens"].get(d, -1) - want[d]) <= 1.5 for d in want)]
  return float(np.mean(aggs)) if aggs else None


def _grid(rows: int, cols: int, plt, size=(3.3, 2.7)):
  fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols,
                                                size[1] * rows),
                           squeeze=False)
  return fig, list(axes.flat)


def draw_fits_absolute(files: data_lib.StudyFiles, out) -> Figure | None:
  """Every budget's per-domain fit against the domain's absolute tokens, the
  budget's optimum marked."""
  fitted = [(k, m) for k, m in files.ddo if m.extra.get("fits")]
  if not fitted:
    return None
  plt = _pyplot()
  domains = list(fitted[0][1].extra["fits"])
  cols = min(3, len(domains))
  fig, axes = _grid(math.ceil(len(domains) / cols), cols, plt)
  absolute = all(_base_aggregate(files, k, m) for k, m in fitted)
  for ax, d in zip(axes, domains):
    for k, m in fitted:
      f = m.extra["fits"].get(d)
      base_w = m.extra.get("base_weights") or {}
      if f is None or d not in base_w:
        continue
      base_d = base_w[d] / sum(base_w.values()) * m.budget_tokens
      scale = _base_aggregate(files, k, m) if absolute else 1.0
      pts = np.asarray(f.get("points", []), float).reshape(-1, 2)
      lo = (pts[:, 0].min() if len(pts) else 0.2) * 0.7
      hi = (pts[:, 0].max() if len(pts) else 3.0) * 1.3
      xs = np.geomspace(lo, hi, 80)
      label = f"budget {m.budget_tokens:.3g}"
      ax.plot(xs * base_d, _power_law(f, xs) * scale, color=f"C{k}",
              label=label)
      if len(pts):
        ax.plot(pts[:, 0] * base_d, pts[:, 1] * scale, "o", color=f"C{k}",
                ms=4)
      n_opt = m.tokens.get(d)
      if n_opt:
        ax.plot([n_opt], [_power_law(f, n_opt / base_d) * scale], "*",
                color=f"C{k}", ms=12, mec="k", mew=0.6)
    ax.set_xscale("log")
    ax.set_title(d, fontsize=9)
    ax.set_xlabel(f"{d} tokens", fontsize=8)
    ax.set_ylabel(f"aggregate {fitted[0][1].extra.get('metric', '')}"
                  if absolute else "metric / same budget's base", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  for ax in axes[len(domains):]:
    ax.axis("off")
  axes[0].legend(fontsize=7)
  fig.suptitle("Per-domain fits at every DDO budget in absolute tokens "
               "(dots: runs, stars: each budget's optimum)", fontsize=10)
  return _save(fig, out, "fits_absolute", "fits_absolute.png",
               "Fits at every budget in absolute tokens, optima marked.",
               axes[:1])


def draw_fits_relative(files: data_lib.StudyFiles, out) -> list[Figure]:
  """One figure per budget: each domain's fit in the units it was fitted
  in (x = tokens / base tokens, y = metric / base run)."""
  plt = _pyplot()
  figs = []
  for k, m in files.ddo:
    fits = m.extra.get("fits") or {}
    if not fits:
      continue
    cols = min(4, len(fits))
    fig, axes = _grid(math.ceil(len(fits) / cols), cols, plt, (3.0, 2.4))
    for ax, (d, f) in zip(axes, fits.items()):
      pts = np.asarray(f.get("points", []), float).reshape(-1, 2)
      xs = np.linspace(max(1e-3, pts[:, 0].min() * 0.8) if len(pts) else 0.1,
                       (pts[:, 0].max() * 1.1) if len(pts) else 3.0, 100)
      ax.plot(xs, _power_law(f, xs), "-", color="C0")
      if len(pts):
        ax.plot(pts[:, 0], pts[:, 1], "o", color="C3")
      ax.set_title(f"{d} (rms {f.get('rms', float('nan')):.2g})", fontsize=9)
      ax.set_xlabel("x = tokens / base tokens", fontsize=8)
      ax.set_ylabel("metric / base", fontsize=8)
      ax.tick_params(labelsize=7)
    for ax in axes[len(fits):]:
      ax.axis("off")
    fig.suptitle(f"DDO budget {k + 1} ({m.budget_tokens:.4g} tokens): "
                 "per-domain power-law fits as fitted", fontsize=10)
    figs.append(_save(fig, out, f"fits_{k}", f"fits_budget_{k}.png",
                      f"Budget {k + 1}: fits in relative units."))
  return figs


def draw_predicted_observed(files: data_lib.StudyFiles, out
                            ) -> Figure | None:
  """Each DDO run's metric (relative to its base) as the fitted laws predict
  it, against the observed value."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(4.8, 4.4))
  every = []
  for k, m in files.ddo:
    obs, pred = [], []
    for f in (m.extra.get("fits") or {}).values():
      pts = np.asarray(f.get("points", []), float).reshape(-1, 2)
      if len(pts):
        obs += list(pts[:, 1])
        pred += list(_power_law(f, pts[:, 0]))
    if obs:
      ax.plot(obs, pred, "o", color=f"C{k}", ms=5, alpha=0.8,
              label=f"budget {m.budget_tokens:.3g}")
      every += obs + pred
  if not every:
    plt.close(fig)
    return None
  lo, hi = min(every), max(every)
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="predicted = observed")
  ax.set_xlabel("observed metric / base run")
  ax.set_ylabel("fitted law's prediction")
  ax.set_title("DDO runs: predicted vs observed", fontsize=10)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  return _save(fig, out, "predicted_observed", "predicted_observed.png",
               "Each DDO run's metric predicted by its fit vs observed.",
               (ax,))


# ------------------------------------------------------ weights and tokens


def draw_weights(files: data_lib.StudyFiles, out) -> Figure | None:
  """Optimal weights per budget with 90% intervals, and the projection."""
  series = [(f"DDO {m.budget_tokens:.3g}", m) for _, m in files.ddo]
  if files.projected:
    series.append((f"projected {files.projected.budget_tokens:.3g}",
                   files.projected))
  if not series:
    return None
  plt = _pyplot()
  domains = list(series[0][1].weights)
  width = 0.8 / len(series)
  fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(domains) + 1.5), 3.6))
  for j, (label, m) in enumerate(series):
    w = np.array([m.weights[d] for d in domains])
    iv = m.intervals or {}
    lo = np.array([iv[d][0] if d in iv else m.weights[d] for d in domains])
    hi = np.array([iv[d][1] if d in iv else m.weights[d] for d in domains])
    xs = np.arange(len(domains)) + (j - (len(series) - 1) / 2) * width
    ax.bar(xs, w, width, label=label)
    ax.errorbar(xs, w, yerr=[np.maximum(w - lo, 0), np.maximum(hi - w, 0)],
                fmt="none", ecolor="k", capsize=2, lw=0.8)
  ax.set_xticks(np.arange(len(domains)), domains, rotation=30, fontsize=8)
  ax.set_ylabel("weight")
  ax.set_title("Optimal weights per budget (whiskers: 90% intervals)",
               fontsize=10)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return _save(fig, out, "weights", "weights.png",
               "DDO optima and the projected mixture.", (ax,))


def draw_trajectory(files: data_lib.StudyFiles, out) -> Figure | None:
  """The projected weights over budgets."""
  proj = files.projected
  if not proj or not proj.extra.get("trajectory"):
    return None
  plt = _pyplot()
  traj = proj.extra["trajectory"]
  budgets = [p["budget_tokens"] for p in traj]
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for d in traj[0]["weights"]:
    ax.plot(budgets, [p["weights"][d] for p in traj], label=d)
  for _, m in files.ddo:
    ax.axvline(m.budget_tokens, color="gray", lw=0.6, ls=":")
  ax.set_xscale("log")
  ax.set_xlabel("budget (tokens)")
  ax.set_ylabel("weight")
  ax.set_title("Projected optimal weights over budgets (dotted: DDO budgets)",
               fontsize=10)
  ax.legend(fontsize=7, ncol=2)
  return _save(fig, out, "trajectory", "trajectory.png",
               "Projected weights over budgets.", (ax,))


def draw_tokens_loglog(files: data_lib.StudyFiles, out) -> Figure | None:
  """Per-domain tokens against budget (log-log): the DDO optima with their
  intervals, the projected trajectory and point, and every estimator's
  recommendation at the target."""
  if not files.ddo:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.6, 4.4))
  domains = list(files.ddo[0][1].weights)
  traj = (files.projected.extra.get("trajectory") or []) if files.projected \
      else []
  for i, d in enumerate(domains):
    color = f"C{i}"
    b = np.array([m.budget_tokens for _, m in files.ddo])
    n = np.array([m.tokens[d] for _, m in files.ddo])
    lo = np.array([(m.intervals or {}).get(d, [m.weights[d]] * 2)[0] *
                   m.budget_tokens for _, m in files.ddo])
    hi = np.array([(m.intervals or {}).get(d, [m.weights[d]] * 2)[1] *
                   m.budget_tokens for _, m in files.ddo])
    ax.errorbar(b, n, yerr=[np.maximum(n - lo, 0), np.maximum(hi - n, 0)],
                fmt="o", color=color, capsize=3, label=d)
    if traj:
      ax.plot([p["budget_tokens"] for p in traj],
              [p["weights"][d] * p["budget_tokens"] for p in traj], "-",
              color=color, lw=1)
    if files.projected:
      ax.plot([files.projected.budget_tokens], [files.projected.tokens[d]],
              "*", color=color, ms=13, mec="k", mew=0.6)
  markers = iter("sDP^X<>")
  for name, est in (files.estimates or {}).items():
    if "tokens" not in est:
      continue
    marker = next(markers, "x")
    for i, d in enumerate(domains):
      ax.plot([est["budget_tokens"]], [est["tokens"][d]], marker,
              color=f"C{i}", mfc="none", ms=7,
              label=f"estimator {name}" if i == 0 else None)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("budget (tokens)")
  ax.set_ylabel("domain tokens")
  ax.set_title("Per-domain tokens vs budget (dots: DDO optima with 90% "
               "intervals,\nlines: projected trajectory, stars: projected "
               "mixture)", fontsize=9)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  ax.grid(alpha=0.3, which="both")
  return _save(fig, out, "tokens_loglog", "tokens_loglog.png",
               "Per-domain tokens against budget.", (ax,))


DRAWERS: Sequence[Callable[..., Any]] = (
    draw_final_curves, draw_per_domain, draw_weights, draw_trajectory,
    draw_tokens_loglog, draw_fits_absolute, draw_fits_relative,
    draw_predicted_observed)


def draw_all(files: data_lib.StudyFiles, out) -> dict[str, Figure]:
  """Draws every figure the study has data for; ``{key: Figure}``."""
  figs: dict[str, Figure] = {}
  for draw in DRAWERS:
    got = draw(files, out)
    for fig in got if isinstance(got, list) else [got]:
      if fig is not None:
        figs[fig.key] = fig
  return figs
