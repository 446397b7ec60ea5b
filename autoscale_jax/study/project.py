"""Stage ``project``: the DDO optima projected to the target budget.

The estimator named by ``config.project.estimator``
(:mod:`autoscale_jax.mixing.estimators`; ``paper`` is the paper's rule)
gives ``project/mixture.json`` (with ``"estimator"`` and ``"provenance"``);
every registered estimator's recommendation goes to
``project/estimates.json`` for the report, and the chosen mixture to
``project/export/`` in every trainer's format.
"""

from __future__ import annotations

from typing import Any

from etils import epath
import ml_collections

from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.mixing import estimators
from autoscale_jax.mixing import projection
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import ddo
from autoscale_jax.study import files
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import provenance as provenance_lib

_RERUN_DDO = "--stage=ddo (or --stage=fit)"


def optima_paths(study: core.Study) -> list[str]:
  """The mixture.json of every DDO budget, each checked against the config.

  Raises:
    StageError: a budget's optimum is missing, unreadable, or made for
      another budget or config (names the file and the stage to re-run).
  """
  c = study.config
  paths = []
  for k, budget in enumerate(c.ddo.budgets):
    p = study.layout.budget_mixture(k)
    optimum = provenance_lib.read_json(p, _RERUN_DDO)
    expected = ddo.provenance(
        study, k, ddo.run_fingerprints(study, k, ddo.plan(study, k)))
    provenance_lib.check_ddo_optimum(p, optimum, float(budget), expected)
    paths.append(str(p))
  return paths


def provenance(study: core.Study, paths: list[str]) -> dict[str, Any]:
  """What the projection is made from (project/mixture.json "provenance").

  Args:
    study: the study.
    paths: the DDO optima's mixture.json files, one per budget (a missing
      file gets sha256 None).
  """
  c = study.config
  bundle = study.bundle
  return {
      "stage": "project",
      "ddo_budgets": [float(b) for b in c.ddo.budgets],
      "ddo_mixtures": [
          {"path": str(study.layout.budget_mixture(k).relative_to(
              study.layout.root)),
           "budget_tokens": float(c.ddo.budgets[k]),
           "sha256": (provenance_lib.file_sha256(p)
                      if epath.Path(p).exists() else None)}
          for k, p in enumerate(paths)],
      "target_tokens": float(c.project.target_tokens),
      "estimator": str(c.project.estimator),
      "max_epochs": float(c.project.max_epochs),
      "metric": str(c.ddo.metric),
      "tokenizer": bundle.tokenizer.fingerprint,
      "data": {d: bundle.fingerprints[d] for d in c.data.domains},
  }


def base_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The DDO runs' base mixture (``config.ddo.base_weights``, else uniform)."""
  given = dict(config.ddo.base_weights)
  return ({d: float(given[d]) for d in config.data.domains} if given else
          {d: 1.0 for d in config.data.domains})


def _weights_line(mix: dict[str, Any]) -> str:
  if "error" in mix:
    return f"failed: {mix['error']}"
  return " ".join(f"{d}={w:.3f}" for d, w in mix["weights"].items())


def run_project(study: core.Study) -> bool:
  """Projects the optima, writes project/mixture.json and the exports."""
  c = study.config
  if len(c.ddo.budgets) < 2:
    raise options_lib.StageError(
        "projection needs DDO optima at >= 2 budgets; "
        f"config.ddo.budgets has {len(c.ddo.budgets)}")
  paths = optima_paths(study)
  layout = study.layout
  # The outputs name their inputs as the provenance does, relative to the
  # workdir, so a copied or moved study does not point at the old place.
  optima = projection.load_optima(
      paths, [str(epath.Path(p).relative_to(layout.root)) for p in paths])
  runs_json = [provenance_lib.read_json(layout.budget_runs(k), _RERUN_DDO)
               for k in range(len(paths))]
  available = dict(study.bundle.available_tokens)
  common = dict(base_weights=base_weights(c),
                target_tokens=float(c.project.target_tokens),
                available_tokens=available,
                max_epochs=float(c.project.max_epochs))
  name = str(c.project.estimator)
  chosen = estimators.recommend(runs_json, optima, estimator=name, **common)
  chosen["estimator"] = name
  chosen["provenance"] = provenance(study, paths)
  mixture = records.Mixture.from_json(chosen)
  estimates = estimators.estimate_all(runs_json, optima, **common)

  def write():
    layout.project_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.projected_mixture, mixture.to_json())
    # write_mixture writes a non-finite number (a failed fit's) as null.
    ddo_lib.write_mixture(layout.estimates, estimates)
    files.write_exports(c, mixture.to_json(), str(layout.export_dir),
                  study.bundle.corpus_dir, available)
  distributed.write_once("project", write)
  console.print_mixture(
      f"projected mixture at {c.project.target_tokens:.4g} tokens "
      f"(estimator {name})", mixture)
  console.say("every estimator's recommendation (project/estimates.json):")
  width = max(len(n) for n in estimates)
  for n, mix in estimates.items():
    mark = "*" if n == name else " "
    console.say(f" {mark}{n:<{width}}  {_weights_line(mix)}")
  return True

