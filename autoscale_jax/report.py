"""One report per study: figures, tables and plainly stated limits.

Reads only what the stages wrote (ddo/*/mixture.json, project/mixture.json,
final/comparison.json and the run records) and writes report/README.md and
report/index.html with the same content, plus PNG figures. Every number shown
is formatted from those JSON files, never recomputed.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import ml_collections

from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.experiments import store as store_lib
from autoscale_jax.mixing import speedup
from autoscale_jax.study import layout as layout_lib

# A fit whose RMS residual (relative to the base run's metric) exceeds this is
# called out in the limits section.
LARGE_RESIDUAL = 0.02
# Projecting further than this multiple of the largest DDO budget is flagged.
FAR_EXTRAPOLATION = 10.0


def _load_mixture(path) -> records.Mixture | None:
  if not path.exists():
    return None
  return records.Mixture.from_json(json.loads(path.read_text()), str(path))


def _load(path) -> Any:
  return json.loads(path.read_text()) if path.exists() else None


def _fmt(x: float | None, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x:.{digits}f}"


def _records(layout: layout_lib.Layout) -> list[records.RunRecord]:
  if not layout.store.exists():
    return []
  return [records.RunRecord.from_json(r, "store record") for r in
          store_lib.ExperimentStore(layout.store).records()]


def _figures(out, ddo_mixtures: list[records.Mixture],
             projected: records.Mixture | None,
             final_records: dict[str, records.RunRecord], metric: str
             ) -> dict[str, str]:
  """Draws the figures; returns {key: file name}."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  figs: dict[str, str] = {}

  def save(fig, key: str, name: str) -> None:
    fig.tight_layout()
    fig.savefig(str(out / name), dpi=90)
    plt.close(fig)
    figs[key] = name
  # 1. Per-domain fits with data points, for each DDO budget.
  for k, mix in enumerate(ddo_mixtures):
    fits = mix.extra.get("fits", {})
    if not fits:
      continue
    domains = list(fits)
    cols = min(4, len(domains))
    rows = math.ceil(len(domains) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows),
                             squeeze=False)
    for ax, d in zip(axes.flat, domains):
      f = fits[d]
      pts = np.asarray(f.get("points", []), dtype=float).reshape(-1, 2)
      xs = np.linspace(max(1e-3, pts[:, 0].min() * 0.8) if len(pts) else 0.1,
                       (pts[:, 0].max() * 1.1) if len(pts) else 3.0, 100)
      ys = (xs + f["a"]) ** (-f["b"]) + f["c"]
      ax.plot(xs, ys, "-", color="C0", label="fit")
      if len(pts):
        ax.plot(pts[:, 0], pts[:, 1], "o", color="C3", label="runs")
      ax.set_title(f"{d} (rms {f.get('rms', float('nan')):.2g})", fontsize=9)
      ax.set_xlabel("x = tokens / base tokens", fontsize=8)
      ax.set_ylabel("metric / base", fontsize=8)
      ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(domains):]:
      ax.axis("off")
    fig.suptitle(f"DDO budget {k + 1}: per-domain power-law fits")
    save(fig, f"fits_{k}", f"fits_budget_{k}.png")

  # 2. Optimal weights per budget with intervals (and the projection).
  series = [(f"DDO {m.budget_tokens:.3g}", m) for m in ddo_mixtures]
  if projected:
    series.append((f"projected {projected.budget_tokens:.3g}", projected))
  if series:
    domains = list(series[0][1].weights)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(domains)), 3.6))
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
    ax.set_title("Optimal weights per budget (bars: 90% intervals)")
    ax.legend(fontsize=7)
    save(fig, "weights", "weights.png")

  # 3. Projected trajectory of weights over budgets.
  if projected and projected.extra.get("trajectory"):
    traj = projected.extra["trajectory"]
    budgets = [p["budget_tokens"] for p in traj]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for d in traj[0]["weights"]:
      ax.plot(budgets, [p["weights"][d] for p in traj], label=d)
    for m in ddo_mixtures:
      ax.axvline(m.budget_tokens, color="gray", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("budget (tokens)")
    ax.set_ylabel("weight")
    ax.set_title("Projected optimal weights over budgets (dotted: DDO budgets)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, "trajectory", "trajectory.png")

  # 4. Validation curves of the final runs.
  if final_records:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, rec in final_records.items():
      curve = rec.curve
      if curve:
        ax.plot([p["step"] for p in curve],
                [p["aggregate"][metric] for p in curve], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"aggregate {metric}")
    ax.set_title("Final runs: validation curves")
    ax.legend(fontsize=8)
    save(fig, "final_curves", "final_curves.png")
  return figs


def _weights_table(title_cols: list[str], rows: list[list[str]]) -> str:
  head = "| " + " | ".join(title_cols) + " |"
  sep = "|" + "|".join("---" for _ in title_cols) + "|"
  return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in rows])


