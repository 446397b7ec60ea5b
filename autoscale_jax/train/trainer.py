"""Sharded, checkpointed, exactly resumable training and per-domain evaluation.

The train state is a plain pytree ``{"params", "opt_state", "step",
"num_steps", "rng"}`` (params: the pure dict of the NNX model's ``nnx.Param``
state). ``train_step(state, batch) -> (state, metrics)`` is pure; it is jitted
once per (``config.compile_key``: the recipe and the execution keys the
program is built from; vocabulary; mesh) and cached in-process, so the ~30 DDO
runs of one study share one compilation: the run length is the traced
``state["num_steps"]``, read by the LR schedule.

Batches are a pure function of the step (the data contract,
``batches.BatchSource``), so the data position saved with a checkpoint is the
step itself. ``train_run`` composes the run loop from small pieces: the stop
cadence and divergence guard (``cadence``), checkpoints (``checkpoint``) and
the run's log files (``runlog``); the proxy swarm composes the same pieces.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autoscale_jax import config as config_lib
from autoscale_jax import distributed, models
from autoscale_jax.train import batches as batch_lib
from autoscale_jax.train import cadence, checkpoint, optim, runlog, sharding
from autoscale_jax.train.batches import BATCH_KEYS, BatchSource
# TrainingDiverged is re-exported: callers catch trainer.TrainingDiverged.
from autoscale_jax.train.cadence import RunSettings, TrainingDiverged

METRIC_NAMES = ("loss", "ppl_tok", "ppl_seq", "bpb")
State = dict[str, Any]


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
  """Jitted init/train/eval functions and shardings for one shape signature.

  ``tx`` (the optimizer) and ``step_fn`` (the pure, unjitted
  ``train_step(state, batch)``) are what the jitted steps were built from; the
  swarm maps ``step_fn`` over its stacked states.
  """
  mesh: Mesh  # the (data, fsdp, tensor) mesh everything is sharded over
  graphdef: nnx.GraphDef  # the model's structure (params are separate)
  param_specs: Any  # pure dict of each parameter's PartitionSpec
  state_shardings: Any  # NamedSharding of every leaf of the train state
  batch_sharding: NamedSharding  # batches [B, L]: B over (data, fsdp)
  init: Callable[[jax.Array, jax.Array], State]  # (rng, num_steps) -> state
  train_step: Callable[[State, dict], tuple[State, dict]]  # jit(step_fn)
  # (state, batches_S, end) -> (state, metrics_S): make_multi_step, jitted.
  train_steps: Callable[[State, dict, jax.Array], tuple[State, dict]]
  steps_per_call: int  # steps per train_steps call (run.steps_per_call)
  # (params, batch) -> (loss_sum_B, tokens_B): make_eval_step, jitted.
  eval_step: Callable[[Any, dict], tuple[jax.Array, jax.Array]]
  tx: optax.GradientTransformation  # the optimizer (optim.make_optimizer)
  step_fn: Callable[[State, dict], tuple[State, dict]]  # pure, unjitted


_CACHE: dict[Any, Compiled] = {}


def _cache_key(config: Any, vocab_size: int, mesh: Mesh) -> tuple:
  """The config's compile key (recipe + program keys), vocab size and mesh."""
  devices = tuple(int(d.id) for d in mesh.devices.flat)
  return (config_lib.compile_key(config), vocab_size,
          tuple(mesh.shape.items()), devices)


def abstract_params(model_config: Any, vocab_size: int, *,
                    remat: bool = False) -> tuple[nnx.GraphDef, Any]:
  """``(graphdef, abstract nnx.Param state)`` without allocating anything.

  ``remat`` (``config.run.remat``) lives in the graphdef: the forward pass
  built from it recomputes activations in the backward pass.
  """
  abstract = nnx.eval_shape(
      lambda: models.build_model(model_config, vocab_size, nnx.Rngs(0),
                                 remat=remat))
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
  # The step functions read the config when they are first traced, which is
  # later; a private copy keeps a caller's later edits out of the cached
  # program (its key was computed from the config as it is now).
  config = copy.deepcopy(config)
  graphdef, abs_state = abstract_params(config.model, vocab_size,
                                        remat=bool(config.run.remat))
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
                               nnx.Rngs(params=jax.random.fold_in(rng, 0)),
                               remat=bool(config.run.remat))
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
      steps_per_call=int(config.run.steps_per_call),
      eval_step=jax.jit(make_eval_step(graphdef),
                        in_shardings=(state_shardings["params"], batch_sh),
                        out_shardings=replicated),
      tx=tx, step_fn=step_fn,
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


