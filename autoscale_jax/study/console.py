"""What the stages print: progress lines, mixtures and the closing summary.

Only the one line per finished run grows with the number of runs; every
other block is a fixed number of lines (per budget, per domain or per
mixture), with the full tables in the files and the report.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from autoscale_jax import records
from autoscale_jax.study import layout as layout_lib


def say(msg: str) -> None:
  print(msg, flush=True)


def print_mixture(title: str, mixture: records.Mixture) -> None:
  """Prints a mixture's weights, tokens, 90% intervals, warnings and notes.

  A DDO optimum also shows its replication interval (where a replicate
  study's optimum would fall, ``mixing.ddo.replication_intervals``).
  """
  say(f"{title}:")
  intervals = mixture.intervals or {}
  replication = mixture.extra.get("replication_intervals") or {}
  for d, w in mixture.weights.items():
    band = intervals.get(d)
    band_txt = f"  90% [{band[0]:.3f}, {band[1]:.3f}]" if band else ""
    rep = replication.get(d)
    band_txt += f"  replicate study [{rep[0]:.3f}, {rep[1]:.3f}]" if rep else ""
    say(f"  {d:>16s}  w={w:.4f}  tokens={mixture.tokens[d]:.4g}{band_txt}")
  for w in grouped_warnings(mixture.warnings):
    say(f"  warning: {w}")
  for n in mixture.notes:
    say(f"  note: {n}")


_DOMAIN_WARNING = re.compile(r"^domain '([^']*)': (.*)$", re.S)
_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def grouped_warnings(warnings: Sequence[str]) -> list[str]:
  """The warnings with one line per kind of per-domain warning.

  ``domain 'X': MESSAGE`` warnings whose messages differ only in their
  numbers become ``domains X, Y, Z: MESSAGE (numbers of X; each domain's
  in the mixture file and the report)``; other warnings stay as they are.
  """
  groups: dict[str, list[tuple[str, str]]] = {}
  out: list[Any] = []
  for w in warnings:
    m = _DOMAIN_WARNING.match(w)
    if not m:
      out.append(w)
      continue
    kind = _NUMBER.sub("#", m.group(2))
    if kind not in groups:
      groups[kind] = []
      out.append(groups[kind])
    groups[kind].append((m.group(1), m.group(2)))
  lines = []
  for item in out:
    if isinstance(item, str):
      lines.append(item)
    elif len(item) == 1:
      lines.append(f"domain '{item[0][0]}': {item[0][1]}")
    else:
      names = ", ".join(d for d, _ in item)
      lines.append(f"domains {names}: {item[0][1]} (numbers of "
                   f"{item[0][0]}; each domain's in the mixture file)")
  return lines


def noise_line(noise: Mapping[str, Any], title: str) -> str:
  """One DDO budget's noise in one line (the full table: mixture.json and
  the report): the seed noise, the domain signal against it, each domain's
  signal-to-noise with whether its signal exceeds the noise, and the notes.

  ``TITLE, ppl_seq (2 seeds): seed noise 0.0123, domain signal 2.10x its
  noise; SNR alpha 3.10 yes, beta 0.40 no; note: ...``
  """
  def num(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)

  s = int(noise["num_seeds"])
  ratio = noise.get("signal_to_noise")
  head = (f"{title}, {noise['metric']} ({s} seed{'s' if s != 1 else ''}): "
          f"seed noise {num(noise.get('seed_noise'), '.4f')}, domain signal "
          + ("of unknown noise" if ratio is None else f"{ratio:.2f}x its noise"))
  flags = {True: "yes", False: "no", None: "n/a"}
  rows = noise["domains"]
  domains = ""
  if any(r.get("snr") is not None for r in rows.values()):
    domains = "; SNR " + ", ".join(
        f"{d} {num(r.get('snr'), '.2f')} {flags[r.get('signal')]}"
        for d, r in rows.items())
  notes = "".join(f"; note: {n}" for n in noise.get("notes", []))
  return f"{head}{domains}{notes}"


def names_line(names: Sequence[str], shown: int = 3) -> str:
  """``a, b, c and 12 more`` (the first ``shown`` names)."""
  names = list(names)
  more = len(names) - shown
  return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


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
