"""Run leases on a key-value store with compare-and-swap (GCS, files, memory).

The second lease backend of the lease fan-out (``experiments/leases.py`` is
the first, on a POSIX filesystem): the same rules, one object per run in a
tensorstore KvStore (``tensorstore.KvStore``), whose drivers all write
conditionally on a storage generation: ``gcs``
(``x-goog-if-generation-match``), ``file`` (a lock file next to the key;
safe across processes) and ``memory``. :func:`lease_tables.open_table`
picks the backend for a workdir (``config.run.lease_backend``).

Layout under the store's root (``<workdir>/leases/``)::

    <run name>.lease    {"owner", "token", "duration_s", "created",
                         "renewals", "generation"} (JSON)

Every write that decides who holds a run is one compare-and-swap (CAS): a
write conditional on the object's current storage generation (``if_equal``),
which the store applies only if nobody wrote the object since; of several
writers racing on one generation exactly one succeeds.

* claim a free run: read it (missing), then CAS-create it conditional on the
  missing read's generation ("no value").
* a write whose reply was lost: the ``gcs`` driver retries a request that
  got no reply (or a 5xx); if the first attempt landed, the retry fails its
  precondition and the write reports failure. So a failed claim, renewal or
  release reads the object back, and an object with this lease's token (a
  fresh random one per lease) is this lease's own write.
* renew: CAS-rewrite my lease (``renewals + 1``) conditional on the
  generation my last write produced. Success gives a new generation; failure
  means another worker took the run over: the lease is lost.
* expiry, without comparing clocks: each worker's table remembers, per run,
  the generation (and content) it last read and its own monotonic clock
  right after the read that first showed it. A lease is expired *for this
  observer* once it has seen the same generation unchanged for the holder's
  ``duration_s`` of its own clock. :meth:`KvLeaseTable.holder` reports
  ``expires_in_s`` from that observation.
* take over an expired lease: CAS-write my lease conditional on the observed
  generation. A holder that renewed in the meantime changed the generation,
  so the takeover fails and the slow holder keeps the run; of two takers,
  one wins.
* hold: my last successful renewal started less than ``duration_s`` ago on
  my own clock, and the object still has my lease. A holder checks this on
  every renewal and right before writing the run's record (``confirm``).
* release: a conditional delete on my generation; it never deletes another
  worker's lease.

Why two workers never both hold a run: let the holder's last successful
renewal start at holder time ``h`` and produce generation ``G``, which the
store applied at real time ``W >= h``. An observer first saw ``G`` in a read
that ended at its time ``o``, and that read ran after ``W``. The observer
takes over only when its clock shows ``o + duration_s``; the holder stops
counting itself holding when its clock shows ``h + duration_s``. If both
clocks run at the same *rate*, the takeover comes after ``W + duration_s >=
h + duration_s``, when the holder has already stopped. So only clock rates
need agree (any two quartz clocks do, to about 1e-4), never their offsets:
wall-clock time, NTP and time zones play no part (the ``created`` field is
for humans). A takeover that races with a renewal is decided by the CAS:
one of the two writes fails. Observations are per table: a restarted
worker waits a full ``duration_s`` before taking a run over, which is only
slower, never unsafe.

As with the POSIX backend, a holder that stalls for longer than
``duration_s`` between its ``confirm`` and the record's write could see its
record written beside the new holder's; ``duration_s`` well above any pause
keeps that away. The ``file`` driver's generation is the file's device,
inode and modification time; a rewrite within one timestamp tick that reuses
a freed inode could repeat an older generation, which the content check of
an observation catches for reads and which heartbeats seconds apart never
produce. GCS takes about one write per second to one object, far more
than a heartbeat every ``config.run.heartbeat_seconds`` needs.

Tested (tests/test_kv_leases.py) on the ``memory``, ``file`` and ``gcs``
drivers; ``gcs`` is tensorstore's real driver talking HTTP to
tests/fake_gcs_server.py, an in-memory server of the GCS JSON API subset it
uses. Real GCS is never reached from the tests.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from typing import Any, Optional

import tensorstore as ts

from autoscale_jax.errors import UserError
from autoscale_jax.experiments import leases

Clock = leases.Clock


class KvStoreError(UserError, OSError):
  """A read or write of the lease store failed (transient or not).

  An OSError, so the heartbeat retries it; a UserError, so one that reaches
  the command line is one line naming the store, not a traceback.
  """


def _result(future: Any, what: str) -> Any:
  """The future's result; a store failure becomes :class:`KvStoreError`."""
  try:
    return future.result()
  except ValueError as e:  # tensorstore reports I/O failures as ValueError
    reason = " ".join(str(e).split())  # one line
    raise KvStoreError(f"lease store: {what} failed: {reason} (check that the "
                       "workdir's bucket or directory exists and can be "
                       "written from here)") from e


