"""Proxy swarm: K runs of one architecture trained as ONE jitted program.

The K train states (``trainer`` layout: ``params``, ``opt_state``, ``step``,
``num_steps``, ``rng``) are stacked on a leading run axis ``K`` and the
trainer's own pure ``train_step`` (``Compiled.step_fn``) is mapped over it
(``jax.vmap`` or ``jax.lax.map``) and jitted once per layout and stack size
(cached). Each member keeps its own data (its batch source is read at its own
step), its own schedule length (``num_steps`` is a traced per-member value
read by the LR schedule) and its own RNG (its ``rng``, from its seed). Evaluation reuses ``trainer.evaluate`` on the member's un-stacked
params, so a member's result is the one ``train_run`` gives (to float
tolerance: the batched matmuls of the vmapped step may round differently).

Layouts: ``vmap`` batches the K steps (``jax.vmap``); ``scan`` runs them one
after another inside the one program (``jax.lax.map``). Which is faster
depends on the device: ``calibrate`` times both.

Drop-out of finished members: a member is *active* while ``step < num_steps``
(and it has not diverged). In ``scan`` an inactive member's step is skipped
(``lax.cond``); in ``vmap`` the step selects the old state for inactive
members with ``jnp.where``, so a finished member's state stops changing.
Finished (or diverged) members can leave the program: the stack is re-gathered
without them and the step is compiled for the smaller stack size (cached per
size). With ``compaction="auto"`` (the default) that happens only when it pays
(``compaction_pays``: the member-steps saved over the remaining steps,
costed with the measured step time, outweigh the measured compile time);
otherwise finished members stay in the stack, masked, fed their last batch.

Checkpointing: the stacked state is saved with orbax in ``swarm_dir`` every
``run.checkpoint_every_steps`` swarm steps (with the members it holds at
that step) and restored on the next call, so an interrupted swarm resumes
exactly (members that had already written ``result.json`` stay frozen or
gone); the final stacked state is saved too (step ``max_k num_steps_k``).
Each finished member writes its
``result.json``, ``metrics.jsonl`` and ``curve.jsonl`` in its own workdir as
``train_run`` does (one ``runlog.RunLog`` each); per-member train checkpoints
are not written. The loop (``_Swarm``) composes the pieces ``train_run``
composes: ``cadence.RunSettings`` for the stops, ``checkpoint`` for the
stacked state, ``runlog`` for each member's files.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from autoscale_jax import distributed
from autoscale_jax.train import batches as batch_lib
from autoscale_jax.train import cadence, checkpoint, runlog, sharding, trainer
from autoscale_jax.train.batches import BatchSource
from autoscale_jax.train.cadence import RunSettings

State = dict[str, Any]
_SWARM_CACHE: dict[tuple[int, str], tuple[Any, Callable]] = {}
# (id of the compiled bundle, layout, stack size) -> (executable, compile s).
_EXEC_CACHE: dict[tuple[int, str, int], tuple[Callable, float]] = {}


def _stacked_shardings(compiled: trainer.Compiled) -> Any:
  """The compiled state's shardings with a replicated leading run axis."""
  sh = jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)),
                    compiled.state_shardings,
                    is_leaf=lambda x: isinstance(x, NamedSharding))
  return dict(sh, alive=NamedSharding(compiled.mesh, P(None)))


LAYOUTS = ("vmap", "scan")


