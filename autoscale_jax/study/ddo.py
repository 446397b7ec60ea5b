"""Stages ``ddo`` and ``fit``: the proxy runs of every budget, fit and solve.

``ddo`` trains the runs of every DDO budget that the store lacks (as one swarm
program when that pays off, else one by one), then fits and solves each
budget whose runs are all done. ``fit`` only fits and solves, from the store.
"""

from __future__ import annotations

import time
from typing import Any

from etils import epath

from autoscale_jax import config as config_lib
from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax import records
from autoscale_jax.experiments import store as store_lib
from autoscale_jax.mixing import ddo as ddo_lib
from autoscale_jax.mixing import noise as noise_lib
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import lease_worker
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import plan as plan_lib
from autoscale_jax.train import checkpoint
from autoscale_jax.train import swarm

# (store name, token quotas, training seed) of one planned run.
Planned = tuple[str, dict[str, int], int]


def plan(study: core.Study, k: int) -> list[records.PlannedRun]:
  """The planned proxy runs of DDO budget ``k`` (what --stage=plan writes)."""
  return plan_lib.budget_plan(study.config, k)


def planned(study: core.Study, k: int, run: records.PlannedRun) -> Planned:
  """(store name, quotas, training seed) of a planned run of budget ``k``."""
  return (plan_lib.store_name(k, run), run.tokens,
          plan_lib.training_seed(study.config, run))


def planned_tokens(study: core.Study) -> dict[str, float]:
  """{store name: tokens} of this worker's DDO runs over every budget."""
  out = {}
  for k in range(len(study.config.ddo.budgets)):
    p = plan(study, k)
    mine = study.my_share([r.name for r in p])
    for run in p:
      if run.name in mine:
        name, tokens, _ = planned(study, k, run)
        out[name] = float(sum(tokens.values()))
  return out


def run_ddo(study: core.Study) -> bool:
  """Trains the missing proxy runs of every budget, then fits and solves."""
  c = study.config
  plans = [plan(study, k) for k in range(len(c.ddo.budgets))]
  for p in plans:  # check every budget before training anything
    ddo_lib.check_availability([r.to_json() for r in p],
                               study.bundle.available_tokens,
                               allow_repeat=study.options.allow_repeat)
  _say_status(study, [planned(study, k, run) for k, p in enumerate(plans)
                      for run in p])
  if study.options.worker is not None:
    if c.run.swarm != "off":
      console.say("lease worker: one run per lease (run.swarm is not used "
                  "with --worker)")
    lease_worker.train_all(study, [
        lease_worker.Job(*planned(study, k, run), *_label_and_kwargs(
            study, k, i, len(p), run))
        for k, p in enumerate(plans) for i, run in enumerate(p, 1)])
    return all([fit_budget(study, k, p) for k, p in enumerate(plans)])
  complete = True
  for k, p in enumerate(plans):
    mine = study.my_share([r.name for r in p])
    console.say(
        f"\nDDO budget {k + 1}/{len(plans)}: {c.ddo.budgets[k]:.4g} tokens, "
        f"{len(p)} runs" + (f" ({len(mine)} on this worker)"
                            if len(mine) != len(p) else ""))
    swarm_dir = None
    if c.run.swarm != "off":
      swarm_dir = _train_swarm(study, k, [r for r in p if r.name in mine])
    for i, run in enumerate(p, 1):
      if run.name not in mine:
        continue
      name, tokens, seed = planned(study, k, run)
      label, kwargs = _label_and_kwargs(study, k, i, len(p), run)
      study.train_or_load(name, tokens, seed, label=label, **kwargs)
    if swarm_dir is not None and c.run.keep_after_finish != "all":
      # Every member's record is written: the stacked checkpoints can go
      # (a swarm member's params are not kept apart).
      checkpoint.keep_after_finish(swarm_dir, "none")
    reused = study.progress.pop_reused()
    if reused:
      console.say(f"[ddo b{k + 1}]: {reused} of {len(mine)} runs reused from "
                  f"the store  {study.progress.line()}")
    complete = fit_budget(study, k, p) and complete
  return complete


