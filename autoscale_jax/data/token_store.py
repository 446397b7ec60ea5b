"""Tokenize each domain once into an on-disk store; carve the held-out split.

Layout under ``<cache_dir>/tokens/`` (a local path or ``gs://...``), per
domain and fingerprint ``fp`` (sha256 of the domain's documents + the
tokenizer fingerprint):

* ``<domain>-<fp16>.tokens.npy``: int32, every document's ids each followed
  by one EOS, concatenated in document order;
* ``<domain>-<fp16>.offsets.npy``: int64 ``[n_docs + 1]``, document ``i`` is
  ``tokens[offsets[i]:offsets[i+1]]`` (its EOS included);
* ``<domain>-<fp16>.json``: meta (fingerprints, counts and, per array file,
  its size, sha256 and the sha256 of every :data:`BLOCK_BYTES` block).
  Written last, so a store is complete iff its meta exists (the completion
  marker other processes wait for). Every file goes temp + rename.

Integrity: every load checks both files' sizes against the meta (a stat) and
the hashes of a few blocks (the first, the last and two random ones: a few
MiB read, well under a second at 1e9 tokens); ``verify`` (``python -m
autoscale_jax.data.token_store verify WORKDIR``) checks every block. A store
that fails is rebuilt from the documents when they are at hand, else named
in a one-line :class:`TokenCacheError`.

Remote stores (``gs://``) are copied once into a local directory keyed by the
file's sha256 (:func:`local_cache_dir`) and memory-mapped from there.

The corpus identity comes from a manifest (:func:`source_manifest`): the
domain's files with the sizes and versions (checksum, generation or mtime)
the filesystem reports, no byte read. The first build records, under
``<cache_dir>/manifests/``, which document fingerprint and document count
that file list has, so later starts, stages and processes know the store's
name without reading the raw text.

The held-out split is by document, chosen once per corpus: a deterministic
function of the domain name and the domain's document fingerprint (never of
a run's seed or mixture, nor of the tokenizer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from autoscale_jax import fileio
from autoscale_jax.data.sources import DataError
from autoscale_jax.data.tokenizers import Tokenizer

log = logging.getLogger(__name__)

FORMAT = 2  # meta with per-file sizes and block hashes
BLOCK_BYTES = 1 << 20
SAMPLED_BLOCKS = 2  # random blocks checked on load, besides first and last
ARRAYS = ("tokens", "offsets")
WAIT_ENV = "AUTOSCALE_JAX_CACHE_WAIT_S"
LOCAL_CACHE_ENV = "AUTOSCALE_JAX_LOCAL_CACHE"


class TokenCacheError(DataError):
  """A token cache file that is missing, truncated or corrupt (names it)."""


def documents_fingerprint(docs: Sequence[str]) -> str:
  """sha256 over the documents (order and boundaries included)."""
  h = hashlib.sha256()
  for t in docs:
    b = t.encode("utf-8")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)
  return h.hexdigest()


def store_fingerprint(docs_fingerprint: str, tokenizer_fingerprint: str
                      ) -> str:
  """The store's fingerprint: documents + tokenizer (the data fingerprint)."""
  return hashlib.sha256(
      f"{docs_fingerprint}:{tokenizer_fingerprint}".encode()).hexdigest()


@dataclasses.dataclass
class DomainTokens:
  """One domain's tokenized documents (arrays may be read-only memmaps)."""
  domain: str
  tokens: np.ndarray  # int32 [T], EOS after every document
  offsets: np.ndarray  # int64 [n_docs + 1]
  fingerprint: str  # documents + tokenizer
  docs_fingerprint: str  # documents only

  @property
  def num_docs(self) -> int:
    return len(self.offsets) - 1

  def doc(self, i: int) -> np.ndarray:
    return self.tokens[self.offsets[i]:self.offsets[i + 1]]

  def gather(self, doc_ids: Sequence[int]) -> np.ndarray:
    """Concatenated tokens (each with its EOS) of ``doc_ids``, in that order."""
    if len(doc_ids) == 0:
      return np.zeros([0], np.int32)
    return np.concatenate([self.doc(int(i)) for i in doc_ids]).astype(
        np.int32, copy=False)