def get_swarm_step(compiled: trainer.Compiled, layout: str = "vmap"
                   ) -> tuple[Any, Callable[[State, dict], tuple[State, dict]]]:
  """``(stacked shardings, jitted swarm_step(state_K, batch_K))`` (cached).

  ``layout="vmap"``: the K members' steps are batched (``jax.vmap``); members
  that finished are computed and masked. ``layout="scan"``: one program runs
  the members' steps one after another (``jax.lax.map``), each skipping its
  step with ``lax.cond`` once it finished; smaller working sets, no masked
  work (the faster layout on CPUs, where batched small matmuls fall out of
  cache; see docs/benchmarks.md). Both map ``compiled.step_fn``, the very
  step ``train_run`` runs, over the stack.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r} is invalid: allowed: "
                     + ", ".join(LAYOUTS))
  key = (id(compiled), layout)
  if key in _SWARM_CACHE:
    return _SWARM_CACHE[key]
  step_fn = compiled.step_fn

  def masked_step(state: State, batch: dict) -> tuple[State, dict]:
    active = state["alive"] & (state["step"] < state["num_steps"])
    new, metrics = step_fn(state, batch)
    new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
    return new, dict(metrics, active=active)

  maybe_step = trainer.step_if(step_fn)

  def skipping_step(state: State, batch: dict) -> tuple[State, dict]:
    active = state["alive"] & (state["step"] < state["num_steps"])
    new, metrics = maybe_step(active, state, batch)
    return new, dict(metrics, active=active)

  if layout == "vmap":
    stacked_fn = jax.vmap(masked_step)
  else:
    stacked_fn = lambda st, b: jax.lax.map(lambda a: skipping_step(*a), (st, b))
  stacked_sh = _stacked_shardings(compiled)
  mesh = compiled.mesh
  batch_sh = sharding.stacked_batch_sharding(mesh)
  swarm_step = jax.jit(stacked_fn,
                       in_shardings=(stacked_sh, batch_sh),
                       out_shardings=(stacked_sh, NamedSharding(mesh, P())),
                       donate_argnums=0)
  _SWARM_CACHE[key] = (stacked_sh, swarm_step)
  return stacked_sh, swarm_step


def _put_stacked_batch(local_K: Sequence[Mapping[str, np.ndarray]],
                       mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Stacks K process-local batches ``[b, L]`` into global ``[K, B, L]``."""
  return sharding.put_stacked_batch(
      [batch_lib.model_arrays(b) for b in local_K],
      mesh)


def _member(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda x: x[k], tree)


def default_swarm_dir(workdirs: Sequence[str | os.PathLike]) -> epath.Path:
  """``<parent of workdirs[0]>/swarm-<hash of the member workdirs>``."""
  names = "\n".join(str(epath.Path(w).resolve()) for w in workdirs)
  digest = hashlib.sha256(names.encode()).hexdigest()[:10]
  return epath.Path(workdirs[0]).resolve().parent / f"swarm-{digest}"


def _executable(compiled: trainer.Compiled, layout: str, swarm_step: Any,
                state: State, batch: dict) -> tuple[Callable, float]:
  """The swarm step compiled for ``state``'s stack size (cached), + compile s."""
  key = (id(compiled), layout, int(state["alive"].shape[0]))
  if key not in _EXEC_CACHE:
    t = time.perf_counter()
    fn = swarm_step.lower(state, batch).compile()
    _EXEC_CACHE[key] = (fn, time.perf_counter() - t)
  return _EXEC_CACHE[key]


def stack_memory(compiled: trainer.Compiled, num: int) -> tuple[int, int | None]:
  """``(bytes of num stacked train states per device, device memory limit)``.

  The states are split over the mesh's devices as the single-run state is;
  the limit is the first local device's ``bytes_limit`` (None where the
  backend does not report one, e.g. CPU).
  """
  abstract = jax.eval_shape(compiled.init, jax.random.PRNGKey(0), np.int32(1))
  state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  per_device = num * state // max(1, compiled.mesh.devices.size)
  stats = jax.local_devices()[0].memory_stats() or {}
  return per_device, stats.get("bytes_limit")


def _best_time(fn: Callable[[State, dict], tuple[State, dict]], state: State,
               batch: dict, *, steps: int) -> float:
  """The best wall time of ``steps`` calls ``fn(state, batch)`` after a warm one."""
  state, m = fn(state, batch)  # compiled or warm by now
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return min(times)


