"""The file-only stages: no config, no data, no training.

``--stage=fit --results=RUNS.json`` and ``--stage=project --optima=A,B``
work from JSON files alone (any training stack's results), so they import
neither the data pipeline nor the trainer.
"""

from __future__ import annotations

from autoscale_jax import records
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.mixing import projection
from autoscale_jax.study import console
from autoscale_jax.study import options as options_lib


def handles(stage: str, options: options_lib.Options) -> bool:
  """Whether ``stage`` with ``options`` is a file-only stage."""
  return (stage == "fit" and bool(options.results)) or (
      stage == "project" and bool(options.optima))


def run(stage: str, options: options_lib.Options) -> records.Mixture:
  """Runs the file-only ``stage``; returns the mixture it wrote."""
  options_lib.require(options.workdir, "--workdir",
                      "where mixture.json is written")
  if stage == "fit":
    return fit_from_results(options)
  return project_from_files(options)


def fit_from_results(options: options_lib.Options) -> records.Mixture:
  mixture = records.Mixture.from_json(
      ddo_lib.run_fit_stage(options.results, options.workdir))
  console.print_mixture("fitted mixture", mixture)
  return mixture


def project_from_files(options: options_lib.Options) -> records.Mixture:
  if options.target_tokens is None:
    raise options_lib.StageError(
        "--stage=project with --optima needs --target_tokens=T")
  mixture = records.Mixture.from_json(projection.run_project_stage(
      list(options.optima), options.target_tokens, options.workdir))
  console.print_mixture(
      f"projected mixture at {options.target_tokens:.4g} tokens", mixture)
  return mixture
