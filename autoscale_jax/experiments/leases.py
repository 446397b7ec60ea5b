"""Run leases on a shared POSIX filesystem: which worker trains which run.

Any number of workers share one workdir. Before training a run, a worker
claims it with a lease; while the run trains, a heartbeat renews the lease;
a worker that dies or is preempted stops renewing, its lease expires, and
another worker takes the run over (resuming from its checkpoints). The store
record is what says a run is finished: a worker that finds a run's record
never trains it, leased or not.

Layout under ``root`` (``<workdir>/leases``)::

    <run name>/<generation>.lease    {"owner", "token", "duration_s",
                                      "created"} (JSON, written once)

A run's current lease is its highest generation. The lease's expiry is its
file's modification time plus ``duration_s``; renewing a lease touches its
file (``os.utime``, which never creates a file). Every step that decides who
holds a run is one atomic filesystem operation:

* claim a free run: create generation 0 with ``O_CREAT | O_EXCL``; of two
  workers racing, exactly one create succeeds.
* take over an expired lease of generation ``g``: create generation ``g + 1``
  with ``O_EXCL`` (a compare-and-swap on the generation: one winner), then
  re-read generation ``g``'s modification time; if its holder renewed it in
  between (it was slow, not dead), the new lease is removed again and the
  holder keeps the run.
* hold: my generation's file has my token, no higher generation exists, and
  its last renewal is younger than ``duration_s``. A holder checks this on
  every renewal and right before writing the run's record, so two workers
  never both hold a run: the taker needs the old lease unrenewed for
  ``duration_s``, the old holder needs it renewed within ``duration_s``.
* release: the holder deletes its generation (and older, dead ones).

Assumptions, stated rather than hidden: workers' clocks agree to well within
``duration_s`` (NTP does that; expiry compares a file time with the reader's
clock), and the filesystem is POSIX with atomic ``O_EXCL`` create (local
disks, NFSv3+, Lustre, GPFS, Filestore). ``gs://`` workdirs use the
key-value store backend (``experiments/kv_leases.py``: generation
preconditions, and no clock agreement needed), which
``experiments/lease_tables.py`` picks (``config.run.lease_backend``); both
backends share this module's :class:`Holder`, errors, :class:`Heartbeat`
and the :class:`RunLease` / :class:`RunLeaseTable` interface.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from autoscale_jax.errors import UserError

_GENERATION_RE = re.compile(r"^(\d+)\.lease$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

Clock = Callable[[], float]


class LeaseError(UserError, ValueError):
  """Leases cannot work with the given workdir or settings."""


class LeaseLost(RuntimeError):
  """This worker's lease on a run was taken over (or expired) mid-run."""


def default_owner() -> str:
  """A worker name for humans: ``<host>-<pid>`` (tokens keep leases apart)."""
  return f"{socket.gethostname()}-{os.getpid()}"


def valid_run_name(name: str) -> bool:
  """True if ``name`` can name a run's lease (``[A-Za-z0-9_.-]+``)."""
  return bool(_NAME_RE.match(name))


def lease_root(workdir: str | os.PathLike) -> Path:
  """``<workdir>/leases`` as a local path; refuses workdirs that are URLs.

  Raises:
    LeaseError: ``workdir`` is ``gs://`` or another non-POSIX location.
  """
  text = os.fspath(workdir)
  if "://" in text:
    raise LeaseError(
        f"--workdir={text}: config.run.lease_backend='posix' needs a POSIX "
        "shared filesystem (NFS, Filestore, Lustre or a local disk); use "
        "lease_backend 'auto' or 'kvstore' for a gs:// workdir")
  return Path(text) / "leases"


def _generations(run_dir: Path) -> list[int]:
  """The lease generations present for one run, ascending."""
  try:
    names = os.listdir(run_dir)
  except FileNotFoundError:
    return []
  return sorted(int(m.group(1)) for m in map(_GENERATION_RE.match, names) if m)


