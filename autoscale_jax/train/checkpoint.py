"""Checkpoints: a train state as a flat dict of arrays plus JSON metadata.

One orbax ``CheckpointManager`` per run directory, items ``state`` (the
state's leaves named by their tree path, e.g. ``params.blocks.0.attn.query``)
and ``meta`` (JSON: the step, the run length, tokens trained, ...). Saves are
asynchronous; every process takes part (orbax writes its shards).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

ITEMS = ("state", "meta")


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


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict
         ) -> None:
  """Saves ``state`` and ``meta`` as checkpoint ``step`` (asynchronously)."""
  flat, _, _ = flatten(state)
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
  """Waits for pending saves, then closes ``mgr``."""
  mgr.wait_until_finished()
  mgr.close()