def _cas(kvstore: ts.KvStore, key: str, value: Optional[bytes],
         if_equal: bytes, what: str) -> bytes:
  """Writes (``value=None``: deletes) ``key`` only if its storage generation
  is still ``if_equal``; the new generation, or b"" if the condition failed.

  An empty ``if_equal`` would make the write unconditional, so it is refused.
  """
  if not if_equal:
    raise ValueError(f"lease store: {what}: no generation to write on")
  written = _result(kvstore.write(key, value, if_equal=if_equal), what)
  return written.generation


def _parse(value: bytes) -> dict[str, Any]:
  """A lease object's JSON content ({} when unreadable)."""
  try:
    info = json.loads(value.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError):
    return {}
  return info if isinstance(info, dict) else {}


def _duration(info: dict[str, Any], default: float) -> float:
  """The lease's ``duration_s`` (``default`` when absent or malformed)."""
  try:
    duration = float(info.get("duration_s", default))
  except (TypeError, ValueError):
    return default
  return duration if duration > 0 else default


def _generation(info: dict[str, Any]) -> int:
  """How many takeovers led to this lease (0: claimed while free)."""
  g = info.get("generation", 0)
  return g if isinstance(g, int) and not isinstance(g, bool) else 0


@dataclasses.dataclass
class KvLease:
  """One worker's claim on one run in a KvStore (module doc for the rules).

  Attributes:
    generation: how many takeovers led to this lease (0: claimed while free),
      as :class:`leases.Lease` numbers its generations.
    stamp: the storage generation of this worker's last write of the lease.
    renewed_at: the clock when this worker's last successful write started.
  """
  name: str
  owner: str
  token: str
  generation: int
  duration_s: float
  kvstore: ts.KvStore
  key: str
  stamp: bytes
  created: float
  clock: Clock = time.monotonic
  renewed_at: float = 0.0
  renewals: int = 0
  taken_from: Optional[str] = None
  _lock: threading.Lock = dataclasses.field(
      default_factory=threading.Lock, repr=False, compare=False)

  def content(self, renewals: int) -> bytes:
    """The lease object's JSON after ``renewals`` renewals."""
    return json.dumps({
        "owner": self.owner, "token": self.token,
        "duration_s": self.duration_s, "created": self.created,
        "renewals": renewals, "generation": self.generation}).encode("utf-8")

  def _fresh(self) -> bool:
    return self.clock() - self.renewed_at < self.duration_s

  def _adopt_mine(self) -> bool:
    """Re-reads the object; True (and its stamp adopted) if it is my lease.

    Only this lease writes its token, so an object with it is this lease as
    last written by me, e.g. by a write whose reply was lost.
    """
    read = _result(self.kvstore.read(self.key), f"reading {self.key}")
    if read.state != "value":
      return False
    info = _parse(read.value)
    if info.get("token") != self.token:
      return False
    self.stamp = read.stamp.generation
    renewals = info.get("renewals", self.renewals)
    self.renewals = renewals if isinstance(renewals, int) else self.renewals
    return True

  def held(self) -> bool:
    """True while this lease is the run's lease and fresh on my clock."""
    with self._lock:
      if not self._fresh():
        return False
      read = _result(self.kvstore.read(self.key), f"reading {self.key}")
      if read.state == "value" and read.stamp.generation == self.stamp:
        return True
      return self._adopt_mine()

  def renew(self) -> bool:
    """Extends the lease by ``duration_s`` from now; False if it was lost.

    Raises:
      KvStoreError: the store could not be reached (an OSError, which the
        heartbeat retries).
    """
    with self._lock:
      for _ in range(2):  # a second try after adopting my own lost write
        start = self.clock()
        written = _cas(self.kvstore, self.key,
                       self.content(self.renewals + 1), self.stamp,
                       f"renewing {self.key}")
        if written:
          self.stamp = written
          self.renewals += 1
          self.renewed_at = start
          return self._fresh()
        if not self._adopt_mine():
          return False
      return False

  def confirm(self) -> None:
    """Renews and raises LeaseLost unless still held (before a record write)."""
    if not self.renew():
      raise leases.LeaseLost(f"lease on run {self.name!r} (generation "
                             f"{self.generation}) was taken over or expired")

  def release(self) -> None:
    """Deletes this lease if it is still the run's lease (a CAS delete)."""
    with self._lock:
      for _ in range(2):
        deleted = _cas(self.kvstore, self.key, None, self.stamp,
                       f"releasing {self.key}")
        if deleted or not self._adopt_mine():
          return


