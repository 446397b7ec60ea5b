"""Experiment store: one JSON record per finished run, written atomically.

Layout under ``root`` (a local path or ``gs://...``; every call goes through
``autoscale_jax.fileio``, so transient storage errors are retried)::

    <run name>__<fingerprint[:16]>.json

A record is a JSON object with at least ``name`` and ``fingerprint`` (the
sha256 of the canonical JSON of everything that determines the result: model
config, tokenizer, per-domain data fingerprints, token quotas, seed, training
settings). Records are written to a temporary name and renamed into place, so
a killed process leaves either the old state or the full new record. A record
whose run name matches a planned run but whose fingerprint differs is *stale*:
reported, never reused.

Integrity: ``put`` adds ``checksum``, the sha256 of the canonical JSON of the
record without that field; every read (``get``, ``records``, ``status``)
verifies it, so a record edited by hand is reported as such
(:class:`StoreError`) and never reused. A record written before checksums
existed (no ``checksum`` field) is accepted unverified with one warning per
file and process, and listed in ``ExperimentStore.unverified``; it is never
rewritten behind the user's back. Truncated or garbage files raise
:class:`StoreError` naming the file.

For ``to_runs_json`` a record also carries ``tokens`` ({domain: int}),
optionally ``seed``, and ``final_eval`` (as ``train_run`` returns it, at the
top level or under ``result``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from etils import epath

from autoscale_jax import fileio
from autoscale_jax.errors import UserError
from autoscale_jax.fileio import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)
from autoscale_jax.records import CHECKSUM_KEY

_warned_unverified: set[str] = set()

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RUNS_METRIC = {"ppl_seq": "ppl", "ppl_tok": "ppl", "ppl": "ppl",
                "loss": "loss", "bpb": "loss"}


class StoreError(UserError, ValueError):
  """A malformed, edited or unreadable record (names the file or run)."""


def _canonical(obj: Any) -> Any:
  """Plain JSON types with sorted-key dicts; rejects NaN and unknown types."""
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _canonical(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_canonical(v) for v in obj]
  if hasattr(obj, "tolist"):  # numpy scalars and arrays
    return _canonical(obj.tolist())
  if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
    return obj
  if isinstance(obj, float):
    if not math.isfinite(obj):
      raise StoreError(f"cannot fingerprint a non-finite number {obj!r}")
    return obj
  raise StoreError(f"cannot fingerprint a value of type {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
  return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"),
                    ensure_ascii=True, allow_nan=False)


def fingerprint(obj: Any) -> str:
  """sha256 hex of the canonical JSON of ``obj`` (key order irrelevant)."""
  return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def record_checksum(record: Mapping[str, Any]) -> str:
  """sha256 of the canonical JSON of ``record`` without its checksum field."""
  return fingerprint({k: v for k, v in record.items() if k != CHECKSUM_KEY})


class ExperimentStore:
  """One JSON record per (run name, fingerprint) under ``root``."""

  def __init__(self, root: epath.PathLike):
    self.root = epath.Path(root)
    # Records read without a checksum (written before checksums existed).
    self.unverified: list[str] = []

  def _path(self, name: str, fp: str) -> epath.Path:
    if not _NAME_RE.match(name):
      raise StoreError(f"run name {name!r} must match [A-Za-z0-9_.-]+")
    if not re.match(r"^[0-9a-f]{16,}$", fp):
      raise StoreError(f"run {name!r}: fingerprint {fp!r} is not a hex digest")
    return self.root / f"{name}__{fp[:16]}.json"

  def put(self, record: Mapping[str, Any]) -> epath.Path:
    """Writes ``record`` (needs ``name`` and ``fingerprint``) atomically."""
    for key in ("name", "fingerprint"):
      if key not in record:
        raise StoreError(f"record is missing {key!r}: {sorted(record)}")
    path = self._path(record["name"], record["fingerprint"])
    content = _canonical({k: v for k, v in record.items()
                          if k != CHECKSUM_KEY})
    content[CHECKSUM_KEY] = record_checksum(content)
    return atomic_write_json(path, content)

  def _read(self, path: epath.Path) -> dict:
    """Parses and verifies one record file; raises StoreError naming it."""
    try:
      rec = json.loads(fileio.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise StoreError(f"{path}: not a valid JSON record ({_one_line(e)}); "
                       "delete it to re-run that run") from None
    if not isinstance(rec, dict) or "name" not in rec or "fingerprint" not in rec:
      raise StoreError(f"{path}: not a store record (needs an object with "
                       "'name' and 'fingerprint'); delete it to re-run that "
                       "run")
    if CHECKSUM_KEY not in rec:
      self._note_unverified(path)
      return rec
    try:
      expected = record_checksum(rec)
    except StoreError:  # e.g. a value edited to a non-JSON number
      expected = None
    if rec[CHECKSUM_KEY] != expected:
      raise StoreError(
          f"record {path} was edited after it was written (checksum "
          f"mismatch): delete it to retrain run {rec['name']!r}, or restore "
          "the file as it was written")
    return rec

  def _note_unverified(self, path: epath.Path) -> None:
    """Accepts a pre-checksum record once per file, with a warning."""
    key = str(path)
    if key not in self.unverified:
      self.unverified.append(key)
    if key not in _warned_unverified:
      _warned_unverified.add(key)
      logging.getLogger(__name__).warning(
          "record %s has no checksum (written before records carried one): "
          "used unverified and left as it is; delete it to retrain that run "
          "if it may have been edited", key)

  def get(self, name: str, fp: str) -> dict | None:
    """The record of run ``name`` with fingerprint ``fp``, or None."""
    path = self._path(name, fp)
    if not fileio.exists(path):
      return None
    rec = self._read(path)
    return rec if rec["fingerprint"] == fp and rec["name"] == name else None

  def records(self) -> list[dict]:
    """Every record in the store, sorted by (name, fingerprint)."""
    out = [self._read(self.root / n) for n in fileio.listdir(self.root)
           if n.endswith(".json") and not n.startswith(".")]
    return sorted(out, key=lambda r: (r["name"], r["fingerprint"]))

  def status(self, planned: Iterable[tuple[str, str]]) -> dict[str, list]:
    """Which planned runs are done, missing or stale.

    Returns:
      ``{"done": [names], "missing": [names], "stale": [{"name",
      "fingerprint", "expected"}]}``. A run with only a stale record is also
      listed as missing (it must be trained again).
    """
    by_name: dict[str, list[str]] = {}
    for rec in self.records():
      by_name.setdefault(rec["name"], []).append(rec["fingerprint"])
    done, missing, stale = [], [], []
    for name, fp in planned:
      fps = by_name.get(name, [])
      if fp in fps:
        done.append(name)
      else:
        missing.append(name)
      stale += [{"name": name, "fingerprint": f, "expected": fp}
                for f in fps if f != fp]
    return {"done": done, "missing": missing, "stale": stale}


def _one_line(e: Exception) -> str:
  return " ".join(str(e).split())


def to_runs_json(records: Sequence[Mapping[str, Any]], metric: str) -> dict:
  """RUNS.json dict from store records.

  Args:
    records: records with ``name``, ``tokens``, optional ``seed`` and
      ``final_eval`` (top level or under ``result``).
    metric: per-domain eval key: ``ppl_seq``, ``ppl_tok``, ``loss`` or ``bpb``.
  """
  if metric not in _RUNS_METRIC:
    raise StoreError(f"metric {metric!r}: allowed {', '.join(_RUNS_METRIC)}")
  runs = []
  for rec in records:
    result = rec.get("result", {}) or {}
    final = rec.get("final_eval") or result.get("final_eval")
    if not final or "domains" not in final:
      raise StoreError(f"run {rec.get('name')!r}: record has no final_eval")
    tokens = rec.get("tokens") or result.get("tokens_per_domain")
    if not tokens:
      raise StoreError(f"run {rec.get('name')!r}: record has no tokens")
    ev = {}
    for d, vals in final["domains"].items():
      if metric not in vals:
        raise StoreError(f"run {rec['name']!r}: final_eval.domains.{d} has no "
                         f"{metric!r}")
      ev[d] = float(vals[metric])
    run = {"name": rec["name"], "tokens": {d: float(v) for d, v in
                                           tokens.items()}, "eval": ev}
    if "seed" in rec:
      run["seed"] = int(rec["seed"])
    runs.append(run)
  return {"metric": _RUNS_METRIC[metric], "runs": runs}
