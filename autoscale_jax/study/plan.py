"""Stage ``plan``: every DDO budget's proxy runs, as files any trainer runs.

The runs are exactly the ones ``--stage=ddo`` trains: :func:`budget_plan`,
:func:`store_name` and :func:`training_seed` are what the ddo stage plans,
names and seeds its runs with. ``<workdir>/plan/`` gets::

  README.md              what each file is; how to fill in and fit
  runs.csv               one row per run: name, budget, seed, steps,
                         tokens.<d>, weight.<d>, and empty <metric>.<d> and
                         <metric>.aggregate cells to fill in
  runs.json              the same runs as a RUNS.json skeleton (eval: null)
  available_tokens.json  unique training tokens per domain
  budget_<k>/<run>/      the run's mixture in every trainer's format
                         (mixture.export_all: levanter/marin YAML, MaxText
                         grain, Megatron-LM, OLMo-core/olmix, Hugging Face,
                         seqio, JSON, CSV)

Filled in, ``runs.csv`` (or ``runs.json``) goes back to ``--stage=fit
--results=FILE``, which checks it against this plan. The available tokens
come from ``--available_tokens=FILE.json`` (no raw data needed; the
file-only path, :mod:`.files`) or from the study's token store
(:mod:`.plan_stage`, which needs the data pipeline).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from etils import epath
import ml_collections

from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.data import windows
from autoscale_jax.experiments import results as results_lib
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.study import console
from autoscale_jax.study import exports
from autoscale_jax.study import options as options_lib

README_FILE = "README.md"
CSV_FILE = "runs.csv"
JSON_FILE = "runs.json"
AVAILABLE_FILE = "available_tokens.json"


# --------------------------------------------------- the ddo stage's design


def budget_plan(config: ml_collections.ConfigDict, k: int
                ) -> list[records.PlannedRun]:
  """The planned proxy runs of DDO budget ``k`` (what ``ddo`` trains)."""
  c = config
  return [records.PlannedRun.from_json(r) for r in ddo_lib.plan_runs(
      list(c.data.domains), float(c.ddo.budgets[k]),
      base_weights=dict(c.ddo.base_weights) or None,
      factors=tuple(c.ddo.factors), seeds=tuple(c.ddo.seeds))]


def store_name(k: int, run: records.PlannedRun) -> str:
  """A planned run's name in the store (unique over budgets): b<k>_<name>."""
  return f"b{k}_{run.name}"


def training_seed(config: ml_collections.ConfigDict,
                  run: records.PlannedRun) -> int:
  """The seed a planned run trains with: the study seed plus the plan's."""
  return int(config.seed) + int(run.seed)


def init_seed(config: ml_collections.ConfigDict, training_seed: int) -> int:
  """The seed a run with ``training_seed`` initializes its model from.

  ``config.init_seeds``: "per_seed" the training seed itself (equal to
  ``config.seed`` for seed 0, so those runs keep their identity), "shared"
  ``config.seed`` for every run.
  """
  if config.init_seeds == "shared":
    return int(config.seed)
  return int(training_seed)