def _label_and_kwargs(study: core.Study, k: int, i: int, n: int,
                      run: records.PlannedRun) -> tuple[str, dict[str, Any]]:
  """The progress label and record fields of run ``i`` of ``n`` of budget k."""
  return f"[ddo b{k + 1} {i}/{n}]", {
      "kind": "ddo",
      "extra": {"budget_index": k,
                "budget_tokens": float(study.config.ddo.budgets[k]),
                "domain": run.domain, "factor": run.factor,
                "plan_seed": int(run.seed)}}


def run_fit(study: core.Study) -> bool:
  """Fits and solves every budget from the store's records.

  Returns whether every budget was fitted; raises StageError when none was
  (the runs are missing for the current config: nothing to fit).
  """
  budgets = study.config.ddo.budgets
  waiting = {}
  for k in range(len(budgets)):
    runs = plan(study, k)
    missing = _fit(study, k, runs)
    if missing:
      waiting[k] = (missing, len(runs))
  if len(waiting) == len(budgets):
    lacks = "; ".join(
        f"budget {k + 1} ({budgets[k]:.4g} tokens) lacks {len(m)} of {n} runs"
        f" (e.g. {m[0]})" for k, (m, n) in waiting.items())
    raise options_lib.StageError(
        f"--stage=fit fitted nothing: {lacks} for the current config; run "
        "--stage=ddo with this config first (on every worker when fanned "
        "out)")
  return not waiting


def _train_swarm(study: core.Study, k: int,
                 runs: list[records.PlannedRun]) -> epath.Path | None:
  """Trains the budget's missing runs together as one program (a swarm).

  Each member writes its result.json in its own run directory, so the
  per-run loop that follows finds them finished and writes the records
  exactly as for runs trained one by one.

  Returns:
    The swarm's directory (its stacked checkpoints), None when no swarm ran.
  """
  todo = []
  for run in runs:
    name, tokens, seed = planned(study, k, run)
    fp = study.fingerprint(name, tokens, seed)
    if study.store.get(name, fp) is None:
      todo.append((name, tokens, seed, fp))
  if len(todo) < 2:
    return None
  label = f"[ddo b{k + 1} swarm]"
  sources = [study.batches(t, s) for _, t, s, _ in todo]
  vocab = study.bundle.tokenizer.vocab_size
  layout = study.config.run.swarm
  if layout == "auto":
    try:
      m = swarm.calibrate(study.config, vocab, sources)
    except MemoryError as e:
      console.say(f"{label}: one by one: {e}")
      return None
    use = distributed.agree(m["speedup"] >= config_lib.SWARM_MIN_SPEEDUP)
    layout = "scan" if distributed.agree(m["layout"] == "scan") else "vmap"
    console.say(
        f"{label}: one step of {m['runs']} runs: {m['runs']} x "
        f"{m['single_s'] * 1e3:,.1f} ms one by one, "
        f"{m['vmap_s'] * 1e3:,.1f} ms as one vmap program, "
        f"{m['scan_s'] * 1e3:,.1f} ms as one scan program "
        f"({m['speedup']:.2f}x): "
        + (f"swarm ({layout})" if use else
           f"one by one (the swarm needs >= {config_lib.SWARM_MIN_SPEEDUP}x;"
           " --config.run.swarm=vmap or =scan forces it)"))
    if not use:
      return None
  console.say(f"{label}: training {len(todo)} runs as one program ({layout})")
  t0 = time.time()
  run_dirs = [str(study.layout.run_dir(n, fp)) for n, _, _, fp in todo]
  swarm_dir = swarm.default_swarm_dir(run_dirs)
  swarm.train_swarm(
      study.config, sources, study.bundle.eval_sets(), run_dirs,
      vocab_size=vocab, progress_label=f"ddo b{k + 1} swarm", layout=layout,
      swarm_dir=swarm_dir,
      seeds=[plan_lib.init_seed(study.config, s) for _, _, s, _ in todo])
  seconds = time.time() - t0
  study.progress.trained_together(
      {n: float(sum(t.values())) for n, t, _, _ in todo}, seconds)
  console.say(f"{label}: {len(todo)} runs trained in {seconds:.1f}s; each "
              "one's line follows")
  return swarm_dir


