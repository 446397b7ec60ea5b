"""Multi-host start-up on JAX's own runtime, process-0 helpers, proxy fan-out.

Past one host the stack runs on ``jax.distributed`` (one controller process per
host). :func:`maybe_initialize` starts it only when the environment says the
job spans several processes; a single-host run never touches it.

Signals, first match wins (``env`` is ``os.environ`` unless given):

* ``AUTOSCALE_DISTRIBUTED=0`` turns it off; ``=1`` turns it on with JAX's
  automatic cluster detection (``launch/tpu_vm.sh run`` exports ``=1``: on a
  GCE TPU VM the worker list lives in the metadata server, not in env vars,
  and JAX reads it there; on a single-host TPU VM this yields one process).
* explicit ``coordinator_address`` or ``num_processes > 1`` arguments
  (``main.py`` flags), or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES``.
* TPU metadata in the environment: ``TPU_WORKER_HOSTNAMES`` or
  ``TPU_PROCESS_ADDRESSES`` listing more than one host, any
  ``MEGASCALE_COORDINATOR_ADDRESS`` / ``MEGASCALE_NUM_SLICES > 1`` (multislice),
  or ``CLOUD_TPU_TASK_ID``.

Proxy fan-out is separate, over independent workers (slices or hosts) that
share only the workdir: either the lease fan-out (``--worker=NAME``,
``study/lease_worker.py``: any number of workers claim runs with leases and
take over a dead worker's run), or the static share :func:`worker_share`
(round-robin over the sorted run names, ``--worker_index/--num_workers``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable, Iterable, Mapping, Optional, Sequence, TypeVar

import jax
import numpy as np

T = TypeVar("T")
R = TypeVar("R")

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  """Outcome of :func:`maybe_initialize`.

  Attributes:
    initialized: ``jax.distributed`` is running (started now or earlier).
    process_index: this process's index (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).
    reason: which signal decided, e.g. ``"TPU_WORKER_HOSTNAMES"`` or
      ``"single-process"``.
  """

  initialized: bool
  process_index: int
  process_count: int
  reason: str

  @property
  def is_primary(self) -> bool:
    """True on process 0, the only one that writes records and reports."""
    return self.process_index == 0


def _hosts(value: str) -> int:
  return len([h for h in value.split(",") if h.strip()])


def multihost_reason(
    env: Optional[Mapping[str, str]] = None,
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
) -> Optional[str]:
  """Returns the signal that makes this a multi-process job, or None.

  Pure (reads ``env`` only), so it can be tested without starting anything.
  ``AUTOSCALE_DISTRIBUTED=0`` returns None whatever else is set.
  """
  env = os.environ if env is None else env
  switch = env.get("AUTOSCALE_DISTRIBUTED", "").strip().lower()
  if switch in _OFF:
    return None
  if switch in _ON:
    return "AUTOSCALE_DISTRIBUTED"
  if switch:
    raise ValueError(
        f"AUTOSCALE_DISTRIBUTED={switch!r}: expected 1/0 (true/false)")
  if coordinator_address:
    return "coordinator_address"
  if num_processes is not None and num_processes > 1:
    return "num_processes"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if int(env.get("JAX_NUM_PROCESSES", "1") or "1") > 1:
    return "JAX_NUM_PROCESSES"
  for key in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
    if _hosts(env.get(key, "")) > 1:
      return key
  if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "MEGASCALE_COORDINATOR_ADDRESS"
  if int(env.get("MEGASCALE_NUM_SLICES", "1") or "1") > 1:
    return "MEGASCALE_NUM_SLICES"
  if env.get("CLOUD_TPU_TASK_ID"):
    return "CLOUD_TPU_TASK_ID"
  return None


def _enable_cpu_collectives() -> None:
  """Cross-process collectives on CPU devices (gloo); no effect on TPU/GPU."""
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except AttributeError:  # jax < 0.4.32 spelled it differently.
    jax.config.update("jax_cpu_enable_gloo_collectives", True)


def maybe_initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    initialization_timeout: int = 300,
    env: Optional[Mapping[str, str]] = None,
) -> DistributedInfo:
  """Starts ``jax.distributed`` when the environment says multi-host.

  Must run before anything touches a JAX backend (``jax.devices()``, any
  computation). Idempotent: a second call returns the current state. Missing
  ``num_processes``/``process_id`` are read from ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID`` and otherwise auto-detected by JAX (TPU, Slurm, MPI).

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator.
    num_processes: total number of processes.
    process_id: this process's index in ``[0, num_processes)``.
    initialization_timeout: seconds to wait for all processes to connect.
    env: environment to read instead of ``os.environ`` (tests).

  Returns:
    A :class:`DistributedInfo`.
  """
  env = os.environ if env is None else env
  if jax.distributed.is_initialized():
    return DistributedInfo(True, jax.process_index(), jax.process_count(),
                           "already-initialized")
  reason = multihost_reason(env, coordinator_address, num_processes)
  if reason is None:
    return DistributedInfo(False, 0, 1, "single-process")
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  _enable_cpu_collectives()
  logging.info("jax.distributed.initialize (%s): coordinator=%s n=%s id=%s",
               reason, coordinator_address, num_processes, process_id)
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=initialization_timeout,
  )
  return DistributedInfo(True, jax.process_index(), jax.process_count(),
                         reason)


def is_primary() -> bool:
  """True on process 0 (``jax.process_index() == 0``)."""
  return jax.process_index() == 0


def primary_only(fn: Callable[..., R]) -> Callable[..., Optional[R]]:
  """Wraps ``fn`` so it runs on process 0 only; other processes get None.

  For side effects that must happen once (records, reports, logs). Do not wrap
  anything that contains collectives or orbax saves: those must run on every
  process.
  """

  @functools.wraps(fn)
  def wrapper(*args, **kwargs) -> Optional[R]:
    if not is_primary():
      return None
    return fn(*args, **kwargs)

  return wrapper


def worker_share(items: Iterable[T], worker_index: int,
                 num_workers: int) -> list[T]:
  """The items worker ``worker_index`` of ``num_workers`` is responsible for.

  Deterministic round-robin over the sorted, de-duplicated items (run names),
  so every worker computes the same split from the same plan without talking
  to the others, and each item goes to exactly one worker.

  Raises:
    ValueError: if ``num_workers < 1`` or ``worker_index`` is out of range.
  """
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or (
      num_workers < 1):
    raise ValueError(f"num_workers={num_workers!r}: must be an int >= 1")
  if isinstance(worker_index, bool) or not isinstance(worker_index, int) or not (
      0 <= worker_index < num_workers):
    raise ValueError(f"worker_index={worker_index!r}: must be an int in "
                     f"[0, {num_workers})")
  ordered: Sequence[T] = sorted(set(items))  # type: ignore[type-var]
  return list(ordered[worker_index::num_workers])


def write_once(name: str, fn: Callable[[], R]) -> Optional[R]:
  """Runs the write ``fn`` on process 0, then waits for every process.

  The barrier (``multihost_utils.sync_global_devices``) makes sure no process
  reads a file before process 0 has written it. Single-process: just ``fn()``.
  """
  result = fn() if is_primary() else None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"autoscale_jax:{name}")
  return result


def agree(flag: bool) -> bool:
  """Process 0's ``flag`` on every process (a decision all must share).

  For choices made from local measurements (timings) that select which
  collective program runs next: every process must take the same branch.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def broadcast_int(value: int) -> int:
  """Process 0's ``value`` on every process (e.g. which run to train next).

  For decisions only process 0 can make (it alone holds the lease fan-out's
  leases) that every process must follow, since all of them train together.
  """
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(
      np.asarray(value, dtype=np.int32)))
