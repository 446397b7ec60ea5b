"""Study configuration: defaults, one validation pass, and user-facing errors.

Every config in ``configs/`` starts from :func:`base_config` and overrides what
it needs. :func:`validate` runs once, before any work, and raises
:class:`ConfigError` whose message names the key, the bad value and what is
allowed. ``main.py`` turns that into a one-line message and exit code 2.

Sequences are tuples so they can be overridden from the command line, e.g.
``--config.ddo.budgets='(1e8, 3e8)'``.

Layout (all token counts are integers or floats of *tokens*, never steps):

* ``study``: name of the study, used for seqio registry names and the store.
* ``data``: where the per-domain text comes from and how it is tokenized.
* ``model``: architecture (``gpt2`` or ``bert``) and its size.
* ``train``: optimiser, schedule and batch shape, shared by every run.
* ``run``: how runs execute (steps per compiled call, the proxy swarm, log,
  eval-batch and checkpoint settings, remat); none of it changes a result.
* ``mesh``: device mesh shape over the (data, fsdp, tensor) axes.
* ``log``: where runs log besides their directory's TensorBoard files and
  JSON lines (Weights & Biases, optional); none of it changes a result.
* ``ddo``: budgets, base mixture, perturbation factors and seeds for DDO.
* ``project``: the target budget and availability settings for projection.
* ``final``: which mixtures to train at the target budget, and with which seeds.

Recipe and execution. ``model`` and ``train`` are a run's *recipe*: their
keys change what a run computes or records (``train.eval_every_steps``: its
curve points), and :func:`recipe` is the one place that reads them for a
run's identity. The store fingerprint of a run
(``study.core.run_identity``) holds the recipe (plus the run's data, quotas
and seed); the trainer's compile-cache key (:func:`compile_key`) is the
recipe plus the few execution keys the compiled program is built from
(:data:`PROGRAM_RUN_KEYS`). ``run`` and ``mesh`` are execution only: results
are equal to float round-off whatever their values (``tests/test_train.py``:
steps per call, sharded == single device; ``tests/test_swarm.py``: swarm ==
one by one; ``tests/test_models.py``: remat == no remat), so changing them
never marks a finished run stale. The mesh stays a section of its own (it is
the device layout, set per machine by ``launch/``) rather than a ``run`` key;
the trainer keys its compile cache on the mesh object itself. Keys that moved
from ``train``/``model`` to ``run`` are listed in :data:`MOVED_KEYS`; setting
one at its old place is a one-line error naming the new place.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from typing import Any, Mapping, Sequence

import ml_collections

from autoscale_jax import errors
from autoscale_jax import names

# Stage names for --stage; "train" is an alias of "final" (its old name).
STAGES = ("plan", "ddo", "fit", "project", "final", "train", "report", "all")
STAGE_ALIASES = {"train": "final"}
MODEL_KINDS = ("gpt2", "bert")
TOKENIZERS = ("byte", "sentencepiece", "gpt2")
DATA_SOURCES = ("embedded", "jsonl", "tfds", "fixture", "seqio")
METRICS = ("ppl_seq", "ppl_tok", "loss")
NOISE_MODELS = ("replicates", "paired")  # = mixing.ddo.NOISE_MODELS
SCHEDULES = ("linear", "cosine")
SWARM_MODES = ("auto", "off", "vmap", "scan")
# Where a run's initialization comes from (config.init_seeds): "per_seed"
# from its own training seed (config.seed + its plan or final seed), so runs
# of one seed share an initialization and different seeds start from
# different ones; "shared" from config.seed for every run (the behaviour
# before 2026-12-02).
INIT_SEEDS = ("per_seed", "shared")
# What a run's directory keeps once its store record is written.
KEEP_AFTER_FINISH = ("params", "none", "all")
# Where run leases live (= experiments/lease_tables.BACKENDS).
LEASE_BACKENDS = ("auto", "posix", "kvstore")
# run.swarm="auto" uses the swarm when its measured step is at least this
# much faster than the runs' steps one by one (margin for timing noise).
SWARM_MIN_SPEEDUP = 1.2
WANDB_MODES = ("", "online", "offline", "disabled")
DTYPES = ("float32", "bfloat16")
MESH_AXES = ("data", "fsdp", "tensor")
EMBEDDED_DOMAINS = ("code", "techdocs", "books", "wiki", "legal", "qa", "latex")

# The sections whose keys change what a run computes: a run's recipe.
RECIPE_SECTIONS = ("model", "train")
# Execution keys (config.run) the compiled train program is built from: the
# compile-cache key holds them besides the recipe; the run identity does not.
PROGRAM_RUN_KEYS = ("steps_per_call", "remat")
# Keys that moved out of the recipe sections into config.run (old -> new).
MOVED_KEYS = {
    "train.steps_per_call": "run.steps_per_call",
    "train.swarm": "run.swarm",
    "train.log_every_steps": "run.log_every_steps",
    "train.checkpoint_every_steps": "run.checkpoint_every_steps",
    "train.keep_checkpoints": "run.keep_checkpoints",
    "train.eval_batch_size": "run.eval_batch_size",
    "model.remat": "run.remat",
    "train.keep_after_finish": "run.keep_after_finish",
}


class ConfigError(errors.UserError, ValueError):
  """A user error in the study configuration (one line: key, value, allowed)."""


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every study; configs override a subset."""
  c = ml_collections.ConfigDict()
  c.study = "study"  # name: seqio registry names and the store
  c.seed = 42  # base seed of every run (plus its own) and of the bootstrap
  # "per_seed": a run initializes from its training seed (config.seed + k for
  # seed k), so the seed-to-seed spread that the DDO intervals and the final
  # verdict are built from includes the variance of the initialization;
  # "shared": every run from config.seed (before 2026-12-02; the demos of
  # docs/results.md's earlier designs). Not part of the recipe: a run's
  # identity holds the initialization seed itself.
  c.init_seeds = "per_seed"

  c.data = ml_collections.ConfigDict()
  c.data.source = "embedded"  # embedded | jsonl | tfds | fixture | seqio
  c.data.domains = tuple(EMBEDDED_DOMAINS)  # the domains to mix (>= 2)
  # Embedded corpus: where the built corpus lives ("" = <workdir>/corpus) and
  # the cap per domain in MB of kept text.
  c.data.corpus_dir = ""
  c.data.max_mb_per_domain = 8.0
  # Bring-your-own JSONL / text: domain -> glob of files, with a text field.
  c.data.paths = ml_collections.ConfigDict()
  c.data.text_field = "text"
  # TFDS: domain -> "name[:config]/split" plus the feature holding the text.
  c.data.tfds = ml_collections.ConfigDict()
  c.data.tfds_text_feature = "text"
  c.data.tfds_data_dir = ""  # "" = TFDS default
  # seqio: domain -> a registered seqio Task (or Mixture) name (default: the
  # domain's own name), and a module whose import registers them. The
  # vocabulary is the Tasks' (data.tokenizer and data.vocab_size unused); the
  # held-out set is the Tasks' validation split where they have one.
  c.data.seqio_tasks = ml_collections.ConfigDict()
  c.data.seqio_module = ""
  # Held-out documents per domain, carved out once per corpus by document.
  c.data.heldout_docs = 32
  c.data.heldout_max_sequences = 64  # cap on held-out sequences per domain
  c.data.tokenizer = "sentencepiece"  # sentencepiece | byte | gpt2
  c.data.vocab_size = 2048  # for sentencepiece; ignored for byte / gpt2
  c.data.cache_dir = ""  # "" = <workdir>/cache
  c.data.mlm_probability = 0.15  # bert only: fraction of tokens masked

  # The model (recipe: part of every run's identity).
  c.model = ml_collections.ConfigDict()
  c.model.kind = "gpt2"  # gpt2 (causal LM) | bert (masked LM)
  c.model.num_layers = 2  # transformer blocks
  c.model.d_model = 64  # residual width
  c.model.num_heads = 4  # attention heads (divide d_model)
  c.model.mlp_dim = 256  # hidden width of each block's MLP
  c.model.max_len = 128  # positions (context length, >= train.seq_len)
  c.model.dropout = 0.0  # dropout rate (0 = off)
  c.model.dtype = "float32"  # compute dtype; parameters are always float32
  c.model.type_vocab_size = 2  # bert only

  # Optimisation and batch shape (recipe: part of every run's identity).
  c.train = ml_collections.ConfigDict()
  c.train.seq_len = 128  # tokens per training sequence
  c.train.global_batch_size = 16  # sequences per optimizer step, all devices
  c.train.grad_accum_steps = 1  # micro-batches per optimizer step
  c.train.learning_rate = 2e-3  # peak learning rate (AdamW)
  c.train.warmup_frac = 0.1  # fraction of a run's steps of linear warm-up
  c.train.schedule = "linear"  # decay to 0 after warm-up: linear | cosine
  c.train.weight_decay = 0.01  # AdamW decoupled weight decay
  c.train.clip_norm = 1.0  # global gradient-norm clip
  c.train.b1 = 0.9  # AdamW beta1
  c.train.b2 = 0.95  # AdamW beta2
  c.train.eval_every_steps = 0  # 0 = only at the end of each run

  # How runs execute (none of these changes a result; see the module doc).
  c.run = ml_collections.ConfigDict()
  # Optimizer steps per compiled call (a scan; calls also end at every log,
  # eval and checkpoint step). More steps per call keep the host loop and
  # XLA's per-call buffers out of the step time; 1 = one step per call.
  c.run.steps_per_call = 10
  # Train a DDO budget's missing runs as one program (train/swarm.py), its
  # members batched ("vmap") or one after another ("scan"); "off": one run at
  # a time; "auto": time one step of each way first and use the faster swarm
  # layout if it is at least SWARM_MIN_SPEEDUP x faster (docs/benchmarks.md).
  c.run.swarm = "auto"
  c.run.log_every_steps = 10  # train metrics logged every this many steps
  c.run.checkpoint_every_steps = 200  # checkpoint every this many steps
  c.run.keep_checkpoints = 2  # checkpoints kept on disk per run
  # Once a run's store record is written: "params" keeps its final params
  # alone (<run dir>/params.npz; the checkpoints with the optimizer state
  # are deleted), "none" deletes the checkpoints, "all" keeps them. A run
  # trained in the proxy swarm has its checkpoints in the swarm's directory,
  # which "params" and "none" delete once every member's record is written.
  c.run.keep_after_finish = "params"
  c.run.eval_batch_size = 16  # held-out sequences per evaluation call
  c.run.remat = False  # recompute activations in backward (less memory)
  # Lease fan-out (--worker=NAME, experiments/leases.py): a worker's claim on
  # a run lasts this many seconds past its last heartbeat; a preempted
  # worker's run is taken over by another worker after this long.
  c.run.lease_seconds = 120.0
  c.run.heartbeat_seconds = 20.0  # renew every this many s (<= lease / 2)
  # Lease store (experiments/lease_tables.py): "posix" = lease files on a
  # shared filesystem (workers' clocks must agree); "kvstore" = one object
  # per run with generation preconditions (tensorstore: gs:// or a local
  # path; only clock rates must agree); "auto" = kvstore for gs://, else
  # posix. Every worker of one workdir must use the same backend.
  c.run.lease_backend = "auto"

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 fills the rest

  # Where runs log besides TensorBoard (always written to each run's
  # directory); none of it changes a result.
  c.log = ml_collections.ConfigDict()
  # Weights & Biases project: each run logs its scalars there and its mixture
  # as config ("" = off; needs `pip install 'autoscale_jax[wandb]'`).
  c.log.wandb_project = ""
  c.log.wandb_entity = ""  # W&B team or user ("" = your default entity)
  c.log.wandb_group = ""  # W&B run group ("" = the study name)
  # online | offline | disabled ("" = wandb's default, i.e. WANDB_MODE).
  c.log.wandb_mode = ""

  c.ddo = ml_collections.ConfigDict()
  c.ddo.budgets = (1.0e5, 2.0e5)  # total tokens of each DDO budget's base run
  c.ddo.base_weights = ml_collections.ConfigDict()  # empty = uniform
  c.ddo.factors = (0.2, 3.0)  # each domain's quota x factor, one run each
  c.ddo.seeds = (0,)  # one set of runs (base + every factor) per seed
  c.ddo.metric = "ppl_seq"  # held-out metric fitted: ppl_seq | ppl_tok | loss
  # Held-out domains the fitted objective weighs: empty = all, equal.
  c.ddo.target_domains = ml_collections.ConfigDict()
  c.ddo.allow_repeat = False  # not read: the --allow_repeat flag decides
  c.ddo.upper_bound = True  # n_i <= largest factor (our choice)
  c.ddo.bootstrap = 200  # bootstrap replicates of the fit (0 = no intervals)
  # Noise model of the bootstrap with repeated seeds (mixing/ddo.NOISE_MODELS):
  # "replicates" = each run's spread across seeds, runs independent;
  # "paired" = only the within-seed part, which does not cancel in y.
  c.ddo.noise_model = "replicates"

  c.project = ml_collections.ConfigDict()
  c.project.target_tokens = 8.0e5  # the target budget in tokens
  c.project.max_epochs = 1.0  # passes allowed over a domain's unique tokens
  # How the target mixture is estimated from the DDO studies: a name in
  # autoscale_jax.names.ESTIMATOR_NAMES ("paper" is the paper's rule).
  c.project.estimator = "paper"

  c.final = ml_collections.ConfigDict()
  c.final.mixtures = ("projected", "uniform", "ddo_small")  # trained, compared
  c.final.eval_every_steps = 20  # curve points of every final run
  c.final.smoothing = 3  # curve smoothing window of the speed-up table
  # Seeds of every final mixture's training; >= 2 give mean, 95% interval and
  # paired differences against each baseline (mixing/verdict.py), 3 or more
  # are recommended.
  c.final.seeds = (0,)
  return c


