"""Results files from any training stack: RUNS.json or a CSV, one row per run.

``--stage=plan`` writes both skeletons (:func:`csv_text`, the JSON via
:func:`runs_json`) and ``--stage=fit --results=FILE`` reads either back
(:func:`read_results`), so the format the plan writes is the format the fit
reads.

CSV header (one row per run; the order of columns is free)::

  name,budget,seed[,steps],tokens.<domain>...[,weight.<domain>...],
  <metric>.<domain>...[,<metric>.aggregate]

* ``name``: the run's name (unique in the file); ``budget``: its DDO budget
  in tokens (the runs of one budget share it); ``seed``: an integer (the base
  run of each seed normalises that seed's runs).
* ``tokens.<domain>``: the tokens the run trained on, one column per
  training domain.
* ``<metric>`` is ``ppl`` or ``loss`` (one of them for every metric column):
  ``<metric>.<domain>`` is the run's held-out metric on a domain (training
  domains or others), ``<metric>.aggregate`` the run's own aggregate. Give
  per-domain columns, the aggregate, or both; a metric column left empty in
  every row is ignored (the plan's skeleton has both kinds).
* ``steps`` and ``weight.<domain>`` are what the plan wrote; they are read
  past, never fitted.

RUNS.json: ``{"metric": "ppl" | "loss", "runs": [{"name", "tokens": {d: n},
"eval": {d: v}, "seed"?, "budget"?}]}``; runs with a ``"budget"`` field are
grouped by it (the plan's ``runs.json``); the aggregate is the eval key
``"aggregate"``; an eval key that is null in every run is ignored.

The output is plain data: ``{budget tokens or None: RUNS.json dict}`` (None:
a file without budgets, one DDO study), each validated further by
``mixing.ddo.load_runs``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Mapping, Sequence

from etils import epath

from autoscale_jax import errors

# The eval key (and CSV column suffix) of a run's own aggregate metric.
AGGREGATE = "aggregate"
# Metric column prefixes (RUNS.json "metric").
METRICS = ("ppl", "loss")
TOKENS_PREFIX = "tokens."
WEIGHT_PREFIX = "weight."
REQUIRED = ("name", "budget", "seed")
INFORMATIONAL = ("steps",)


class ResultsError(errors.UserError, ValueError):
  """A malformed results file (one line: the file, run or column, the fix)."""


def runs_metric(metric: str) -> str:
  """The RUNS.json metric of a config metric (ppl_seq, ppl_tok -> ppl)."""
  return "loss" if metric == "loss" else "ppl"


# ------------------------------------------------------------------- writing


def csv_header(domains: Sequence[str], metric: str,
               eval_domains: Sequence[str] | None = None) -> list[str]:
  """The plan's CSV header (see the module docstring)."""
  evals = list(eval_domains or domains)
  return (["name", "budget", "seed", "steps"]
          + [TOKENS_PREFIX + d for d in domains]
          + [WEIGHT_PREFIX + d for d in domains]
          + [f"{metric}.{d}" for d in evals] + [f"{metric}.{AGGREGATE}"])


