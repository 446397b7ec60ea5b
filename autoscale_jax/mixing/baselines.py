"""Built-in baseline mixtures for the final comparison, with their sources.

`resolve_mixture` turns a name or a file into per-domain weights and integer
token quotas for one budget:

* ``uniform``: 1/m each (paper, "Baselines").
* ``proportional`` (also ``token_proportional``, ``natural``): weights
  proportional to each domain's available unique tokens (natural sizes).
* ``llama`` (also ``llama1``, ``llama-1``, ``llama_redpajama``): the LLaMA-1
  sampling proportions on RedPajama (Touvron et al. 2023, Table 1), as used by
  the paper: CommonCrawl 0.67, C4 0.15, GitHub 0.045, Books 0.045,
  Wikipedia 0.045, ArXiv 0.025, StackExchange 0.02. Only for RedPajama domain
  names; a study on a subset of them gets the weights renormalised over it.
* ``ddo_small`` (also ``ddo``): the DDO optimum found at a smaller budget,
  used as-is at the target budget (its weights, not its token counts).
* any path to a JSON file: a mixture.json (its "weights") or a plain
  ``{domain: weight}`` object.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from autoscale_jax import errors
from autoscale_jax import fileio


class BaselineError(errors.UserError, ValueError):
  """A one-line user error about a baseline mixture."""


LLAMA1_REDPAJAMA = {
    "commoncrawl": 0.67,
    "c4": 0.15,
    "github": 0.045,
    "books": 0.045,
    "wikipedia": 0.045,
    "arxiv": 0.025,
    "stackexchange": 0.02,
}

# Accepted spellings (after lower-casing and dropping non-alphanumerics).
_REDPAJAMA_ALIASES = {
    "commoncrawl": "commoncrawl", "cc": "commoncrawl",
    "c4": "c4",
    "github": "github", "code": "github",
    "book": "books", "books": "books",
    "wikipedia": "wikipedia", "wiki": "wikipedia",
    "arxiv": "arxiv",
    "stackexchange": "stackexchange", "se": "stackexchange",
}

_ALIASES = {
    "uniform": "uniform",
    "proportional": "proportional", "token_proportional": "proportional",
    "natural": "proportional", "token-proportional": "proportional",
    "llama": "llama", "llama1": "llama", "llama-1": "llama",
    "llama_redpajama": "llama",
    "ddo_small": "ddo_small", "ddo": "ddo_small",
}

SOURCES = {
    "uniform": "uniform weights 1/m (AutoScale paper, Baselines)",
    "proportional": "token-proportional: weights proportional to each "
                    "domain's available unique tokens (natural sizes)",
    "llama": "LLaMA-1 RedPajama sampling proportions (Touvron et al. 2023, "
             "Table 1; AutoScale paper, Baselines)",
    "ddo_small": "DDO optimum of a smaller budget used as-is (weights)",
}


def builtin_names() -> list[str]:
  """Names accepted by `resolve_mixture` besides file paths."""
  return sorted(_ALIASES)


def _canonical_redpajama(domain: str) -> str | None:
  return _REDPAJAMA_ALIASES.get(re.sub(r"[^a-z0-9]", "", domain.lower()))


def llama_weights(domains: Sequence[str]) -> dict[str, float]:
  """LLaMA-1 weights mapped onto the study's RedPajama domain names.

  Raises:
    BaselineError: a domain is not a RedPajama domain, or two domains map to
      the same RedPajama domain.
  """
  unknown = [d for d in domains if _canonical_redpajama(d) is None]
  if unknown:
    raise BaselineError(
        "the llama baseline is defined for the RedPajama domains "
        "(commoncrawl, c4, github, books, wikipedia, arxiv, stackexchange); "
        "unknown domain(s): " + ", ".join(unknown))
  seen: dict[str, str] = {}
  for d in domains:
    c = _canonical_redpajama(d)
    if c in seen:
      raise BaselineError(f"domains {seen[c]!r} and {d!r} both map to the "
                          f"RedPajama domain {c!r}")
    seen[c] = d
  raw = {d: LLAMA1_REDPAJAMA[_canonical_redpajama(d)] for d in domains}
  total = sum(raw.values())
  return {d: w / total for d, w in raw.items()}


def largest_remainder(weights: Mapping[str, float],
                      budget_tokens: int) -> dict[str, int]:
  """Integer quotas proportional to weights, summing exactly to the budget.

  Hamilton's method: floor every share, then hand the leftover tokens to the
  largest fractional parts (ties broken by domain order).
  """
  budget = int(budget_tokens)
  total = sum(weights.values())
  exact = {d: w / total * budget for d, w in weights.items()}
  out = {d: int(math.floor(v)) for d, v in exact.items()}
  left = budget - sum(out.values())
  order = sorted(exact, key=lambda d: -(exact[d] - out[d]))
  for d in order[:left]:
    out[d] += 1
  return out


def _normalised(weights: Mapping[str, Any], domains: Sequence[str],
                what: str) -> dict[str, float]:
  missing = [d for d in domains if d not in weights]
  extra = [str(d) for d in weights if d not in domains]
  if missing or extra:
    parts = []
    if missing:
      parts.append("lacks domain(s) " + ", ".join(missing))
    if extra:
      parts.append("has unknown domain(s) " + ", ".join(extra)
                   + " (study domains: " + ", ".join(domains) + ")")
    raise BaselineError(f"{what} " + " and ".join(parts))
  out = {}
  for d in domains:
    w = weights[d]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (
        math.isfinite(w) and w >= 0):
      raise BaselineError(f"{what}: weight of domain {d!r} is {w!r}; "
                          f"expected a finite number >= 0")
    out[d] = float(w)
  total = sum(out.values())
  if total <= 0:
    raise BaselineError(f"{what}: weights sum to 0")
  return {d: w / total for d, w in out.items()}


def _weights_from_obj(obj: Any, domains: Sequence[str],
                      what: str) -> dict[str, float]:
  if not isinstance(obj, Mapping):
    raise BaselineError(f"{what}: expected a JSON object (mixture.json or "
                        f"{{domain: weight}})")
  if "weights" in obj:
    if not isinstance(obj["weights"], Mapping):
      raise BaselineError(f"{what}: field 'weights' must be an object")
    return _normalised(obj["weights"], domains, what)
  if "tokens" in obj and isinstance(obj["tokens"], Mapping):
    return _normalised(obj["tokens"], domains, what)
  return _normalised(obj, domains, what)


def _read_json(path: str) -> Any:
  try:
    return json.loads(fileio.read_text(path))
  except OSError as e:
    raise BaselineError(f"{path}: cannot read ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise BaselineError(f"{path}: not valid JSON ({e.msg} at line "
                        f"{e.lineno})") from None


def resolve_mixture(name_or_path: str, domains: Sequence[str],
                    budget_tokens: float, *,
                    available_tokens: Mapping[str, float] | None = None,
                    ddo_small: str | Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
  """Resolves a baseline name or a mixture file to weights and token quotas.

  Args:
    name_or_path: a built-in name (see `builtin_names`) or a JSON file.
    domains: the study's domains, in order.
    budget_tokens: total tokens of the run (rounded to an integer).
    available_tokens: unique tokens per domain (for ``proportional``).
    ddo_small: mixture.json path or dict of a smaller-budget DDO optimum
      (for ``ddo_small``).

  Returns:
    {"name", "source", "budget_tokens", "weights" {d: float, sum 1},
    "tokens" {d: int, sum exactly budget_tokens}}.

  Raises:
    BaselineError: unknown name or file, unknown or missing domains, or a
      missing input for the chosen baseline.
  """
  domains = [str(d) for d in domains]
  if not domains:
    raise BaselineError("no domains given")
  if len(set(domains)) != len(domains):
    raise BaselineError("duplicate domain names: " + ", ".join(domains))
  if isinstance(budget_tokens, bool) or not isinstance(
      budget_tokens, (int, float)) or not math.isfinite(budget_tokens) or (
          round(budget_tokens) <= 0):
    raise BaselineError(f"budget_tokens is {budget_tokens!r}; expected a "
                        f"number >= 1")
  budget = int(round(budget_tokens))
  key = _ALIASES.get(str(name_or_path).lower())
  if key == "uniform":
    weights = {d: 1.0 / len(domains) for d in domains}
    name, source = "uniform", SOURCES["uniform"]
  elif key == "proportional":
    if available_tokens is None:
      raise BaselineError("the proportional baseline needs available_tokens "
                          "per domain")
    weights = _normalised(available_tokens, domains, "available_tokens")
    name, source = "proportional", SOURCES["proportional"]
  elif key == "llama":
    weights = llama_weights(domains)
    name, source = "llama", SOURCES["llama"]
    if len(domains) < len(LLAMA1_REDPAJAMA):
      source += (" renormalised over the study's "
                 f"{len(domains)} of 7 RedPajama domains")
  elif key == "ddo_small":
    if ddo_small is None:
      raise BaselineError("the ddo_small baseline needs the mixture.json of "
                          "a smaller-budget DDO optimum")
    if isinstance(ddo_small, Mapping):
      obj, where = ddo_small, "ddo_small mixture"
    else:
      obj, where = _read_json(str(ddo_small)), str(ddo_small)
    weights = _weights_from_obj(obj, domains, where)
    name = "ddo_small"
    source = SOURCES["ddo_small"] + f" from {where}"
    if isinstance(obj, Mapping) and "budget_tokens" in obj:
      source += f" (found at {float(obj['budget_tokens']):.6g} tokens)"
  elif fileio.isfile(str(name_or_path)):
    path = str(name_or_path)
    weights = _weights_from_obj(_read_json(path), domains, path)
    name = os.path.splitext(os.path.basename(path))[0]
    source = f"user file {path}"
  else:
    raise BaselineError(
        f"unknown mixture {name_or_path!r}: not a built-in name ("
        + ", ".join(builtin_names()) + ") nor an existing file")
  return {"name": name, "source": source, "budget_tokens": budget,
          "weights": weights, "tokens": largest_remainder(weights, budget)}
