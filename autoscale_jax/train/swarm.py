"""Proxy swarm: K runs of one architecture trained as ONE jitted program.

The K train states (``trainer`` layout: ``params``, ``opt_state``, ``step``,
``num_steps``, ``rng``) are stacked on a leading run axis ``K`` and the
trainer's own pure ``train_step`` is mapped over it (``jax.vmap`` or
``jax.lax.map``) and jitted once per layout and stack size (cached). Each
member keeps its own data (its batch source is read at its own step), its own
schedule length (``num_steps`` is a traced
per-member value read by the LR schedule) and its own RNG (its ``rng``, from
its seed). Evaluation reuses ``trainer.evaluate`` on the member's un-stacked
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
``train.checkpoint_every_steps`` swarm steps (with the members it holds at
that step) and restored on the next call, so an interrupted swarm resumes
exactly (members that had already written ``result.json`` stay frozen or
gone); the final stacked state is saved too (step ``max_k num_steps_k``).
Each finished member writes its
``result.json``, ``metrics.jsonl`` and ``curve.jsonl`` in its own workdir as
``train_run`` does; per-member train checkpoints are not written.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import time
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from autoscale_jax import distributed
from autoscale_jax.fileio import atomic_write_json
from autoscale_jax.train import metrics as metrics_lib
from autoscale_jax.train import optim, sharding, trainer

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


def get_swarm_step(config: Any, vocab_size: int, compiled: trainer.Compiled,
                   layout: str = "vmap"
                   ) -> tuple[Any, Callable[[State, dict], tuple[State, dict]]]:
  """``(stacked shardings, jitted swarm_step(state_K, batch_K))`` (cached).

  ``layout="vmap"``: the K members' steps are batched (``jax.vmap``); members
  that finished are computed and masked. ``layout="scan"``: one program runs
  the members' steps one after another (``jax.lax.map``), each skipping its
  step with ``lax.cond`` once it finished; smaller working sets, no masked
  work (the faster layout on CPUs, where batched small matmuls fall out of
  cache; see docs/benchmarks.md).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r} is invalid: allowed: "
                     + ", ".join(LAYOUTS))
  key = (id(compiled), layout)
  if key in _SWARM_CACHE:
    return _SWARM_CACHE[key]
  _, abs_state = trainer.abstract_params(config.model, vocab_size)
  tx = optim.make_optimizer(config.train, nnx.to_pure_dict(abs_state))
  step_fn = trainer.make_train_step(
      compiled.graphdef, tx, config.train,
      dropout=float(config.model.dropout) > 0)

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
      [{k: v for k, v in b.items() if k in trainer.BATCH_KEYS} for b in local_K],
      mesh)


def _member(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda x: x[k], tree)


def default_swarm_dir(workdirs: Sequence[str | os.PathLike]) -> epath.Path:
  """``<parent of workdirs[0]>/swarm-<hash of the member workdirs>``."""
  names = "\n".join(str(epath.Path(w).resolve()) for w in workdirs)
  digest = hashlib.sha256(names.encode()).hexdigest()[:10]
  return epath.Path(workdirs[0]).resolve().parent / f"swarm-{digest}"


def _load_finished(path: epath.Path, num_steps: int) -> dict | None:
  if not path.exists():
    return None
  result = json.loads(path.read_text())
  if result.get("steps") != num_steps:
    raise ValueError(
        f"{path.parent} holds a finished run of {result.get('steps')} steps, "
        f"but this run has {num_steps}; use a fresh workdir for a different run")
  return result


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


