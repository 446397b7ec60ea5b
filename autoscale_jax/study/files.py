"""The file-only stages: no raw data, no training.

Users of any training stack get the run designs and the maths from files:

* ``--stage=plan --config=C --available_tokens=A.json``: every DDO budget's
  proxy runs (:mod:`.plan`), no data read.
* ``--stage=fit --results=FILE``: FILE is RUNS.json or a CSV, one row per run
  (:mod:`autoscale_jax.experiments.results`; what the plan writes). Each DDO
  budget in it is fitted and solved into ``ddo/budget_<k>/`` (``runs.json``,
  ``mixture.json`` with ``noise`` and ``provenance``, ``export/``). With
  ``--config=`` the runs are checked against the plan (names, budgets,
  tokens, seeds; every planned run present) and the config's metric, target
  domains, bounds, bootstrap replicates and seed are used.
* ``--stage=project``: from ``--optima=A,B`` or, without it, from the DDO
  optima a file-only fit wrote into ``--workdir``; ``project/mixture.json``
  (with availability caps from ``--available_tokens`` and the max epochs of
  ``config.project.max_epochs``, as in the full study), ``estimates.json``
  (every estimator, when the runs are in the workdir) and ``export/``.

Each writes the weight exports and the study report (``report/``: what the
report can show without final runs). For compatibility a single-budget fit
also writes ``<workdir>/mixture.json`` and ``<workdir>/export/``, and a
projection from ``--optima`` the same two, as before.

:func:`write_exports` (:mod:`.exports`) is also what the study's ``project``
stage uses.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from etils import epath
import ml_collections

from autoscale_jax import config as config_lib
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax import report as report_lib
from autoscale_jax.experiments import results as results_lib
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.mixing import estimators
from autoscale_jax.mixing import noise as noise_lib
from autoscale_jax.mixing import projection
from autoscale_jax.study import console
from autoscale_jax.study import exports
from autoscale_jax.study import layout as layout_lib
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import plan as plan_lib
from autoscale_jax.study import provenance as provenance_lib

DEFAULT_STUDY = exports.DEFAULT_STUDY
export_paths = exports.export_paths
write_exports = exports.write_exports

# Two budgets are the same DDO budget when they agree this closely.
_SAME_BUDGET = 1e-9


def handles(stage: str, options: options_lib.Options) -> bool:
  """Whether ``stage`` with ``options`` is a file-only stage."""
  if stage == "plan":
    return bool(options.available_tokens)
  if stage == "fit":
    return bool(options.results)
  if stage == "project":
    return bool(options.optima) or fitted_from_results(options.workdir)
  return False


def fitted_from_results(workdir: str | None) -> bool:
  """Whether ``workdir``'s DDO optima came from a results file (file-only)."""
  if not workdir:
    return False
  found = sorted(layout_lib.Layout.of(workdir).root.glob(
      "ddo/budget_*/mixture.json"))
  if not found:
    return False
  try:
    prov = json.loads(found[0].read_text()).get("provenance") or {}
  except (ValueError, OSError, AttributeError):
    return False  # the study's project stage names the bad file
  return isinstance(prov, Mapping) and prov.get("source") == "results"


def run(stage: str, options: options_lib.Options,
        config: ml_collections.ConfigDict | None = None) -> Any:
  """Runs the file-only ``stage`` (see :func:`handles`).

  Args:
    stage: "plan", "fit" or "project".
    options: command-line options (``--workdir`` is required).
    config: the study config when ``--config=`` was given, else None.

  Returns:
    plan: the planned runs; fit: ``{k: Mixture}``; project: the Mixture.
  """
  options_lib.require(options.workdir, "--workdir",
                      "where the outputs are written")
  if config is not None:
    config_lib.validate(config)
  if stage == "plan":
    return plan_lib.plan_from_files(options, config)
  if stage == "fit":
    return fit_from_results(options, config)
  return project_from_files(options, config)


def fit_kwargs(config: ml_collections.ConfigDict | None) -> dict[str, Any]:
  """:func:`ddo.fit_and_solve` settings from the config ({} = defaults)."""
  if config is None:
    return {}
  c = config.ddo
  return dict(metric=c.metric, target_domains=dict(c.target_domains) or None,
              upper_bound=bool(c.upper_bound), bootstrap=int(c.bootstrap),
              seed=int(config.seed), noise_model=str(c.noise_model))


def _available(options: options_lib.Options,
               domains: Sequence[str]) -> dict[str, int] | None:
  if not options.available_tokens:
    return None
  return plan_lib.read_available_tokens(options.available_tokens,
                                        list(domains))


# ----------------------------------------------------------------------- fit


