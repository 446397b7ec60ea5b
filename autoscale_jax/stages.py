"""Stage runner: the one module that knows both the trainer and the mixing maths.

Workdir layout of a study (every file a user may rely on is written
atomically; every finished run is a record in the store, never retrained):

  corpus/                 embedded corpus (built by `autoscale_jax.data.corpus`)
  cache/                  tokenizer and per-domain token store
  store/                  one JSON record per finished run (experiment store)
  runs/<name>-<fp>/       one training workdir per run (checkpoints, TensorBoard)
  ddo/budget_<k>/         runs.json (RUNS.json format) and mixture.json
  project/                mixture.json, trajectory, exported weights
  final/                  comparison.json and comparison.md
  report/                 index.html, README.md, figures
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import ml_collections
from etils import epath

from autoscale_jax import config as config_lib
from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax.experiments import store as store_lib

@dataclasses.dataclass(frozen=True)
class Options:
  """Command-line options that are not part of the study config."""
  workdir: str | None = None
  results: str | None = None
  optima: Sequence[str] | None = None
  target_tokens: float | None = None
  mixtures: Sequence[str] | None = None
  allow_repeat: bool = False
  worker_index: int | None = None
  num_workers: int | None = None


# Settings that change how a run is executed or logged but not its result
# (to float round-off): they are left out of a run's identity, so changing
# them never marks finished runs stale.
_SPEED_ONLY_TRAIN_KEYS = frozenset({
    "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "swarm",
    "eval_batch_size", "steps_per_call"})
_SPEED_ONLY_MODEL_KEYS = frozenset({"remat"})


class StageError(ValueError):
  """A stage cannot run with what the workdir or flags provide."""


def say(msg: str) -> None:
  print(msg, flush=True)


# ----------------------------------------------------------------------------
# Entry point


def run_stage(stage: str, config: ml_collections.ConfigDict | None,
              options: Options) -> None:
  """Validates inputs early, then runs ``stage``."""
  if stage == "fit" and options.results:
    _require(options.workdir, "--workdir", "where mixture.json is written")
    _fit_from_results(options)
    return
  if stage == "project" and options.optima:
    _require(options.workdir, "--workdir", "where mixture.json is written")
    _project_from_files(options)
    return
  if config is None:
    raise StageError(f"--stage={stage} needs --config=configs/NAME.py "
                     "(see configs/ for the available studies)")
  _require(options.workdir, "--workdir", "the study directory")
  import jax  # pylint: disable=g-import-not-at-top
  config_lib.validate(config, num_devices=jax.device_count())
  study = Study(config, epath.Path(options.workdir), options)
  steps: dict[str, Callable[[], Any]] = {
      "ddo": study.ddo,
      "fit": study.fit,
      "project": study.project,
      "train": study.train,
      "report": study.report,
  }
  if stage == "all":
    order = ["ddo", "project", "train", "report"]
    for k, name in enumerate(order, 1):
      say(f"\n=== stage {k}/{len(order)}: {name} ===")
      if steps[name]() is False:
        say(f"stage {name} did not complete; stopping before the next stage.")
        return
  else:
    steps[stage]()


def _require(value: Any, flag: str, what: str) -> None:
  if not value:
    raise StageError(f"{flag} is required ({what})")


# ----------------------------------------------------------------------------
# File-only stages (no config, no training)


def _fit_from_results(options: Options) -> dict[str, Any]:
  from autoscale_jax.mixing import ddo  # pylint: disable=g-import-not-at-top
  mixture = ddo.run_fit_stage(options.results, options.workdir)
  _print_mixture("fitted mixture", mixture)
  return mixture


def _project_from_files(options: Options) -> dict[str, Any]:
  from autoscale_jax.mixing import projection  # pylint: disable=g-import-not-at-top
  if options.target_tokens is None:
    raise StageError("--stage=project with --optima needs --target_tokens=T")
  mixture = projection.run_project_stage(
      list(options.optima), options.target_tokens, options.workdir)
  _print_mixture(f"projected mixture at {options.target_tokens:.4g} tokens",
                 mixture)
  return mixture


def _print_mixture(title: str, mixture: dict[str, Any]) -> None:
  say(f"{title}:")
  from autoscale_jax.report import weight_intervals  # pylint: disable=g-import-not-at-top
  intervals = weight_intervals(mixture)
  for d, w in mixture["weights"].items():
    band = intervals.get(d)
    band_txt = f"  90% [{band[0]:.3f}, {band[1]:.3f}]" if band else ""
    say(f"  {d:>16s}  w={w:.4f}  tokens={mixture['tokens'][d]:.4g}{band_txt}")
  for w in mixture.get("warnings", []):
    say(f"  warning: {w}")
  for n in mixture.get("notes", []):
    say(f"  note: {n}")


# ----------------------------------------------------------------------------
# The study


class Study:
  """One study's stages over one workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path,
               options: Options):
    self.config = config
    self.workdir = workdir
    self.options = options
    self._bundle = None
    self._store = None

  # -- shared pieces ---------------------------------------------------------

  @property
  def bundle(self):
    if self._bundle is None:
      from autoscale_jax.data import pipeline  # pylint: disable=g-import-not-at-top
      say("preparing data (corpus, tokenizer, token store) ...")
      t0 = time.time()
      self._bundle = pipeline.prepare_data(self.config, str(self.workdir))
      avail = ", ".join(f"{d}={n:,}" for d, n in
                        self._bundle.available_tokens.items())
      say(f"data ready in {time.time() - t0:.1f}s; unique training tokens: "
          f"{avail}")
    return self._bundle

  @property
  def store(self) -> store_lib.ExperimentStore:
    if self._store is None:
      self._store = store_lib.ExperimentStore(self.workdir / "store")
    return self._store

  def _run_identity(self, name: str, tokens: dict[str, int], seed: int,
                    eval_every: int) -> dict[str, Any]:
    """Everything that determines a run's result (the store fingerprint)."""
    c = self.config
    return {
        "name": name,
        "model": {k: v for k, v in c.model.to_dict().items()
                  if k not in _SPEED_ONLY_MODEL_KEYS},
        "train": {k: v for k, v in c.train.to_dict().items()
                  if k not in _SPEED_ONLY_TRAIN_KEYS},
        "tokenizer": self.bundle.tokenizer.fingerprint,
        "data": {d: self.bundle.fingerprints[d] for d in sorted(tokens)},
        "tokens": {d: int(tokens[d]) for d in sorted(tokens)},
        "seed": int(seed),
        "eval_every_steps": int(eval_every),
        "allow_repeat": bool(self.options.allow_repeat),
    }

  def _fingerprint(self, name: str, tokens: dict[str, int], seed: int,
                   eval_every: int = 0) -> str:
    """The store key of a run: the fingerprint of its identity."""
    return store_lib.fingerprint(
        self._run_identity(name, tokens, seed, eval_every))

  def _run_dir(self, name: str, fp: str) -> epath.Path:
    """The run's training workdir (checkpoints, TensorBoard, result.json)."""
    return self.workdir / "runs" / f"{name}-{fp[:10]}"

  def _train_or_load(self, name: str, tokens: dict[str, int], seed: int, *,
                     label: str, eval_every: int = 0,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns the run's record, training it only if the store lacks it."""
    from autoscale_jax.train import trainer  # pylint: disable=g-import-not-at-top
    identity = self._run_identity(name, tokens, seed, eval_every)
    fp = store_lib.fingerprint(identity)
    record = self.store.get(name, fp)
    if record is not None:
      say(f"{label}: {name} already done (record {fp[:10]}), reused")
      return record
    batches = self.bundle.quota_batches(
        tokens, seed=seed, allow_repeat=self.options.allow_repeat)
    run_dir = self._run_dir(name, fp)
    say(f"{label}: training {name}: {sum(tokens.values()):,} tokens, "
        f"{batches.num_steps} steps")
    t0 = time.time()
    result = trainer.train_run(
        self.config, batches, self.bundle.eval_sets(), str(run_dir),
        vocab_size=self.bundle.tokenizer.vocab_size,
        eval_every_steps=eval_every, progress_label=f"{label.strip('[]')} {name}")
    record = {
        "name": name,
        "fingerprint": fp,
        "identity": identity,
        "tokens": identity["tokens"],
        "seed": int(seed),
        "steps": result["steps"],
        "tokens_trained": result["tokens_per_domain"],
        "final_eval": result["final_eval"],
        "curve": result.get("curve", []),
        "wall_seconds": round(time.time() - t0, 2),
        "run_dir": str(run_dir),
        **(extra or {}),
    }
    distributed.write_once(f"record {name}", lambda: self.store.put(record))
    agg = result["final_eval"]["aggregate"]
    say(f"{label}: {name} done in {record['wall_seconds']:.1f}s: "
        f"loss={agg['loss']:.4f} ppl_seq={agg['ppl_seq']:.2f} "
        f"bpb={agg['bpb']:.4f}")
    return record

  def _budget_dir(self, k: int) -> epath.Path:
    return self.workdir / "ddo" / f"budget_{k}"

  def _base_weights(self) -> dict[str, float] | None:
    bw = dict(self.config.ddo.base_weights)
    return bw or None

  def _plan(self, k: int) -> list[dict[str, Any]]:
    from autoscale_jax.mixing import ddo  # pylint: disable=g-import-not-at-top
    c = self.config
    return ddo.plan_runs(
        list(c.data.domains), float(c.ddo.budgets[k]),
        base_weights=self._base_weights(), factors=tuple(c.ddo.factors),
        seeds=tuple(c.ddo.seeds))

  # -- stages ----------------------------------------------------------------

  def ddo(self) -> bool:
    """Trains the missing proxy runs of every budget, then fits and solves."""
    from autoscale_jax.mixing import ddo  # pylint: disable=g-import-not-at-top
    c = self.config
    plans = [self._plan(k) for k in range(len(c.ddo.budgets))]
    for plan in plans:  # check every budget before training anything
      ddo.check_availability(plan, self.bundle.available_tokens,
                             allow_repeat=self.options.allow_repeat)
    self._say_status([self._planned(k, run) for k, plan in enumerate(plans)
                      for run in plan])
    complete = True
    for k, plan in enumerate(plans):
      mine = self._my_share([r["name"] for r in plan])
      say(f"\nDDO budget {k + 1}/{len(plans)}: {c.ddo.budgets[k]:.4g} tokens, "
          f"{len(plan)} runs" + (f" ({len(mine)} on this worker)"
                                 if len(mine) != len(plan) else ""))
      if c.train.swarm != "off":
        self._train_swarm(k, [r for r in plan if r["name"] in mine])
      for i, run in enumerate(plan, 1):
        if run["name"] not in mine:
          continue
        name, tokens, seed = self._planned(k, run)
        self._train_or_load(
            name, tokens, seed, label=f"[ddo b{k + 1} {i}/{len(plan)}]",
            extra={"kind": "ddo", "budget_index": k,
                   "budget_tokens": float(c.ddo.budgets[k]),
                   "domain": run.get("domain"), "factor": run.get("factor"),
                   "plan_seed": int(run["seed"])})
      complete = self._fit_budget(k, plan) and complete
    return complete

  def _train_swarm(self, k: int, plan: list[dict[str, Any]]) -> None:
    """Trains the budget's missing runs together as one program (a swarm).

    Each member writes its result.json in its own run directory, so the
    per-run loop that follows finds them finished and writes the records
    exactly as for runs trained one by one.
    """
    from autoscale_jax.train import swarm  # pylint: disable=g-import-not-at-top
    todo = []
    for run in plan:
      name, tokens, seed = self._planned(k, run)
      fp = self._fingerprint(name, tokens, seed)
      if self.store.get(name, fp) is None:
        todo.append((name, tokens, seed, fp))
    if len(todo) < 2:
      return
    label = f"[ddo b{k + 1} swarm]"
    sources = [self.bundle.quota_batches(
        t, seed=s, allow_repeat=self.options.allow_repeat)
               for _, t, s, _ in todo]
    vocab = self.bundle.tokenizer.vocab_size
    layout = self.config.train.swarm
    if layout == "auto":
      try:
        m = swarm.calibrate(self.config, vocab, sources)
      except MemoryError as e:
        say(f"{label}: one by one: {e}")
        return
      use = distributed.agree(m["speedup"] >= config_lib.SWARM_MIN_SPEEDUP)
      layout = "scan" if distributed.agree(m["layout"] == "scan") else "vmap"
      say(f"{label}: one step of {m['runs']} runs: {m['runs']} x "
          f"{m['single_s'] * 1e3:,.1f} ms one by one, "
          f"{m['vmap_s'] * 1e3:,.1f} ms as one vmap program, "
          f"{m['scan_s'] * 1e3:,.1f} ms as one scan program "
          f"({m['speedup']:.2f}x): "
          + (f"swarm ({layout})" if use else
             f"one by one (the swarm needs >= {config_lib.SWARM_MIN_SPEEDUP}x;"
             " --config.train.swarm=vmap or =scan forces it)"))
      if not use:
        return
    say(f"{label}: training {len(todo)} runs as one program ({layout})")
    swarm.train_swarm(
        self.config,
        sources,
        self.bundle.eval_sets(),
        [str(self._run_dir(n, fp)) for n, _, _, fp in todo],
        vocab_size=vocab, progress_label=f"ddo b{k + 1} swarm", layout=layout)

  def _planned(self, k: int, run: dict[str, Any]
               ) -> tuple[str, dict[str, int], int]:
    """(store name, quotas, training seed) of a planned DDO run."""
    return (f"b{k}_{run['name']}", run["tokens"],
            int(self.config.seed) + int(run["seed"]))

  def _say_status(self, planned: list[tuple[str, dict[str, int], int]]) -> None:
    """Prints how many planned runs are done, to train, or stale."""
    keyed = [(name, self._fingerprint(name, t, s)) for name, t, s in planned]
    status = self.store.status(keyed)
    say(f"store: {len(status['done'])} of {len(keyed)} DDO runs done, "
        f"{len(status['missing'])} to train")
    for st in status["stale"]:
      say(f"store: stale record for {st['name']} (fingerprint "
          f"{st['fingerprint'][:10]}, expected {st['expected'][:10]}: the "
          "config, data or tokenizer changed); it is kept but not reused")

  def _my_share(self, names: list[str]) -> set[str]:
    o = self.options
    if o.num_workers is None and o.worker_index is None:
      return set(names)
    if o.num_workers is None or o.worker_index is None or not (
        0 <= o.worker_index < o.num_workers):
      raise StageError("--worker_index and --num_workers go together, with "
                       "0 <= worker_index < num_workers")
    return set(distributed.worker_share(names, o.worker_index, o.num_workers))

  def _fit_budget(self, k: int, plan: list[dict[str, Any]]) -> bool:
    from autoscale_jax.mixing import ddo  # pylint: disable=g-import-not-at-top
    c = self.config
    records, missing = [], []
    for run in plan:
      name, tokens, seed = self._planned(k, run)
      rec = self.store.get(name, self._fingerprint(name, tokens, seed))
      if rec is None:
        missing.append(name)
      else:
        records.append(rec)
    if missing:
      say(f"DDO budget {k + 1}: {len(missing)} runs not finished yet "
          f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}); "
          "run --stage=fit once every worker is done.")
      return False
    runs_json = store_lib.to_runs_json(records, c.ddo.metric)
    mixture = ddo.fit_and_solve(
        runs_json, metric=c.ddo.metric,
        target_domains=dict(c.ddo.target_domains) or None,
        upper_bound=bool(c.ddo.upper_bound), bootstrap=int(c.ddo.bootstrap),
        seed=int(c.seed))
    out = self._budget_dir(k)

    def write():
      out.mkdir(parents=True, exist_ok=True)
      fileio.atomic_write_json(out / "runs.json", runs_json)
      ddo.write_mixture(str(out / "mixture.json"), mixture)
    distributed.write_once(f"fit budget {k}", write)
    _print_mixture(f"DDO optimum at {c.ddo.budgets[k]:.4g} tokens", mixture)
    return True

  def fit(self) -> bool:
    ok = True
    for k in range(len(self.config.ddo.budgets)):
      ok = self._fit_budget(k, self._plan(k)) and ok
    return ok

  def _optima_paths(self) -> list[str]:
    paths = []
    for k in range(len(self.config.ddo.budgets)):
      p = self._budget_dir(k) / "mixture.json"
      if not p.exists():
        raise StageError(f"{p} is missing: run --stage=ddo (or fit) first")
      paths.append(str(p))
    return paths

  def project(self) -> bool:
    from autoscale_jax.mixing import export  # pylint: disable=g-import-not-at-top
    from autoscale_jax.mixing import projection  # pylint: disable=g-import-not-at-top
    c = self.config
    paths = self._optima_paths()
    if len(paths) < 2:
      raise StageError("projection needs DDO optima at >= 2 budgets; "
                       f"config.ddo.budgets has {len(paths)}")
    out = self.workdir / "project"
    mixture = projection.project(
        projection.load_optima(paths), float(c.project.target_tokens),
        available_tokens=dict(self.bundle.available_tokens),
        max_epochs=float(c.project.max_epochs))

    def write():
      out.mkdir(parents=True, exist_ok=True)
      fileio.atomic_write_json(out / "mixture.json", mixture)
      export.export_all(mixture, str(out / "export"), task_prefix=c.study)
    distributed.write_once("project", write)
    _print_mixture(f"projected mixture at {c.project.target_tokens:.4g} "
                   "tokens", mixture)
    return True

  def _final_mixture(self, name: str) -> dict[str, Any]:
    from autoscale_jax.mixing import baselines  # pylint: disable=g-import-not-at-top
    c = self.config
    target = float(c.project.target_tokens)
    if name == "projected":
      p = self.workdir / "project" / "mixture.json"
      if not p.exists():
        raise StageError(f"{p} is missing: run --stage=project first")
      name_or_path = str(p)
    else:
      name_or_path = name
    small = self._budget_dir(0) / "mixture.json"
    return baselines.resolve_mixture(
        name_or_path, list(c.data.domains), target,
        available_tokens=dict(self.bundle.available_tokens),
        ddo_small=str(small) if small.exists() else None)

  def train(self) -> bool:
    from autoscale_jax.mixing import speedup  # pylint: disable=g-import-not-at-top
    c = self.config
    names = list(self.options.mixtures or c.final.mixtures)
    mixtures = {n: self._final_mixture(n) for n in names}  # fail early
    curves, finals = {}, {}
    for i, (n, mix) in enumerate(mixtures.items(), 1):
      tokens = {d: int(v) for d, v in mix["tokens"].items()}
      rec = self._train_or_load(
          f"final_{_slug(n)}", tokens, int(c.seed),
          label=f"[final {i}/{len(mixtures)}]",
          eval_every=int(c.final.eval_every_steps),
          extra={"kind": "final", "mixture": mix})
      curves[n] = rec["curve"]
      finals[n] = rec["final_eval"]
    metric = c.ddo.metric
    out = self.workdir / "final"
    reference = "projected" if "projected" in curves else names[0]
    table = speedup.comparison_table(curves, metric, reference=reference,
                                     smoothing=int(c.final.smoothing))
    table["final_eval"] = finals
    table["mixtures"] = {n: m["weights"] for n, m in mixtures.items()}
    md = speedup.to_markdown(table)

    def write():
      out.mkdir(parents=True, exist_ok=True)
      fileio.atomic_write_json(out / "comparison.json", table)
      fileio.atomic_write_text(out / "comparison.md", md)
    distributed.write_once("comparison", write)
    say("\n" + md)
    return True

  def report(self) -> bool:
    from autoscale_jax import report  # pylint: disable=g-import-not-at-top
    path = distributed.write_once(
        "report", lambda: report.write_report(self.config, str(self.workdir)))
    if path:
      say(f"report written: {path}")
    return True


def _slug(name: str) -> str:
  stem = epath.Path(name).stem if ("/" in name or name.endswith(".json")) \
      else name
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)