def run_steps(config: ml_collections.ConfigDict,
              tokens: Mapping[str, float]) -> int:
  """Optimizer steps of a run with ``tokens``, as this project trains it.

  Each domain fills ``ceil(tokens / C)`` rows of ``train.seq_len`` (C =
  seq_len for GPT-2, seq_len - 2 for BERT), ``train.global_batch_size``
  rows per step.
  """
  per_row = windows.content_per_row(int(config.train.seq_len),
                                    config.model.kind == "bert")
  rows = sum(-(-int(round(t)) // per_row) for t in tokens.values())
  return -(-rows // int(config.train.global_batch_size))


def planned_runs(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Every budget's planned runs as the plan files write them.

  Returns:
    Per run, budget by budget: ``name`` (the store name), ``budget``,
    ``budget_index``, ``seed`` (the training seed; the runs of one seed
    share a base run), ``steps``, ``tokens``, ``weights``, ``domain`` (the
    scaled domain, None for a base run) and ``factor``.
  """
  out = []
  for k, budget in enumerate(config.ddo.budgets):
    for run in budget_plan(config, k):
      total = float(sum(run.tokens.values()))
      out.append({
          "name": store_name(k, run), "budget": float(budget),
          "budget_index": k, "seed": training_seed(config, run),
          "steps": run_steps(config, run.tokens),
          "tokens": {d: int(t) for d, t in run.tokens.items()},
          "weights": {d: t / total for d, t in run.tokens.items()},
          "domain": run.domain, "factor": run.factor})
  return out


def check_available(config: ml_collections.ConfigDict,
                    available_tokens: Mapping[str, int],
                    allow_repeat: bool) -> None:
  """Every budget's plan against the unique tokens, as the ddo stage does."""
  for k in range(len(config.ddo.budgets)):
    ddo_lib.check_availability([r.to_json() for r in budget_plan(config, k)],
                               available_tokens, allow_repeat=allow_repeat)


# ------------------------------------------------------- available tokens


class AvailableTokensError(options_lib.StageError):
  """A bad --available_tokens file (one line: the file, the domain, the fix)."""


def read_available_tokens(path: str, domains: Sequence[str] | None = None
                          ) -> dict[str, int]:
  """``{domain: unique training tokens}`` from ``--available_tokens=FILE``.

  Args:
    path: a JSON file ``{domain: tokens}`` (local or gs://).
    domains: domains that must be counted (None: whatever the file has).
  """
  p = epath.Path(path)
  fix = 'write {"<domain>": <unique training tokens>, ...}'
  if not p.exists():
    raise AvailableTokensError(f"--available_tokens={path}: no such file; "
                               + fix)
  try:
    doc = json.loads(p.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise AvailableTokensError(f"--available_tokens={path}: not valid JSON "
                               f"({e}); {fix}") from None
  if not isinstance(doc, Mapping) or not doc:
    raise AvailableTokensError(f"--available_tokens={path}: expected a JSON "
                               f"object; {fix}")
  out = {}
  for d, v in doc.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
        math.isfinite(v) and v >= 0):
      raise AvailableTokensError(
          f"--available_tokens={path}: domain {d!r} has {v!r}; give a "
          "number of tokens >= 0")
    out[str(d)] = int(v)
  missing = [d for d in (domains or []) if d not in out]
  if missing:
    raise AvailableTokensError(
        f"--available_tokens={path} lacks domain(s) {', '.join(missing)}; "
        "count every domain of config.data.domains")
  return {d: out[d] for d in domains} if domains else out


# --------------------------------------------------------------- writing


def _readme(config: ml_collections.ConfigDict, runs: list[dict[str, Any]],
            metric: str, source: str) -> str:
  c = config
  per_budget = len(runs) // max(1, len(c.ddo.budgets))
  lines = [
      f"# DDO plan of study `{c.study}`", "",
      f"{len(runs)} proxy runs: {len(c.ddo.budgets)} budget(s) "
      f"({', '.join(f'{b:g}' for b in c.ddo.budgets)} tokens) x "
      f"{per_budget} runs (per seed of {list(c.ddo.seeds)}: one base run "
      f"and one run per domain and factor {list(c.ddo.factors)}). Steps are "
      f"for a global batch of {c.train.global_batch_size} sequences of "
      f"{c.train.seq_len} tokens. Unique tokens per domain: {source}.", "",
      "Train each run on exactly its `tokens` per domain (its own learning-"
      "rate schedule over its `steps`), with its `seed`, then fill in each "
      f"run's held-out metric ({metric}) in `{CSV_FILE}`: one column "
      f"`{metric}.<domain>` per evaluated domain, and/or `{metric}.aggregate`"
      " (a metric column left empty in every row is ignored). Then:", "",
      "    python -m autoscale_jax.main --stage=fit "
      f"--results=WORKDIR/plan/{CSV_FILE} --workdir=WORKDIR --config=CONFIG "
      f"--available_tokens=WORKDIR/plan/{AVAILABLE_FILE}",
      "    python -m autoscale_jax.main --stage=project --workdir=WORKDIR "
      f"--config=CONFIG --available_tokens=WORKDIR/plan/{AVAILABLE_FILE}",
      "",
      "| file | what |", "| --- | --- |",
      f"| `{CSV_FILE}` | one row per run; the fit reads it back |",
      f"| `{JSON_FILE}` | the same runs as RUNS.json (fill `eval`) |",
      f"| `{AVAILABLE_FILE}` | unique training tokens per domain |",
      "| `budget_<k>/<run>/` | the run's mixture for levanter/marin, MaxText, "
      "Megatron-LM, OLMo-core/olmix, Hugging Face, seqio, JSON and CSV "
      "(its README says which flag reads which file) |", "",
      "| run | budget | seed | steps | tokens |", "| --- | --- | --- | --- | "
      "--- |"]
  for r in runs:
    tokens = ", ".join(f"{d}={t}" for d, t in r["tokens"].items())
    lines.append(f"| {r['name']} | {r['budget']:g} | {r['seed']} | "
                 f"{r['steps']} | {tokens} |")
  return "\n".join(lines) + "\n"


def write_plan(config: ml_collections.ConfigDict, out_dir: epath.PathLike,
               available_tokens: Mapping[str, int], *,
               allow_repeat: bool = False, corpus_dir: str | None = None,
               source: str = "given") -> list[dict[str, Any]]:
  """Checks the plan against the unique tokens and writes ``out_dir``.

  Args:
    config: the study config.
    out_dir: the plan directory (``<workdir>/plan``).
    available_tokens: unique training tokens per domain.
    allow_repeat: allow quotas beyond the unique tokens (as ``ddo``).
    corpus_dir: the embedded or fixture corpus (for the exports' paths).
    source: where the available tokens came from (for the README).

  Returns:
    The planned runs (:func:`planned_runs`).
  """
  check_available(config, available_tokens, allow_repeat)
  runs = planned_runs(config)
  domains = list(config.data.domains)
  metric = results_lib.runs_metric(str(config.ddo.metric))
  out = epath.Path(out_dir)
  evals = domains + [results_lib.AGGREGATE]
  skeleton = {
      "metric": metric, "study": str(config.study),
      "budgets": [float(b) for b in config.ddo.budgets],
      "global_batch_size": int(config.train.global_batch_size),
      "seq_len": int(config.train.seq_len),
      "runs": [{**r, "eval": {d: None for d in evals}} for r in runs]}
  fileio.atomic_write_json(out / JSON_FILE, skeleton)
  fileio.atomic_write_text(out / CSV_FILE,
                           results_lib.csv_text(runs, domains, metric))
  fileio.atomic_write_json(out / AVAILABLE_FILE, dict(available_tokens))
  fileio.atomic_write_text(out / README_FILE,
                           _readme(config, runs, metric, source))
  for r in runs:
    mixture = {"weights": r["weights"], "tokens": r["tokens"],
               "budget_tokens": float(sum(r["tokens"].values()))}
    exports.write_exports(
        config, mixture, str(out / f"budget_{r['budget_index']}" / r["name"]),
        corpus_dir, dict(available_tokens),
        max_epochs=None if allow_repeat else 1.0)
  console.say(f"plan written: {out} ({len(runs)} runs over "
              f"{len(config.ddo.budgets)} budget(s); fill in {out / CSV_FILE}"
              " and run --stage=fit --results=it)")
  return runs


def plan_from_files(options: options_lib.Options,
                    config: ml_collections.ConfigDict | None
                    ) -> list[dict[str, Any]]:
  """``--stage=plan --available_tokens=FILE``: the plan without raw data."""
  if config is None:
    raise options_lib.StageError(
        "--stage=plan needs --config=configs/NAME.py (the budgets, factors, "
        "seeds, batch and sequence length of the runs)")
  available = read_available_tokens(options.available_tokens,
                                    list(config.data.domains))
  return write_plan(config, epath.Path(options.workdir) / "plan", available,
                    allow_repeat=options.allow_repeat,
                    source=f"from {options.available_tokens}")

