"""A fake GCS JSON API server for tensorstore's ``gcs`` driver (no network).

tensorstore's ``gcs`` KvStore driver (tensorstore 0.1.86,
``kvstore/gcs_http/gcs_key_value_store.cc``) sends its requests to
``$TENSORSTORE_GCS_HTTP_URL`` instead of https://storage.googleapis.com when
that variable is set (read when a store is opened), and with
``$GOOGLE_AUTH_TOKEN_FOR_TESTING`` set it sends that fixed bearer token
instead of looking for credentials (read once per process, by the first
request). :func:`environ` gives both; the server ignores the token.

The subset implemented, exactly the requests that driver sends (logged from
it, not guessed); object names arrive percent-encoded (``/`` as ``%2F``):

* ``GET /storage/v1/b/<bucket>/o/<object>?alt=media``: the object's bytes
  with ``x-goog-generation`` (which the driver reads the generation from),
  ``x-goog-metageneration`` and ``x-goog-hash: md5=...``. ``alt=json`` (or
  no ``alt``): its metadata as JSON. A ``Range`` header is ignored (the
  driver cuts a full reply to the range itself).
* ``POST /upload/storage/v1/b/<bucket>/o?uploadType=media&name=<object>``:
  writes the request body; replies with the new metadata.
* ``DELETE /storage/v1/b/<bucket>/o/<object>``: deletes; 204.
* ``GET /storage/v1/b/<bucket>/o``: lists, names in order, with
  ``prefix``, ``startOffset`` (inclusive), ``endOffset`` (exclusive),
  ``maxResults`` and ``pageToken``; ``{"items": [...], "nextPageToken"}``.

GCS semantics kept: every write gives the object a new generation, strictly
increasing over the whole server (int64, sent as a decimal string in JSON;
like GCS's microsecond-timestamp generations they exceed 2**32).
Preconditions ``ifGenerationMatch=N`` (``0``: the object must not exist) and,
on reads, ``ifGenerationNotMatch=N`` are checked under one lock together
with the change they guard, so concurrent conditional writes are
linearizable: a failed ``ifGenerationMatch`` is HTTP 412, a met
``ifGenerationNotMatch`` 304, a missing object 404. Buckets exist as soon as
they are named. Anything else is HTTP 400 (never 5xx, which the driver would
retry). Not implemented: metageneration preconditions, resumable and
multipart uploads, object metadata patches, bucket operations, auth.

Faults, for tests: :meth:`FakeGcsServer.lose_next_reply` carries out the
next request of a method and answers it 503 instead, as a reply lost on the
way back; the driver then retries the request.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from typing import Any, Optional

_API = ("storage", "v1", "b")
_UPLOAD = ("upload", "storage", "v1", "b")


@dataclasses.dataclass(frozen=True)
class StoredObject:
  data: bytes
  generation: int


@dataclasses.dataclass(frozen=True)
class Request:
  """One request as the server answered it (for tests to inspect)."""
  method: str
  path: str  # percent-decoded, without the query
  query: dict[str, str]
  status: int


class _Reply(Exception):
  """Ends a request with an HTTP status (and optional JSON body)."""

  def __init__(self, status: int, body: Optional[dict[str, Any]] = None):
    super().__init__(status)
    self.status = status
    self.body = body


class FakeGcsServer:
  """Buckets of objects in memory behind an HTTP server on 127.0.0.1.

  Use as a context manager (or :meth:`start` / :meth:`stop`); ``url`` is
  what ``TENSORSTORE_GCS_HTTP_URL`` must be.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._buckets: dict[str, dict[str, StoredObject]] = {}
    self._last_generation = 0
    self._lost_replies: dict[str, int] = {}
    self.requests: list[Request] = []
    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                  _handler(self))
    self._httpd.daemon_threads = True
    self._thread = threading.Thread(target=self._httpd.serve_forever,
                                    name="fake-gcs", daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._httpd.server_port}"

  def environ(self) -> dict[str, str]:
    """The environment that points tensorstore's gcs driver here."""
    return {"TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-gcs-token"}

  def start(self) -> "FakeGcsServer":
    self._thread.start()
    return self

  def stop(self) -> None:
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join()

  def __enter__(self) -> "FakeGcsServer":
    return self.start()

  def __exit__(self, *exc: Any) -> None:
    self.stop()

  # --- direct access (another client's writes, checks) ---------------------

  def get(self, bucket: str, name: str) -> Optional[StoredObject]:
    with self._lock:
      return self._buckets.get(bucket, {}).get(name)

  def put(self, bucket: str, name: str, data: bytes) -> int:
    """Writes unconditionally, as another client would; the new generation."""
    with self._lock:
      return self._store(bucket, name, data).generation

  def names(self, bucket: str) -> list[str]:
    with self._lock:
      return sorted(self._buckets.get(bucket, {}))

  def lose_next_reply(self, method: str) -> None:
    """The next ``method`` request is carried out but answered 503."""
    with self._lock:
      self._lost_replies[method] = self._lost_replies.get(method, 0) + 1

  # --- the API ----------------------------------------------------------------

  def _store(self, bucket: str, name: str, data: bytes) -> StoredObject:
    # Timestamp-like, and strictly increasing even within one microsecond.
    self._last_generation = max(self._last_generation + 1,
                                time.time_ns() // 1000)
    stored = StoredObject(data, self._last_generation)
    self._buckets.setdefault(bucket, {})[name] = stored
    return stored

  def handle(self, method: str, raw_path: str,
             body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Answers one request: (status, headers, body)."""
    path, _, raw_query = raw_path.partition("?")
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(
        raw_query, keep_blank_values=True).items()}
    parts = tuple(urllib.parse.unquote(p) for p in path.strip("/").split("/"))
    with self._lock:
      try:
        status, headers, reply = self._route(method, parts, query, body)
      except _Reply as r:
        status, headers = r.status, {}
        reply = json.dumps(r.body or {"error": {"code": r.status}}).encode()
        if r.body is None and r.status == 304:
          reply = b""
      if self._lost_replies.get(method):
        self._lost_replies[method] -= 1
        status, headers, reply = 503, {}, b'{"error": {"code": 503}}'
      self.requests.append(Request(method, "/".join(parts), query, status))
    return status, headers, reply

  def _route(self, method: str, parts: tuple[str, ...], query: dict[str, str],
             body: bytes) -> tuple[int, dict[str, str], bytes]:
    if parts[:3] == _API and len(parts) == 5 and parts[4] == "o":
      if method == "GET":
        return self._list(parts[3], query)
    elif parts[:3] == _API and len(parts) == 6 and parts[4] == "o":
      if method == "GET":
        return self._read(parts[3], parts[5], query)
      if method == "DELETE":
        return self._delete(parts[3], parts[5], query)
    elif parts[:4] == _UPLOAD and len(parts) == 6 and parts[5] == "o":
      if method == "POST" and query.get("uploadType") == "media":
        return self._write(parts[4], query.get("name", ""), query, body)
    raise _Reply(400, {"error": {"code": 400, "message": (
        f"fake GCS does not implement {method} /{'/'.join(parts)} {query}")}})

  def _check(self, current: Optional[StoredObject],
             query: dict[str, str]) -> None:
    generation = current.generation if current else 0
    if "ifGenerationMatch" in query:
      if int(query["ifGenerationMatch"]) != generation:
        raise _Reply(412)
    if "ifGenerationNotMatch" in query:
      if int(query["ifGenerationNotMatch"]) == generation:
        raise _Reply(304)

  def _metadata(self, bucket: str, name: str,
                stored: StoredObject) -> dict[str, str]:
    return {"kind": "storage#object", "bucket": bucket, "name": name,
            "generation": str(stored.generation), "metageneration": "1",
            "size": str(len(stored.data)),
            "md5Hash": base64.b64encode(
                hashlib.md5(stored.data).digest()).decode()}

  def _json(self, value: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(
        value).encode()

  def _read(self, bucket: str, name: str,
            query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    stored = self._buckets.get(bucket, {}).get(name)
    if stored is None:
      raise _Reply(404)
    self._check(stored, query)
    metadata = self._metadata(bucket, name, stored)
    if query.get("alt") != "media":
      return self._json(metadata)
    return 200, {"Content-Type": "application/octet-stream",
                 "x-goog-generation": metadata["generation"],
                 "x-goog-metageneration": metadata["metageneration"],
                 "x-goog-hash": f"md5={metadata['md5Hash']}"}, stored.data

  def _write(self, bucket: str, name: str, query: dict[str, str],
             body: bytes) -> tuple[int, dict[str, str], bytes]:
    if not name:
      raise _Reply(400)
    self._check(self._buckets.get(bucket, {}).get(name), query)
    return self._json(self._metadata(bucket, name,
                                     self._store(bucket, name, body)))

  def _delete(self, bucket: str, name: str,
              query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    objects = self._buckets.get(bucket, {})
    if name not in objects:
      raise _Reply(404)
    self._check(objects[name], query)
    del objects[name]
    return 204, {}, b""

  def _list(self, bucket: str,
            query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    objects = self._buckets.get(bucket, {})
    prefix, start = query.get("prefix", ""), query.get("startOffset", "")
    end, after = query.get("endOffset"), query.get("pageToken")
    page = int(query.get("maxResults", "1000"))
    names = [n for n in sorted(objects)
             if n.startswith(prefix) and n >= start
             and (end is None or n < end) and (after is None or n > after)]
    reply: dict[str, Any] = {"kind": "storage#objects", "items": [
        self._metadata(bucket, n, objects[n]) for n in names[:page]]}
    if len(names) > page:
      reply["nextPageToken"] = names[page - 1]
    return self._json(reply)


def _handler(server: FakeGcsServer) -> type:

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as curl expects
    disable_nagle_algorithm = True  # else each reply waits ~40 ms for an ACK

    def _any(self) -> None:
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length) if length else b""
      status, headers, reply = server.handle(self.command, self.path, body)
      self.send_response(status)
      for k, v in headers.items():
        self.send_header(k, v)
      if status not in (204, 304):
        self.send_header("Content-Length", str(len(reply)))
      self.end_headers()
      if status not in (204, 304):
        self.wfile.write(reply)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _any

    def log_message(self, *args: Any) -> None:
      pass

  return Handler
