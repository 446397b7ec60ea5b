"""What the stages print: progress lines and mixtures."""

from __future__ import annotations

from autoscale_jax import records


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
