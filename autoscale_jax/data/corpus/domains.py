"""The corpus domains, and the names every corpus module shares.

`CorpusError` is the builder's user error; `Doc` is one extracted document;
`LogFn` is the progress logger the fetch and build steps take.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from autoscale_jax.errors import UserError

DOMAINS = ("code", "techdocs", "books", "wiki", "legal", "qa", "latex")
OPTIONAL_DOMAINS = ("dictionary",)
ALL_DOMAINS = DOMAINS + OPTIONAL_DOMAINS

Doc = tuple[str, str]  # (path inside the package, text)
LogFn = Callable[[str], Any]


class CorpusError(UserError, ValueError):
  """A one-line user error: what went wrong and how to fix it."""


def parse_domains(domains: str | Sequence[str] | None) -> list[str]:
  """Validates a domain list (comma string or sequence), canonical order."""
  if domains is None:
    return list(DOMAINS)
  items = domains.split(",") if isinstance(domains, str) else list(domains)
  items = [d.strip() for d in items if d.strip()]
  bad = [d for d in items if d not in ALL_DOMAINS]
  if bad or not items:
    raise CorpusError(f"unknown domain(s) {bad or items}; choose from "
                      f"{','.join(ALL_DOMAINS)}")
  return [d for d in ALL_DOMAINS if d in items]