def _budget_index(budget: float, budgets: Sequence[float],
                  slack: float = 0.0) -> int | None:
  """The index of ``budget`` in ``budgets`` (within ``slack`` tokens)."""
  for k, b in enumerate(budgets):
    if abs(float(b) - budget) <= max(
        slack, _SAME_BUDGET * max(abs(b), abs(budget))):
      return k
  return None


def check_against_plan(path: str, budget: float, k: int,
                       runs_json: Mapping[str, Any],
                       config: ml_collections.ConfigDict) -> None:
  """Raises RunsError when a budget's runs are not the plan's.

  Every run must be a planned run of budget ``k`` (its name as the plan
  writes it, its tokens within half a token, its seed), and every planned
  run must be there.
  """
  planned = {plan_lib.store_name(k, r): r
             for r in plan_lib.budget_plan(config, k)}
  seen = set()
  for r in runs_json["runs"]:
    name = r.get("name") if isinstance(r, Mapping) else None
    where = f"{path}: run {name!r} (budget {budget:g})"
    if name not in planned:
      raise ddo_lib.RunsError(
          f"{where} is not in the plan of budget {k} (planned: "
          f"{', '.join(list(planned)[:3])} ...); use the names --stage=plan "
          "wrote, or drop --config to fit any design")
    want = planned[name]
    tokens = r.get("tokens") if isinstance(r.get("tokens"), Mapping) else {}
    if set(tokens) != set(want.tokens):
      raise ddo_lib.RunsError(
          f"{where}: tokens are given for {sorted(tokens)} but the plan has "
          f"{sorted(want.tokens)}; one tokens column per planned domain")
    for d, t in want.tokens.items():
      got = tokens[d]
      if not isinstance(got, (int, float)) or not abs(got - t) <= 0.5:
        raise ddo_lib.RunsError(
            f"{where}: tokens.{d}={got!r} but the plan has {t}; train and "
            "report the planned tokens")
    seed = r.get("seed", 0)
    if seed != plan_lib.training_seed(config, want):
      raise ddo_lib.RunsError(
          f"{where}: seed={seed!r} but the plan has seed "
          f"{plan_lib.training_seed(config, want)}; report the planned seed")
    seen.add(name)
  missing = [n for n in planned if n not in seen]
  if missing:
    raise ddo_lib.RunsError(
        f"{path}: budget {budget:g} lacks {len(missing)} of {len(planned)} "
        f"planned runs ({', '.join(missing[:4])}"
        f"{' ...' if len(missing) > 4 else ''}); add their rows, or drop "
        "--config to fit any design")


def _budgets_by_index(path: str, groups: Mapping[float | None, Any],
                      config: ml_collections.ConfigDict | None
                      ) -> dict[int, tuple[float | None, dict[str, Any]]]:
  """``{k: (budget, RUNS.json dict)}``: each budget's DDO index.

  With a config, budgets named in the file must be the config's (k is the
  config's index; the runs are checked against the plan); a file without
  budgets is one study (k: the config's budget it matches, else 0).
  """
  budgets = [b for b in groups if b is not None]
  if config is None or not budgets:
    if None in groups and config is not None:
      fitted = ddo_lib.load_runs(groups[None])
      base = fitted.base_tokens(sorted(fitted.bases)[0])
      # The plan rounds each domain's base quota to whole tokens.
      k = _budget_index(sum(base.values()), list(config.ddo.budgets),
                        slack=0.5 * len(base))
      return {k or 0: (None, groups[None])}
    return {k: (b, groups[b]) for k, b in enumerate(sorted(
        groups, key=lambda b: -1 if b is None else b))}
  cfg_budgets = [float(b) for b in config.ddo.budgets]
  out = {}
  for b in budgets:
    k = _budget_index(b, cfg_budgets)
    if k is None:
      name = groups[b]["runs"][0].get("name")
      raise ddo_lib.RunsError(
          f"{path}: run {name!r}: budget {b:g} is not one of "
          f"config.ddo.budgets ({', '.join(f'{x:g}' for x in cfg_budgets)}); "
          "fit the plan of this config, or drop --config")
    check_against_plan(path, b, k, groups[b], config)
    out[k] = (b, groups[b])
  return dict(sorted(out.items()))


def _sha256(path: str) -> str | None:
  p = epath.Path(path)
  return provenance_lib.file_sha256(p) if p.exists() else None


