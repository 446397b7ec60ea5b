"""File primitives over ``etils.epath``: local paths and gs:// alike.

Every file the data layer, the token cache, the store and the report touch
goes through these functions, so a ``gs://`` workdir or data path never
reaches ``os`` (no local directory named ``gs:``) and every remote call is
retried the same way:

* writes are atomic (a unique temp file next to the target, then a rename);
* reads are whole-file for small files (:func:`read_text`, :func:`read_bytes`)
  or streamed line by line (:func:`open_lines`, ``.gz`` decompressed on the
  fly);
* a call that fails with a *transient* error (:func:`is_transient`: a timeout,
  a dropped connection, EIO/EAGAIN, HTTP 408/429/5xx from a cloud client) is
  retried with exponential backoff (:data:`RETRY`); when the attempts are
  spent it raises :class:`StorageError`, one line naming the path. Other
  errors (a missing file, a permission error) are raised at once, unchanged.
"""

from __future__ import annotations

import dataclasses
import errno
import glob as glob_lib
import gzip
import io
import json
import logging
import os
import random
import re
import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

from etils import epath

from autoscale_jax import errors

log = logging.getLogger(__name__)

R = TypeVar("R")
Path = epath.Path
PathLike = epath.PathLike


class StorageError(errors.UserError, OSError):
  """A storage call that kept failing with transient errors (names the path)."""


@dataclasses.dataclass
class RetryPolicy:
  """How often and how long a transient storage error is retried.

  Attributes:
    attempts: calls in all (1 = no retry).
    initial_delay_s: the first wait; each next wait doubles (with jitter).
    max_delay_s: the longest single wait.
  """
  attempts: int = 6
  initial_delay_s: float = 0.5
  max_delay_s: float = 16.0


RETRY = RetryPolicy()

_TRANSIENT_ERRNOS = frozenset({
    errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.ECONNRESET,
    errno.ECONNABORTED, errno.ECONNREFUSED, errno.ENETDOWN,
    errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTUNREACH, errno.EPIPE,
    errno.EBUSY})
# Retryable classes of clients that may sit under epath (tf.io.gfile, gcsfs,
# google-cloud-storage / api_core, aiohttp), matched by class name so none of
# them has to be installed.
_TRANSIENT_CLASS_NAMES = frozenset({
    "UnavailableError", "DeadlineExceededError", "AbortedError",  # tf.errors
    "ResourceExhaustedError",
    "ServiceUnavailable", "TooManyRequests", "InternalServerError",  # api_core
    "GatewayTimeout", "BadGateway", "DeadlineExceeded", "RetryError",
    "TransportError",  # google.auth
    "FSTimeoutError",  # fsspec
    "ClientConnectionError", "ServerDisconnectedError",  # aiohttp
    "ClientPayloadError", "ServerTimeoutError",
})
_TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(e: BaseException) -> bool:
  """True for storage errors worth retrying (the call may succeed again).

  Transient: ``ConnectionError``, ``TimeoutError``, an ``OSError`` whose errno
  is EIO, ETIMEDOUT, EAGAIN, EBUSY or a network error, the retryable classes
  of tf.io.gfile / google-cloud / gcsfs / fsspec / aiohttp, and an
  ``HttpError`` (gcsfs) with status 408, 429 or 5xx. Everything else (a
  missing file, a permission error, a bug) is not.
  """
  if isinstance(e, (ConnectionError, TimeoutError)):
    return True
  if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
    return True
  names = {c.__name__ for c in type(e).__mro__}
  if names & _TRANSIENT_CLASS_NAMES:
    return True
  if "HttpError" in names:
    code = getattr(e, "code", None) or getattr(e, "status", None)
    return code in _TRANSIENT_HTTP_CODES
  return False


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def retrying(what: str, path: PathLike, fn: Callable[[], R]) -> R:
  """``fn()``, retried with exponential backoff while it fails transiently.

  Args:
    what: the operation, for messages (e.g. ``"write"``).
    path: the file it touches, named in the error.
    fn: the call.

  Raises:
    StorageError: after ``RETRY.attempts`` transient failures.
  """
  delay = RETRY.initial_delay_s
  attempts = max(1, int(RETRY.attempts))
  for attempt in range(1, attempts + 1):
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if not is_transient(e):
        raise
      if attempt == attempts:
        raise StorageError(
            f"{what} {path} failed {attempts} times with a transient storage "
            f"error (last: {_one_line(e)}); check the storage and the "
            "connection, then run the same command again (finished work is "
            "kept)") from None
      log.warning("%s %s failed (%s); retry %d of %d in %.1f s", what, path,
                  _one_line(e), attempt, attempts - 1, delay)
      time.sleep(delay * random.uniform(0.5, 1.0))
      delay = min(delay * 2, RETRY.max_delay_s)
  raise AssertionError("unreachable")


