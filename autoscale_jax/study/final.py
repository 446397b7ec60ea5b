"""Stage ``final``: the target budget trained with each mixture, compared.

Every mixture of ``config.final.mixtures`` (or ``--mixture``) is trained once
per seed of ``config.final.seeds`` (run ``final_<slug>`` for seed 0, as
always, and ``final_<slug>_s<k>`` for seed k, trained with ``config.seed +
k`` and, with ``config.init_seeds = "per_seed"``, initialized from it: the
mixtures' runs of one seed share an initialization, which the paired
differences cancel), each evaluated along the way.
``final/comparison.json`` holds the verdict over seeds (``"seeds"``: means, intervals, paired differences and
speed-ups, :func:`mixing.verdict.seed_verdict`) and, as before, the speed-up
table of the first seed; ``final/comparison.md`` starts with the verdict
sentences. A ``--mixture=NAME`` run adds to the comparison on file (the other
mixtures' finished runs are read from the store), never replaces it. A mixture
file is named by its stem in the verdict and the tables (``--mixture=
runs/ddo_last.json``: "projected vs ddo_last"); comparison.json's
``"sources"`` maps such a name back to the file.
(``--stage=train`` is an alias of this stage.)
"""

from __future__ import annotations

import json
from typing import Any

from autoscale_jax import distributed
from autoscale_jax import errors
from autoscale_jax import fileio
from autoscale_jax import names as names_lib
from autoscale_jax import records
from autoscale_jax.mixing import baselines
from autoscale_jax.mixing import speedup
from autoscale_jax.mixing import verdict
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import project
from autoscale_jax.study import provenance as provenance_lib

# {mixture: {seed: record}} of the final runs.
Runs = dict[str, dict[int, records.RunRecord]]


def check_projected(study: core.Study) -> None:
  """Refuses a project/mixture.json made for another target or config."""
  c = study.config
  layout = study.layout
  projected = provenance_lib.read_json(layout.projected_mixture,
                                       "--stage=project")
  paths = [str(layout.budget_mixture(k)) for k in range(len(c.ddo.budgets))]
  provenance_lib.check_projection(
      layout.projected_mixture, projected, float(c.project.target_tokens),
      project.provenance(study, paths))


def mixture_of(study: core.Study, name: str) -> records.Mixture:
  """The final-run mixture called ``name`` (a baseline, "projected" or a file)."""
  c = study.config
  layout = study.layout
  if name == "projected":
    check_projected(study)
    name_or_path = str(layout.projected_mixture)
  else:
    name_or_path = name
  small = layout.budget_mixture(0)
  return records.Mixture.from_json(baselines.resolve_mixture(
      name_or_path, list(c.data.domains), float(c.project.target_tokens),
      available_tokens=dict(study.bundle.available_tokens),
      ddo_small=str(small) if small.exists() else None))


def run_name(mixture: str, seed: int) -> str:
  """Store name of a final run: ``final_<slug>``, ``final_<slug>_s<seed>``."""
  base = f"final_{names_lib.mixture_slug(mixture)}"
  return base if int(seed) == 0 else f"{base}_s{int(seed)}"


def _quotas(mixture: records.Mixture) -> dict[str, int]:
  return {d: int(v) for d, v in mixture.tokens.items()}


def _previous_names(study: core.Study) -> list[str]:
  """Mixture names of the comparison on file ([] when there is none)."""
  path = study.layout.comparison_json
  if not path.exists():
    return []
  try:
    old = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError):
    console.say(f"note: {path} is not valid JSON; it is replaced")
    return []
  if not isinstance(old, dict):
    return []
  seeds = old.get("seeds")
  names = (seeds.get("mixtures") if isinstance(seeds, dict) else None) or \
      old.get("mixtures") or {}
  sources = old.get("sources")
  sources = sources if isinstance(sources, dict) else {}
  return [str(sources.get(n, n)) for n in names]


def _finished(study: core.Study, names: list[str], seeds: list[int],
              mixtures: dict[str, records.Mixture], runs: Runs) -> None:
  """Adds the store's finished runs of mixtures ``names`` (no training)."""
  c = study.config
  for n in names:
    try:
      mix = mixture_of(study, n)
    except errors.UserError as e:
      console.say(f"note: {n} left out of the comparison: {e}")
      continue
    found = {}
    for s in seeds:
      name = run_name(n, s)
      rec = study.record(name, study.fingerprint(
          name, _quotas(mix), int(c.seed) + s,
          int(c.final.eval_every_steps)))
      if rec is not None:
        found[s] = rec
    if found:
      mixtures[n], runs[n] = mix, found
    else:
      console.say(f"note: {n} left out of the comparison: no finished final "
                  "run for the current config (train it with "
                  f"--mixture={n})")


def planned_tokens(study: core.Study) -> dict[str, float]:
  """{store name: tokens} of the final runs, each about the target budget."""
  c = study.config
  target = float(c.project.target_tokens)
  return {run_name(n, s): target
          for n in list(study.options.mixtures or c.final.mixtures)
          for s in c.final.seeds}