def calibrate(config: Any, vocab_size: int, batches_list: Sequence[Any],
              steps: int = 3) -> dict[str, Any]:
  """Measured time of one training step: one run alone vs all K as one program.

  Each program is compiled first (the single-run program is the one
  ``train_run`` uses anyway, ``train.steps_per_call`` steps per call; the
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

  def best(fn, state, batch) -> float:
    state, m = fn(state, batch)  # compiled or warm by now
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      state, m = fn(state, batch)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
    return min(times)

  steps_fns = {layout: get_swarm_step(config, vocab_size, compiled, layout)
               for layout in LAYOUTS}  # outside the mesh context (abstract init)
  out: dict[str, Any] = {"runs": num}
  need, limit = stack_memory(compiled, num)
  if limit and 2 * need > limit:  # states + their gradients and updates
    raise MemoryError(
        f"{num} stacked train states need about {need / 2**30:.1f} GiB per "
        f"device of {limit / 2**30:.1f} GiB: train the runs one at a time "
        "(--config.train.swarm=off) or fan them out over workers")
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


def train_swarm(config: Any, batches_list: Sequence[Any],
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
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r} is invalid: allowed: "
                     + ", ".join(LAYOUTS))
  if compaction not in ("auto", "always", "never"):
    raise ValueError(f"compaction={compaction!r} is invalid: allowed: auto, "
                     "always, never")
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
  results: list[dict | None] = [
      _load_finished(d / "result.json", n) for d, n in zip(dirs, steps_all)]
  swarm_dir = epath.Path(swarm_dir) if swarm_dir else default_swarm_dir(dirs)
  ckpt_dir = (swarm_dir / "checkpoints").resolve()
  todo = [k for k in range(num_runs) if results[k] is None]
  if not todo:
    print(f"{label}all {num_runs} runs already finished", flush=True)
    return results  # type: ignore[return-value]

  say = distributed.primary_only(print)  # progress lines: process 0 only
  compiled = trainer.get_compiled(config, vocab_size)
  mesh = compiled.mesh
  stacked_sh, swarm_step = get_swarm_step(config, vocab_size, compiled,
                                          layout)
  every = int(eval_every_steps or config.train.get("eval_every_steps", 0) or 0)
  ckpt_every = int(config.train.checkpoint_every_steps)
  log_every = max(1, int(config.train.log_every_steps))
  eval_bs = int(config.train.eval_batch_size)
  tokens_per_step = int(config.train.global_batch_size) * int(
      config.train.seq_len)

  swarm_dir.mkdir(parents=True, exist_ok=True)
  mgr = ocp.CheckpointManager(
      ckpt_dir, options=ocp.CheckpointManagerOptions(
          max_to_keep=int(config.train.keep_checkpoints), create=True,
          enable_async_checkpointing=True),
      item_names=("state", "meta"))
  start = mgr.latest_step()
  members = todo  # run index of each stack position
  meta: dict[str, Any] | None = None
  if start is not None:
    meta = mgr.restore(start, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
    saved = [str(d) for d in meta["members"]]
    idx = {str(dirs[k].resolve()): k for k in range(num_runs)}
    if not all(s in idx for s in saved) or not set(
        str(dirs[k].resolve()) for k in todo) <= set(saved):
      raise ValueError(
          f"{ckpt_dir} holds a swarm of other runs ({len(saved)} members); "
          "delete it or pass another swarm_dir")
    members = [idx[s] for s in saved]
    if [steps_all[k] for k in members] != list(meta["num_steps"]):
      raise ValueError(f"{ckpt_dir} is from runs of other lengths "
                       f"{meta['num_steps']}; delete it")
  max_steps = max(steps_all[k] for k in members)
  writers = {k: metrics_lib.create_writer(dirs[k],
                                          just_logging=jax.process_index() > 0)
             for k in members}
  for k in members:
    dirs[k].mkdir(parents=True, exist_ok=True)

  diverged: dict[int, str] = {}  # run index -> message
  tokens: dict[int, float] = {}
  try:
    with jax.set_mesh(mesh):
      if meta is not None:
        abstract = jax.eval_shape(lambda: _init_stack(compiled, seeds, members,
                                                      steps_all))
        shim = types.SimpleNamespace(state_shardings=stacked_sh)
        state, meta = trainer._restore(mgr, start, shim, abstract)  # pylint: disable=protected-access
        tokens = {k: float(t) for k, t in zip(members, meta["tokens"])}
        saved_alive = np.asarray(jax.device_get(state["alive"]))
        for i, k in enumerate(members):
          if not saved_alive[i] and results[k] is None:
            diverged[k] = f"{dirs[k]}: diverged before step {start}"
        alive = np.asarray([results[k] is None for k in members])
        state["alive"] = jax.device_put(
            jnp.asarray(alive) & state["alive"], stacked_sh["alive"])
        say(f"{label}swarm resumed from step {start}/{max_steps} "
            f"({len(members)} runs)", flush=True)
      else:
        start = 0
        tokens = {k: 0.0 for k in members}
        state = jax.device_put(_init_stack(compiled, seeds, members, steps_all),
                               stacked_sh)
      curves = {k: [c for c in trainer._read_jsonl(dirs[k] / "curve.jsonl")  # pylint: disable=protected-access
                    if c["step"] <= min(start, steps_all[k])] for k in members}
      if jax.process_index() == 0:
        for k in members:
          for name in ("metrics.jsonl", "curve.jsonl"):
            trainer.keep_jsonl_upto(dirs[k] / name, min(start, steps_all[k]))
      say(f"{label}swarm of {len(members)} runs, "
          f"{min(steps_all[k] for k in members)}-{max_steps} steps, one "
          "program", flush=True)

      last_local: dict[int, dict] = {}
      pending: list[tuple[int, dict, list[int]]] = []
      step_s = 0.0  # measured wall time of one step of the current stack
      timed: dict[int, int] = collections.defaultdict(int)

      def live() -> list[int]:
        return [k for k in members if results[k] is None and k not in diverged]

      def set_alive() -> None:
        nonlocal state
        alive = np.asarray([k in live() for k in members])
        state["alive"] = jax.device_put(
            jnp.asarray(alive) & state["alive"], stacked_sh["alive"])

      def check(upto: int) -> None:
        """Marks members whose loss went NaN/Inf as dead (lagging one step)."""
        while pending and pending[0][0] <= upto:
          s, m, stack = pending.pop(0)
          loss_K, act_K = jax.device_get((m["loss"], m["active"]))
          bad = [k for i, k in enumerate(stack) if act_K[i]
                 and k not in diverged
                 and not math.isfinite(float(loss_K[i]))]
          for k in bad:
            loss = float(loss_K[stack.index(k)])
            diverged[k] = (f"{dirs[k]}: loss is {loss} at step {s} of "
                           f"{steps_all[k]}")
            say(f"{label}{diverged[k]}; dropping it from the swarm",
                flush=True)
          if bad:
            set_alive()

      def run_eval(k: int, step: int) -> dict:
        params = jax.device_put(_member(state["params"], members.index(k)),
                                compiled.state_shardings["params"])
        res = trainer.evaluate(compiled, params, eval_sets, eval_bs)
        point = {"step": step, "tokens": tokens[k], **res}
        with (dirs[k] / "curve.jsonl").open("a") as f:
          f.write(json.dumps(point) + "\n")
        writers[k].write_scalars(step, {f"eval/{n}": v for n, v in
                                        res["aggregate"].items() if v is not None})
        return point

      def finish(k: int) -> None:
        final = run_eval(k, steps_all[k])
        curve = [c for c in curves[k] if c["step"] < steps_all[k]] + [final]
        result = {"steps": steps_all[k],
                  "tokens_per_domain": {d: float(t) for d, t in
                                        batches_list[k].tokens_per_domain.items()},
                  "final_eval": {"domains": final["domains"],
                                 "aggregate": final["aggregate"]},
                  "curve": curve}
        atomic_write_json(dirs[k] / "result.json", result)
        results[k] = result
        agg = final["aggregate"]
        say(f"{label}run {dirs[k].name} done at step {steps_all[k]}: loss "
            f"{agg['loss']:.4f} ppl_seq {agg['ppl_seq']:.2f}", flush=True)

      def maybe_compact(done: int) -> None:
        nonlocal state, members
        keep = live()
        if len(keep) == len(members) or not keep:
          return
        steps_left = max(steps_all[k] for k in keep) - done
        if compaction == "never" or (compaction == "auto" and
                                     layout == "scan"):
          return
        compile_s = max(c for (bundle, lay, _), (_, c) in _EXEC_CACHE.items()
                        if bundle == id(compiled) and lay == layout)
        if (id(compiled), layout, len(keep)) in _EXEC_CACHE:
          compile_s = 0.0
        if compaction == "auto" and not distributed.agree(compaction_pays(
            len(members), len(keep), steps_left, step_s, compile_s)):
          return  # (timings are local: every process takes process 0's call)
        check(done)  # pending metrics refer to the old stack
        keep = live()
        if not keep:
          return
        positions = [members.index(k) for k in keep]
        state = _take(state, positions, stacked_sh)
        members = keep
        say(f"{label}swarm step {done}: {len(keep)} runs left in the "
            "program", flush=True)

      t0 = time.time()
      t_log, s_log = t0, start
      for s in range(start, max_steps):
        local_K = []
        for k in members:
          if s < steps_all[k] and results[k] is None and k not in diverged:
            local = batches_list[k].batch(s, shard=jax.process_index(),
                                          num_shards=jax.process_count())
            tokens[k] += float(np.sum(local["weights"], dtype=np.float64))
            last_local[k] = local
          elif k not in last_local:  # resumed past its end: any valid batch
            last_local[k] = batches_list[k].batch(
                min(s, steps_all[k] - 1), shard=jax.process_index(),
                num_shards=jax.process_count())
          local_K.append(last_local[k])
        batch = _put_stacked_batch(local_K, mesh)
        fn, _ = _executable(compiled, layout, swarm_step, state, batch)
        t_step = time.perf_counter()
        state, metrics = fn(state, batch)
        if timed[len(members)] < 2:
          # Step time of this stack size (the 2nd step: the 1st may include
          # one-off work); blocking only here keeps the rest asynchronous.
          jax.block_until_ready(metrics)
          step_s = time.perf_counter() - t_step
          timed[len(members)] += 1
        done = s + 1
        pending.append((done, metrics, list(members)))
        check(done - 1)
        ended = [k for k in members if steps_all[k] == done
                 and results[k] is None]
        if ended or done % log_every == 0 or done == max_steps:
          check(done)
        if done % log_every == 0 or done == max_steps:
          m = jax.device_get(metrics)
          now = time.time()
          act = np.asarray(m["active"])
          n_act = float(np.sum(act))
          tps = n_act * (done - s_log) * tokens_per_step / max(now - t_log,
                                                               1e-9)
          for i, k in enumerate(members):
            if not act[i] or k in diverged:
              continue
            record = {"step": done, "loss": float(m["loss"][i]),
                      "lr": float(m["lr"][i]),
                      "grad_norm": float(m["grad_norm"][i]),
                      "tokens": tokens[k],
                      "tokens_per_s": tps / max(n_act, 1.0)}
            writers[k].write_scalars(done, {n: v for n, v in record.items()
                                            if n != "step"})
            with (dirs[k] / "metrics.jsonl").open("a") as f:
              f.write(json.dumps(record) + "\n")
          losses = [float(m["loss"][i]) for i in range(len(members)) if act[i]]
          say(f"{label}swarm step {done}/{max_steps}: {int(n_act)}/"
              f"{len(members)} active, mean loss "
              f"{np.mean(losses) if losses else float('nan'):.4f}"
              f", tok/s {tps:,.0f} (all runs)", flush=True)
          t_log, s_log = now, done
        for k in members:
          if results[k] is not None or k in diverged:
            continue
          if done == steps_all[k]:
            finish(k)
          elif every and done % every == 0 and done < steps_all[k]:
            curves[k].append(run_eval(k, done))
        if done < max_steps:
          maybe_compact(done)
        if done % ckpt_every == 0 or done == max_steps:
          trainer._save(mgr, done, state, {  # pylint: disable=protected-access
              "step": done, "num_steps": [steps_all[k] for k in members],
              "tokens": [tokens[k] for k in members],
              "members": [str(dirs[k].resolve()) for k in members]})
      mgr.wait_until_finished()
  finally:
    mgr.wait_until_finished()
    mgr.close()
    for w in writers.values():
      w.flush()
      w.close()

  if diverged:
    raise trainer.TrainingDiverged(
        f"{label}{len(diverged)} of {len(todo)} swarm runs diverged (the "
        "others finished and wrote result.json): "
        + "; ".join(diverged.values()))
  return results  # type: ignore[return-value]


def _init_stack(compiled: trainer.Compiled, seeds: Sequence[int],
                members: Sequence[int], steps_all: Sequence[int]) -> State:
  """``train_run``'s initial state of each member, stacked on axis 0."""
  states = [trainer.init_state(compiled, seeds[k], steps_all[k])
            for k in members]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  stacked["alive"] = jnp.ones((len(members),), bool)
  return stacked
