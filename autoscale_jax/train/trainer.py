"""Sharded, checkpointed, exactly resumable training and per-domain evaluation.

The train state is a plain pytree ``{"params", "opt_state", "step",
"num_steps", "rng"}`` (params: the pure dict of the NNX model's ``nnx.Param``
state). ``train_step(state, batch) -> (state, metrics)`` is pure; it is jitted
once per (model, train shapes, mesh) and cached in-process, so the ~30 DDO runs
of one study share one compilation: the run length is the traced
``state["num_steps"]``, read by the LR schedule.

Batches are a pure function of the step (the data contract), so the data
position saved with a checkpoint is the step itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autoscale_jax import distributed, errors, models
from autoscale_jax.fileio import atomic_write_json, atomic_write_text
from autoscale_jax.train import metrics as metrics_lib
from autoscale_jax.train import optim, sharding

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions",
              "token_type_ids")
METRIC_NAMES = ("loss", "ppl_tok", "ppl_seq", "bpb")
State = dict[str, Any]


class TrainingDiverged(errors.UserError, RuntimeError):
  """The training loss became NaN or Inf (the message names the step)."""


# ----------------------------------------------------------------------------
# Pure step functions.


def _model_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  return {k: batch[k] for k in BATCH_KEYS if k in batch}


def _forward(graphdef: nnx.GraphDef, params: Any, batch: Mapping[str, jax.Array],
             *, dropout: bool, key: jax.Array | None) -> jax.Array:
  """Per-token cross-entropy ``[B, L]`` (float32, not yet weighted)."""
  model = nnx.merge(graphdef, params)
  rngs = nnx.Rngs(dropout=key) if dropout else None
  logits_BxLxV = model(batch["inputs"], batch["positions"], batch["segment_ids"],
                       deterministic=not dropout,
                       token_type_ids_BxL=batch.get("token_type_ids"), rngs=rngs)
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV,
                                                         batch["targets"])


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    train_config: Any, *, dropout: bool
                    ) -> Callable[[State, dict], tuple[State, dict]]:
  """The pure ``train_step(state, batch) -> (state, metrics)``.

  The loss is the weighted mean token cross-entropy over the whole global batch;
  with ``grad_accum_steps = A`` the batch is scanned as A micro-batches and the
  summed gradients are divided by the batch's total weight, so one step is one
  optimizer update equal to the big-batch update.
  """
  accum = int(train_config.grad_accum_steps)
  schedule = optim.schedule_fn(train_config)

  def loss_sum(params, mb, key):
    ce_BxL = _forward(graphdef, params, mb, dropout=dropout, key=key)
    return jnp.sum(ce_BxL * mb["weights"])

  grad_fn = jax.value_and_grad(loss_sum)

  def train_step(state: State, batch: dict) -> tuple[State, dict]:
    batch = _model_batch(batch)
    params = state["params"]
    key = jax.random.fold_in(state["rng"], state["step"])
    if accum == 1:
      total, grads = grad_fn(params, batch, key)
    else:
      # Micro-batch i = rows i::A, so each device's rows split locally.
      micro = jax.tree.map(
          lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:])
          .swapaxes(0, 1), batch)

      def body(carry, inp):
        i, mb = inp
        acc_total, acc_grads = carry
        t, g = grad_fn(params, mb, jax.random.fold_in(key, i))
        return (acc_total + t, jax.tree.map(jnp.add, acc_grads, g)), None

      init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
      (total, grads), _ = jax.lax.scan(body, init, (jnp.arange(accum), micro))
    tokens = jnp.sum(batch["weights"])
    denom = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    lr = schedule(state["step"], state["num_steps"])
    updates = jax.tree.map(lambda u: lr * u, updates)
    new_state = dict(state, params=optax.apply_updates(params, updates),
                     opt_state=opt_state, step=state["step"] + 1)
    metrics = {"loss": total / denom, "lr": lr, "tokens": tokens,
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return train_step


def step_if(train_step: Callable[[State, dict], tuple[State, dict]]
            ) -> Callable[[jax.Array, State, dict], tuple[State, dict]]:
  """``(run, state, batch) -> (state, metrics)``: ``train_step`` only if ``run``.

  Otherwise the state is returned unchanged with zero metrics; ``lax.cond``
  means a skipped step costs (almost) nothing, outside ``vmap``.
  """

  def fn(run: jax.Array, state: State, batch: dict) -> tuple[State, dict]:
    shapes = jax.eval_shape(train_step, state, batch)[1]

    def skip(state, batch):
      del batch
      return state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(run, train_step, skip, state, batch)

  return fn


def make_multi_step(train_step: Callable[[State, dict], tuple[State, dict]],
                    ) -> Callable[[State, dict, jax.Array], tuple[State, dict]]:
  """``train_steps(state, batches_S, end) -> (state, metrics_S)``: S steps in one call.

  ``batches_S`` stacks S batches on a leading axis; slot i runs ``train_step``
  only while ``state["step"] < end`` (``lax.cond``), so one compiled program
  serves chunks of any length up to S (unused slots hold any valid batch and
  cost nothing). Metrics gain a leading S axis and ``ran`` (bool per slot).
  Running S steps per call keeps XLA's buffers and the host loop out of the
  step time (docs/benchmarks.md: about 1.35x at the tiny shape on a CPU).
  """

  maybe_step = step_if(train_step)

  def train_steps(state: State, batches: dict, end: jax.Array
                  ) -> tuple[State, dict]:

    def body(state, batch):
      ran = state["step"] < end
      state, metrics = maybe_step(ran, state, batch)
      return state, dict(metrics, ran=ran)

    return jax.lax.scan(body, state, batches)

  return train_steps


def make_eval_step(graphdef: nnx.GraphDef
                   ) -> Callable[[Any, dict], tuple[jax.Array, jax.Array]]:
  """``eval_step(params, batch) -> (loss_sum_B, tokens_B)`` per sequence."""

  def eval_step(params: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
    batch = _model_batch(batch)
    ce_BxL = _forward(graphdef, params, batch, dropout=False, key=None)
    w_BxL = batch["weights"]
    return jnp.sum(ce_BxL * w_BxL, axis=1), jnp.sum(w_BxL, axis=1)

  return eval_step


# ----------------------------------------------------------------------------
# Compiled bundle, cached across runs of the same shapes.


@dataclasses.dataclass
class Compiled:
  """Jitted init/train/eval functions and shardings for one shape signature."""
  mesh: Mesh
  graphdef: nnx.GraphDef
  param_specs: Any
  state_shardings: Any
  batch_sharding: NamedSharding
  init: Callable[[jax.Array, jax.Array], State]
  train_step: Callable[[State, dict], tuple[State, dict]]
  train_steps: Callable[[State, dict, jax.Array], tuple[State, dict]]
  steps_per_call: int
  eval_step: Callable[[Any, dict], tuple[jax.Array, jax.Array]]


_CACHE: dict[Any, Compiled] = {}
_TRAIN_KEYS = ("seq_len", "global_batch_size", "grad_accum_steps",
               "learning_rate", "warmup_frac", "schedule", "weight_decay",
               "clip_norm", "b1", "b2", "steps_per_call")


def _cache_key(config: Any, vocab_size: int, mesh: Mesh) -> tuple:
  model = tuple(sorted((k, str(v)) for k, v in config.model.items()))
  train = tuple((k, str(config.train.get(k))) for k in _TRAIN_KEYS)
  devices = tuple(int(d.id) for d in mesh.devices.flat)
  return (model, train, vocab_size, tuple(mesh.shape.items()), devices)


def abstract_params(model_config: Any, vocab_size: int
                    ) -> tuple[nnx.GraphDef, Any]:
  """``(graphdef, abstract nnx.Param state)`` without allocating anything."""
  abstract = nnx.eval_shape(
      lambda: models.build_model(model_config, vocab_size, nnx.Rngs(0)))
  return nnx.split(abstract, nnx.Param)


def param_partition_specs(model_config: Any, vocab_size: int, mesh: Mesh
                          ) -> dict:
  """Pure dict of the resolved PartitionSpec of every parameter."""
  _, abs_state = abstract_params(model_config, vocab_size)
  return nnx.to_pure_dict(sharding.state_specs(abs_state, mesh))


def get_compiled(config: Any, vocab_size: int, mesh: Mesh | None = None
                 ) -> Compiled:
  """Jitted functions for ``config`` on ``mesh`` (cached: no recompilation)."""
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh.shape)
  key = _cache_key(config, vocab_size, mesh)
  if key in _CACHE:
    return _CACHE[key]
  graphdef, abs_state = abstract_params(config.model, vocab_size)
  abs_params = nnx.to_pure_dict(abs_state)
  param_specs = nnx.to_pure_dict(sharding.state_specs(abs_state, mesh))
  tx = optim.make_optimizer(config.train, abs_params)
  abs_opt = jax.eval_shape(tx.init, abs_params)
  opt_specs = optax.tree_map_params(
      tx, lambda _, s: s, abs_opt, param_specs,
      transform_non_params=lambda _: P(), is_leaf=lambda x: isinstance(x, P))
  specs = {"params": param_specs, "opt_state": opt_specs, "step": P(),
           "num_steps": P(), "rng": P()}
  state_shardings = sharding.named(specs, mesh)
  model_config = config.model
  dropout = float(config.model.dropout) > 0

  def init(rng: jax.Array, num_steps: jax.Array) -> State:
    model = models.build_model(model_config, vocab_size,
                               nnx.Rngs(params=jax.random.fold_in(rng, 0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {"params": params, "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "num_steps": jnp.asarray(num_steps, jnp.int32),
            "rng": jax.random.fold_in(rng, 1)}

  batch_sh = sharding.batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())
  step_fn = make_train_step(graphdef, tx, config.train, dropout=dropout)
  compiled = Compiled(
      mesh=mesh, graphdef=graphdef, param_specs=param_specs,
      state_shardings=state_shardings, batch_sharding=batch_sh,
      init=jax.jit(init, in_shardings=(replicated, replicated),
                   out_shardings=state_shardings),
      train_step=jax.jit(
          step_fn, in_shardings=(state_shardings, batch_sh),
          out_shardings=(state_shardings, replicated), donate_argnums=0),
      train_steps=jax.jit(
          make_multi_step(step_fn),
          in_shardings=(state_shardings, sharding.stacked_batch_sharding(mesh),
                        replicated),
          out_shardings=(state_shardings, replicated), donate_argnums=0),
      steps_per_call=int(config.train.get("steps_per_call", 1)),
      eval_step=jax.jit(make_eval_step(graphdef),
                        in_shardings=(state_shardings["params"], batch_sh),
                        out_shardings=replicated),
  )
  _CACHE[key] = compiled
  return compiled


def init_state(compiled: Compiled, seed: int, num_steps: int) -> State:
  return compiled.init(jax.random.PRNGKey(seed), np.int32(num_steps))


# ----------------------------------------------------------------------------
# Evaluation.


def _pad_rows(arrays: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  n = len(next(iter(arrays.values())))
  if n == rows:
    return dict(arrays)
  return {k: np.concatenate([v, np.zeros((rows - n, *v.shape[1:]), v.dtype)])
          for k, v in arrays.items()}


def eval_domain(compiled: Compiled, params: Any, eval_set: Mapping[str, np.ndarray],
                batch_size: int) -> dict[str, float | None]:
  """Metrics of one domain's held-out set (padding rows carry zero weight)."""
  arrays = {k: np.asarray(eval_set[k]) for k in BATCH_KEYS if k in eval_set}
  n = len(arrays["inputs"])
  losses, counts = [], []
  with jax.set_mesh(compiled.mesh):
    for start in range(0, n, batch_size):
      chunk = {k: v[start:start + batch_size] for k, v in arrays.items()}
      # Every process holds the whole eval set: place it as the global batch.
      chunk = sharding.put_global_batch(_pad_rows(chunk, batch_size),
                                        compiled.mesh)
      losses.append(compiled.eval_step(params, chunk))
  for loss_B, count_B in jax.device_get(losses):
    losses_np = np.asarray(loss_B, np.float64)
    counts.append((losses_np, np.asarray(count_B, np.float64)))
  seq_loss = np.concatenate([c[0] for c in counts])[:n]
  seq_tok = np.concatenate([c[1] for c in counts])[:n]
  return domain_metrics(seq_loss, seq_tok, eval_set.get("num_bytes"))


