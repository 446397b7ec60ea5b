"""The study context every training stage shares.

:class:`Study` holds the config, the workdir :class:`~layout.Layout`, the
command-line options, the data bundle (prepared on first use) and the
experiment store; it knows a run's identity and trains a run only when the
store lacks its record.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import ml_collections
from absl import logging

from autoscale_jax import config as config_lib
from autoscale_jax import distributed
from autoscale_jax import records
from autoscale_jax.data import pipeline
from autoscale_jax.experiments import lease_tables
from autoscale_jax.experiments import store as store_lib
from autoscale_jax.study import console
from autoscale_jax.study import layout as layout_lib
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import plan as plan_lib
from autoscale_jax.study import progress as progress_lib
from autoscale_jax.train import checkpoint
from autoscale_jax.train import trainer

def run_identity(config: ml_collections.ConfigDict,
                 bundle: pipeline.DataBundle, name: str,
                 tokens: dict[str, int], seed: int, eval_every: int,
                 allow_repeat: bool) -> dict[str, Any]:
  """Everything that determines a run's result; its fingerprint is the key.

  The config part is the recipe (``config_lib.recipe``: the "model" and
  "train" sections); execution settings (``config.run``, ``config.mesh``) are
  not in it, so changing them never marks finished runs stale. Changing this
  dict's content changes every fingerprint (existing store records turn
  stale), so it stays exactly as the store has always used it
  (``tests/test_run_identity.py`` pins it). ``init_seed`` (``config.seed``,
  which seeds the initialization; ``seed`` is the run's data seed) joined it
  on 2026-12-01: before, two runs with the same data seed but different
  ``config.seed`` (e.g. ``--config.seed=43`` in a workdir made with 42 and
  ``ddo.seeds=(0, 1)``) shared one record. Since 2026-12-02 it is
  ``plan.init_seed`` (``config.init_seeds``): with "per_seed" the run's own
  training seed, which is ``config.seed`` for seed 0, so those records
  stay valid; the other seeds' records turn stale.
  """
  return {
      "init_seed": plan_lib.init_seed(config, seed),
      "name": name,
      **config_lib.recipe(config),
      "tokenizer": bundle.tokenizer.fingerprint,
      "data": {d: bundle.fingerprints[d] for d in sorted(tokens)},
      "tokens": {d: int(tokens[d]) for d in sorted(tokens)},
      "seed": int(seed),
      "eval_every_steps": int(eval_every),
      "allow_repeat": bool(allow_repeat),
  }


class Study:
  """One study's shared state over one workdir."""

  def __init__(self, config: ml_collections.ConfigDict,
               layout: layout_lib.Layout, options: options_lib.Options):
    self.config = config
    self.layout = layout
    self.options = options
    self._bundle: pipeline.DataBundle | None = None
    self._store: store_lib.ExperimentStore | None = None
    self.progress = progress_lib.StudyProgress()  # what the command ran

  @property
  def bundle(self) -> pipeline.DataBundle:
    """The study's data (corpus, tokenizer, token store), prepared once."""
    if self._bundle is None:
      console.say("preparing data (corpus, tokenizer, token store) ...")
      t0 = time.time()
      self._bundle = pipeline.prepare_data(self.config, str(self.layout.root))
      avail = ", ".join(f"{d}={n:,}" for d, n in
                        self._bundle.available_tokens.items())
      console.say(f"data ready in {time.time() - t0:.1f}s; unique training "
                  f"tokens: {avail}")
    return self._bundle

  @property
  def store(self) -> store_lib.ExperimentStore:
    if self._store is None:
      self._store = store_lib.ExperimentStore(self.layout.store)
    return self._store

  def identity(self, name: str, tokens: dict[str, int], seed: int,
               eval_every: int = 0) -> dict[str, Any]:
    return run_identity(self.config, self.bundle, name, tokens, seed,
                        eval_every, self.options.allow_repeat)

  def fingerprint(self, name: str, tokens: dict[str, int], seed: int,
                  eval_every: int = 0) -> str:
    """The store key of a run: the fingerprint of its identity."""
    return store_lib.fingerprint(self.identity(name, tokens, seed, eval_every))

  def record(self, name: str, fingerprint: str) -> records.RunRecord | None:
    """The store's record of run ``name`` at ``fingerprint``, or None."""
    rec = self.store.get(name, fingerprint)
    return None if rec is None else records.RunRecord.from_json(
        rec, f"store record {name!r}")

  def batches(self, tokens: dict[str, int], seed: int) -> Any:
    """The batch source of a run with quotas ``tokens``."""
    return self.bundle.quota_batches(tokens, seed=seed,
                                     allow_repeat=self.options.allow_repeat)

  def train_or_load(self, name: str, tokens: dict[str, int], seed: int, *,
                    label: str, eval_every: int = 0, kind: str | None = None,
                    mixture: records.Mixture | None = None,
                    extra: dict[str, Any] | None = None,
                    before_record: Callable[[], None] | None = None
                    ) -> records.RunRecord:
    """Returns the run's record, training it only if the store lacks it.

    ``before_record`` runs (on every process) after training and before the
    record is written; it raises to withhold the record (the lease fan-out
    confirms there that this worker still holds the run).
    """
    identity = self.identity(name, tokens, seed, eval_every)
    fp = store_lib.fingerprint(identity)
    record = self.record(name, fp)
    total = sum(tokens.values())
    if record is not None:
      logging.info("%s: %s already done (record %s), reused", label, name,
                   fp[:10])
      self.progress.reused(name, total)
      return record
    batches = self.batches(tokens, seed)
    run_dir = self.layout.run_dir(name, fp)
    finished_before = (run_dir / "result.json").exists()
    logging.info("%s: training %s: %s tokens, %d steps", label, name,
                 f"{total:,}", batches.num_steps)
    t0 = time.time()
    result = trainer.train_run(
        self.config, batches, self.bundle.eval_sets(), str(run_dir),
        vocab_size=self.bundle.tokenizer.vocab_size,
        eval_every_steps=eval_every, init_seed=identity["init_seed"],
        progress_label=f"{label.strip('[]')} {name}")
    record = records.RunRecord(
        name=name, fingerprint=fp, identity=identity,
        tokens=identity["tokens"], seed=int(seed), steps=result["steps"],
        tokens_trained=result["tokens_per_domain"],
        final_eval=result["final_eval"], curve=result.get("curve", []),
        wall_seconds=round(time.time() - t0, 2), run_dir=str(run_dir),
        kind=kind, mixture=mixture, extra=dict(extra or {}))
    if before_record is not None:
      before_record()
    distributed.write_once(f"record {name}",
                           lambda: self.store.put(record.to_json()))
    # The record holds what every stage reads: the checkpoints' optimizer
    # state (and, unless asked, the checkpoints) can go.
    checkpoint.keep_after_finish(run_dir, self.config.run.keep_after_finish)
    seconds: float | None = record.wall_seconds
    if self.progress.pop_together(name):
      seconds = None  # trained by the swarm, which counted its time
    elif finished_before:
      self.progress.finished_earlier(name, total)
    else:
      self.progress.trained(name, total, record.wall_seconds)
    console.say(progress_lib.run_line(
        label, name, tokens=total, steps=record.steps, seconds=seconds,
        aggregate=result["final_eval"]["aggregate"])
        + "  " + self.progress.line())
    return record

  def my_share(self, names: list[str]) -> set[str]:
    """The run names this worker trains (all of them without fan-out).

    With ``--worker`` (lease fan-out) every run: the worker claims them one
    by one (``study/lease_worker.py``).
    """
    o = self.options
    if o.worker is not None:
      if o.num_workers is not None or o.worker_index is not None:
        raise options_lib.StageError(
            f"--worker={o.worker} (lease fan-out) and --worker_index/"
            "--num_workers (static share) exclude each other; give one")
      lease_tables.backend_of(  # an unusable workdir is refused, early
          str(self.layout.root), self.config.run.lease_backend)
      return set(names)
    if o.num_workers is None and o.worker_index is None:
      return set(names)
    if o.num_workers is None or o.worker_index is None or not (
        0 <= o.worker_index < o.num_workers):
      raise options_lib.StageError(
          "--worker_index and --num_workers go together, with "
          "0 <= worker_index < num_workers")
    return set(distributed.worker_share(names, o.worker_index,
                                        o.num_workers))