def eval_point(compiled: Compiled, params: Any,
               eval_sets: Mapping[str, Mapping[str, np.ndarray]],
               batch_size: int, step: int, tokens: float) -> dict[str, Any]:
  """A curve point: ``{"step", "tokens", "domains", "aggregate"}``."""
  return {"step": step, "tokens": tokens,
          **evaluate(compiled, params, eval_sets, batch_size)}


# ----------------------------------------------------------------------------
# The run loop: composed of train/cadence, train/checkpoint and train/runlog.


class _RunLoop:
  """One run's training from its first unsaved step to its end."""

  def __init__(self, compiled: Compiled, batches: BatchSource,
               eval_sets: Mapping[str, Mapping[str, np.ndarray]],
               settings: RunSettings, workdir: epath.Path, label: str,
               log: runlog.RunLog):
    self.compiled, self.batches, self.eval_sets = compiled, batches, eval_sets
    self.settings, self.workdir, self.label = settings, workdir, label
    self.num_steps = int(batches.num_steps)
    self.say = distributed.primary_only(print)  # process 0 only
    self.steps = runlog.StepLine()  # per-step progress (terminal/--verbosity)
    self.mgr = checkpoint.manager(workdir / "checkpoints",
                                  max_to_keep=settings.keep_checkpoints)
    self.log = log
    self.pending = cadence.MetricsQueue()  # (end step, (metrics, updates))
    self.state: State = {}
    self.start = self.last_saved = 0
    self.tokens = 0.0
    self.curve: list[dict] = []

  def begin(self, seed: int) -> None:
    """Restores the latest checkpoint, or initializes the state from ``seed``."""
    abstract = jax.eval_shape(self.compiled.init, jax.random.PRNGKey(0),
                              np.int32(self.num_steps))
    start = self.mgr.latest_step()
    if start is None:
      self.state = init_state(self.compiled, seed, self.num_steps)
    else:
      self.state, meta = checkpoint.restore(
          self.mgr, start, self.compiled.state_shardings, abstract)
      if int(meta["num_steps"]) != self.num_steps:
        raise ValueError(
            f"{self.workdir}/checkpoints is from a run of {meta['num_steps']} "
            f"steps, this run has {self.num_steps}; use a fresh workdir")
      self.tokens = float(meta["tokens"])
      self.say(f"{self.label}resumed from step {start}/{self.num_steps}",
               flush=True)
    self.start = self.last_saved = start or 0
    self.curve = self.log.resume(self.start)
    if self.batches.padded_final_step:
      logging.info("%snote: the last batch (step %d) is partial; its padding "
                   "carries zero weight", self.label, self.num_steps)

  def train_call(self, step: int, done: int) -> dict:
    """Trains steps ``step + 1 .. done`` in one compiled call; their metrics.

    With ``steps_per_call > 1`` the metrics have a leading per-slot axis;
    unused slots repeat the last batch and are skipped.
    """
    local = [batch_lib.model_arrays(self.batches.batch(
        t, shard=jax.process_index(), num_shards=jax.process_count()))
             for t in range(step, done)]
    per_call, mesh = self.compiled.steps_per_call, self.compiled.mesh
    if per_call == 1:
      self.state, metrics = self.compiled.train_step(
          self.state, sharding.put_batch(local[0], mesh))
    else:
      self.state, metrics = self.compiled.train_steps(
          self.state, sharding.put_stacked_batch(
              local + local[-1:] * (per_call - len(local)), mesh),
          np.int32(done))
    self.pending.push(done, (metrics, done - step))
    return metrics

  def drain(self, upto: int) -> None:
    """Reads back the calls ending by ``upto``: counts tokens, guards the loss.

    Tokens are the step's global weight sum (each process holds only its rows).
    """
    for end, (metrics, n) in self.pending.pop_upto(upto):
      loss_n, tokens_n = (np.atleast_1d(x) for x in
                          jax.device_get((metrics["loss"], metrics["tokens"])))
      for i in range(n):
        cadence.check_finite([loss_n[i]], end - n + i + 1,
                             num_steps=self.num_steps,
                             last_saved=self.last_saved,
                             ckpt_dir=f"{self.workdir}/checkpoints",
                             label=self.label)
        self.tokens += float(tokens_n[i])

  def log_train(self, done: int, metrics: dict, updates: int,
                speed: runlog.Speedometer) -> None:
    """Logs the metrics of the call's last update (step ``done``)."""
    m = jax.device_get(metrics)
    if self.compiled.steps_per_call > 1:  # slot of the call's last update
      m = jax.tree.map(lambda x: x[updates - 1], m)
    record = runlog.train_record(
        done, m, self.tokens,
        speed.tokens_per_s(done, self.settings.tokens_per_step))
    self.log.log_train(record)
    self.steps.show(runlog.progress_line(self.label, done, self.num_steps,
                                         record,
                                         speed.eta(done, self.num_steps)))

  def evaluate(self, step: int) -> dict:
    """Evaluates the current params; logs and returns the curve point."""
    point = eval_point(self.compiled, self.state["params"], self.eval_sets,
                       self.settings.eval_batch_size, step, self.tokens)
    self.log.log_eval(point)
    agg = point["aggregate"]
    self.steps.show(f"{self.label}eval step {step}: loss {agg['loss']:.4f} "
                    f"ppl_seq {agg['ppl_seq']:.2f}")
    return point

  def save(self, done: int) -> None:
    self.drain(done)  # never save a diverged state
    checkpoint.save(self.mgr, done, self.state,
                    {"step": done, "num_steps": self.num_steps,
                     "tokens": self.tokens})
    self.last_saved = done

  def run(self) -> dict:
    """Trains to the end; the final curve point."""
    settings, n = self.settings, self.num_steps
    speed = runlog.Speedometer(self.start)
    s = self.start
    while s < n:
      done = settings.call_end(s, n, self.compiled.steps_per_call)
      metrics = self.train_call(s, done)
      self.drain(s)  # the previous call's metrics: one call of lag
      updates, s = done - s, done
      if settings.logs_at(done, n):
        self.drain(done)
        self.log_train(done, metrics, updates, speed)
      if settings.evals_at(done, n):
        self.drain(done)
        self.curve.append(self.evaluate(done))
      if settings.saves_at(done, n):
        self.save(done)
    self.drain(n)
    final = self.evaluate(n)
    self.mgr.wait_until_finished()
    return final

  def close(self) -> None:
    self.steps.clear()
    checkpoint.close(self.mgr)
    self.log.close()


