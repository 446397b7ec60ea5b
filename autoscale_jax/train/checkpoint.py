"""Checkpoints: a train state as a flat dict of arrays plus JSON metadata.

One orbax ``CheckpointManager`` per run directory, items ``state`` (the
state's leaves named by their tree path, e.g. ``params.blocks.0.attn.query``)
and ``meta`` (JSON: the step, the run length, tokens trained, ...). Saves are
asynchronous; every process takes part (orbax writes its shards).

Interruption: Ctrl-C (SIGINT) or SIGTERM while a save is being started is
held until
orbax has handed the save to its background commit, then raised; ``close``
(which the loops call in ``finally``) waits for that commit. So an interrupt
never leaves a half-started save, the previous checkpoint stays (orbax
deletes old steps only after a new one is committed), and the save that was
in flight when Ctrl-C came is kept too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from autoscale_jax import distributed

ITEMS = ("state", "meta")
# A finished run's final params under run.keep_after_finish="params".
PARAMS_FILE = "params.npz"


def manager(directory: str | os.PathLike, *, max_to_keep: int
            ) -> ocp.CheckpointManager:
  """The run's checkpoint manager (asynchronous saves; creates ``directory``)."""
  return ocp.CheckpointManager(
      epath.Path(directory).resolve(),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=int(max_to_keep), create=True,
          enable_async_checkpointing=True),
      item_names=ITEMS)


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flatten(tree: Any) -> tuple[dict[str, Any], Any, list[str]]:
  """``(name -> leaf, treedef, names in leaf order)``; names join the path by dots."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  names = [".".join(_key_name(k) for k in path) for path, _ in leaves]
  return dict(zip(names, (v for _, v in leaves))), treedef, names


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
  """Holds SIGINT and SIGTERM during the block; one that came acts after it.

  After the block the previous handlers are back and each held signal goes
  to its own: a Python handler is called (the default SIGINT handler raises
  KeyboardInterrupt; ``main`` makes SIGTERM raise it too), a default action
  is taken (``signal.raise_signal``), an ignored signal stays ignored. A
  no-op outside the main thread (signals are only delivered there).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received: list[tuple[int, Any]] = []
  previous = {sig: signal.signal(
      sig, lambda signum, frame: received.append((signum, frame)))
              for sig in HELD_SIGNALS}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  for signum, frame in received:
    handler = previous[signum]
    if callable(handler):
      handler(signum, frame)
    elif handler == signal.SIG_DFL:
      signal.raise_signal(signum)


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict
         ) -> None:
  """Saves ``state`` and ``meta`` as checkpoint ``step`` (asynchronously).

  Ctrl-C (or SIGTERM) during the call acts when it returns
  (:func:`interrupts_held`):
  the save is then in orbax's hands and :func:`close` waits for it.
  """
  flat, _, _ = flatten(state)
  with interrupts_held():
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(flat),
                                           meta=ocp.args.JsonSave(meta)),
             force=True)


def restore(mgr: ocp.CheckpointManager, step: int, shardings: Any,
            abstract_state: Any) -> tuple[Any, dict]:
  """``(state, meta)`` of checkpoint ``step``, placed with ``shardings``.

  Args:
    mgr: the run's manager.
    step: a saved step (e.g. ``mgr.latest_step()``).
    shardings: a pytree of ``NamedSharding`` with ``abstract_state``'s structure.
    abstract_state: the state's shapes and dtypes (``jax.eval_shape``).
  """
  flat_shardings, _, _ = flatten(shardings)
  flat_abs, treedef, names = flatten(abstract_state)
  target = {n: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                    sharding=flat_shardings[n])
            for n, a in flat_abs.items()}
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  flat = restored["state"]
  state = jax.tree_util.tree_unflatten(treedef, [flat[n] for n in names])
  return state, restored["meta"]


def restore_meta(mgr: ocp.CheckpointManager, step: int) -> dict:
  """The ``meta`` of checkpoint ``step`` alone (no arrays are read)."""
  return mgr.restore(step, args=ocp.args.Composite(
      meta=ocp.args.JsonRestore()))["meta"]


def close(mgr: ocp.CheckpointManager) -> None:
  """Waits for pending saves (a Ctrl-C meanwhile is raised after), closes."""
  with interrupts_held():
    mgr.wait_until_finished()
    mgr.close()


def latest_step(directory: epath.PathLike) -> int | None:
  """The newest committed step in a checkpoints directory (None: none)."""
  steps = [int(p.name) for p in epath.Path(directory).iterdir()
           if p.name.isdigit() and (p / "state").exists()]
  return max(steps) if steps else None


@contextlib.contextmanager
def _absl_warnings_hidden() -> Iterator[None]:
  """absl WARNING lines (orbax logs through absl) hidden within the block."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def read_params(directory: epath.PathLike, step: int) -> dict[str, np.ndarray]:
  """The params of checkpoint ``step`` as host arrays, named without
  ``params.`` (the optimizer state is not read)."""
  # Absolute: orbax finds no item metadata under a relative path.
  state_dir = epath.Path(directory).resolve() / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  with _absl_warnings_hidden():
    tree = ocp.PyTreeCheckpointHandler().metadata(state_dir).tree
  names = [n for n in tree if n.startswith("params.")]
  restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item={n: np.zeros(tree[n].shape, tree[n].dtype) for n in names},
      restore_args={n: ocp.RestoreArgs(restore_type=np.ndarray)
                    for n in names},
      partial_restore=True))
  return {n[len("params."):]: np.asarray(restored[n]) for n in names}


def keep_after_finish(run_dir: epath.PathLike, keep: str) -> None:
  """What a finished run's directory keeps (``config.run.keep_after_finish``).

  Called once the run's store record is written (the record, not the
  checkpoints, is what every stage reads). "all": everything stays; "none":
  ``checkpoints/`` is deleted; "params": the final params are written to
  ``<run_dir>/params.npz`` (``np.load`` reads them back by name, e.g.
  ``blocks.0.attn.query.kernel``), then ``checkpoints/`` is deleted, with
  the optimizer state (two thirds of a checkpoint with Adam). In a
  multi-process run "params" keeps the checkpoints as they are.
  """
  run_dir = epath.Path(run_dir)
  ckpt_dir = run_dir / "checkpoints"
  if keep == "all" or not ckpt_dir.exists():
    return
  if keep == "params" and jax.process_count() > 1:
    # Reading params back from a multi-host checkpoint is not done here:
    # the checkpoints stay, as with "all".
    return
  if keep == "params" and not (run_dir / PARAMS_FILE).exists():
    step = latest_step(ckpt_dir)
    if step is not None:
      params = read_params(ckpt_dir, step)

      def write() -> None:
        tmp = run_dir / f"{PARAMS_FILE}.tmp"
        with tmp.open("wb") as f:
          np.savez(f, **params)
        tmp.rename(run_dir / PARAMS_FILE)

      distributed.write_once(f"params of {run_dir.name}", write)
  distributed.write_once(f"checkpoints of {run_dir.name}", ckpt_dir.rmtree)
