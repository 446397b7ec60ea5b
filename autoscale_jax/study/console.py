"""What the stages print: progress lines, mixtures and the closing summary."""

from __future__ import annotations

import json

from autoscale_jax import records
from autoscale_jax.study import layout as layout_lib


def say(msg: str) -> None:
  print(msg, flush=True)


def print_mixture(title: str, mixture: records.Mixture) -> None:
  """Prints a mixture's weights, tokens, 90% intervals, warnings and notes."""
  say(f"{title}:")
  intervals = mixture.intervals or {}
  for d, w in mixture.weights.items():
    band = intervals.get(d)
    band_txt = f"  90% [{band[0]:.3f}, {band[1]:.3f}]" if band else ""
    say(f"  {d:>16s}  w={w:.4f}  tokens={mixture.tokens[d]:.4g}{band_txt}")
  for w in mixture.warnings:
    say(f"  warning: {w}")
  for n in mixture.notes:
    say(f"  note: {n}")


def verdict_sentences(layout: layout_lib.Layout) -> list[str]:
  """The verdict sentences of final/comparison.json ([] when there is none)."""
  path = layout.comparison_json
  if not path.exists():
    return []
  try:
    table = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError):
    return []
  seeds = table.get("seeds") if isinstance(table, dict) else None
  return [str(s) for s in (seeds or {}).get("sentences", [])]


def summary_lines(layout: layout_lib.Layout) -> list[str]:
  """The closing block: the verdict sentences, then where the results are."""
  lines = ["", "=== summary ==="]
  lines += [f"verdict: {s}" for s in verdict_sentences(layout)]
  paths = [("report", layout.report_html),
           ("report (markdown)", layout.report_markdown),
           ("projected mixture", layout.projected_mixture),
           ("exports", layout.export_dir),
           ("exports README", layout.export_dir / "README.md"),
           ("comparison", layout.comparison_md)]
  width = max(len(n) for n, _ in paths)
  for name, path in paths:
    missing = "" if path.exists() else "  (not written yet)"
    shown = f"{path}/" if name == "exports" else str(path)
    lines.append(f"{name + ':':<{width + 1}} {shown}{missing}")
  return lines


def print_summary(layout: layout_lib.Layout) -> None:
  """Prints :func:`summary_lines` (the last lines of ``--stage=all``)."""
  for line in summary_lines(layout):
    say(line)