def fit_from_results(options: options_lib.Options,
                     config: ml_collections.ConfigDict | None = None
                     ) -> dict[int, records.Mixture]:
  """``--stage=fit --results=FILE``: every budget's optimum, exports, report.

  Returns:
    ``{k: the DDO optimum of budget k}``.
  """
  kwargs = fit_kwargs(config)
  path = str(options.results)
  groups = results_lib.read_results(path)
  by_k = _budgets_by_index(path, groups, config)
  layout = layout_lib.Layout.of(options.workdir)
  digest = _sha256(path)
  # Every budget is checked before anything is written.
  checked = {k: ddo_lib.load_runs(runs_json)
             for k, (_, runs_json) in by_k.items()}
  available = _available(options, next(iter(checked.values())).domains)
  fitted: dict[int, records.Mixture] = {}
  for k, (budget, runs_json) in by_k.items():
    data = checked[k]
    optimum = ddo_lib.fit_and_solve(data, **kwargs)
    optimum["noise"] = noise_lib.measure_noise(
        data, metric=kwargs.get("metric"),
        target_domains=kwargs.get("target_domains"))
    optimum["provenance"] = {
        "stage": "fit", "source": "results", "results": path,
        "sha256": digest, "budget_index": int(k),
        "budget_tokens": budget if budget is not None else
        float(optimum["budget_tokens"]),
        "config_checked": config is not None and budget is not None}
    mixture = records.Mixture.from_json(optimum)
    runs_out = {"metric": runs_json["metric"], "runs": [
        {f: r[f] for f in ("name", "tokens", "eval", "seed") if f in r}
        for r in runs_json["runs"]]}
    layout.budget_dir(k).mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.budget_runs(k), runs_out)
    ddo_lib.write_mixture(layout.budget_mixture(k), mixture.to_json())
    export_dir = layout.budget_dir(k) / "export"
    write_exports(config, mixture.to_json(), str(export_dir),
                  _corpus_dir(config), available)
    console.print_mixture(
        f"DDO optimum at {mixture.budget_tokens:.4g} tokens (budget {k})",
        mixture)
    console.say(noise_lib.format_noise_table(mixture.noise))
    console.say(f"written: {layout.budget_mixture(k)}, exports {export_dir}")
    fitted[k] = mixture
  if len(fitted) == 1:  # the single-budget outputs, as before
    (mixture,) = fitted.values()
    ddo_lib.write_mixture(epath.Path(options.workdir) / "mixture.json",
                          mixture.to_json())
    write_exports(config, mixture.to_json(),
                  str(epath.Path(options.workdir) / "export"),
                  _corpus_dir(config), available)
  _write_report(config, layout, _domains(fitted.values()),
                {k: b if b is not None else fitted[k].budget_tokens
                 for k, (b, _) in by_k.items()}, None)
  return fitted


# ------------------------------------------------------------------- project


def _corpus_dir(config: ml_collections.ConfigDict | None) -> str | None:
  return (config.data.corpus_dir or None) if config is not None else None


def _domains(mixtures) -> list[str]:
  return list(next(iter(mixtures)).weights)


def _workdir_budgets(layout: layout_lib.Layout) -> dict[int, str]:
  """``{k: ddo/budget_<k>/mixture.json}`` of the optima in the workdir."""
  paths = {}
  for p in layout.root.glob("ddo/budget_*/mixture.json"):
    suffix = p.parent.name.removeprefix("budget_")
    if suffix.isdigit():
      paths[int(suffix)] = str(p)
  return dict(sorted(paths.items()))


def _workdir_optima(layout: layout_lib.Layout
                    ) -> tuple[dict[int, str], list[dict[str, Any]] | None]:
  """The workdir's DDO optima ``{k: path}`` and their runs (None: missing)."""
  paths = _workdir_budgets(layout)
  if len(paths) < 2:
    raise options_lib.StageError(
        f"--stage=project from files needs DDO optima at >= 2 budgets in "
        f"{layout.root}/ddo/ (found {len(paths)}); fit every budget with "
        "--stage=fit --results=FILE, or give --optima=A.json,B.json")
  runs = []
  for k in paths:
    p = layout.budget_runs(k)
    if not p.exists():
      return paths, None
    runs.append(json.loads(p.read_text()))
  return paths, runs