def _say_status(study: core.Study, runs: list[Planned]) -> None:
  """Prints how many planned runs are done, to train, or stale."""
  keyed = [(name, study.fingerprint(name, t, s)) for name, t, s in runs]
  status = study.store.status(keyed)
  console.say(f"store: {len(status['done'])} of {len(keyed)} DDO runs done, "
              f"{len(status['missing'])} to train")
  stale = status["stale"]
  if stale:  # one line, however many
    first = stale[0]
    console.say(
        f"store: {len(stale)} stale record{'s' if len(stale) != 1 else ''} "
        f"({console.names_line([st['name'] for st in stale])}; e.g. "
        f"{first['name']}: fingerprint {first['fingerprint'][:10]}, expected "
        f"{first['expected'][:10]}): the config, data or tokenizer changed; "
        "kept but not reused")


def provenance(study: core.Study, k: int,
               run_fingerprints: dict[str, str]) -> dict[str, Any]:
  """What budget ``k``'s optimum is made from (mixture.json "provenance")."""
  c = study.config
  bundle = study.bundle
  return {
      "stage": "ddo",
      "budget_index": int(k),
      "budget_tokens": float(c.ddo.budgets[k]),
      "metric": str(c.ddo.metric),
      "target_domains": {d: float(w) for d, w in
                         dict(c.ddo.target_domains).items()},
      "upper_bound": bool(c.ddo.upper_bound),
      "bootstrap": int(c.ddo.bootstrap),
      "noise_model": str(c.ddo.noise_model),
      "seed": int(c.seed),
      "tokenizer": bundle.tokenizer.fingerprint,
      "data": {d: bundle.fingerprints[d] for d in c.data.domains},
      "runs": dict(run_fingerprints),
  }


def run_fingerprints(study: core.Study, k: int,
                     runs: list[records.PlannedRun]) -> dict[str, str]:
  """{store name: fingerprint} of budget ``k``'s planned runs."""
  out = {}
  for run in runs:
    name, tokens, seed = planned(study, k, run)
    out[name] = study.fingerprint(name, tokens, seed)
  return out


def fit_budget(study: core.Study, k: int,
               runs: list[records.PlannedRun]) -> bool:
  """Fits and solves budget ``k`` if all its runs are done; writes its files."""
  return not _fit(study, k, runs)


def _fit(study: core.Study, k: int, runs: list[records.PlannedRun]
         ) -> list[str]:
  """Fits budget ``k``; returns the names of its missing runs ([]: fitted)."""
  c = study.config
  fingerprints = run_fingerprints(study, k, runs)
  done, missing = [], []
  for name, fp in fingerprints.items():
    rec = study.record(name, fp)
    if rec is None:
      missing.append(name)
    else:
      done.append(rec)
  if missing:
    console.say(
        f"DDO budget {k + 1}: {len(missing)} runs not finished yet "
        f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}); "
        "run --stage=fit once every worker is done.")
    return missing
  runs_json = store_lib.to_runs_json([r.to_json() for r in done],
                                     c.ddo.metric)
  target_domains = dict(c.ddo.target_domains) or None
  optimum = ddo_lib.fit_and_solve(
      runs_json, metric=c.ddo.metric, target_domains=target_domains,
      upper_bound=bool(c.ddo.upper_bound), bootstrap=int(c.ddo.bootstrap),
      seed=int(c.seed), noise_model=str(c.ddo.noise_model))
  optimum["noise"] = noise_lib.measure_noise(
      runs_json, metric=c.ddo.metric, target_domains=target_domains)
  optimum["provenance"] = provenance(study, k, fingerprints)
  mixture = records.Mixture.from_json(optimum)
  layout = study.layout

  def write():
    layout.budget_dir(k).mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(layout.budget_runs(k), runs_json)
    ddo_lib.write_mixture(str(layout.budget_mixture(k)), mixture.to_json())
  distributed.write_once(f"fit budget {k}", write)
  console.print_mixture(f"DDO optimum at {c.ddo.budgets[k]:.4g} tokens",
                        mixture)
  console.say(console.noise_line(
      mixture.noise, title=f"DDO budget {k + 1} noise at "
      f"{c.ddo.budgets[k]:.4g} tokens"))
  return []
