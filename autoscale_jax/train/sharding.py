"""Device mesh and the one table of logical-axis rules.

Parameters carry logical axis names (see ``autoscale_jax.models.layers``);
``LOGICAL_RULES`` maps each onto mesh axes of the ``(data, fsdp, tensor)``
mesh. A mesh axis that does not divide a dimension is dropped for that
parameter (it is replicated along that axis instead), so any mesh works for
any model size; the resolved specs are checked against a golden in the tests.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autoscale_jax.config import MESH_AXES, resolve_mesh_shape

# logical name -> mesh axis (or tuple of axes, or None = replicated).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("pos", None),
    ("type", None),
    ("norm", None),
)
BATCH_AXES = ("data", "fsdp")


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  """A ``(data, fsdp, tensor)`` mesh; a ``-1`` in ``shape`` fills the rest."""
  devices = list(devices) if devices is not None else jax.devices()
  resolved = resolve_mesh_shape(list(shape), len(devices))
  return jax.make_mesh(resolved, MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES
                    ) -> P:
  """Resolves logical axis ``names`` of an array of ``shape`` to a PartitionSpec."""
  table: Mapping[str, Any] = dict(rules)
  used: set[str] = set()
  spec: list[Any] = []
  for name, dim in zip(names, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
    target = table[name]
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    kept = []
    for ax in axes:
      size = mesh.shape[ax]
      if ax in used or size == 1:
        continue
      if dim % (math.prod(mesh.shape[a] for a in kept) * size):
        continue
      kept.append(ax)
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return P(*spec)


def state_specs(abstract_state: Any, mesh: Mesh) -> Any:
  """PartitionSpecs for a pytree of ``nnx.Variable`` (or arrays: replicated)."""

  def spec(x: Any) -> P:
    if isinstance(x, nnx.Variable):
      names = x.get_metadata().get("out_sharding")
      value = x.get_value()
      if names:
        return x.replace(logical_to_spec(names, value.shape, mesh))
      return x.replace(P())
    return P()

  return jax.tree.map(spec, abstract_state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


def named(specs: Any, mesh: Mesh) -> Any:
  """Maps a pytree of PartitionSpecs to NamedShardings."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch arrays ``[B, ...]``: the batch axis over (data, fsdp)."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a process-local numpy batch as global arrays sharded over the batch."""
  return {k: jax.make_array_from_process_local_data(
      batch_sharding(mesh, np.ndim(v)), np.asarray(v)) for k, v in batch.items()}


def stacked_batch_sharding(mesh: Mesh, ndim: int = 3) -> NamedSharding:
  """Stacked batches ``[S, B, ...]`` (S steps or runs): the batch axis sharded."""
  return NamedSharding(mesh, P(None, BATCH_AXES, *([None] * (ndim - 2))))


def put_stacked_batch(batches: Sequence[Mapping[str, np.ndarray]], mesh: Mesh
                      ) -> dict[str, jax.Array]:
  """Stacks S process-local batches ``[b, ...]`` into global ``[S, B, ...]``."""
  return {k: jax.make_array_from_process_local_data(
      stacked_batch_sharding(mesh, np.ndim(batches[0][k]) + 1),
      np.stack([np.asarray(b[k]) for b in batches])) for k in batches[0]}


def put_global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh
                     ) -> dict[str, jax.Array]:
  """Places a batch that every process holds in full (an eval chunk).

  Unlike :func:`put_batch` (each process passes only its own rows), the numpy
  arrays here are the whole global batch on every process; each process
  transfers only the rows its devices hold.
  """

  def put(v: np.ndarray) -> jax.Array:
    v = np.asarray(v)
    return jax.make_array_from_callback(
        v.shape, batch_sharding(mesh, v.ndim), lambda idx: v[idx])

  return {k: put(v) for k, v in batch.items()}
