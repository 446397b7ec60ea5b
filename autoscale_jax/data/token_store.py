"""Tokenize each domain once into an on-disk store; carve the held-out split.

Layout under ``<cache_dir>/tokens/``, per domain and fingerprint ``fp``
(sha256 of the domain's documents + the tokenizer fingerprint):

* ``<domain>-<fp16>.tokens.npy``: int32, every document's ids each followed
  by one EOS, concatenated in document order;
* ``<domain>-<fp16>.offsets.npy``: int64 ``[n_docs + 1]``, document ``i`` is
  ``tokens[offsets[i]:offsets[i+1]]`` (its EOS included);
* ``<domain>-<fp16>.json``: meta (fingerprints, counts). Written last, so a
  store is complete iff its meta exists. Every file goes temp + rename.

The held-out split is by document, chosen once per corpus: a deterministic
function of the domain name and the domain's document fingerprint (never of
a run's seed or mixture, nor of the tokenizer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Mapping, Sequence

import numpy as np

from autoscale_jax.data.sources import DataError
from autoscale_jax.data.tokenizers import Tokenizer

log = logging.getLogger(__name__)


def documents_fingerprint(docs: Sequence[str]) -> str:
  """sha256 over the documents (order and boundaries included)."""
  h = hashlib.sha256()
  for t in docs:
    b = t.encode("utf-8")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)
  return h.hexdigest()


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


def _atomic_save_npy(path: str, arr: np.ndarray) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npy")
  with os.fdopen(fd, "wb") as f:
    np.save(f, arr)
  os.replace(tmp, path)


def _atomic_save_json(path: str, obj) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def tokenize_domain(domain: str, docs: Sequence[str], tokenizer: Tokenizer,
                    cache_dir: str) -> DomainTokens:
  """Loads the domain's store from ``cache_dir`` or builds it once."""
  docs_fp = documents_fingerprint(docs)
  fp = hashlib.sha256(
      f"{docs_fp}:{tokenizer.fingerprint}".encode()).hexdigest()
  root = os.path.join(cache_dir, "tokens")
  os.makedirs(root, exist_ok=True)
  stem = os.path.join(root, f"{domain}-{fp[:16]}")
  meta_path = stem + ".json"
  if os.path.exists(meta_path):
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    if meta.get("fingerprint") == fp:
      tokens = np.load(stem + ".tokens.npy", mmap_mode="r")
      offsets = np.load(stem + ".offsets.npy")
      if len(tokens) == meta["num_tokens"] and len(offsets) == len(docs) + 1:
        return DomainTokens(domain, tokens, offsets, fp, docs_fp)
    log.warning("token store %s is stale or partial; rebuilding", meta_path)
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
  _atomic_save_npy(stem + ".tokens.npy", tokens)
  _atomic_save_npy(stem + ".offsets.npy", offsets)
  _atomic_save_json(meta_path, {
      "domain": domain, "fingerprint": fp, "docs_fingerprint": docs_fp,
      "tokenizer": tokenizer.fingerprint, "num_docs": len(docs),
      "num_tokens": int(len(tokens)), "seconds": round(time.time() - t0, 3)})
  log.info("tokenized %s: %d docs -> %d tokens in %.1f s", domain, len(docs),
           len(tokens), time.time() - t0)
  return DomainTokens(domain, tokens, offsets, fp, docs_fp)


def build_token_store(documents: Mapping[str, Sequence[str]],
                      tokenizer: Tokenizer, cache_dir: str
                      ) -> dict[str, DomainTokens]:
  """``{domain: DomainTokens}``, tokenizing each domain at most once."""
  return {d: tokenize_domain(d, docs, tokenizer, cache_dir)
          for d, docs in documents.items()}


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