# ----------------------------------------------------------------- manifests


def source_manifest(domain: str, files: Sequence[str]) -> dict[str, Any]:
  """The identity of a domain's raw files from the filesystem alone.

  ``{"domain", "files": [{"path", "size", "version"}], "key"}``; ``key`` is
  the sha256 of the rest. No file content is read.
  """
  entries = [{"path": str(p), **fileio.file_version(p)} for p in files]
  body = {"domain": domain, "files": entries}
  key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
  return {**body, "key": key}


def _manifest_path(cache_dir: str, domain: str, key: str) -> str:
  return fileio.join(cache_dir, "manifests", f"{domain}-{key[:16]}.json")


def read_corpus_identity(cache_dir: str, manifest: Mapping[str, Any]
                         ) -> dict[str, Any] | None:
  """``{"docs_fingerprint", "num_docs"}`` recorded for ``manifest``, or None."""
  path = _manifest_path(cache_dir, manifest["domain"], manifest["key"])
  if not fileio.exists(path):
    return None
  try:
    rec = fileio.read_json(path)
  except (ValueError, UnicodeDecodeError):
    log.warning("corpus manifest %s is unreadable; re-reading the data", path)
    return None
  if rec.get("key") != manifest["key"]:
    return None
  return {"docs_fingerprint": rec["docs_fingerprint"],
          "num_docs": int(rec["num_docs"])}


def write_corpus_identity(cache_dir: str, manifest: Mapping[str, Any],
                          docs_fingerprint: str, num_docs: int) -> None:
  """Records that ``manifest``'s files hold documents ``docs_fingerprint``."""
  fileio.atomic_write_json(
      _manifest_path(cache_dir, manifest["domain"], manifest["key"]),
      {**manifest, "docs_fingerprint": docs_fingerprint,
       "num_docs": int(num_docs)})


def _last_path(cache_dir: str, domain: str, spec_key: str) -> str:
  return fileio.join(cache_dir, "manifests",
                     f"{domain}-last-{spec_key[:16]}.json")


def read_last_identity(cache_dir: str, domain: str, spec_key: str
                       ) -> dict[str, Any] | None:
  """The identity last recorded for a source spec (its files may be gone)."""
  path = _last_path(cache_dir, domain, spec_key)
  if not fileio.exists(path):
    return None
  try:
    rec = fileio.read_json(path)
    return {"docs_fingerprint": rec["docs_fingerprint"],
            "num_docs": int(rec["num_docs"])}
  except (ValueError, KeyError, TypeError, UnicodeDecodeError):
    return None


def write_last_identity(cache_dir: str, domain: str, spec_key: str,
                        identity: Mapping[str, Any]) -> None:
  """Records ``identity`` as the last one of a source spec (when it changed)."""
  if read_last_identity(cache_dir, domain, spec_key) != dict(identity):
    fileio.atomic_write_json(_last_path(cache_dir, domain, spec_key),
                             dict(identity))


def _wait_timeout_s() -> float:
  return float(os.environ.get(WAIT_ENV, 3600))


def wait_for_file(path: str, what: str) -> None:
  """Waits until process 0 has written ``path`` (a completion marker)."""
  deadline = time.time() + _wait_timeout_s()
  delay = 0.05
  while not fileio.exists(path):
    if time.time() > deadline:
      raise TokenCacheError(
          f"waited {_wait_timeout_s():.0f} s for process 0 to write {what} "
          f"({path}); check process 0's log (or raise ${WAIT_ENV})")
    time.sleep(delay)
    delay = min(delay * 2, 2.0)


def wait_for_identity(cache_dir: str, manifest: Mapping[str, Any]
                      ) -> dict[str, Any]:
  """Waits for process 0 to record ``manifest``'s identity; returns it."""
  wait_for_file(_manifest_path(cache_dir, manifest["domain"], manifest["key"]),
                f"the corpus manifest of domain {manifest['domain']!r}")
  ident = read_corpus_identity(cache_dir, manifest)
  if ident is None:
    raise TokenCacheError(
        f"the corpus manifest of domain {manifest['domain']!r} in {cache_dir} "
        "does not match this process's file list; every process must see "
        "the same data files")
  return ident