def _cell(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
  return str(v)


def csv_text(runs: Sequence[Mapping[str, Any]], domains: Sequence[str],
             metric: str, eval_domains: Sequence[str] | None = None) -> str:
  """The CSV of ``runs`` (``name, budget, seed, steps, tokens, weights`` and
  ``eval`` when known), metric cells empty where a run has no value."""
  header = csv_header(domains, metric, eval_domains)
  out = io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow(header)
  for r in runs:
    ev = r.get("eval") or {}
    row = [r["name"], _cell(float(r["budget"])), r["seed"], r.get("steps")]
    row += [_cell(r["tokens"][d]) for d in domains]
    row += [_cell((r.get("weights") or {}).get(d)) for d in domains]
    row += [_cell(ev.get(c.split(".", 1)[1])) for c in
            header[4 + 2 * len(domains):]]
    w.writerow([_cell(c) for c in row])
  return out.getvalue()


# ------------------------------------------------------------------- reading


def _number(text: str, what: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ResultsError(f"{what}={text!r} is not a number; write a plain "
                       "number (e.g. 12.5 or 4096)") from None


def _check_header(path: str, header: Sequence[str]) -> tuple[str, list[str]]:
  """Returns (metric, metric columns); raises on a bad header."""
  if not header or not any(h.strip() for h in header):
    raise ResultsError(f"{path}: empty CSV; the first line is the header "
                       "(name,budget,seed,tokens.<domain>...,ppl.<domain>...)")
  seen = set()
  for h in header:
    if h in seen:
      raise ResultsError(f"{path}: column {h!r} appears twice in the header;"
                         " keep one")
    seen.add(h)
  missing = [c for c in REQUIRED if c not in header]
  if missing:
    raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; the "
                       "header needs name, budget, seed, tokens.<domain> and "
                       "<ppl|loss>.<domain or aggregate> columns")
  if not any(h.startswith(TOKENS_PREFIX) and len(h) > len(TOKENS_PREFIX)
             for h in header):
    raise ResultsError(f"{path}: no tokens.<domain> column; give one per "
                       "training domain (the tokens each run trained on)")
  metric_cols = [h for h in header
                 if h.split(".", 1)[0] in METRICS and "." in h]
  if not metric_cols:
    raise ResultsError(f"{path}: no metric column; give ppl.<domain> (or "
                       "loss.<domain>) per evaluated domain and/or "
                       f"ppl.{AGGREGATE}")
  metrics = sorted({h.split(".", 1)[0] for h in metric_cols})
  if len(metrics) > 1:
    raise ResultsError(f"{path}: metric columns mix {' and '.join(metrics)}; "
                       "use one metric for every column")
  known = set(REQUIRED) | set(INFORMATIONAL) | set(metric_cols)
  unknown = [h for h in header if h not in known and not any(
      h.startswith(p) and len(h) > len(p)
      for p in (TOKENS_PREFIX, WEIGHT_PREFIX))]
  if unknown:
    raise ResultsError(
        f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; allowed: "
        "name, budget, seed, steps, tokens.<domain>, weight.<domain>, "
        f"{metrics[0]}.<domain>, {metrics[0]}.{AGGREGATE}")
  return metrics[0], metric_cols


def _read_csv(path: str, text: str) -> tuple[str, list[dict[str, Any]]]:
  rows = list(csv.reader(io.StringIO(text)))
  rows = [r for r in rows if any(c.strip() for c in r)]
  if not rows:
    _check_header(path, [])
  header = [h.strip() for h in rows[0]]
  metric, metric_cols = _check_header(path, header)
  body = rows[1:]
  if not body:
    raise ResultsError(f"{path}: no runs below the header; one row per run")
  filled = {c: False for c in metric_cols}
  col = {h: i for i, h in enumerate(header)}
  for line, row in enumerate(body, 2):
    if len(row) != len(header):
      raise ResultsError(f"{path}: line {line} has {len(row)} cells but the "
                         f"header has {len(header)}; one cell per column")
    for c in metric_cols:
      filled[c] = filled[c] or bool(row[col[c]].strip())
  empty = [c for c, f in filled.items() if not f]
  used = [c for c in metric_cols if filled[c]]
  if not used:
    raise ResultsError(f"{path}: every metric column is empty; fill "
                       f"{metric}.<domain> and/or {metric}.{AGGREGATE} with "
                       "each run's held-out metric")
  del empty  # columns empty in every row: ignored
  runs, names = [], {}
  for line, row in enumerate(body, 2):
    cells = {h: row[i].strip() for i, h in enumerate(header)}
    name = cells["name"]
    where = f"{path}: run {name!r} (line {line})"
    if not name:
      raise ResultsError(f"{path}: line {line}: column name is empty; name "
                         "every run")
    if name in names:
      raise ResultsError(f"{path}: run {name!r} appears twice (lines "
                         f"{names[name]} and {line}); run names are unique")
    names[name] = line
    budget = _number(cells["budget"], f"{where}: column budget")
    if not (math.isfinite(budget) and budget > 0):
      raise ResultsError(f"{where}: column budget={cells['budget']!r} must be "
                         "a number of tokens > 0")
    seed_f = _number(cells["seed"], f"{where}: column seed")
    if not (math.isfinite(seed_f) and seed_f == int(seed_f)):
      raise ResultsError(f"{where}: column seed={cells['seed']!r} must be an "
                         "integer")
    tokens = {h[len(TOKENS_PREFIX):]: _number(v, f"{where}: column {h}")
              for h, v in cells.items() if h.startswith(TOKENS_PREFIX)}
    ev = {}
    for c in used:
      if not cells[c]:
        raise ResultsError(f"{where}: column {c} is empty; fill it (or leave "
                           "the column empty in every row)")
      ev[c.split(".", 1)[1]] = _number(cells[c], f"{where}: column {c}")
    runs.append({"name": name, "budget": budget, "seed": int(seed_f),
                 "tokens": tokens, "eval": ev})
  return metric, runs


def _read_json(path: str, text: str) -> tuple[Any, list[Any]]:
  try:
    doc = json.loads(text)
  except json.JSONDecodeError as e:
    raise ResultsError(f"{path}: not valid JSON ({e}); a results file is "
                       "RUNS.json or a .csv") from None
  if not isinstance(doc, Mapping) or not isinstance(doc.get("runs"), list):
    raise ResultsError(f"{path}: the top level must be an object with "
                       "'metric' and 'runs' (RUNS.json)")
  runs = [dict(r) if isinstance(r, Mapping) else r for r in doc["runs"]]
  # An eval key that is null in every run (the plan's skeleton) is ignored.
  keys = {k for r in runs if isinstance(r, Mapping)
          and isinstance(r.get("eval"), Mapping) for k in r["eval"]}
  unset = {k for k in keys if all(
      not isinstance(r, Mapping) or not isinstance(r.get("eval"), Mapping)
      or r["eval"].get(k) is None for r in runs)}
  for r in runs:
    if isinstance(r, Mapping) and isinstance(r.get("eval"), Mapping):
      r["eval"] = {k: v for k, v in r["eval"].items() if k not in unset}
  return doc.get("metric"), runs


def _budget_of(r: Any, path: str) -> float | None:
  if not isinstance(r, Mapping) or "budget" not in r:
    return None
  b = r["budget"]
  if isinstance(b, bool) or not isinstance(b, (int, float)) or not (
      math.isfinite(b) and b > 0):
    raise ResultsError(f"{path}: run {r.get('name')!r}: field budget={b!r} "
                       "must be a number of tokens > 0")
  return float(b)


def group_by_budget(metric: Any, runs: Sequence[Any], path: str
                    ) -> dict[float | None, dict[str, Any]]:
  """``{budget: RUNS.json dict}``; None when no run names its budget."""
  budgets = [_budget_of(r, path) for r in runs]
  if all(b is None for b in budgets):
    return {None: {"metric": metric, "runs": list(runs)}}
  if any(b is None for b in budgets):
    i = budgets.index(None)
    raise ResultsError(f"{path}: run #{i} has no budget while others do; give "
                       "every run its DDO budget (or none)")
  out: dict[float | None, dict[str, Any]] = {}
  for b, r in zip(budgets, runs):
    out.setdefault(b, {"metric": metric, "runs": []})["runs"].append(r)
  return dict(sorted(out.items()))


def read_results(path: str | epath.PathLike
                 ) -> dict[float | None, dict[str, Any]]:
  """Reads RUNS.json or a CSV; returns ``{budget or None: RUNS.json dict}``.

  Raises:
    ResultsError: the file is missing, unreadable, or malformed (one line
      naming the file, run or column, and the fix).
  """
  p = epath.Path(path)
  if not p.exists():
    raise ResultsError(f"{p}: no such results file; give --results=RUNS.json"
                       " or a .csv (--stage=plan writes both skeletons)")
  if p.is_dir():
    raise ResultsError(f"{p} is a directory; give --results=RUNS.json or a "
                       ".csv file")
  try:
    text = p.read_text()
  except UnicodeDecodeError:
    raise ResultsError(f"{p}: not a text file; give RUNS.json or a .csv") \
        from None
  if p.suffix.lower() == ".csv":
    metric, runs = _read_csv(str(p), text)
  else:
    metric, runs = _read_json(str(p), text)
  return group_by_budget(metric, runs, str(p))