def is_remote(path: PathLike) -> bool:
  """True for a URI path (``gs://``, ``s3://``, ...), False for a local one."""
  return "://" in os.fspath(path)


def join(*parts: PathLike) -> str:
  """The parts joined as a path string (URI-safe: never ``os.path``)."""
  return os.fspath(Path(*parts))


def exists(path: PathLike) -> bool:
  p = Path(path)
  return retrying("stat", p, p.exists)


def isdir(path: PathLike) -> bool:
  p = Path(path)
  return retrying("stat", p, p.is_dir)


def isfile(path: PathLike) -> bool:
  p = Path(path)
  return retrying("stat", p, lambda: p.exists() and not p.is_dir())


def makedirs(path: PathLike) -> Path:
  """Creates ``path`` and its parents (no-op when it exists)."""
  p = Path(path)
  retrying("mkdir", p, lambda: p.mkdir(parents=True, exist_ok=True))
  return p


def listdir(path: PathLike) -> list[str]:
  """Names in directory ``path``, sorted (empty if it does not exist)."""
  p = Path(path)

  def names():
    if not p.exists():
      return []
    return sorted(c.name for c in p.iterdir())
  return retrying("list", p, names)


_GLOB_CHARS = re.compile(r"[*?\[]")


def glob(pattern: PathLike) -> list[str]:
  """Paths matching ``pattern`` (``**`` spans directories), sorted.

  Local patterns go through :mod:`glob` (recursive); remote ones through the
  path's filesystem, from the last directory before the first wildcard.
  """
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern), recursive=True))
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  first = next((i for i, s in enumerate(parts) if _GLOB_CHARS.search(s)),
               None)
  if first is None:
    return [pattern] if exists(pattern) else []
  base = Path(f"{scheme}://" + "/".join(parts[:first]))
  rel = "/".join(parts[first:])
  if "**" not in rel:
    return retrying("list", base,
                    lambda: sorted(os.fspath(p) for p in base.glob(rel)))
  # epath refuses a remote "**"; one listing below the base, then a match.
  if not isdir(base):
    return []
  matcher = _glob_regex(rel)
  prefix = os.fspath(base).rstrip("/") + "/"
  return [f for f in walk_files(base) if matcher.fullmatch(f[len(prefix):])]


def _glob_regex(pattern: str) -> re.Pattern:
  """A glob (``**`` any directories, ``*``/``?`` within one) as a regex."""
  out, i = [], 0
  while i < len(pattern):
    if pattern.startswith("**/", i):
      out.append("(?:.*/)?")
      i += 3
    elif pattern.startswith("**", i):
      out.append(".*")
      i += 2
    elif pattern[i] == "*":
      out.append("[^/]*")
      i += 1
    elif pattern[i] == "?":
      out.append("[^/]")
      i += 1
    elif pattern[i] == "[" and "]" in pattern[i + 2:]:
      end = pattern.index("]", i + 2)
      body = pattern[i + 1:end]
      out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!")
                 else "[" + re.escape(body) + "]")
      i = end + 1
    else:
      out.append(re.escape(pattern[i]))
      i += 1
  return re.compile("".join(out))


def walk_files(path: PathLike) -> list[str]:
  """Every file below directory ``path`` (recursively), sorted."""
  p = Path(path)
  scheme = os.fspath(p).split("://", 1)[0] + "://" if is_remote(p) else ""

  def files():
    out = []
    for root, _, names in p.walk():
      root = os.fspath(root)
      if scheme and not is_remote(root):  # fsspec drops the protocol
        root = scheme + root
      out.extend(os.fspath(Path(root) / n) for n in names)
    return sorted(out)
  return retrying("list", p, files)