def _read(path: Path) -> Optional[dict[str, Any]]:
  """A lease file's content, or None if partial (its writer died mid-write).

  Raises:
    FileNotFoundError: the lease is gone (released meanwhile).
  """
  try:
    info = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None
  return info if isinstance(info, dict) else None


@dataclasses.dataclass
class Lease:
  """One worker's claim on one run (see the module doc for the rules)."""
  name: str
  owner: str
  token: str
  generation: int
  path: Path
  duration_s: float
  clock: Clock = time.time
  renewed_at: float = 0.0  # the clock when this worker last renewed it
  taken_from: Optional[str] = None  # the expired lease's owner, on takeover

  def held(self) -> bool:
    """True while this lease is the run's current, unexpired lease."""
    try:
      info = _read(self.path)
      mtime = os.stat(self.path).st_mtime
    except FileNotFoundError:
      return False
    if not info or info.get("token") != self.token:
      return False
    if mtime + self.duration_s <= self.clock():
      return False
    gens = _generations(self.path.parent)
    return bool(gens) and gens[-1] == self.generation

  def renew(self) -> bool:
    """Extends the lease by ``duration_s`` from now; False if it was lost."""
    now = self.clock()
    try:
      os.utime(self.path, (now, now))  # never creates a released file
    except FileNotFoundError:
      return False
    self.renewed_at = now
    return self.held()

  def confirm(self) -> None:
    """Renews and raises LeaseLost unless still held (before a record write)."""
    if not self.renew():
      raise LeaseLost(f"lease on run {self.name!r} (generation "
                      f"{self.generation}) was taken over or expired")

  def release(self) -> None:
    """Deletes this lease (and older, dead generations) if still held."""
    if not self.held():
      return
    for g in _generations(self.path.parent):
      if g <= self.generation:
        try:
          os.unlink(self.path.parent / f"{g}.lease")
        except FileNotFoundError:
          pass
    try:
      os.rmdir(self.path.parent)
    except OSError:  # another worker's lease appeared, or NFS silly-renames
      pass

  def _abandon(self) -> None:
    """Removes this lease file unconditionally (a takeover that lost)."""
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a run now, as another worker sees it."""
  owner: str
  generation: int
  expires_in_s: float  # <= 0: expired, free to take over


class RunLease(Protocol):
  """What the lease fan-out uses of a lease, in either backend."""
  name: str
  generation: int  # how many takeovers led to this lease
  taken_from: Optional[str]  # the expired lease's owner, on takeover

  def held(self) -> bool:
    ...

  def renew(self) -> bool:
    ...

  def confirm(self) -> None:
    ...

  def release(self) -> None:
    ...


class RunLeaseTable(Protocol):
  """What the lease fan-out uses of a lease table, in either backend."""

  def acquire(self, name: str) -> Optional[RunLease]:
    ...

  def holder(self, name: str) -> Optional[Holder]:
    ...


class LeaseTable:
  """The leases of every run under ``root``, as one worker uses them."""

  def __init__(self, root: str | os.PathLike, owner: str, duration_s: float,
               clock: Clock = time.time):
    self.root = Path(root)
    self.owner = owner
    self.duration_s = float(duration_s)
    self.clock = clock

  def _run_dir(self, name: str) -> Path:
    if not valid_run_name(name):
      raise LeaseError(f"run name {name!r} must match [A-Za-z0-9_.-]+")
    return self.root / name

  def holder(self, name: str) -> Optional[Holder]:
    """The run's current lease, or None when nobody holds it."""
    run_dir = self._run_dir(name)
    gens = _generations(run_dir)
    if not gens:
      return None
    path = run_dir / f"{gens[-1]}.lease"
    try:
      mtime = os.stat(path).st_mtime
      info = _read(path) or {}
    except FileNotFoundError:
      return None
    duration = float(info.get("duration_s", self.duration_s))
    return Holder(owner=str(info.get("owner", "?")), generation=gens[-1],
                  expires_in_s=mtime + duration - self.clock())

  def acquire(self, name: str) -> Optional[Lease]:
    """Claims run ``name``: a new lease, or None if another worker holds it.

    A free run is claimed by an exclusive create of generation 0; an expired
    lease is taken over by an exclusive create of the next generation,
    confirmed by re-reading the expired one (module doc).
    """
    run_dir = self._run_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    gens = _generations(run_dir)
    if not gens:
      return self._create(name, 0)
    old = run_dir / f"{gens[-1]}.lease"
    try:
      seen = os.stat(old)
      info = _read(old) or {}
    except FileNotFoundError:
      return None  # released meanwhile: claim it on the next pass
    duration = float(info.get("duration_s", self.duration_s))
    if seen.st_mtime + duration > self.clock():
      return None  # held and live
    lease = self._create(name, gens[-1] + 1)
    if lease is None:
      return None  # another worker took it over first
    try:
      renewed = os.stat(old).st_mtime_ns != seen.st_mtime_ns
    except FileNotFoundError:
      renewed = False  # its holder released it: nobody else holds the run
    if renewed:  # the old holder was slow, not dead: it keeps the run
      lease._abandon()  # pylint: disable=protected-access
      return None
    lease.taken_from = str(info.get("owner", "?"))
    return lease

  def _create(self, name: str, generation: int) -> Optional[Lease]:
    """Exclusive create of one generation's file; None if it exists."""
    path = self._run_dir(name) / f"{generation}.lease"
    token = uuid.uuid4().hex
    now = self.clock()
    content = json.dumps({"owner": self.owner, "token": token,
                          "duration_s": self.duration_s, "created": now})
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except (FileExistsError, FileNotFoundError):  # taken, or dir just removed
      return None
    try:
      os.write(fd, content.encode("utf-8"))
      os.fsync(fd)
    finally:
      os.close(fd)
    os.utime(path, (now, now))
    return Lease(name=name, owner=self.owner, token=token,
                 generation=generation, path=path, duration_s=self.duration_s,
                 clock=self.clock, renewed_at=now)