def calibrate(config: Any, vocab_size: int, batches_list: Sequence[BatchSource],
              steps: int = 3) -> dict[str, Any]:
  """Measured time of one training step: one run alone vs all K as one program.

  Each program is compiled first (the single-run program is the one
  ``train_run`` uses anyway, ``run.steps_per_call`` steps per call; the
  swarm steps are cached for ``train_swarm``), then runs ``steps`` calls on
  the first run's first batch from a throw-away initial state; the best time
  per optimizer step is kept. Both swarm layouts are timed.

  Returns:
    ``{"runs": K, "single_s": s, "vmap_s": s, "scan_s": s, "layout": the
    faster layout, "swarm_s": its time, "speedup": K * single_s / swarm_s}``.

  Raises:
    MemoryError: if the K stacked states cannot fit the device memory (checked
      before compiling anything, where the backend reports a limit).
  """
  compiled = trainer.get_compiled(config, vocab_size)
  mesh = compiled.mesh
  num = len(batches_list)
  local = batches_list[0].batch(0, shard=jax.process_index(),
                                num_shards=jax.process_count())
  best = functools.partial(_best_time, steps=steps)
  steps_fns = {layout: get_swarm_step(compiled, layout) for layout in LAYOUTS}
  out: dict[str, Any] = {"runs": num}
  need, limit = stack_memory(compiled, num)
  if limit and 2 * need > limit:  # states + their gradients and updates
    raise MemoryError(
        f"{num} stacked train states need about {need / 2**30:.1f} GiB per "
        f"device of {limit / 2**30:.1f} GiB: train the runs one at a time "
        "(--config.run.swarm=off) or fan them out over workers")
  with jax.set_mesh(mesh):
    # One run as ``train_run`` trains it: ``steps_per_call`` steps per call.
    per_call = compiled.steps_per_call
    single = trainer.init_state(compiled, int(config.seed), 10 ** 6)
    if per_call == 1:
      out["single_s"] = best(compiled.train_step, single,
                             sharding.put_batch(local, mesh))
    else:
      stacked = _put_stacked_batch([local] * per_call, mesh)
      out["single_s"] = best(
          lambda st, b: compiled.train_steps(st, b, np.int32(10 ** 6)),
          single, stacked) / per_call
    batch_K = _put_stacked_batch([local] * num, mesh)
    for layout in LAYOUTS:
      stacked_sh, swarm_step = steps_fns[layout]
      stack = jax.device_put(
          _init_stack(compiled, [int(config.seed)] * num, list(range(num)),
                      [steps + 2] * num), stacked_sh)
      fn, _ = _executable(compiled, layout, swarm_step, stack, batch_K)
      out[f"{layout}_s"] = best(fn, stack, batch_K)
  out["layout"] = min(LAYOUTS, key=lambda l: out[f"{l}_s"])
  out["swarm_s"] = out[f"{out['layout']}_s"]
  out["speedup"] = num * out["single_s"] / out["swarm_s"]
  return out


def _take(state: State, positions: Sequence[int], shardings: Any) -> State:
  """The members at ``positions`` of a stacked state (a smaller stack)."""
  idx = jnp.asarray(np.asarray(positions, np.int32))
  return jax.device_put(jax.tree.map(lambda x: x[idx], state), shardings)


def compaction_pays(stack_size: int, live: int, steps_left: int,
                    step_s: float, compile_s: float) -> bool:
  """Whether dropping ``stack_size - live`` finished members saves time.

  The swarm step costs about ``step_s * size / stack_size`` for a stack of
  ``size`` members; dropping the finished ones saves that fraction of
  ``step_s`` on each of the ``steps_left`` remaining steps, at the price of
  one compilation for the new stack size (``compile_s``, 0 when cached).
  """
  if live >= stack_size or live == 0 or steps_left <= 0:
    return False
  saved = steps_left * step_s * (stack_size - live) / stack_size
  return saved > compile_s


def _check_options(layout: str, compaction: str) -> None:
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r} is invalid: allowed: "
                     + ", ".join(LAYOUTS))
  if compaction not in ("auto", "always", "never"):
    raise ValueError(f"compaction={compaction!r} is invalid: allowed: auto, "
                     "always, never")