def build_markdown(config: ml_collections.ConfigDict,
                   layout: layout_lib.Layout) -> tuple[str, dict[str, str]]:
  """Returns (markdown, figures) for the study in ``layout``."""
  out = layout.report_dir
  out.mkdir(parents=True, exist_ok=True)
  ddo_mixtures = []
  for k in range(len(config.ddo.budgets)):
    m = _load_mixture(layout.budget_mixture(k))
    if m is not None:
      ddo_mixtures.append(m)
  projected = _load_mixture(layout.projected_mixture)
  comparison = _load(layout.comparison_json)
  run_records = _records(layout)
  final_records = {r.display_name: r for r in run_records
                   if r.kind == "final"}
  metric = config.ddo.metric
  figs = _figures(out, ddo_mixtures, projected, final_records, metric)
  domains = list(config.data.domains)

  md: list[str] = [f"# AutoScale report: study `{config.study}`", ""]
  md += [f"Model: {config.model.kind}, {config.model.num_layers} layers, width "
         f"{config.model.d_model}; tokenizer {config.data.tokenizer}; metric "
         f"`{metric}` (lower is better). DDO budgets: "
         + ", ".join(f"{b:.4g}" for b in config.ddo.budgets)
         + f" tokens; target budget {config.project.target_tokens:.4g} tokens.",
         ""]

  # Limits first: what a reader must know before trusting the numbers.
  limits = []
  for m in ddo_mixtures:
    for d, side in (m.bound_domains or {}).items():
      limits.append(f"At {m.budget_tokens:.4g} tokens, `{d}` is pinned at "
                    f"its {side} bound: its optimum lies outside the observed "
                    "range and the projection rule is not valid for it.")
    for d, f in (m.extra.get("fits") or {}).items():
      if f.get("rms", 0.0) > LARGE_RESIDUAL:
        limits.append(f"At {m.budget_tokens:.4g} tokens, the fit for `{d}` "
                      f"has a large residual (rms {f['rms']:.3g}).")
    limits += [f"At {m.budget_tokens:.4g} tokens: {w}" for w in m.warnings]
    iv, base = m.intervals or {}, m.extra.get("base_weights") or {}
    unresolved = [d for d in iv if d in base and iv[d][0] <= base[d] <= iv[d][1]]
    if iv and len(unresolved) == len(iv):
      limits.append(f"At {m.budget_tokens:.4g} tokens, every domain's 90% "
                    "interval contains its base weight: these runs do not tell "
                    "the optimum from the base mixture (more seeds, more "
                    "factors or a larger budget would).")
  if projected:
    ratio = projected.budget_tokens / max(config.ddo.budgets)
    if ratio > FAR_EXTRAPOLATION:
      limits.append(f"The target budget is {ratio:.1f}x the largest DDO "
                    "budget: far beyond the fitted range.")
    for d in projected.extra.get("capped_domains") or []:
      limits.append(f"`{d}` is capped by the tokens available at the target "
                    "(beyond the paper: re-solved with the cap).")
    limits += projected.notes
  md += ["## Limits", ""]
  md += [f"- {l}" for l in limits] or ["- None detected."]
  md.append("")

  if ddo_mixtures:
    md += ["## DDO optima", ""]
    cols = ["domain"] + [f"w* at {m.budget_tokens:.4g}" for m in ddo_mixtures]
    rows = []
    for d in domains:
      row = [d]
      for m in ddo_mixtures:
        iv = (m.intervals or {}).get(d)
        cell = _fmt(m.weights[d])
        if iv:
          cell += f" [{_fmt(iv[0])}, {_fmt(iv[1])}]"
        row.append(cell)
      rows.append(row)
    md += [_weights_table(cols, rows), "",
           "Brackets: 90% intervals (bootstrap over runs / seeds).", ""]
    for k, m in enumerate(ddo_mixtures):
      if f"fits_{k}" in figs:
        md += [f"![fits at budget {k + 1}]({figs[f'fits_{k}']})", ""]
      fits = m.extra.get("fits") or {}
      if fits:
        md += [_weights_table(
            ["domain", "a", "b", "c", "rms"],
            [[d, _fmt(f["a"]), _fmt(f["b"]), _fmt(f["c"]), f"{f['rms']:.2e}"]
             for d, f in fits.items()]), ""]
  if "weights" in figs:
    md += [f"![weights]({figs['weights']})", ""]

  if projected:
    md += ["## Projection", "",
           f"Method: {projected.extra.get('method', 'n/a')}; target "
           f"{projected.budget_tokens:.4g} tokens.", ""]
    bands = projected.intervals or {}
    md += [_weights_table(
        ["domain", "weight", "tokens", "band"],
        [[d, _fmt(projected.weights[d]), f"{projected.tokens[d]:.4g}",
          (f"[{_fmt(bands[d][0])}, {_fmt(bands[d][1])}]" if d in bands
           else "n/a")] for d in domains]), ""]
    if "trajectory" in figs:
      md += [f"![trajectory]({figs['trajectory']})", ""]

  if comparison:
    md += ["## Final runs at the target budget", "",
           speedup.to_markdown(comparison), ""]
    if "final_curves" in figs:
      md += [f"![final curves]({figs['final_curves']})", ""]

  md += ["## Provenance", ""]
  if run_records:
    ident = run_records[0].identity
    md += [f"- tokenizer fingerprint: `{ident.get('tokenizer', 'n/a')}`"]
    for d, fp in sorted((ident.get("data") or {}).items()):
      md += [f"- data fingerprint `{d}`: `{fp}`"]
  md += [f"- runs in the store: {len(run_records)}", "", "Config:", "", "```",
         config.to_json_best_effort(indent=1, sort_keys=True), "```", ""]
  return "\n".join(md), figs