def remove(path: PathLike, missing_ok: bool = True) -> None:
  """Deletes the file ``path``."""
  p = Path(path)

  def rm():
    if missing_ok and not p.exists():
      return
    p.unlink()
  retrying("delete", p, rm)


def read_bytes(path: PathLike) -> bytes:
  p = Path(path)
  return retrying("read", p, p.read_bytes)


def read_text(path: PathLike) -> str:
  p = Path(path)
  return retrying("read", p, p.read_text)


def read_json(path: PathLike) -> Any:
  """The JSON in ``path`` (json errors propagate for the caller to name)."""
  return json.loads(read_text(path))


def file_size(path: PathLike) -> int:
  p = Path(path)
  if not is_remote(p):
    return os.path.getsize(p)
  return retrying("stat", p, lambda: int(p.stat().length))


def file_version(path: PathLike) -> dict[str, Any]:
  """What the filesystem says identifies this file's content, without reading it.

  ``{"size": bytes, "version": str}``; the version is the object's checksum
  or generation where the filesystem keeps one (GCS md5/crc32c/generation,
  S3 ETag), else its modification time (local: in nanoseconds).
  """
  p = Path(path)
  if not is_remote(p):
    st = os.stat(p)
    return {"size": int(st.st_size), "version": f"mtime_ns:{st.st_mtime_ns}"}

  def info():
    details = _fsspec_info(p)
    for key in ("md5Hash", "crc32c", "generation", "ETag", "etag", "md5",
                "checksum"):
      if details.get(key):
        return {"size": int(details.get("size", 0)),
                "version": f"{key}:{details[key]}"}
    st = p.stat()
    stamp = details.get("mtime") or details.get("updated") or details.get(
        "created") or st.mtime
    if hasattr(stamp, "isoformat"):
      stamp = stamp.isoformat()
    return {"size": int(st.length), "version": f"mtime:{stamp}"}
  return retrying("stat", p, info)


def _fsspec_info(p: Path) -> dict[str, Any]:
  """fsspec's ``info`` of ``p`` when epath reaches it through fsspec, else {}."""
  backend = getattr(p, "_backend", None)
  fs = getattr(backend, "fs", None)
  if fs is None:
    return {}
  return dict(fs(os.fspath(p)).info(os.fspath(p)))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
  """Writes ``data`` to a unique temp file next to ``path``, then renames it.

  Readers see the old file or the new one, never a partial one; concurrent
  writers never share a temp file. Transient failures are retried.
  """
  path = Path(path)

  def write():
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
      tmp.write_bytes(data)
      tmp.replace(path)
    finally:
      if tmp.exists():
        tmp.unlink()
  retrying("write", path, write)
  return path


def atomic_write_text(path: PathLike, text: str) -> Path:
  """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
  """Atomically writes ``obj`` as indented, key-sorted, NaN-free JSON."""
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True,
                                            allow_nan=False) + "\n")


def open_lines(path: PathLike) -> Iterator[str]:
  """The lines of a text file (``.gz``: decompressed), streamed, in UTF-8.

  Only the open is retried; an error mid-stream propagates (the caller names
  the line). Memory stays bounded by the longest line.
  """
  p = Path(path)
  raw = retrying("open", p, lambda: p.open("rb"))
  with raw:
    stream = gzip.GzipFile(fileobj=raw) if os.fspath(p).endswith(".gz") \
        else raw
    with io.TextIOWrapper(stream, encoding="utf-8", newline=None) as text:
      yield from text


def copy_to_local(path: PathLike, local: PathLike) -> str:
  """Copies ``path`` to the local file ``local`` (atomically); returns it."""
  src, local = Path(path), os.fspath(local)
  os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
  tmp = f"{local}.tmp-{uuid.uuid4().hex}"

  def copy():
    try:
      with src.open("rb") as f, open(tmp, "wb") as out:
        while chunk := f.read(1 << 24):
          out.write(chunk)
      os.replace(tmp, local)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  retrying("read", src, copy)
  return local