def domain_metrics(seq_loss: np.ndarray, seq_tokens: np.ndarray,
                   num_bytes: np.ndarray | None) -> dict[str, float | None]:
  """loss, ppl_tok = exp(loss), ppl_seq = mean_s exp(loss_s), bits per byte."""
  total, tokens = float(seq_loss.sum()), float(seq_tokens.sum())
  loss = total / max(tokens, 1.0)
  has = seq_tokens > 0
  ppl_seq = float(np.mean(np.exp(seq_loss[has] / seq_tokens[has]))) if has.any(
  ) else float("nan")
  bpb = None
  if num_bytes is not None and float(np.sum(num_bytes)) > 0:
    bpb = total / math.log(2) / float(np.sum(num_bytes))
  return {"loss": loss, "ppl_tok": math.exp(min(loss, 700.0)),
          "ppl_seq": ppl_seq, "bpb": bpb}


def evaluate(compiled: Compiled, params: Any,
             eval_sets: Mapping[str, Mapping[str, np.ndarray]],
             batch_size: int) -> dict[str, Any]:
  """Per-domain metrics and their aggregate (mean of per-domain values)."""
  domains = {d: eval_domain(compiled, params, s, batch_size)
             for d, s in eval_sets.items()}
  aggregate: dict[str, float | None] = {}
  for name in METRIC_NAMES:
    vals = [m[name] for m in domains.values()]
    aggregate[name] = (float(np.mean(vals)) if vals and None not in vals
                       else None)
  return {"domains": domains, "aggregate": aggregate}