def run_final(study: core.Study) -> bool:
  """Trains (or reuses) each mixture's runs over seeds; writes the comparison."""
  c = study.config
  requested = list(study.options.mixtures or c.final.mixtures)
  seeds = [int(s) for s in c.final.seeds]
  mixtures = {n: mixture_of(study, n) for n in requested}  # fail early
  others = ([n for n in _previous_names(study) if n not in mixtures]
            if study.options.mixtures else [])
  _check_labels(requested + others)
  runs: Runs = {}
  study.progress.expect({run_name(n, s): float(sum(_quotas(mix).values()))
                         for n, mix in mixtures.items() for s in seeds})
  total = len(mixtures) * len(seeds)
  i = 0
  for n, mix in mixtures.items():
    runs[n] = {}
    for s in seeds:
      i += 1
      runs[n][s] = study.train_or_load(
          run_name(n, s), _quotas(mix), int(c.seed) + s,
          label=f"[final {i}/{total}]",
          eval_every=int(c.final.eval_every_steps), kind="final",
          mixture=mix)
  reused = study.progress.pop_reused()
  if reused:
    console.say(f"[final]: {reused} of {total} runs reused from the store  "
                f"{study.progress.line()}")
  if others:  # a --mixture run: merge into the comparison on file
    merged_mixtures: dict[str, records.Mixture] = {}
    merged_runs: Runs = {}
    _finished(study, others, seeds, merged_mixtures, merged_runs)
    merged_mixtures.update(mixtures)
    merged_runs.update(runs)
    mixtures, runs = merged_mixtures, merged_runs
  label = names_lib.mixture_label
  table = comparison(study, {label(n): m for n, m in mixtures.items()},
                     {label(n): r for n, r in runs.items()})
  sources = {label(n): n for n in mixtures if label(n) != n}
  if sources:
    table["sources"] = sources
  md = to_markdown(table, float(c.project.target_tokens))
  layout = study.layout

  def write():
    layout.final_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.comparison_json, table)
    fileio.atomic_write_text(layout.comparison_md, md)
  distributed.write_once("comparison", write)
  console.say("")
  for sentence in table["seeds"]["sentences"]:
    console.say(f"verdict: {sentence}")
  # The tables are in comparison.md (and the report); the log names the file.
  console.say(f"comparison written: {layout.comparison_md}")
  return True


def comparison(study: core.Study, mixtures: dict[str, records.Mixture],
               runs: Runs) -> dict[str, Any]:
  """comparison.json: the first seed's speed-up table plus ``"seeds"``.

  The keys the stage has always written (``metric``, ``reference``,
  ``smoothing``, ``final``, ``rows``, ``final_eval``, ``mixtures``) are
  computed on the first seed of ``config.final.seeds``; ``"seeds"`` is the
  verdict over all seeds; ``"provenance"`` names the runs behind it.
  """
  c = study.config
  metric = c.ddo.metric
  smoothing = int(c.final.smoothing)
  names = list(mixtures)
  reference = "projected" if "projected" in names else names[0]
  curves = {n: {s: r.curve for s, r in by_seed.items()}
            for n, by_seed in runs.items()}
  finals = {n: {s: r.final_eval["aggregate"][metric]
                for s, r in by_seed.items()
                if metric in ((r.final_eval or {}).get("aggregate") or {})}
            for n, by_seed in runs.items()}
  block = verdict.seed_verdict(curves, metric, reference=reference,
                               finals=finals, smoothing=smoothing)
  first = int(c.final.seeds[0])
  at_first = [n for n in names if first in runs[n]]
  table_ref = reference if reference in at_first else at_first[0]
  table = speedup.comparison_table(
      {n: runs[n][first].curve for n in at_first}, metric,
      reference=table_ref, smoothing=smoothing)
  table["final_eval"] = {n: runs[n][first].final_eval for n in at_first}
  table["mixtures"] = {n: m.weights for n, m in mixtures.items()}
  table["table_seed"] = first
  table["seeds"] = block
  table["provenance"] = {
      "target_tokens": float(c.project.target_tokens),
      "seeds": [int(s) for s in c.final.seeds],
      "runs": {n: {str(s): {"name": r.name, "fingerprint": r.fingerprint}
                   for s, r in by_seed.items()}
               for n, by_seed in runs.items()},
  }
  return table


def to_markdown(table: dict[str, Any], target_tokens: float) -> str:
  """comparison.md: the verdict sentences first, the seed table, then the
  first seed's speed-up table."""
  block = table["seeds"]
  lines = [f"{s}." if not s.endswith(".") else s for s in block["sentences"]]
  head = "\n\n".join(lines) + ("\n\n" if lines else "")
  return (head + f"## Final runs at {target_tokens:.4g} tokens over seeds\n\n"
          + verdict.to_markdown(block)
          + f"\n## Speed-up table, seed {table['table_seed']}\n\n"
          + speedup.to_markdown(table))


def _check_labels(mixtures: list[str]) -> None:
  """Refuses two mixtures that would share a name and their runs' names."""
  seen: dict[str, str] = {}
  for n in mixtures:
    slug = names_lib.mixture_slug(n)
    other = seen.setdefault(slug, n)
    if other != n:
      raise errors.UserError(
          f"final mixtures {other!r} and {n!r} would both be named "
          f"{slug!r} (runs final_{slug}...); rename one of the files")