def _base_weights(config: ml_collections.ConfigDict | None,
                  optima: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  if config is not None and dict(config.ddo.base_weights):
    return {d: float(w) for d, w in dict(config.ddo.base_weights).items()}
  given = optima[0].get("base_weights")
  if isinstance(given, Mapping) and given:
    return {d: float(w) for d, w in given.items()}
  return {d: 1.0 for d in optima[0]["weights"]}


def project_from_files(options: options_lib.Options,
                       config: ml_collections.ConfigDict | None = None
                       ) -> records.Mixture:
  """``--stage=project`` from files: mixture.json, estimates, exports, report.
  """
  if options.optima and len(options.optima) < 2:
    raise options_lib.StageError(
        f"--optima={','.join(options.optima)} names {len(options.optima)} "
        "file; the projection needs the DDO optima (mixture.json) of two or "
        "more budgets, comma-separated")
  target = options.target_tokens
  if target is None and config is not None:
    target = float(config.project.target_tokens)
  if target is None:
    raise options_lib.StageError(
        "--stage=project from files needs --target_tokens=T (or a "
        "--config= whose project.target_tokens is the target)")
  layout = layout_lib.Layout.of(options.workdir)
  if options.optima:
    paths, runs_json = dict(enumerate(options.optima)), None
  else:
    paths, runs_json = _workdir_optima(layout)
  optima = projection.load_optima(list(paths.values()))
  domains = list(optima[0]["weights"])
  available = _available(options, domains)
  max_epochs = 1.0 if config is None else float(config.project.max_epochs)
  name = "paper" if config is None else str(config.project.estimator)
  common = dict(base_weights=_base_weights(config, optima),
                target_tokens=float(target), available_tokens=available,
                max_epochs=max_epochs)
  estimates = None
  if name == "paper" or runs_json is None:
    chosen = projection.project(
        optima, float(target), available, max_epochs,
        allow_interpolation=options.allow_interpolation)
    if name != "paper":
      console.say(
          f"note: config.project.estimator={name!r} needs the DDO runs, "
          "which --optima does not give; the paper's rule was used (run "
          "--stage=project on the workdir of a --results fit for the others)")
      name = "paper"
  else:
    if options.allow_interpolation:
      raise options_lib.StageError(
          "--allow_interpolation applies to the paper's rule only; set "
          f"--config.project.estimator=paper (not {name!r})")
    chosen = estimators.recommend(runs_json, optima, estimator=name,
                                  **common)
  if runs_json is not None and not options.allow_interpolation:
    estimates = estimators.estimate_all(runs_json, optima, **common)
  chosen["estimator"] = name
  chosen["provenance"] = {
      "stage": "project", "source": "files",
      "optima": [{"path": p, "budget_tokens": float(o["budget_tokens"]),
                  "sha256": _sha256(p)}
                 for p, o in zip(paths.values(), optima)],
      "target_tokens": float(target), "estimator": name,
      "max_epochs": max_epochs,
      "available_tokens": options.available_tokens or None,
      "allow_interpolation": bool(options.allow_interpolation)}
  mixture = records.Mixture.from_json(chosen)
  layout.project_dir.mkdir(parents=True, exist_ok=True)
  ddo_lib.write_mixture(layout.projected_mixture, mixture.to_json())
  if estimates is not None:
    ddo_lib.write_mixture(layout.estimates, estimates)
  write_exports(config, mixture.to_json(), str(layout.export_dir),
                _corpus_dir(config), available)
  if options.optima:  # the outputs of --optima, as before
    ddo_lib.write_mixture(layout.root / "mixture.json", mixture.to_json())
    write_exports(config, mixture.to_json(), str(layout.root / "export"),
                  _corpus_dir(config), available)
  console.print_mixture(f"projected mixture at {target:.4g} tokens "
                        f"(estimator {name})", mixture)
  console.say(f"written: {layout.projected_mixture}, exports "
              f"{layout.export_dir}")
  budgets = {k: float(o["budget_tokens"]) for k, o in zip(paths, optima)}
  _write_report(config, layout, domains, budgets, float(target))
  return mixture


# -------------------------------------------------------------------- report


def report_config(config: ml_collections.ConfigDict | None,
                  domains: Sequence[str], budgets: Mapping[int, float],
                  target: float | None) -> ml_collections.ConfigDict:
  """The config the report reads for a file-only study.

  The study's config when given (its DDO budgets when the workdir's are
  the config's), else the defaults with the files' domains and budgets.
  """
  base = config_lib.base_config() if config is None else (
      ml_collections.ConfigDict(config.to_dict()))
  if config is None:
    base.data.domains = list(domains)
    base.final.mixtures = ("projected",)
  cfg_budgets = [float(b) for b in base.ddo.budgets]
  same = config is not None and all(
      k < len(cfg_budgets)
      and _budget_index(b, cfg_budgets, slack=0.5 * len(domains)) == k
      for k, b in budgets.items())
  if budgets and not same:
    listed = [0.0] * (max(budgets) + 1)
    for k, b in budgets.items():
      listed[k] = float(b)
    base.ddo.budgets = listed
  if target is not None:
    base.project.target_tokens = float(target)
  return base


def _write_report(config: ml_collections.ConfigDict | None,
                  layout: layout_lib.Layout, domains: Sequence[str],
                  budgets: Mapping[int, float], target: float | None) -> None:
  """Writes report/ from what the workdir holds (no final runs needed)."""
  held = {k: float(json.loads(epath.Path(p).read_text())["budget_tokens"])
          for k, p in _workdir_budgets(layout).items() if k not in budgets}
  budgets = dict(sorted({**held, **budgets}.items()))
  cfg = report_config(config, domains, budgets, target)
  path = report_lib.write_report(cfg, layout)
  console.say(f"report written: {path}")
