"""What the report reads: the stages' files and the final runs' records.

:func:`load` gathers, through :class:`~autoscale_jax.study.layout.Layout`
alone, every file a finished (or partly finished) study wrote and returns a
:class:`StudyFiles` of plain data. Blocks that older workdirs lack (a DDO
budget's ``"noise"``, comparison.json's ``"seeds"``, project/estimates.json)
are None; the only value computed here is the seed verdict when
comparison.json has no ``"seeds"`` block, from the final runs' curves by
:func:`autoscale_jax.mixing.verdict.seed_verdict` (one seed gives its
single-seed wording).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from autoscale_jax import errors
from autoscale_jax import fileio
from autoscale_jax import names as names_lib
from autoscale_jax import records
from autoscale_jax.experiments import store as store_lib
from autoscale_jax.mixing import verdict as verdict_lib
from autoscale_jax.study import layout as layout_lib

# Two mixtures' weights are the same mixture when they agree this closely.
_SAME_WEIGHTS = 1e-6


@dataclasses.dataclass
class StudyFiles:
  """Everything the report shows, as the stages wrote it.

  Attributes:
    config: the study's config.
    metric: the final comparison's aggregate metric (e.g. ``ppl_seq``).
    domains: the training domains, in config order.
    ddo: per DDO budget that has a mixture.json, ``(k, Mixture)``.
    runs: ``{k: RUNS.json dict}`` of the budgets that have one.
    projected: project/mixture.json, or None.
    estimates: project/estimates.json (``{estimator: mixture dict or
      {"estimator", "error"}}``), or None.
    comparison: final/comparison.json, or None.
    verdict: comparison.json's ``"seeds"`` block, else the verdict computed
      from the final runs' curves, or None without final runs.
    verdict_source: where ``verdict`` came from (one phrase).
    final_runs: ``{mixture config name: {seed: RunRecord}}`` in the
      comparison's order.
    num_records: how many records the store holds.
    identity: one record's identity (tokenizer and data fingerprints), or {}.
  """
  config: ml_collections.ConfigDict
  metric: str
  domains: list[str]
  ddo: list[tuple[int, records.Mixture]]
  runs: dict[int, dict[str, Any]]
  projected: records.Mixture | None
  estimates: dict[str, Any] | None
  comparison: dict[str, Any] | None
  verdict: dict[str, Any] | None
  verdict_source: str
  final_runs: dict[str, dict[int, records.RunRecord]]
  num_records: int
  identity: dict[str, Any]

  @property
  def reference(self) -> str | None:
    """The mixture the verdict is about (``projected`` in a full study)."""
    if self.verdict:
      return self.verdict["reference"]
    return self.comparison["reference"] if self.comparison else None

  @property
  def baseline_for_bars(self) -> str | None:
    """The mixture others are shown relative to: uniform, else the first
    baseline, else None."""
    names = list(self.final_runs)
    if "uniform" in names:
      return "uniform"
    others = [n for n in names if n != self.reference]
    return others[0] if others else None


def _json(path, rerun: str) -> Any:
  """The file's JSON object (None when missing).

  Raises:
    RecordError: not a JSON object (names the file and the stage to re-run).
  """
  if not fileio.exists(path):
    return None
  fix = f"run {rerun} again to rewrite it"
  obj = records.read_json(path, fix)
  if not isinstance(obj, dict):
    raise records.RecordError(f"{path} is not a JSON object; {fix}")
  return obj


def _same_weights(a: dict[str, float], b: dict[str, float]) -> bool:
  return set(a) == set(b) and all(abs(a[d] - b[d]) <= _SAME_WEIGHTS
                                  for d in a)


def mixture_name(record: records.RunRecord, names: dict[str, dict[str, float]]
                 ) -> str | None:
  """The config name of a final run's mixture, or None if it is none of them.

  The record's own mixture name is used when it is one of ``names`` (a
  baseline); otherwise (a projected or file mixture, whose record names it
  after the file) the name whose weights it has, the store name
  (``final_<name>...``) deciding between equal weights.
  """
  mix = record.mixture
  if mix is None:
    return None
  if mix.name in names and _same_weights(mix.weights, names[mix.name]):
    return mix.name
  same = [n for n, w in names.items() if _same_weights(mix.weights, w)]
  if len(same) > 1:
    by_store_name = [
        n for n in same
        if record.name.startswith(f"final_{names_lib.mixture_slug(n)}")]
    same = by_store_name or same
  return same[0] if same else None


def _ordered(names: list[str], config: ml_collections.ConfigDict
             ) -> list[str]:
  """``names`` in the config's final.mixtures order (the reference first)."""
  listed = [n for n in config.final.mixtures if n in names]
  return listed + [n for n in names if n not in listed]