def recipe(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """The settings that determine a run's result: ``{section: {key: value}}``.

  The one source of a run's config identity: ``study.core.run_identity``
  fingerprints it (its "model" and "train" parts) and :func:`compile_key`
  starts from it. Execution settings (``config.run``, ``config.mesh``) are
  not in it.

  Raises:
    ConfigError: a key of :data:`MOVED_KEYS` is still at its old place (it
      would otherwise enter the recipe and change every fingerprint).
  """
  _check_moved_keys(config)
  return {section: config[section].to_dict() for section in RECIPE_SECTIONS}


def compile_key(config: ml_collections.ConfigDict) -> str:
  """The config part of the trainer's compile-cache key (canonical JSON).

  The recipe plus the execution keys the compiled program is built from
  (:data:`PROGRAM_RUN_KEYS`); the trainer adds the vocabulary size and mesh.
  """
  program = {k: config.run[k] for k in PROGRAM_RUN_KEYS}
  return json.dumps({"recipe": recipe(config), "run": program},
                    sort_keys=True, default=repr)


def moved_key_message(old_key: str, flag: bool = False) -> str:
  """The one-line error for a key of :data:`MOVED_KEYS` set at its old place.

  Args:
    old_key: the old dotted key, e.g. "train.swarm".
    flag: the key came from a command-line override (the fix names the flag).
  """
  new_key = MOVED_KEYS[old_key]
  fix = (f"use --config.{new_key}" if flag else
         f"set config.{new_key} instead")
  return (f"config.{old_key} moved to config.{new_key} (an execution setting, "
          f"not part of a run's recipe); {fix}")


def _check_moved_keys(c: ml_collections.ConfigDict) -> None:
  for old_key in MOVED_KEYS:
    section, key = old_key.split(".")
    if key in c[section]:
      raise ConfigError(moved_key_message(old_key))


def _fail(key: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}")


def _positive_number(c, key: str) -> None:
  value = _get(c, key)
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
      math.isfinite(value) and value > 0):
    _fail(key, value, "must be a finite number > 0")


