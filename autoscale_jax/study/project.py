"""Stage ``project``: the DDO optima projected to the target budget."""

from __future__ import annotations

from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.mixing import export
from autoscale_jax.mixing import projection
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import options as options_lib


def optima_paths(study: core.Study) -> list[str]:
  """The mixture.json of every DDO budget; raises StageError if one is missing."""
  paths = []
  for k in range(len(study.config.ddo.budgets)):
    p = study.layout.budget_mixture(k)
    if not p.exists():
      raise options_lib.StageError(
          f"{p} is missing: run --stage=ddo (or fit) first")
    paths.append(str(p))
  return paths


def run_project(study: core.Study) -> bool:
  """Projects the optima, writes project/mixture.json and the exports."""
  c = study.config
  paths = optima_paths(study)
  if len(paths) < 2:
    raise options_lib.StageError(
        "projection needs DDO optima at >= 2 budgets; "
        f"config.ddo.budgets has {len(paths)}")
  mixture = records.Mixture.from_json(projection.project(
      projection.load_optima(paths), float(c.project.target_tokens),
      available_tokens=dict(study.bundle.available_tokens),
      max_epochs=float(c.project.max_epochs)))
  layout = study.layout

  def write():
    layout.project_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.projected_mixture, mixture.to_json())
    export.export_all(mixture.to_json(), str(layout.export_dir),
                      task_prefix=c.study)
  distributed.write_once("project", write)
  console.print_mixture(
      f"projected mixture at {c.project.target_tokens:.4g} tokens", mixture)
  return True
