"""Typed contracts for what crosses module lines: mixtures, plans, run records.

Each class reads and writes exactly the JSON the project has always written
(``mixture.json``, the planned runs of :func:`mixing.ddo.plan_runs`, the
experiment store's records): ``from_json(to_json(x))`` is ``x`` and
``to_json(from_json(d))`` is ``d`` for every dict the project writes.

Optional keys that used to be spelled several ways are read into one canonical
field:

* :attr:`Mixture.intervals`: DDO ``intervals`` ({domain: [lo, hi]}, also
  nested as ``intervals.weights``) or a projection's ``bands.weights``.
* :attr:`Mixture.bound_domains`: ``bound_domains`` (what ddo writes,
  {domain: "lower" | "upper"}) or the older ``at_bound`` / ``pinned_domains``
  (a mapping or a plain list of names).

This module is a leaf: it imports nothing from the project but ``errors``, so
``mixing/`` may use it without depending on the study or the trainer.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from etils import epath

from autoscale_jax import errors

# The store's integrity field (a checksum of the rest of the record): written
# and verified by experiments/store.py, not part of a record's content.
CHECKSUM_KEY = "checksum"

# Spellings of the domains a DDO optimum reports at a bound, canonical first.
BOUND_KEYS = ("bound_domains", "at_bound", "pinned_domains")


class RecordError(errors.UserError, ValueError):
  """A JSON object lacks a field its contract needs (names the field)."""


def read_json(path: epath.PathLike, fix: str) -> Any:
  """The JSON value in the file at ``path``.

  Args:
    path: a file the project wrote (a stage output, a run's result).
    fix: what to do when it is corrupt, e.g. "run --stage=ddo again".

  Raises:
    RecordError: the file is not UTF-8 JSON (names the file and ``fix``).
  """
  path = epath.Path(path)
  try:
    return json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RecordError(f"{path} is not valid JSON ({e}); {fix}") from None


def bound_domains(obj: Mapping[str, Any]) -> dict[str, str]:
  """Domains a mixture reports at a bound: {domain: "lower" | "upper" | "bound"}.

  Reads every spelling in :data:`BOUND_KEYS`; a plain list of names (or a
  non-string side) reads as "bound"; falsy sides are skipped.
  """
  out: dict[str, str] = {}
  for key in BOUND_KEYS:
    val = obj.get(key)
    if not val:
      continue
    if isinstance(val, Mapping):
      for d, which in val.items():
        if which:
          out[str(d)] = which if isinstance(which, str) else "bound"
    elif isinstance(val, (list, tuple)):
      for d in val:
        out[str(d)] = "bound"
  return out


def weight_intervals(obj: Mapping[str, Any]) -> dict[str, Any]:
  """Raw per-domain weight intervals: DDO ``intervals`` or projection bands.

  Returns ``{domain: interval}`` as stored (``[lo, hi]`` for what the project
  writes), or {} when the mixture has none.
  """
  raw = obj.get("intervals")
  if isinstance(raw, Mapping) and isinstance(raw.get("weights"), Mapping):
    raw = raw["weights"]
  if not raw:
    bands = obj.get("bands")
    raw = bands.get("weights") if isinstance(bands, Mapping) else None
  return dict(raw) if isinstance(raw, Mapping) else {}


def _require(obj: Any, key: str, what: str) -> Any:
  if not isinstance(obj, Mapping):
    raise RecordError(f"{what}: expected a JSON object, got "
                      f"{type(obj).__name__}")
  if key not in obj:
    raise RecordError(f"{what}: missing field {key!r} (has: "
                      f"{', '.join(sorted(map(str, obj))) or 'nothing'})")
  return obj[key]


@dataclasses.dataclass(frozen=True)
class Mixture:
  """A data mixture as ``mixture.json`` holds it.

  Attributes:
    weights: {domain: weight}, summing to 1.
    tokens: {domain: tokens} at ``budget_tokens``.
    budget_tokens: total tokens, or None when the file has none.
    name: the mixture's name (baselines), or None.
    intervals: canonical {domain: [lo, hi]} 90% weight intervals, or None when
      the mixture carries none (see the module docstring for the spellings).
    bound_domains: canonical {domain: side} of domains at a DDO bound, or None
      when the file has no such field.
    noise: a DDO optimum's seed noise and per-domain signal-to-noise
      (:func:`mixing.noise.measure_noise`), or None when the file has none.
    extra: every other key, verbatim (fits, bands, trajectory, notes, ...).
  """
  weights: dict[str, float]
  tokens: dict[str, float]
  budget_tokens: float | None = None
  name: str | None = None
  intervals: dict[str, Any] | None = None
  bound_domains: dict[str, str] | None = None
  noise: dict[str, Any] | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def warnings(self) -> list[str]:
    return list(self.extra.get("warnings") or [])

  @property
  def notes(self) -> list[str]:
    return list(self.extra.get("notes") or [])

  @classmethod
  def from_json(cls, obj: Mapping[str, Any], what: str = "mixture"
                ) -> Mixture:
    weights = _require(obj, "weights", what)
    tokens = _require(obj, "tokens", what)
    noise = obj.get("noise")
    core = {"weights", "tokens", "budget_tokens", "name", "intervals",
            *BOUND_KEYS} | ({"noise"} if isinstance(noise, Mapping) else set())
    has_intervals = "intervals" in obj or isinstance(obj.get("bands"),
                                                     Mapping)
    return cls(
        weights=dict(weights), tokens=dict(tokens),
        budget_tokens=obj.get("budget_tokens"), name=obj.get("name"),
        intervals=weight_intervals(obj) if has_intervals else None,
        bound_domains=(bound_domains(obj) if any(k in obj for k in BOUND_KEYS)
                       else None),
        noise=dict(noise) if isinstance(noise, Mapping) else None,
        extra={k: v for k, v in obj.items() if k not in core})

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if self.name is not None:
      out["name"] = self.name
    if self.budget_tokens is not None:
      out["budget_tokens"] = self.budget_tokens
    out["weights"] = dict(self.weights)
    out["tokens"] = dict(self.tokens)
    bands = self.extra.get("bands")
    from_bands = isinstance(bands, Mapping) and self.intervals == bands.get(
        "weights")
    if self.intervals is not None and not from_bands:
      out["intervals"] = dict(self.intervals)
    if self.bound_domains is not None:
      out["bound_domains"] = dict(self.bound_domains)
    out.update(self.extra)
    if self.noise is not None:
      out["noise"] = dict(self.noise)
    return out


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One proxy run of a DDO budget, as :func:`mixing.ddo.plan_runs` plans it.

  Attributes:
    name: run name within its budget, e.g. ``base_s0`` or ``web_x0.5_s1``.
    tokens: {domain: int} token quotas.
    seed: the plan's seed offset (added to the study seed for training).
    domain: the domain whose quota is scaled, or None for a base run.
    factor: the scale factor of ``domain`` (1.0 for a base run).
  """
  name: str
  tokens: dict[str, int]
  seed: int
  domain: str | None = None
  factor: float = 1.0

  @classmethod
  def from_json(cls, obj: Mapping[str, Any], what: str = "planned run"
                ) -> PlannedRun:
    return cls(name=str(_require(obj, "name", what)),
               tokens={d: int(t) for d, t in
                       _require(obj, "tokens", what).items()},
               seed=int(_require(obj, "seed", what)),
               domain=obj.get("domain"), factor=float(obj.get("factor", 1.0)))

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "tokens": dict(self.tokens), "seed": self.seed,
            "domain": self.domain, "factor": self.factor}