class _Swarm:
  """The unfinished members' training as one program, to the last one's end.

  Composes the run loop's pieces (``cadence``, ``checkpoint``, ``runlog``)
  over a stacked state. ``members`` are the run indices at the stack's
  positions; ``results[k]`` is set when run ``k`` finishes and ``diverged``
  names the runs whose loss went NaN/Inf.
  """

  def __init__(self, compiled: trainer.Compiled, *, layout: str,
               compaction: str, batches_list: Sequence[BatchSource],
               eval_sets: Mapping[str, Mapping[str, np.ndarray]],
               dirs: Sequence[epath.Path], seeds: Sequence[int],
               results: list[dict | None], settings: RunSettings, label: str,
               config: Any):
    self.config = config  # for each member's run log
    self.compiled, self.layout, self.compaction = compiled, layout, compaction
    self.batches_list, self.eval_sets = batches_list, eval_sets
    self.dirs, self.seeds, self.results = dirs, seeds, results
    self.settings, self.label = settings, label
    self.steps_all = [int(b.num_steps) for b in batches_list]
    self.say = distributed.primary_only(print)  # process 0 only
    self.steps = runlog.StepLine()  # per-step progress (terminal/--verbosity)
    self.stacked_sh, self.swarm_step = get_swarm_step(compiled, layout)
    self.members: list[int] = []
    self.diverged: dict[int, str] = {}  # run index -> message
    self.tokens: dict[int, float] = {}
    self.logs: dict[int, runlog.RunLog] = {}
    self.curves: dict[int, list[dict]] = {}
    self.pending = cadence.MetricsQueue()  # (end step, (metrics, members))
    self.last_local: dict[int, dict] = {}
    self.step_s = 0.0  # measured wall time of one step of the current stack
    self.timed: dict[int, int] = collections.defaultdict(int)
    self.state: State = {}
    self.start = self.max_steps = 0
    self.mgr: Any = None

  def open(self, swarm_dir: epath.Path, todo: list[int]) -> dict | None:
    """Opens the checkpoints and the members' logs; the saved meta, if any."""
    swarm_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = swarm_dir / "checkpoints"
    self.mgr = checkpoint.manager(ckpt_dir,
                                  max_to_keep=self.settings.keep_checkpoints)
    start = self.mgr.latest_step()
    self.members, meta = todo, None
    if start is not None:
      meta = checkpoint.restore_meta(self.mgr, start)
      saved = [str(d) for d in meta["members"]]
      idx = {str(self.dirs[k].resolve()): k for k in range(len(self.dirs))}
      if not all(s in idx for s in saved) or not set(
          str(self.dirs[k].resolve()) for k in todo) <= set(saved):
        raise ValueError(
            f"{ckpt_dir.resolve()} holds a swarm of other runs ({len(saved)} "
            "members); delete it or pass another swarm_dir")
      self.members = [idx[s] for s in saved]
      if [self.steps_all[k] for k in self.members] != list(meta["num_steps"]):
        raise ValueError(f"{ckpt_dir.resolve()} is from runs of other "
                         f"lengths {meta['num_steps']}; delete it")
      self.start = start
    self.max_steps = max(self.steps_all[k] for k in self.members)
    for k in self.members:
      self.dirs[k].mkdir(parents=True, exist_ok=True)
    self.logs = {k: runlog.RunLog.for_run(
        self.config, self.dirs[k], self.batches_list[k].tokens_per_domain,
        data_seed=getattr(self.batches_list[k], "seed", None),
        init_seed=self.seeds[k]) for k in self.members}
    return meta

  def begin(self, meta: dict | None) -> None:
    """Restores the stacked state saved with ``meta``, or initializes it."""
    members, steps_all = self.members, self.steps_all
    if meta is None:
      self.tokens = {k: 0.0 for k in members}
      self.state = jax.device_put(
          _init_stack(self.compiled, self.seeds, members, steps_all),
          self.stacked_sh)
    else:
      abstract = jax.eval_shape(
          lambda: _init_stack(self.compiled, self.seeds, members, steps_all))
      self.state, meta = checkpoint.restore(self.mgr, self.start,
                                            self.stacked_sh, abstract)
      self.tokens = {k: float(t) for k, t in zip(members, meta["tokens"])}
      saved_alive = np.asarray(jax.device_get(self.state["alive"]))
      for i, k in enumerate(members):
        if not saved_alive[i] and self.results[k] is None:
          self.diverged[k] = f"{self.dirs[k]}: diverged before step {self.start}"
      self.set_alive()
      self.say(f"{self.label}swarm resumed from step {self.start}/"
               f"{self.max_steps} ({len(members)} runs)", flush=True)
    self.curves = {k: self.logs[k].resume(min(self.start, steps_all[k]))
                   for k in members}
    logging.info("%sswarm of %d runs, %d-%d steps, one program", self.label,
                 len(members), min(steps_all[k] for k in members),
                 self.max_steps)

  def live(self) -> list[int]:
    """The members still training."""
    return [k for k in self.members
            if self.results[k] is None and k not in self.diverged]

  def set_alive(self) -> None:
    """Masks the members that are no longer live (their state freezes)."""
    live = self.live()
    alive = np.asarray([k in live for k in self.members])
    self.state["alive"] = jax.device_put(
        jnp.asarray(alive) & self.state["alive"], self.stacked_sh["alive"])

  def drain(self, upto: int) -> None:
    """Marks members whose loss went NaN/Inf as diverged (lagging one step)."""
    for s, (m, stack) in self.pending.pop_upto(upto):
      loss_K, act_K = jax.device_get((m["loss"], m["active"]))
      bad = [k for i, k in enumerate(stack) if act_K[i]
             and k not in self.diverged
             and not math.isfinite(float(loss_K[i]))]
      for k in bad:
        loss = float(loss_K[stack.index(k)])
        self.diverged[k] = (f"{self.dirs[k]}: loss is {loss} at step {s} of "
                            f"{self.steps_all[k]}")
        self.say(f"{self.label}{self.diverged[k]}; dropping it from the "
                 "swarm", flush=True)
      if bad:
        self.set_alive()

  def member_batches(self, s: int) -> list[dict]:
    """Each member's batch of step ``s`` (its last one once it stopped)."""
    local_K = []
    for k in self.members:
      if (s < self.steps_all[k] and self.results[k] is None
          and k not in self.diverged):
        local = self.batches_list[k].batch(s, shard=jax.process_index(),
                                           num_shards=jax.process_count())
        self.tokens[k] += float(np.sum(local["weights"], dtype=np.float64))
        self.last_local[k] = local
      elif k not in self.last_local:  # resumed past its end: any valid batch
        self.last_local[k] = self.batches_list[k].batch(
            min(s, self.steps_all[k] - 1), shard=jax.process_index(),
            num_shards=jax.process_count())
      local_K.append(self.last_local[k])
    return local_K

  def train_step(self, s: int) -> dict:
    """One swarm step (step ``s + 1`` of every live member); its metrics."""
    batch = _put_stacked_batch(self.member_batches(s), self.compiled.mesh)
    fn, _ = _executable(self.compiled, self.layout, self.swarm_step,
                        self.state, batch)
    t_step = time.perf_counter()
    self.state, metrics = fn(self.state, batch)
    if self.timed[len(self.members)] < 2:
      # Step time of this stack size (the 2nd step: the 1st may include
      # one-off work); blocking only here keeps the rest asynchronous.
      jax.block_until_ready(metrics)
      self.step_s = time.perf_counter() - t_step
      self.timed[len(self.members)] += 1
    self.pending.push(s + 1, (metrics, list(self.members)))
    return metrics

  def log_train(self, done: int, metrics: dict,
                speed: runlog.Speedometer) -> None:
    """Each active member's train record of step ``done``; one progress line."""
    m = jax.device_get(metrics)
    act = np.asarray(m["active"])
    n_act = float(np.sum(act))
    tps = speed.tokens_per_s(done, n_act * self.settings.tokens_per_step)
    for i, k in enumerate(self.members):
      if act[i] and k not in self.diverged:
        self.logs[k].log_train(runlog.train_record(
            done, {n: m[n][i] for n in ("loss", "lr", "grad_norm")},
            self.tokens[k], tps / max(n_act, 1.0)))
    losses = [float(m["loss"][i]) for i in range(len(self.members)) if act[i]]
    self.steps.show(
        f"{self.label}swarm step {done}/{self.max_steps}: {int(n_act)}/"
        f"{len(self.members)} active, mean loss "
        f"{np.mean(losses) if losses else float('nan'):.4f}"
        f", tok/s {tps:,.0f} (all runs)")

  def evaluate(self, k: int, step: int) -> dict:
    """Evaluates member ``k``'s params; logs and returns the curve point."""
    params = jax.device_put(_member(self.state["params"], self.members.index(k)),
                            self.compiled.state_shardings["params"])
    point = trainer.eval_point(self.compiled, params, self.eval_sets,
                               self.settings.eval_batch_size, step,
                               self.tokens[k])
    self.logs[k].log_eval(point)
    return point

  def finish(self, k: int) -> None:
    """Member ``k`` reached its end: final eval, ``result.json``."""
    n = self.steps_all[k]
    final = self.evaluate(k, n)
    self.results[k] = runlog.make_result(
        n, self.batches_list[k].tokens_per_domain, final, self.curves[k])
    self.logs[k].write_result(self.results[k])
    agg = final["aggregate"]
    self.steps.show(f"{self.label}run {self.dirs[k].name} done at step {n}: "
                    f"loss {agg['loss']:.4f} ppl_seq {agg['ppl_seq']:.2f}")

  def maybe_compact(self, done: int) -> None:
    """Drops finished members from the stack when ``compaction`` says so."""
    keep = self.live()
    if len(keep) == len(self.members) or not keep:
      return
    if self.compaction == "never" or (self.compaction == "auto"
                                      and self.layout == "scan"):
      return
    if self.compaction == "auto" and not distributed.agree(compaction_pays(
        len(self.members), len(keep),
        max(self.steps_all[k] for k in keep) - done, self.step_s,
        _compile_s(self.compiled, self.layout, len(keep)))):
      return  # (timings are local: every process takes process 0's call)
    self.drain(done)  # pending metrics refer to the old stack
    keep = self.live()
    if not keep:
      return
    positions = [self.members.index(k) for k in keep]
    self.state = _take(self.state, positions, self.stacked_sh)
    self.members = keep
    self.say(f"{self.label}swarm step {done}: {len(keep)} runs left in the "
             "program", flush=True)

  def save(self, done: int) -> None:
    """Checkpoints the stacked state with the members it holds."""
    members = self.members
    checkpoint.save(self.mgr, done, self.state, {
        "step": done, "num_steps": [self.steps_all[k] for k in members],
        "tokens": [self.tokens[k] for k in members],
        "members": [str(self.dirs[k].resolve()) for k in members]})

  def run(self) -> None:
    """Trains every member to its end (or divergence)."""
    settings, steps_all = self.settings, self.steps_all
    speed = runlog.Speedometer(self.start)
    for s in range(self.start, self.max_steps):
      metrics = self.train_step(s)
      done = s + 1
      self.drain(done - 1)
      ended = [k for k in self.members
               if steps_all[k] == done and self.results[k] is None]
      logs = settings.logs_at(done, self.max_steps)
      if ended or logs:
        self.drain(done)
      if logs:
        self.log_train(done, metrics, speed)
      for k in self.live():
        if done == steps_all[k]:
          self.finish(k)
        elif settings.evals_at(done, steps_all[k]):
          self.curves[k].append(self.evaluate(k, done))
      if done < self.max_steps:
        self.maybe_compact(done)
      if settings.saves_at(done, self.max_steps):
        self.save(done)
    self.mgr.wait_until_finished()

  def close(self) -> None:
    self.steps.clear()
    if self.mgr is not None:
      checkpoint.close(self.mgr)
    for log in self.logs.values():
      log.close()


