"""The file-only stages: no data, no training.

``--stage=fit --results=RUNS.json`` and ``--stage=project --optima=A,B``
work from JSON files alone (any training stack's results), so they import
neither the data pipeline nor the trainer. Each writes ``mixture.json`` and
the weight exports (``export/``) into ``--workdir``. With ``--config=`` (and
its overrides) they use the study's settings: the fit's metric, target
domains, bounds, bootstrap replicates and seed; the projection's target
(unless ``--target_tokens`` is given) and max epochs; the exports' study
name and data paths.

:func:`write_exports` is also what the study's ``project`` stage uses.
"""

from __future__ import annotations

from typing import Any

from etils import epath
import ml_collections

from autoscale_jax import config as config_lib
from autoscale_jax import records
from autoscale_jax.data import seqio_source
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.mixing import export
from autoscale_jax.mixing import noise as noise_lib
from autoscale_jax.mixing import projection
from autoscale_jax.study import console
from autoscale_jax.study import options as options_lib

# Task prefix of the exports when no config names the study.
DEFAULT_STUDY = "study"


def handles(stage: str, options: options_lib.Options) -> bool:
  """Whether ``stage`` with ``options`` is a file-only stage."""
  return (stage == "fit" and bool(options.results)) or (
      stage == "project" and bool(options.optima))


def run(stage: str, options: options_lib.Options,
        config: ml_collections.ConfigDict | None = None) -> records.Mixture:
  """Runs the file-only ``stage``; returns the mixture it wrote.

  Args:
    stage: "fit" or "project" (see :func:`handles`).
    options: command-line options (``--workdir`` is required).
    config: the study config when ``--config=`` was given, else None.
  """
  options_lib.require(options.workdir, "--workdir",
                      "where mixture.json is written")
  if config is not None:
    config_lib.validate(config)
  if stage == "fit":
    return fit_from_results(options, config)
  return project_from_files(options, config)


def export_paths(config: ml_collections.ConfigDict,
                 corpus_dir: str | None) -> dict[str, Any] | None:
  """The real data path(s) of each domain, for the exports (None: none).

  ``data.paths`` for jsonl; ``<corpus_dir>/<domain>.jsonl`` for the embedded
  and fixture corpora; none for tfds and seqio (their exports name Tasks).
  """
  source = config.data.source
  if source == "jsonl":
    return {d: (list(p) if isinstance(p, (list, tuple)) else p)
            for d, p in dict(config.data.paths).items()}
  if source in ("embedded", "fixture") and corpus_dir:
    return {d: f"{corpus_dir}/{d}.jsonl" for d in config.data.domains}
  return None


def write_exports(config: ml_collections.ConfigDict | None,
                  mixture: dict[str, Any], out_dir: str,
                  corpus_dir: str | None,
                  available_tokens: dict[str, float] | None) -> list[str]:
  """Every export of ``mixture`` (:func:`export.export_all`) into out_dir.

  Without a config the exports name domains, not data paths, and take the
  max epochs from the mixture's caps (if any).
  """
  if config is None:
    return export.export_all(mixture, out_dir, task_prefix=DEFAULT_STUDY,
                             available_tokens=available_tokens)
  seqio = config.data.source == "seqio"
  paths = export_paths(config, corpus_dir)
  if paths is not None:  # a file-only stage's mixture may have fewer domains
    paths = {d: p for d, p in paths.items() if d in mixture["weights"]}
  return export.export_all(
      mixture, out_dir, task_prefix=config.study, paths=paths or None,
      max_epochs=float(config.project.max_epochs),
      available_tokens=available_tokens,
      task_names=seqio_source.task_names(config.data) if seqio else None,
      tasks_module=config.data.seqio_module or None)


def _export(config: ml_collections.ConfigDict | None,
            mixture: records.Mixture, workdir: str) -> None:
  out_dir = epath.Path(workdir) / "export"
  corpus_dir = (config.data.corpus_dir or None) if config else None
  write_exports(config, mixture.to_json(), str(out_dir), corpus_dir, None)
  console.say(f"exports written: {out_dir}")


def fit_kwargs(config: ml_collections.ConfigDict | None) -> dict[str, Any]:
  """:func:`ddo.fit_and_solve` settings from the config ({} = defaults)."""
  if config is None:
    return {}
  c = config.ddo
  return dict(metric=c.metric, target_domains=dict(c.target_domains) or None,
              upper_bound=bool(c.upper_bound), bootstrap=int(c.bootstrap),
              seed=int(config.seed))


def fit_from_results(options: options_lib.Options,
                     config: ml_collections.ConfigDict | None = None
                     ) -> records.Mixture:
  """``--stage=fit --results=RUNS.json``: mixture.json, noise, exports."""
  kwargs = fit_kwargs(config)
  runs = ddo_lib.load_runs(options.results)
  optimum = ddo_lib.fit_and_solve(runs, **kwargs)
  optimum["noise"] = noise_lib.measure_noise(
      runs, metric=kwargs.get("metric"),
      target_domains=kwargs.get("target_domains"))
  mixture = records.Mixture.from_json(optimum)
  ddo_lib.write_mixture(epath.Path(options.workdir) / "mixture.json",
                        mixture.to_json())
  console.print_mixture("fitted mixture", mixture)
  console.say(noise_lib.format_noise_table(mixture.noise))
  _export(config, mixture, options.workdir)
  return mixture


def project_from_files(options: options_lib.Options,
                       config: ml_collections.ConfigDict | None = None
                       ) -> records.Mixture:
  """``--stage=project --optima=A,B``: the paper's rule, mixture.json, exports.
  """
  if len(options.optima) < 2:
    raise options_lib.StageError(
        f"--optima={','.join(options.optima)} names {len(options.optima)} "
        "file; the projection needs the DDO optima (mixture.json) of two or "
        "more budgets, comma-separated")
  target = options.target_tokens
  if target is None and config is not None:
    target = float(config.project.target_tokens)
  if target is None:
    raise options_lib.StageError(
        "--stage=project with --optima needs --target_tokens=T (or a "
        "--config= whose project.target_tokens is the target)")
  max_epochs = 1.0 if config is None else float(config.project.max_epochs)
  mixture = records.Mixture.from_json(projection.run_project_stage(
      list(options.optima), target, options.workdir, max_epochs=max_epochs))
  console.print_mixture(f"projected mixture at {target:.4g} tokens", mixture)
  if config is not None and config.project.estimator != "paper":
    console.say(
        f"note: config.project.estimator={config.project.estimator!r} needs "
        "the DDO runs, which --optima does not give; the paper's rule was "
        "used (run --stage=project on the study for the other estimators)")
  _export(config, mixture, options.workdir)
  return mixture