@dataclasses.dataclass(frozen=True)
class RunRecord:
  """One finished run in the experiment store.

  Attributes:
    name: store name of the run (``b0_base_s0``, ``final_projected``, ...).
    fingerprint: sha256 of ``identity`` (the store key).
    identity: everything that determines the run's result.
    tokens: {domain: int} token quotas.
    curve: validation curve points ([] when not evaluated during training).
    seed: training seed, or None.
    steps: optimizer steps trained, or None.
    tokens_trained: {domain: tokens} actually trained, or None.
    final_eval: the final evaluation as the trainer returns it, or None.
    wall_seconds: training wall time, or None.
    run_dir: the run's training directory, or None.
    kind: "ddo" or "final", or None.
    mixture: the mixture of a final run, or None.
    extra: every other key, verbatim (budget_index, domain, factor, ...).
  """
  name: str
  fingerprint: str
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)
  tokens: dict[str, int] = dataclasses.field(default_factory=dict)
  curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  seed: int | None = None
  steps: int | None = None
  tokens_trained: dict[str, Any] | None = None
  final_eval: dict[str, Any] | None = None
  wall_seconds: float | None = None
  run_dir: str | None = None
  kind: str | None = None
  mixture: Mixture | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  _OPTIONAL = ("seed", "steps", "tokens_trained", "final_eval",
               "wall_seconds", "run_dir", "kind")

  @property
  def display_name(self) -> str:
    """The mixture's name for a final run, else the store name."""
    if self.mixture is not None and self.mixture.name is not None:
      return self.mixture.name
    return self.name

  @classmethod
  def from_json(cls, obj: Mapping[str, Any], what: str = "run record"
                ) -> RunRecord:
    name = _require(obj, "name", what)
    fp = _require(obj, "fingerprint", what)
    core = {"name", "fingerprint", "identity", "tokens", "curve", "mixture",
            CHECKSUM_KEY, *cls._OPTIONAL}
    mixture = obj.get("mixture")
    return cls(
        name=name, fingerprint=fp, identity=dict(obj.get("identity") or {}),
        tokens=dict(obj.get("tokens") or {}),
        curve=list(obj.get("curve") or []),
        mixture=(Mixture.from_json(mixture, f"{what} {name!r}: mixture")
                 if mixture is not None else None),
        extra={k: v for k, v in obj.items() if k not in core},
        **{k: obj.get(k) for k in cls._OPTIONAL})

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"name": self.name, "fingerprint": self.fingerprint,
                           "identity": self.identity, "tokens": self.tokens}
    for k in ("seed", "steps", "tokens_trained", "final_eval"):
      if getattr(self, k) is not None:
        out[k] = getattr(self, k)
    out["curve"] = self.curve
    for k in ("wall_seconds", "run_dir", "kind"):
      if getattr(self, k) is not None:
        out[k] = getattr(self, k)
    if self.mixture is not None:
      out["mixture"] = self.mixture.to_json()
    out.update(self.extra)
    return out