def _positive_int(c, key: str) -> None:
  value = _get(c, key)
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    _fail(key, value, "must be an integer >= 1")


def _get(c, key: str) -> Any:
  node = c
  for part in key.split("."):
    node = node[part]
  return node


def _choice(c, key: str, allowed: Sequence[str]) -> None:
  value = _get(c, key)
  if value not in allowed:
    _fail(key, value, "allowed: " + ", ".join(allowed))


def _weights(c, key: str, domains: Sequence[str]) -> None:
  weights: Mapping[str, float] = dict(_get(c, key))
  if not weights:
    return
  for name, w in weights.items():
    if name not in domains:
      _fail(f"{key}.{name}", w,
            f"unknown domain {name!r}; known domains: {', '.join(domains)}")
    if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
      _fail(f"{key}.{name}", w, "weights must be finite and >= 0")
  if sum(weights.values()) <= 0:
    _fail(key, weights, "at least one weight must be > 0")


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None
             ) -> ml_collections.ConfigDict:
  """Checks ``c`` once, before any work; raises ConfigError on the first problem.

  Args:
    c: the study config.
    num_devices: devices of the mesh the training will use (None: not checked).

  Returns:
    ``c`` unchanged, for chaining.
  """
  _check_moved_keys(c)
  if not isinstance(c.study, str) or not c.study.replace("_", "").replace(
      "-", "").isalnum():
    _fail("study", c.study, "use letters, digits, '-' and '_' only")
  _choice(c, "init_seeds", INIT_SEEDS)

  # data
  _choice(c, "data.source", DATA_SOURCES)
  domains = list(c.data.domains)
  if len(domains) < 2:
    _fail("data.domains", domains, "need at least 2 domains to mix")
  if len(set(domains)) != len(domains):
    _fail("data.domains", domains, "domain names must be unique")
  for d in domains:
    if not isinstance(d, str) or not d or not d.replace("_", "").isalnum():
      _fail("data.domains", d, "domain names are non-empty [A-Za-z0-9_]")
  if c.data.source == "embedded":
    unknown = [d for d in domains if d not in EMBEDDED_DOMAINS]
    if unknown:
      _fail("data.domains", unknown,
            "the embedded corpus has: " + ", ".join(EMBEDDED_DOMAINS))
  if c.data.source == "jsonl":
    for d in domains:
      if d not in c.data.paths:
        _fail(f"data.paths.{d}", None,
              "data.source=jsonl needs a file glob for every domain")
    for d in c.data.paths:
      if d not in domains:
        _fail(f"data.paths.{d}", c.data.paths[d],
              f"unknown domain {d!r}; add it to data.domains or remove it")
  if c.data.source == "tfds":
    for d in domains:
      if d not in c.data.tfds:
        _fail(f"data.tfds.{d}", None,
              "data.source=tfds needs 'name/split' for every domain")
  if c.data.source == "seqio":
    for d, name in c.data.seqio_tasks.items():
      if d not in domains:
        _fail(f"data.seqio_tasks.{d}", name,
              f"unknown domain {d!r}; add it to data.domains or remove it")
      if not isinstance(name, str) or not name:
        _fail(f"data.seqio_tasks.{d}", name, "give a registered Task's name")
    module = c.data.seqio_module
    if not isinstance(module, str) or (module and not re.fullmatch(
        r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module)):
      _fail("data.seqio_module", module,
            "give an importable module name, e.g. 'my_tasks'")
  _choice(c, "data.tokenizer", TOKENIZERS)
  if c.data.tokenizer == "sentencepiece" and not (
      isinstance(c.data.vocab_size, int) and 260 <= c.data.vocab_size <= 262144):
    _fail("data.vocab_size", c.data.vocab_size,
          "sentencepiece vocab_size must be an integer in [260, 262144]")
  for key in ("data.heldout_docs", "data.heldout_max_sequences"):
    if not isinstance(_get(c, key), int) or _get(c, key) < 1:
      _fail(key, _get(c, key), "must be an integer >= 1")
  _positive_number(c, "data.max_mb_per_domain")
  if not 0 < c.data.mlm_probability < 1:
    _fail("data.mlm_probability", c.data.mlm_probability, "must be in (0, 1)")

  # model
  _choice(c, "model.kind", MODEL_KINDS)
  _choice(c, "model.dtype", DTYPES)
  for key in ("model.num_layers", "model.d_model", "model.num_heads",
              "model.mlp_dim", "model.max_len"):
    v = _get(c, key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      _fail(key, v, "must be an integer >= 1")
  if c.model.d_model % c.model.num_heads:
    _fail("model.d_model", c.model.d_model,
          f"must be divisible by model.num_heads={c.model.num_heads}")
  if not 0 <= c.model.dropout < 1:
    _fail("model.dropout", c.model.dropout, "must be in [0, 1)")
  if c.model.kind == "bert" and c.data.tokenizer == "gpt2":
    _fail("data.tokenizer", "gpt2",
          "BERT needs [CLS]/[SEP]/[MASK]/[PAD]; use sentencepiece or byte")

  # mesh
  shape = list(c.mesh.shape)
  if len(shape) != len(MESH_AXES):
    _fail("mesh.shape", shape, f"needs one size per axis {MESH_AXES}")
  if sum(1 for s in shape if s == -1) > 1 or any(
      (not isinstance(s, int)) or (s < 1 and s != -1) for s in shape):
    _fail("mesh.shape", shape, "sizes are integers >= 1, with at most one -1")
  if num_devices is not None:
    resolve_mesh_shape(shape, num_devices)

  # train
  if not isinstance(c.train.seq_len, int) or c.train.seq_len < 2:
    _fail("train.seq_len", c.train.seq_len, "must be an integer >= 2")
  if c.train.seq_len > c.model.max_len:
    _fail("train.seq_len", c.train.seq_len,
          f"must be <= model.max_len={c.model.max_len} (the model's context)")
  for key in ("train.global_batch_size", "train.grad_accum_steps"):
    _positive_int(c, key)
  if c.train.global_batch_size % c.train.grad_accum_steps:
    _fail("train.global_batch_size", c.train.global_batch_size,
          f"must be divisible by train.grad_accum_steps="
          f"{c.train.grad_accum_steps}")
  if num_devices is not None:
    micro = c.train.global_batch_size // c.train.grad_accum_steps
    data_par = _data_parallelism(c, num_devices)
    if micro % data_par:
      _fail("train.global_batch_size", c.train.global_batch_size,
            f"the per-step micro-batch {micro} must be divisible by the "
            f"data-parallel size {data_par} (mesh {list(c.mesh.shape)} over "
            f"{num_devices} devices)")
  _positive_number(c, "train.learning_rate")
  if not 0 <= c.train.warmup_frac < 1:
    _fail("train.warmup_frac", c.train.warmup_frac, "must be in [0, 1)")
  _choice(c, "train.schedule", SCHEDULES)
  if c.train.weight_decay < 0:
    _fail("train.weight_decay", c.train.weight_decay, "must be >= 0")
  _positive_number(c, "train.clip_norm")
  if not isinstance(c.train.eval_every_steps, int) or c.train.eval_every_steps < 0:
    _fail("train.eval_every_steps", c.train.eval_every_steps,
          "must be an integer >= 0 (0 = evaluate at the end only)")

  # run
  for key in ("run.steps_per_call", "run.log_every_steps",
              "run.checkpoint_every_steps", "run.keep_checkpoints",
              "run.eval_batch_size"):
    _positive_int(c, key)
  if num_devices is not None:
    data_par = _data_parallelism(c, num_devices)
    if c.run.eval_batch_size % data_par:
      _fail("run.eval_batch_size", c.run.eval_batch_size,
            f"must be divisible by the data-parallel size {data_par}")
  _choice(c, "run.swarm", SWARM_MODES)
  _choice(c, "run.lease_backend", LEASE_BACKENDS)
  _positive_number(c, "run.lease_seconds")
  _positive_number(c, "run.heartbeat_seconds")
  if c.run.heartbeat_seconds > c.run.lease_seconds / 2:
    _fail("run.heartbeat_seconds", c.run.heartbeat_seconds,
          f"must be at most half of run.lease_seconds={c.run.lease_seconds!r}"
          ", so a live worker renews its lease in time")

  # log
  if "log" in c:
    _choice(c, "log.wandb_mode", WANDB_MODES)
    if c.log.wandb_project and importlib.util.find_spec("wandb") is None:
      _fail("log.wandb_project", c.log.wandb_project,
            "needs Weights & Biases, which is not installed: pip install "
            "'autoscale_jax[wandb]' (or leave log.wandb_project empty)")
  _choice(c, "run.keep_after_finish", KEEP_AFTER_FINISH)

  # ddo
  budgets = list(c.ddo.budgets)
  if not budgets:
    _fail("ddo.budgets", budgets, "need at least one budget (two to project)")
  for i, b in enumerate(budgets):
    if not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
      _fail(f"ddo.budgets[{i}]", b, "budgets are token counts > 0")
  if len(set(budgets)) != len(budgets):
    _fail("ddo.budgets", budgets, "budgets must be distinct")
  _weights(c, "ddo.base_weights", domains)
  if c.ddo.base_weights:
    missing = [d for d in domains if c.ddo.base_weights.get(d, 0) <= 0]
    if missing:
      _fail("ddo.base_weights", dict(c.ddo.base_weights),
            f"every domain needs a base weight > 0 (missing or zero: "
            f"{', '.join(missing)})")
  factors = list(c.ddo.factors)
  if len(factors) < 2 or any(
      not isinstance(f, (int, float)) or f <= 0 or f == 1 for f in factors):
    _fail("ddo.factors", factors,
          "need >= 2 factors, each > 0 and != 1 (the base run is factor 1)")
  if not any(f < 1 for f in factors) or not any(f > 1 for f in factors):
    _fail("ddo.factors", factors, "need at least one factor < 1 and one > 1")
  if not list(c.ddo.seeds) or len(set(c.ddo.seeds)) != len(c.ddo.seeds):
    _fail("ddo.seeds", list(c.ddo.seeds), "need >= 1 distinct integer seeds")
  _choice(c, "ddo.metric", METRICS)
  _choice(c, "ddo.noise_model", NOISE_MODELS)
  _weights(c, "ddo.target_domains", domains)

  # project / final
  _positive_number(c, "project.target_tokens")
  _positive_number(c, "project.max_epochs")
  _choice(c, "project.estimator", names.ESTIMATOR_NAMES)
  if c.project.target_tokens <= max(budgets):
    _fail("project.target_tokens", c.project.target_tokens,
          f"must exceed the largest DDO budget {max(budgets):g}")
  if not list(c.final.mixtures):
    _fail("final.mixtures", list(c.final.mixtures),
          "name at least one mixture to train")
  _final_seeds(c.final.seeds)
  return c


def _final_seeds(seeds: Any) -> None:
  if not isinstance(seeds, (tuple, list)):
    _fail("final.seeds", seeds, "must be a tuple of integers, e.g. (0, 1, 2)")
  if not seeds:
    _fail("final.seeds", list(seeds), "need at least one seed (3 recommended)")
  bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool)
         or s < 0]
  if bad:
    _fail("final.seeds", list(seeds),
          f"seeds must be integers >= 0 (bad: {', '.join(map(repr, bad))})")
  if len(set(seeds)) != len(seeds):
    _fail("final.seeds", list(seeds), "seeds must be unique")


def _data_parallelism(c, num_devices: int) -> int:
  data, fsdp, _ = resolve_mesh_shape(list(c.mesh.shape), num_devices)
  return data * fsdp


def resolve_mesh_shape(shape: Sequence[int], num_devices: int
                       ) -> tuple[int, int, int]:
  """Fills a -1 in ``shape`` so the product equals ``num_devices``."""
  shape = list(shape)
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      _fail("mesh.shape", shape,
            f"fixed sizes multiply to {known}, which does not divide the "
            f"{num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    _fail("mesh.shape", shape,
          f"sizes multiply to {math.prod(shape)} but there are {num_devices} "
          "devices; use -1 on one axis to fill the rest")
  return tuple(shape)  # type: ignore[return-value]
