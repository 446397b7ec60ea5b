"""Which lease backend a workdir's run leases use, and opening its table.

``config.run.lease_backend`` chooses:

* ``posix``: ``experiments/leases.py``, lease files under ``<workdir>/leases``
  on a shared POSIX filesystem (exclusive creates, file times; workers'
  clocks must agree).
* ``kvstore``: ``experiments/kv_leases.py``, one object per run in a
  tensorstore KvStore with generation preconditions; only clock rates must
  agree. ``gs://bucket/path`` is the ``gcs`` driver at ``path/leases/``; a
  local path is the ``file`` driver at ``<workdir>/leases/``.
* ``auto`` (the default): ``kvstore`` for ``gs://``, ``posix`` for a path.

All workers of one workdir must use the same backend: the two keep their
leases apart and do not see each other's.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from autoscale_jax.experiments import leases

BACKENDS = ("auto", "posix", "kvstore")


def _fix(workdir: str) -> str:
  return (f"--workdir={workdir}: run leases need a gs:// bucket or a shared "
          "POSIX filesystem (NFS, Filestore, Lustre or a local disk)")


def backend_of(workdir: str, backend: str) -> str:
  """The backend (``posix`` or ``kvstore``) that ``workdir`` uses.

  Raises:
    LeaseError: ``backend`` is unknown, or ``workdir`` is a URL that
      ``backend`` cannot reach (``posix`` on ``gs://``; any other scheme).
  """
  if backend not in BACKENDS:
    raise leases.LeaseError(
        f"config.run.lease_backend={backend!r}: must be one of {BACKENDS}")
  if "://" in workdir and not workdir.startswith("gs://"):
    raise leases.LeaseError(
        _fix(workdir) + "; use one of those, or the static share "
        "--worker_index/--num_workers")
  if backend == "posix" and workdir.startswith("gs://"):
    leases.lease_root(workdir)  # raises its one-line error
  if backend == "auto":
    return "kvstore" if workdir.startswith("gs://") else "posix"
  return backend


def kvstore_spec(workdir: str) -> dict[str, Any]:
  """The tensorstore KvStore spec of ``<workdir>/leases/``.

  ``gs://bucket/path`` is ``{'driver': 'gcs', 'bucket': 'bucket', 'path':
  'path/leases/'}``; a local path is the ``file`` driver (absolute path).

  Raises:
    LeaseError: ``workdir`` is another URL, or ``gs://`` without a bucket.
  """
  if workdir.startswith("gs://"):
    bucket, _, path = workdir[len("gs://"):].partition("/")
    if not bucket:
      raise leases.LeaseError(
          f"--workdir={workdir}: a gs:// workdir needs a bucket, e.g. "
          "gs://my-bucket/study")
    path = path.strip("/")
    return {"driver": "gcs", "bucket": bucket,
            "path": f"{path}/leases/" if path else "leases/"}
  if "://" in workdir:
    raise leases.LeaseError(_fix(workdir))
  return {"driver": "file",
          "path": os.path.join(os.path.abspath(workdir), "leases") + "/"}


def open_table(workdir: str, owner: str, duration_s: float,
               backend: str = "auto",
               clock: Optional[leases.Clock] = None) -> leases.RunLeaseTable:
  """The lease table of ``workdir`` for worker ``owner``.

  Args:
    workdir: the study's workdir (a path or ``gs://bucket/path``).
    owner: this worker's name.
    duration_s: how long a lease lasts past its last renewal.
    backend: ``config.run.lease_backend`` (module doc).
    clock: the table's clock; default ``time.time`` for ``posix`` (file
      times are wall-clock times) and ``time.monotonic`` for ``kvstore``.

  Raises:
    LeaseError: as :func:`backend_of`, or the store cannot be opened.
  """
  workdir = os.fspath(workdir)
  if backend_of(workdir, backend) == "posix":
    return leases.LeaseTable(leases.lease_root(workdir), owner, duration_s,
                             clock=clock or time.time)
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  from autoscale_jax.experiments import kv_leases  # pylint: disable=g-import-not-at-top
  spec = kvstore_spec(workdir)
  try:
    kvstore = ts.KvStore.open(spec).result()
  except ValueError as e:
    raise leases.LeaseError(
        f"--workdir={workdir}: cannot open the lease store {spec}: "
        f"{str(e).splitlines()[0]}; check the path or bucket and its "
        "credentials") from e
  return kv_leases.KvLeaseTable(kvstore, owner, duration_s,
                                clock=clock or time.monotonic)