def raise_in(thread: threading.Thread) -> Callable[[], None]:
  """A callable that raises :class:`LeaseLost` in ``thread``.

  The exception arrives at the thread's next Python bytecode (after a
  running XLA call returns), so a heartbeat's ``on_lost`` stops the run its
  training thread is in. It never arrives once the Heartbeat has exited.
  """
  def interrupt() -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(LeaseLost))
  return interrupt


class Heartbeat:
  """A daemon thread that renews a lease every ``interval_s`` while it runs.

  When a renewal finds the lease lost, it sets :attr:`lost` and calls
  ``on_lost`` once (from the heartbeat thread), then stops; ``on_lost`` never
  runs after the context has exited. A transient filesystem error skips one
  renewal (logged); the lease survives it as long as a later renewal
  succeeds within the lease's duration.

  Use as a context manager around the work the lease covers.
  """

  def __init__(self, lease: RunLease, interval_s: float,
               on_lost: Optional[Callable[[], None]] = None):
    self.lease = lease
    self.interval_s = float(interval_s)
    self.on_lost = on_lost
    self.lost = threading.Event()
    self._stop = threading.Event()
    self._lock = threading.Lock()  # orders on_lost before the context's exit
    self._thread = threading.Thread(
        target=self._loop, name=f"lease-heartbeat-{lease.name}", daemon=True)

  def _loop(self) -> None:
    while not self._stop.wait(self.interval_s):
      try:
        ok = self.lease.renew()
      except OSError as e:
        logging.getLogger(__name__).warning(
            "lease on %s: renewal failed (%s); retrying", self.lease.name, e)
        continue
      if ok:
        continue
      with self._lock:
        if self._stop.is_set():
          return
        self.lost.set()
        if self.on_lost is not None:
          self.on_lost()
      return

  def __enter__(self) -> Heartbeat:
    self._thread.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    with self._lock:
      self._stop.set()
    self._thread.join()