# ----------------------------------------------------------------------------
# Checkpoints: the train state as a flat dict of arrays + JSON metadata.


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _flatten(tree: Any) -> tuple[dict[str, Any], Any, list[str]]:
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  names = [".".join(_key_name(k) for k in path) for path, _ in leaves]
  return dict(zip(names, (v for _, v in leaves))), treedef, names


def _restore(mgr: ocp.CheckpointManager, step: int, compiled: Compiled,
             abstract_state: State) -> tuple[State, dict]:
  shardings, _, _ = _flatten(compiled.state_shardings)
  flat_abs, treedef, names = _flatten(abstract_state)
  target = {n: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shardings[n])
            for n, a in flat_abs.items()}
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  flat = restored["state"]
  state = jax.tree_util.tree_unflatten(treedef, [flat[n] for n in names])
  return state, restored["meta"]


def _save(mgr: ocp.CheckpointManager, step: int, state: State, meta: dict) -> None:
  flat, _, _ = _flatten(state)
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(flat),
                                         meta=ocp.args.JsonSave(meta)),
           force=True)


# ----------------------------------------------------------------------------
# The run loop.


def _read_jsonl(path: epath.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def keep_jsonl_upto(path: epath.Path, step: int) -> list[dict]:
  """Drops the lines of a step log past ``step`` (what a crash left behind).

  A run restarted from its checkpoint at ``step`` retrains the later steps and
  logs them again; without this, ``metrics.jsonl`` / ``curve.jsonl`` would
  hold those steps twice. Rewrites the file atomically only when it changes;
  returns the kept records.
  """
  records = _read_jsonl(path)
  kept = [r for r in records if r["step"] <= step]
  if len(kept) != len(records):
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
  return kept


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_run(config: Any, batches: Any,
              eval_sets: Mapping[str, Mapping[str, np.ndarray]],
              workdir: str | os.PathLike, *, vocab_size: int,
              eval_every_steps: int = 0, progress_label: str = "") -> dict:
  """Trains exactly ``batches.num_steps`` steps; resumes; returns the result dict.

  Args:
    config: the study config (uses ``model``, ``train``, ``mesh``, ``seed``).
    batches: the batch source (``num_steps``, ``batch(step, shard,
      num_shards)``, ``tokens_per_domain``, ``padded_final_step``).
    eval_sets: domain -> held-out arrays (batch format plus ``num_bytes``).
    workdir: this run's directory (checkpoints, metrics, result.json).
    vocab_size: the tokenizer's vocabulary size.
    eval_every_steps: evaluate every this many steps (0: the config's
      ``train.eval_every_steps``; both 0: only at the end).
    progress_label: prefix of the progress lines.

  Returns:
    ``{"steps", "tokens_per_domain", "final_eval", "curve"}`` (also written
    atomically to ``workdir/result.json``; a finished run returns it as is).

  Raises:
    TrainingDiverged: the loss became NaN/Inf (the last good checkpoint stays).
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  label = f"[{progress_label}] " if progress_label else ""
  num_steps = int(batches.num_steps)
  result_path = workdir / "result.json"
  if result_path.exists():
    result = json.loads(result_path.read_text())
    if result.get("steps") != num_steps:
      raise ValueError(
          f"{workdir} holds a finished run of {result.get('steps')} steps, but "
          f"this run has {num_steps}; use a fresh workdir for a different run")
    print(f"{label}already finished ({num_steps} steps): {result_path}",
          flush=True)
    return result
  if num_steps < 1:
    raise ValueError(f"{label}the batch source has num_steps={num_steps}; "
                     "a run needs at least one step")

  compiled = get_compiled(config, vocab_size)
  mesh = compiled.mesh
  every = int(eval_every_steps or config.train.get("eval_every_steps", 0) or 0)
  ckpt_every = int(config.train.checkpoint_every_steps)
  log_every = max(1, int(config.train.log_every_steps))
  eval_bs = int(config.train.eval_batch_size)
  tokens_per_step = int(config.train.global_batch_size) * int(config.train.seq_len)

  mgr = ocp.CheckpointManager(
      (workdir / "checkpoints").resolve(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=int(config.train.keep_checkpoints), create=True,
          enable_async_checkpointing=True),
      item_names=("state", "meta"))
  # Process 0 alone writes the run's files (TensorBoard events, metrics.jsonl,
  # curve.jsonl, result.json); checkpoints are written by every process.
  primary = jax.process_index() == 0
  say = distributed.primary_only(print)  # progress lines: process 0 only
  writer = metrics_lib.create_writer(workdir, just_logging=not primary)
  metrics_path = workdir / "metrics.jsonl"
  curve_path = workdir / "curve.jsonl"

  try:
    with jax.set_mesh(mesh):
      abstract = jax.eval_shape(compiled.init, jax.random.PRNGKey(0),
                                np.int32(num_steps))
      start = mgr.latest_step()
      if start is not None:
        state, meta = _restore(mgr, start, compiled, abstract)
        if int(meta["num_steps"]) != num_steps:
          raise ValueError(
              f"{workdir}/checkpoints is from a run of {meta['num_steps']} "
              f"steps, this run has {num_steps}; use a fresh workdir")
        tokens_done = float(meta["tokens"])
        say(f"{label}resumed from step {start}/{num_steps}", flush=True)
      else:
        start, tokens_done = 0, 0.0
        state = init_state(compiled, int(config.seed), num_steps)
      curve = [c for c in _read_jsonl(curve_path) if c["step"] <= start]
      if primary:
        keep_jsonl_upto(metrics_path, start)
        keep_jsonl_upto(curve_path, start)
      if batches.padded_final_step:
        say(f"{label}note: the last batch (step {num_steps}) is partial; its "
            "padding carries zero weight", flush=True)

      # (step after the call's last update, its metrics, updates in the call);
      # metrics have a leading per-update axis.
      pending: list[tuple[int, dict, int]] = []
      last_saved = start

      def check(upto: int) -> None:
        # Also counts the tokens trained from the step's global weight sum
        # (each process holds only its rows of the batch).
        nonlocal tokens_done
        while pending and pending[0][0] <= upto:
          end, m, n = pending.pop(0)
          loss_n, tokens_n = (np.atleast_1d(x) for x in
                              jax.device_get((m["loss"], m["tokens"])))
          for i in range(n):
            loss = float(loss_n[i])
            tokens_done += float(tokens_n[i])
            if not math.isfinite(loss):
              raise TrainingDiverged(
                  f"{label}loss is {loss} at step {end - n + i + 1} of "
                  f"{num_steps}; stopping. Last good checkpoint: step "
                  f"{last_saved} in {workdir}/checkpoints")

      def run_eval(step: int) -> dict:
        res = evaluate(compiled, state["params"], eval_sets, eval_bs)
        point = {"step": step, "tokens": tokens_done, **res}
        if primary:
          with curve_path.open("a") as f:
            f.write(json.dumps(point) + "\n")
        writer.write_scalars(step, {f"eval/{k}": v for k, v in
                                    res["aggregate"].items() if v is not None})
        agg = res["aggregate"]
        say(f"{label}eval step {step}: loss {agg['loss']:.4f} "
            f"ppl_seq {agg['ppl_seq']:.2f}", flush=True)
        return point

      t0 = time.time()
      t_log, s_log = t0, start
      per_call = compiled.steps_per_call
      s = start
      while s < num_steps:
        # One call trains up to per_call steps, ending at the next log, eval
        # or checkpoint step so those see exactly this state.
        done = min([num_steps, s + per_call] + [
            (s // n + 1) * n for n in (log_every, every, ckpt_every) if n])
        local = [{k: v for k, v in batches.batch(
            t, shard=jax.process_index(), num_shards=jax.process_count()
        ).items() if k in BATCH_KEYS} for t in range(s, done)]
        if per_call == 1:
          state, metrics = compiled.train_step(
              state, sharding.put_batch(local[0], mesh))
        else:  # unused slots repeat the last batch; they are skipped
          state, metrics = compiled.train_steps(
              state, sharding.put_stacked_batch(
                  local + local[-1:] * (per_call - len(local)), mesh),
              np.int32(done))
        pending.append((done, metrics, done - s))
        check(s)
        s = done
        if done % log_every == 0 or done == num_steps:
          check(done)
          m = jax.device_get(metrics)
          if per_call > 1:  # the metrics of the call's last update
            m = jax.tree.map(lambda x: x[len(local) - 1], m)
          now = time.time()
          tps = (done - s_log) * tokens_per_step / max(now - t_log, 1e-9)
          eta = (now - t0) / max(done - start, 1) * (num_steps - done)
          record = {"step": done, "loss": float(m["loss"]), "lr": float(m["lr"]),
                    "grad_norm": float(m["grad_norm"]), "tokens": tokens_done,
                    "tokens_per_s": tps}
          writer.write_scalars(done, {k: v for k, v in record.items()
                                      if k != "step"})
          if primary:
            with metrics_path.open("a") as f:
              f.write(json.dumps(record) + "\n")
          filled = int(20 * done / num_steps)
          bar = "#" * filled + "." * (20 - filled)
          say(f"{label}[{bar}] step {done}/{num_steps} "
              f"loss {record['loss']:.4f} "
              f"lr {record['lr']:.2e} tok/s {tps:,.0f} eta {_fmt_time(eta)}",
              flush=True)
          t_log, s_log = now, done
        if every and done % every == 0 and done < num_steps:
          check(done)
          curve.append(run_eval(done))
        if done % ckpt_every == 0 or done == num_steps:
          check(done)  # never save a diverged state
          _save(mgr, done, state, {"step": done, "num_steps": num_steps,
                                   "tokens": tokens_done})
          last_saved = done
      check(num_steps)
      final = run_eval(num_steps)
      curve = [c for c in curve if c["step"] < num_steps] + [final]
      mgr.wait_until_finished()
  finally:
    mgr.wait_until_finished()
    mgr.close()
    writer.flush()
    writer.close()

  result = {"steps": num_steps,
            "tokens_per_domain": {d: float(t) for d, t in
                                  batches.tokens_per_domain.items()},
            "final_eval": {"domains": final["domains"],
                           "aggregate": final["aggregate"]},
            "curve": curve}
  if primary:
    atomic_write_json(result_path, result)
  return result