def train_run(config: Any, batches: BatchSource,
              eval_sets: Mapping[str, Mapping[str, np.ndarray]],
              workdir: str | os.PathLike, *, vocab_size: int,
              eval_every_steps: int = 0, init_seed: int | None = None,
              progress_label: str = "") -> dict:
  """Trains exactly ``batches.num_steps`` steps; resumes; returns the result dict.

  Args:
    config: the study config (uses ``model``, ``train``, ``mesh``, ``seed``).
    batches: the batch source (``batches.BatchSource``).
    eval_sets: domain -> held-out arrays (batch format plus ``num_bytes``).
    workdir: this run's directory (checkpoints, metrics, result.json).
    vocab_size: the tokenizer's vocabulary size.
    eval_every_steps: evaluate every this many steps (0: the config's
      ``train.eval_every_steps``; both 0: only at the end).
    init_seed: the seed of the initialization (None: ``config.seed``).
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
  result = runlog.read_finished(workdir, num_steps)
  if result is not None:
    logging.info("%salready finished (%d steps): %s", label, num_steps,
                 workdir / "result.json")
    return result
  if num_steps < 1:
    raise ValueError(f"{label}the batch source has num_steps={num_steps}; "
                     "a run needs at least one step")
  init_seed = int(config.seed) if init_seed is None else int(init_seed)
  compiled = get_compiled(config, vocab_size)
  loop = _RunLoop(compiled, batches, eval_sets,
                  RunSettings.from_config(config, eval_every_steps), workdir,
                  label, runlog.RunLog.for_run(
                      config, workdir, batches.tokens_per_domain,
                      data_seed=getattr(batches, "seed", None),
                      init_seed=init_seed))
  try:
    with jax.set_mesh(compiled.mesh):
      loop.begin(init_seed)
      final = loop.run()
  finally:
    loop.close()
  result = runlog.make_result(num_steps, batches.tokens_per_domain, final,
                              loop.curve)
  loop.log.write_result(result)
  return result