class KvLeaseTable:
  """The leases of every run in one KvStore, as one worker uses them.

  Args:
    kvstore: the open store; keys are ``<run name>.lease``.
    owner: this worker's name (for humans; tokens keep leases apart).
    duration_s: how long a lease lasts past its last renewal.
    clock: a monotonic clock (seconds); only its rate matters.
    wall_clock: the ``created`` time written into leases, for humans.
  """

  def __init__(self, kvstore: ts.KvStore, owner: str, duration_s: float,
               clock: Clock = time.monotonic, wall_clock: Clock = time.time):
    self.kvstore = kvstore
    self.owner = owner
    self.duration_s = float(duration_s)
    self.clock = clock
    self.wall_clock = wall_clock
    # run name -> ((storage generation, content), clock when first seen)
    self._seen: dict[str, tuple[tuple[bytes, bytes], float]] = {}

  def _key(self, name: str) -> str:
    if not leases.valid_run_name(name):
      raise leases.LeaseError(f"run name {name!r} must match [A-Za-z0-9_.-]+")
    return f"{name}.lease"

  def _read(self, name: str) -> tuple[Any, float]:
    """The run's object and how long this table has seen it unchanged.

    The time is taken after the read returns: the read saw a generation
    written before then, so the observation never starts too early.
    """
    key = self._key(name)
    read = _result(self.kvstore.read(key), f"reading {key}")
    now = self.clock()
    if read.state != "value":
      self._seen.pop(name, None)
      return read, 0.0
    seen = (read.stamp.generation, read.value)
    previous = self._seen.get(name)
    if previous is None or previous[0] != seen:
      self._seen[name] = (seen, now)
      return read, 0.0
    return read, now - previous[1]

  def holder(self, name: str) -> Optional[leases.Holder]:
    """The run's current lease, or None when nobody holds it.

    ``expires_in_s`` is this table's view: the holder's duration less how
    long this table has seen the lease unchanged.
    """
    read, unchanged_for = self._read(name)
    if read.state != "value":
      return None
    info = _parse(read.value)
    return leases.Holder(
        owner=str(info.get("owner", "?")), generation=_generation(info),
        expires_in_s=_duration(info, self.duration_s) - unchanged_for)

  def acquire(self, name: str) -> Optional[KvLease]:
    """Claims run ``name``: a new lease, or None if another worker holds it.

    A free run is claimed by a CAS on the missing object's generation; a
    lease this table has seen unchanged for its duration is taken over by a
    CAS on that generation (module doc).
    """
    read, unchanged_for = self._read(name)
    if read.state != "value":
      return self._write(name, read.stamp.generation, 0, taken_from=None)
    info = _parse(read.value)
    if unchanged_for < _duration(info, self.duration_s):
      return None  # held and live, as far as this table has seen
    return self._write(name, read.stamp.generation, _generation(info) + 1,
                       taken_from=str(info.get("owner", "?")))

  def _write(self, name: str, if_equal: bytes, generation: int,
             taken_from: Optional[str]) -> Optional[KvLease]:
    """A CAS write of a new lease on ``if_equal``; None if it lost.

    A failed write is read back: the object may hold this lease's token
    after all, written by an attempt whose reply was lost (the lease then
    holds, counted from this write's start, as a renewal would).
    """
    lease = KvLease(
        name=name, owner=self.owner, token=uuid.uuid4().hex,
        generation=generation, duration_s=self.duration_s,
        kvstore=self.kvstore, key=self._key(name), stamp=b"",
        created=self.wall_clock(), clock=self.clock, taken_from=taken_from)
    start = self.clock()
    written = _cas(self.kvstore, lease.key, lease.content(0), if_equal,
                   f"claiming {lease.key}")
    if written:
      lease.stamp = written
    elif not lease._adopt_mine():  # pylint: disable=protected-access
      return None  # another worker claimed or renewed it first
    # else: my write landed but its reply was lost (the gcs driver retried
    # it, and the retry failed its precondition); my token is there.
    lease.renewed_at = start
    return lease