def _compile_s(compiled: trainer.Compiled, layout: str, size: int) -> float:
  """Measured compile time of a new stack size (0 when ``size`` is cached)."""
  if (id(compiled), layout, size) in _EXEC_CACHE:
    return 0.0
  return max(c for (bundle, lay, _), (_, c) in _EXEC_CACHE.items()
             if bundle == id(compiled) and lay == layout)


def train_swarm(config: Any, batches_list: Sequence[BatchSource],
                eval_sets: Mapping[str, Mapping[str, np.ndarray]],
                workdirs: Sequence[str | os.PathLike], *, vocab_size: int,
                progress_label: str = "", seeds: Sequence[int] | None = None,
                eval_every_steps: int = 0,
                swarm_dir: str | os.PathLike | None = None,
                layout: str = "vmap", compaction: str = "auto") -> list[dict]:
  """Trains ``len(batches_list)`` runs as one vmapped program; resumes.

  Args:
    config: the study config (``model``, ``train``, ``mesh``, ``seed``).
    batches_list: one batch source per run (the ``train_run`` contract).
    eval_sets: domain -> held-out arrays (shared by all runs).
    workdirs: one directory per run (``result.json``, ``metrics.jsonl``,
      ``curve.jsonl``), as ``train_run`` writes them.
    vocab_size: the tokenizer's vocabulary size.
    progress_label: prefix of the progress lines.
    seeds: per-run init/dropout seed (default ``config.seed`` for each, which
      is what ``train_run`` uses).
    eval_every_steps: evaluate each run every this many of its steps (0: the
      config's ``train.eval_every_steps``; both 0: only at its end).
    swarm_dir: where the stacked checkpoints go (default
      ``default_swarm_dir(workdirs)``).
    layout: ``"vmap"`` (members batched) or ``"scan"`` (members one after
      another in one program, finished ones skipped); see ``get_swarm_step``.
    compaction: when finished (or diverged) members leave the stack:
      ``"auto"`` when the saved member-steps outweigh a recompilation
      (``compaction_pays``, with the measured step and compile times; never
      for ``"scan"``, where finished members cost nothing),
      ``"always"`` at every finish, ``"never"`` (they stay, masked).

  Returns:
    One ``train_run`` result dict per run, in order (finished runs' existing
    ``result.json`` is returned as is).

  Raises:
    trainer.TrainingDiverged: after every other member finished, naming the
      members whose loss became NaN/Inf (they write no result).
  """
  _check_options(layout, compaction)
  num_runs = len(batches_list)
  if len(workdirs) != num_runs:
    raise ValueError(f"{num_runs} batch sources but {len(workdirs)} workdirs")
  seeds = [int(config.seed)] * num_runs if seeds is None else list(seeds)
  label = f"[{progress_label}] " if progress_label else ""
  dirs = [epath.Path(w) for w in workdirs]
  steps_all = [int(b.num_steps) for b in batches_list]
  for k, n in enumerate(steps_all):
    if n < 1:
      raise ValueError(f"{label}run {k} ({dirs[k]}) has num_steps={n}; a run "
                       "needs at least one step")
  results = [runlog.read_finished(d, n) for d, n in zip(dirs, steps_all)]
  todo = [k for k in range(num_runs) if results[k] is None]
  if not todo:
    logging.info("%sall %d runs already finished", label, num_runs)
    return results  # type: ignore[return-value]

  compiled = trainer.get_compiled(config, vocab_size)
  swarm = _Swarm(compiled, layout=layout, compaction=compaction,
                 batches_list=batches_list, eval_sets=eval_sets, dirs=dirs,
                 seeds=seeds, results=results,
                 settings=RunSettings.from_config(config, eval_every_steps),
                 label=label, config=config)
  try:
    meta = swarm.open(
        epath.Path(swarm_dir) if swarm_dir else default_swarm_dir(dirs), todo)
    with jax.set_mesh(compiled.mesh):
      swarm.begin(meta)
      swarm.run()
  finally:
    swarm.close()
  if swarm.diverged:
    raise trainer.TrainingDiverged(
        f"{label}{len(swarm.diverged)} of {len(todo)} swarm runs diverged (the "
        "others finished and wrote result.json): "
        + "; ".join(swarm.diverged.values()))
  return results  # type: ignore[return-value]


def _init_stack(compiled: trainer.Compiled, seeds: Sequence[int],
                members: Sequence[int], steps_all: Sequence[int]) -> State:
  """``train_run``'s initial state of each member, stacked on axis 0."""
  states = [trainer.init_state(compiled, seeds[k], steps_all[k])
            for k in members]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  stacked["alive"] = jnp.ones((len(members),), bool)
  return stacked