def markdown_to_html(md: str, title: str) -> str:
  """A small converter for the subset of markdown the report uses."""
  body: list[str] = []
  lines = md.splitlines()
  i = 0
  in_code = False
  while i < len(lines):
    line = lines[i]
    if line.startswith("```"):
      body.append("</pre>" if in_code else "<pre>")
      in_code = not in_code
    elif in_code:
      body.append(html.escape(line))
    elif line.startswith("|") and i + 1 < len(lines) and \
        lines[i + 1].startswith("|---"):
      cells = [c.strip() for c in line.strip("|").split("|")]
      body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>"
                                          for c in cells) + "</tr>")
      i += 2
      while i < len(lines) and lines[i].startswith("|"):
        cells = [c.strip() for c in lines[i].strip("|").split("|")]
        body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells)
                    + "</tr>")
        i += 1
      body.append("</table>")
      continue
    elif line.startswith("#"):
      level = len(line) - len(line.lstrip("#"))
      body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
    elif line.startswith("!["):
      alt, src = line[2:].split("](", 1)
      body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" '
                  f'alt="{html.escape(alt)}"></p>')
    elif line.startswith("- "):
      body.append(f"<li>{_inline(line[2:])}</li>")
    elif line.strip():
      body.append(f"<p>{_inline(line)}</p>")
    i += 1
  style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
           "padding:2px 6px;text-align:right}img{max-width:100%}")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>"
          f"{html.escape(title)}</title><style>{style}</style></head><body>\n"
          + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
  out = html.escape(text)
  parts = out.split("`")
  return "".join(f"<code>{p}</code>" if k % 2 else p
                 for k, p in enumerate(parts))


def write_report(config: ml_collections.ConfigDict,
                 layout: layout_lib.Layout) -> str:
  """Writes report/README.md and report/index.html; returns the HTML path."""
  md, _ = build_markdown(config, layout)
  fileio.atomic_write_text(layout.report_markdown, md)
  fileio.atomic_write_text(layout.report_html,
                           markdown_to_html(md, config.study))
  return str(layout.report_html)
