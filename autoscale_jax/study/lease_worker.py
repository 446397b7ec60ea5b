"""Lease fan-out of the DDO runs: any number of workers, one shared workdir.

With ``--stage=ddo --worker=NAME`` a worker loops over every planned run of
every budget until each has a store record: it reuses a recorded run, claims
a free one with a lease (``experiments/leases.py`` on a POSIX filesystem, or
``experiments/kv_leases.py`` on gs:// or any kvstore, chosen by
``config.run.lease_backend``) and trains it while a
heartbeat renews the lease, and waits while the remaining runs are leased by
live workers. A worker that dies or is preempted stops renewing; after
``config.run.lease_seconds`` another worker takes its run over and resumes it
from the run's checkpoints. Workers can join or leave at any time; the run
record is written only after the lease is confirmed, so each run is recorded
once.

A worker whose lease is taken over mid-run (it stalled past the lease's
duration) stops that run: the heartbeat raises :class:`leases.LeaseLost` in
the training thread. On a multi-process slice (one JAX program over several
hosts) process 0 holds the leases and broadcasts each choice; there a lost
lease cannot stop one process alone (the others would wait in a collective)
nor let the slice go on writing the run's checkpoints beside the new holder,
so process 0 exits (status 75) and the slice's other processes fail at
their next collective: restart the slice to rejoin.

Runs are trained one at a time here (no swarm): a worker claims one run per
lease, so the runs spread over the workers.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any, Callable, Optional

import jax

from autoscale_jax import distributed
from autoscale_jax.experiments import lease_tables
from autoscale_jax.experiments import leases
from autoscale_jax.study import console
from autoscale_jax.study import core

_WAIT = -1  # every run left is leased by a live worker
_DONE = -2  # every run has a record


@dataclasses.dataclass(frozen=True)
class Job:
  """One planned run and how the stage trains it (``Study.train_or_load``)."""
  name: str
  tokens: dict[str, int]
  seed: int
  label: str
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def worker_name(option: str) -> str:
  """The lease owner name of ``--worker=option`` (``auto``: host-pid)."""
  return leases.default_owner() if option in ("", "auto") else option


class _Claims:
  """Process 0's side: which run to train next, with the leases it holds."""

  def __init__(self, study: core.Study, jobs: list[Job],
               table: leases.RunLeaseTable):
    self.study = study
    self.jobs = jobs
    self.table = table
    self.done = [False] * len(jobs)
    self.held: dict[int, leases.RunLease] = {}

  def _recorded(self, job: Job) -> bool:
    fp = self.study.fingerprint(job.name, job.tokens, job.seed)
    return self.study.record(job.name, fp) is not None

  def next(self) -> int:
    """The index of the next run to train or reuse, or _WAIT / _DONE."""
    for i, job in enumerate(self.jobs):
      if self.done[i]:
        continue
      if self._recorded(job):
        return i
      lease = self.table.acquire(job.name)
      if lease is None:
        continue
      if self._recorded(job):  # finished and released since the check above
        lease.release()
        return i
      self.held[i] = lease
      return i
    return _DONE if all(self.done) else _WAIT

  def waiting(self) -> tuple[list[str], str]:
    """The runs this worker waits for, and a line saying who holds them."""
    names, parts = [], []
    for i, job in enumerate(self.jobs):
      if self.done[i]:
        continue
      h = self.table.holder(job.name)
      names.append(job.name)
      parts.append(f"{job.name} ({h.owner}, lease expires in "
                   f"{max(0.0, h.expires_in_s):.0f}s)" if h else job.name)
    return names, ("waiting for runs leased by other workers: " +
                   ", ".join(parts[:4]) + (" ..." if len(parts) > 4 else ""))


def train_all(study: core.Study, jobs: list[Job]) -> None:
  """Trains or reuses every run of ``jobs`` under leases; returns when all
  of them have a store record (trained here or by any other worker)."""
  c = study.config
  owner = worker_name(study.options.worker or "")
  primary = distributed.is_primary()
  multi = jax.process_count() > 1
  claims = (_Claims(study, jobs, lease_tables.open_table(
      str(study.layout.root), owner, float(c.run.lease_seconds),
      backend=c.run.lease_backend)) if primary else None)
  heartbeat_s = float(c.run.heartbeat_seconds)
  console.say(f"lease worker {owner}: {len(jobs)} DDO runs, lease "
              f"{float(c.run.lease_seconds):g}s, heartbeat {heartbeat_s:g}s")
  waited_for: list[str] = []
  while True:
    i = distributed.broadcast_int(claims.next() if claims else 0)
    if i == _DONE:
      return
    if i == _WAIT:
      if claims:
        names, line = claims.waiting()
        if names != waited_for:
          console.say(f"lease worker {owner}: {line}")
        waited_for = names
      time.sleep(heartbeat_s)
      continue
    waited_for = []
    lease = claims.held.pop(i, None) if claims else None
    if _train_one(study, jobs[i], lease, heartbeat_s, multi) and claims:
      claims.done[i] = True


def _exit_slice(job: Job) -> Callable[[], None]:
  """on_lost of a multi-process slice: process 0 exits (module doc)."""
  def stop() -> None:
    console.say(f"{job.label}: lease on {job.name} lost (another worker took "
                "the run over after this slice stalled past the lease); "
                "process 0 exits so the slice stops (exit status 75)")
    os._exit(75)  # pylint: disable=protected-access
  return stop


def _train_one(study: core.Study, job: Job, lease: Optional[leases.RunLease],
               heartbeat_s: float, multi: bool) -> bool:
  """Trains (or reuses) one run; False if its lease was lost mid-run."""
  if lease is not None and lease.taken_from is not None:
    console.say(f"{job.label}: took over {job.name} from {lease.taken_from} "
                "(its lease expired); resuming from its checkpoints")

  def still_held() -> None:
    held = lease.renew() if lease is not None else True
    if not distributed.agree(held):
      raise leases.LeaseLost(f"lease on {job.name} lost before its record")

  if lease is None and not multi:  # a recorded run: reuse it
    study.train_or_load(job.name, job.tokens, job.seed, label=job.label,
                        **job.kwargs)
    return True
  on_lost = (_exit_slice(job) if multi else
             leases.raise_in(threading.current_thread()))
  try:
    if lease is None:  # another process of this slice holds the lease
      study.train_or_load(job.name, job.tokens, job.seed, label=job.label,
                          before_record=still_held, **job.kwargs)
    else:
      with leases.Heartbeat(lease, heartbeat_s, on_lost=on_lost):
        study.train_or_load(job.name, job.tokens, job.seed, label=job.label,
                            before_record=still_held, **job.kwargs)
  except leases.LeaseLost:
    console.say(f"{job.label}: lease on {job.name} lost (another worker took "
                "the run over after this one stalled past the lease); "
                "stopped it here")
    return False
  if lease is not None:
    lease.release()
  return True