def _final_runs(store_records: list[records.RunRecord],
                comparison: dict[str, Any] | None,
                config: ml_collections.ConfigDict
                ) -> dict[str, dict[int, records.RunRecord]]:
  """``{mixture: {seed: record}}`` of the runs the comparison is about."""
  if not comparison:
    return {}
  names = {n: dict(w) for n, w in (comparison.get("mixtures") or {}).items()}
  order = _ordered(list(names) or list(comparison.get("final", {})), config)
  finals = comparison.get("final", {})
  seeds_block = (comparison.get("seeds") or {}).get("mixtures", {})
  out: dict[str, dict[int, records.RunRecord]] = {n: {} for n in order}
  for rec in store_records:
    if rec.kind != "final" or not rec.curve:
      continue
    name = mixture_name(rec, names)
    if name is None:
      continue
    seed = int(rec.seed)
    held = out[name].get(seed)
    if held is None or _matches_comparison(rec, name, seed, finals,
                                           seeds_block, comparison["metric"]):
      out[name][seed] = rec
  return {n: dict(sorted(by_seed.items())) for n, by_seed in out.items()
          if by_seed}


def _matches_comparison(rec: records.RunRecord, name: str, seed: int,
                        finals: dict[str, Any], seeds_block: dict[str, Any],
                        metric: str) -> bool:
  """Whether ``rec``'s final value is the one the comparison recorded (so a
  stale record of an older config never replaces the current one)."""
  last = rec.curve[-1]["aggregate"].get(metric)
  block = seeds_block.get(name)
  if block and seed in block.get("seeds", []):
    want = block["values"][block["seeds"].index(seed)]
  elif name in finals:
    want = finals[name].get("metric")
  else:
    return False
  return want is not None and last is not None and abs(last - want) <= (
      1e-9 * max(1.0, abs(want)))


def _verdict(comparison: dict[str, Any] | None,
             final_runs: dict[str, dict[int, records.RunRecord]]
             ) -> tuple[dict[str, Any] | None, str]:
  if not comparison:
    return None, "the final stage has not run"
  if comparison.get("seeds"):
    return comparison["seeds"], "final/comparison.json"
  reference = comparison["reference"]
  if reference not in final_runs:
    return None, f"no final run of {reference} in the store"
  curves = {n: {s: r.curve for s, r in by_seed.items()}
            for n, by_seed in final_runs.items()}
  window = int((comparison.get("smoothing") or {}).get("window", 3))
  try:
    return (verdict_lib.seed_verdict(curves, comparison["metric"], reference,
                                     smoothing=window),
            "the final runs' curves in the store")
  except errors.UserError as e:  # VerdictError, SpeedupError
    return None, f"the final runs give no verdict: {e}"


def load(config: ml_collections.ConfigDict, layout: layout_lib.Layout
         ) -> StudyFiles:
  """Reads every file of the study in ``layout`` that exists."""
  ddo, runs = [], {}
  for k in range(len(config.ddo.budgets)):
    path = layout.budget_mixture(k)
    mixture = _json(path, "--stage=ddo (or --stage=fit)")
    if mixture is not None:
      ddo.append((k, records.Mixture.from_json(mixture, str(path))))
    runs_json = _json(layout.budget_runs(k), "--stage=ddo (or --stage=fit)")
    if runs_json is not None:
      runs[k] = runs_json
  projected = None
  projected_json = _json(layout.projected_mixture, "--stage=project")
  if projected_json is not None:
    projected = records.Mixture.from_json(projected_json,
                                          str(layout.projected_mixture))
  comparison = _json(layout.comparison_json, "--stage=final")
  store_records = []
  if fileio.exists(layout.store):
    store_records = [records.RunRecord.from_json(r, "store record") for r in
                     store_lib.ExperimentStore(layout.store).records()]
  final_runs = _final_runs(store_records, comparison, config)
  verdict, source = _verdict(comparison, final_runs)
  metric = (comparison or {}).get("metric") or str(config.ddo.metric)
  return StudyFiles(
      config=config, metric=metric, domains=list(config.data.domains),
      ddo=ddo, runs=runs, projected=projected,
      estimates=_json(layout.estimates, "--stage=project"),
      comparison=comparison,
      verdict=verdict, verdict_source=source, final_runs=final_runs,
      num_records=len(store_records),
      identity=store_records[0].identity if store_records else {})