# ------------------------------------------------------------- store files


def _stem(cache_dir: str, domain: str, fp: str) -> str:
  return fileio.join(cache_dir, "tokens", f"{domain}-{fp[:16]}")


def _file(stem: str, name: str) -> str:
  return f"{stem}.{name}.npy"


def _npy_bytes(arr: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, arr)
  return buf.getvalue()


def _block_hashes(data: bytes, block_bytes: int) -> list[str]:
  return [hashlib.sha256(data[s:s + block_bytes]).hexdigest()[:16]
          for s in range(0, max(len(data), 1), block_bytes)]


def local_cache_dir() -> str:
  """Where remote token files are copied (``$AUTOSCALE_JAX_LOCAL_CACHE``)."""
  return os.environ.get(LOCAL_CACHE_ENV) or os.path.join(
      tempfile.gettempdir(), "autoscale_jax_token_cache")


def _local_file(path: str, info: Mapping[str, Any]) -> str:
  """A local path holding ``path``'s bytes (a copy keyed by its sha256)."""
  if not fileio.is_remote(path):
    return path
  local = os.path.join(local_cache_dir(), f"{info['sha256'][:32]}.npy")
  if not (os.path.exists(local) and os.path.getsize(local) == info["size"]):
    fileio.copy_to_local(path, local)
  return local


def _check_blocks(path: str, local: str, info: Mapping[str, Any],
                  block_bytes: int, blocks: Sequence[int]) -> None:
  """Raises TokenCacheError if a block of ``local`` differs from the meta."""
  with open(local, "rb") as f:
    for b in blocks:
      f.seek(b * block_bytes)
      got = hashlib.sha256(f.read(block_bytes)).hexdigest()[:16]
      if got != info["blocks"][b]:
        raise TokenCacheError(
            f"token cache file {path} is corrupt (block {b} of "
            f"{len(info['blocks'])} differs from its checksum); delete it to "
            "rebuild the cache")


def _sampled_blocks(n: int) -> list[int]:
  picks = {0, n - 1}
  picks.update(secrets.randbelow(n) for _ in range(SAMPLED_BLOCKS))
  return sorted(picks)


def load_domain(cache_dir: str, domain: str, fp: str, docs_fp: str, *,
                full_check: bool = False) -> DomainTokens | None:
  """The store of ``domain`` at fingerprint ``fp``; None if not built (yet).

  Checks both files' sizes and a sample of blocks (all blocks with
  ``full_check``) against the meta.

  Raises:
    TokenCacheError: the store exists but a file is missing, truncated,
      corrupt or was built without checksums (an older version).
  """
  stem = _stem(cache_dir, domain, fp)
  meta_path = stem + ".json"
  if not fileio.exists(meta_path):
    return None
  try:
    meta = fileio.read_json(meta_path)
  except (ValueError, UnicodeDecodeError):
    raise TokenCacheError(f"token cache meta {meta_path} is not valid JSON; "
                          "delete it to rebuild the cache") from None
  if meta.get("fingerprint") != fp:
    return None
  if meta.get("format") != FORMAT:
    raise TokenCacheError(f"token cache {meta_path} has no checksums (built "
                          "by an older version); delete it to rebuild")
  arrays = {}
  for name in ARRAYS:
    path, info = _file(stem, name), meta["files"][name]
    if not fileio.exists(path):
      raise TokenCacheError(f"token cache file {path} is missing; delete "
                            f"{meta_path} to rebuild the cache")
    size = fileio.file_size(path)
    if size != info["size"]:
      raise TokenCacheError(
          f"token cache file {path} has {size} bytes, its meta says "
          f"{info['size']} (truncated or overwritten); delete it to rebuild "
          "the cache")
    n = len(info["blocks"])
    blocks = range(n) if full_check else _sampled_blocks(n)
    local = _local_file(path, info)
    try:
      _check_blocks(path, local, info, int(meta["block_bytes"]), blocks)
    except TokenCacheError:
      if local == path:
        raise
      os.remove(local)  # a bad local copy: copy the remote file again
      local = _local_file(path, info)
      _check_blocks(path, local, info, int(meta["block_bytes"]), blocks)
    arrays[name] = np.load(local, mmap_mode="r")
  tokens, offsets = arrays["tokens"], np.asarray(arrays["offsets"])
  if len(tokens) != meta["num_tokens"] or len(offsets) != meta["num_docs"] + 1:
    raise TokenCacheError(f"token cache {meta_path} disagrees with its "
                          "arrays; delete it to rebuild the cache")
  return DomainTokens(domain, tokens, offsets, fp, docs_fp)


def build_domain(domain: str, docs: Sequence[str], tokenizer: Tokenizer,
                 cache_dir: str, docs_fp: str | None = None) -> DomainTokens:
  """Tokenizes ``docs`` and writes the store (meta last); returns it."""
  docs_fp = docs_fp or documents_fingerprint(docs)
  fp = store_fingerprint(docs_fp, tokenizer.fingerprint)
  stem = _stem(cache_dir, domain, fp)
  t0 = time.time()
  eos = np.asarray([tokenizer.eos_id], np.int32)
  pieces = []
  lengths = np.zeros(len(docs), np.int64)
  chunk = 256
  for s in range(0, len(docs), chunk):
    for j, ids in enumerate(tokenizer.encode_batch(docs[s:s + chunk])):
      pieces.append(ids)
      pieces.append(eos)
      lengths[s + j] = len(ids) + 1
  tokens = (np.concatenate(pieces).astype(np.int32) if pieces
            else np.zeros([0], np.int32))
  offsets = np.zeros(len(docs) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  files = {}
  for name, arr in (("tokens", tokens), ("offsets", offsets)):
    data = _npy_bytes(arr)
    fileio.atomic_write_bytes(_file(stem, name), data)
    files[name] = {"size": len(data),
                   "sha256": hashlib.sha256(data).hexdigest(),
                   "blocks": _block_hashes(data, BLOCK_BYTES)}
  fileio.atomic_write_json(stem + ".json", {
      "format": FORMAT, "domain": domain, "fingerprint": fp,
      "docs_fingerprint": docs_fp, "tokenizer": tokenizer.fingerprint,
      "num_docs": len(docs), "num_tokens": int(len(tokens)),
      "block_bytes": BLOCK_BYTES, "files": files,
      "seconds": round(time.time() - t0, 3)})
  log.info("tokenized %s: %d docs -> %d tokens in %.1f s", domain, len(docs),
           len(tokens), time.time() - t0)
  return DomainTokens(domain, tokens, offsets, fp, docs_fp)


def wait_for_domain(cache_dir: str, domain: str, fp: str, docs_fp: str
                    ) -> DomainTokens:
  """Waits until process 0 has built (or rebuilt) the store, then loads it."""
  deadline = time.time() + _wait_timeout_s()
  delay = 0.05
  while True:
    try:
      dt = load_domain(cache_dir, domain, fp, docs_fp)
    except TokenCacheError:
      dt = None  # being rebuilt by process 0
    if dt is not None:
      return dt
    if time.time() > deadline:
      raise TokenCacheError(
          f"waited {_wait_timeout_s():.0f} s for process 0 to write the token "
          f"cache {_stem(cache_dir, domain, fp)}.json; check process 0's log "
          f"(or raise ${WAIT_ENV})")
    time.sleep(delay)
    delay = min(delay * 2, 2.0)


def tokenize_domain(domain: str, docs: Sequence[str], tokenizer: Tokenizer,
                    cache_dir: str) -> DomainTokens:
  """Loads the domain's store from ``cache_dir`` or builds it once.

  A store that fails its checks is rebuilt (with a warning).
  """
  docs_fp = documents_fingerprint(docs)
  fp = store_fingerprint(docs_fp, tokenizer.fingerprint)
  try:
    dt = load_domain(cache_dir, domain, fp, docs_fp)
  except TokenCacheError as e:
    log.warning("%s; rebuilding it", e)
    dt = None
  if dt is not None and dt.num_docs == len(docs):
    return dt
  return build_domain(domain, docs, tokenizer, cache_dir, docs_fp)


def build_token_store(documents: Mapping[str, Sequence[str]],
                      tokenizer: Tokenizer, cache_dir: str
                      ) -> dict[str, DomainTokens]:
  """``{domain: DomainTokens}``, tokenizing each domain at most once."""
  return {d: tokenize_domain(d, docs, tokenizer, cache_dir)
          for d, docs in documents.items()}


def verify(cache_dir: str) -> list[str]:
  """Checks every block of every store in ``cache_dir``; returns the problems.

  Each problem is one line naming the file. Stores without checksums (older
  versions) are reported too.
  """
  root = fileio.join(cache_dir, "tokens")
  problems = []
  for name in fileio.listdir(root):
    if not name.endswith(".json") or name.startswith("."):
      continue
    meta_path = fileio.join(root, name)
    try:
      meta = fileio.read_json(meta_path)
      fp, domain = meta["fingerprint"], meta["domain"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
      problems.append(f"token cache meta {meta_path} is not valid; delete it "
                      "to rebuild the cache")
      continue
    try:
      load_domain(cache_dir, domain, fp, meta.get("docs_fingerprint", ""),
                  full_check=True)
    except TokenCacheError as e:
      problems.append(str(e))
  return problems


def heldout_doc_ids(domain: str, num_docs: int, heldout_docs: int,
                    docs_fingerprint: str) -> np.ndarray:
  """Sorted ids of the held-out documents of one domain (fixed per corpus).

  Raises DataError if the domain would keep no training document.
  """
  if num_docs <= heldout_docs:
    raise DataError(
        f"domain {domain!r} has {num_docs} documents but config.data."
        f"heldout_docs={heldout_docs} are held out, leaving none to train on; "
        "lower data.heldout_docs or add documents")
  digest = hashlib.sha256(
      f"heldout:{domain}:{docs_fingerprint}".encode()).digest()
  rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
  return np.sort(rng.choice(num_docs, size=heldout_docs, replace=False))


def split_train_heldout(dt: DomainTokens, heldout_docs: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(training stream, held-out stream, held-out doc ids) of one domain.

  Both streams are their documents' ids, each followed by EOS, concatenated
  in document order.
  """
  held = heldout_doc_ids(dt.domain, dt.num_docs, heldout_docs,
                         dt.docs_fingerprint)
  mask = np.ones(dt.num_docs, bool)
  mask[held] = False
  train_ids = np.nonzero(mask)[0]
  return dt.gather(train_ids), dt.gather(held), held


def main(argv: Sequence[str]) -> int:
  """``python -m autoscale_jax.data.token_store verify WORKDIR|CACHE_DIR``."""
  if len(argv) != 3 or argv[1] != "verify":
    print("usage: python -m autoscale_jax.data.token_store verify "
          "WORKDIR_OR_CACHE_DIR", file=sys.stderr)
    return 2
  target = argv[2]
  cache_dir = (fileio.join(target, "cache")
               if fileio.isdir(fileio.join(target, "cache", "tokens"))
               else target)
  if not fileio.isdir(fileio.join(cache_dir, "tokens")):
    print(f"error: no token cache in {target} (expected {target}/cache/tokens "
          f"or {target}/tokens); give the study's --workdir or its "
          "config.data.cache_dir", file=sys.stderr)
    return 2
  problems = verify(cache_dir)
  stores = sum(1 for n in fileio.listdir(fileio.join(cache_dir, "tokens"))
               if n.endswith(".json") and not n.startswith("."))
  for p in problems:
    print(f"error: {p}", file=sys.stderr)
  if problems:
    return 2
  print(f"token cache {cache_dir}: {stores} stores, every block matches its "
        "checksum")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
