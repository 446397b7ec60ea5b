"""Cleaning: quality filters (code and English prose) and deduplication keys.

Exact dedup hashes the normalised text (`sha256(normalise(text))`);
near-duplicates are found per domain with a one-permutation MinHash and LSH
banding (`NearDupIndex`, first seen wins).
"""

from __future__ import annotations

import hashlib
import re
import zlib

# A prose document is kept if at least this fraction of its words are
# common English stopwords (`stopword_ratio`).
PROSE_QUALITY = 0.08

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been
before being below between both but by can could did do does doing down during
each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same
she should so some such than that the their theirs them themselves then there
these they this those through thou thee thy to too under until up upon very
was we were what when where which while who whom why will with would you your
yours yourself yourselves shall may must unto
""".split())

_WORD = re.compile(r"\w+")


def stopword_ratio(text: str) -> float:
  """Fraction of word tokens that are common English stopwords."""
  words = _WORD.findall(text.lower())
  if not words:
    return 0.0
  return sum(w in STOPWORDS for w in words) / len(words)


def code_ok(text: str) -> bool:
  """RedPajama-GitHub heuristics: max line <= 1000, mean <= 100, alnum >= .25."""
  lines = text.split("\n")
  lengths = [len(l) for l in lines]
  if max(lengths) > 1000 or sum(lengths) / len(lengths) > 100:
    return False
  return sum(c.isalnum() for c in text) / max(1, len(text)) >= 0.25


def normalise(text: str) -> str:
  """Normalised form for exact dedup: lower case, single spaces."""
  return " ".join(text.lower().split())


def sha256(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------- MinHash

NUM_PERM = 128
_MASK64 = (1 << 64) - 1


def _lsh_shape(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
  """(bands, rows) whose S-curve threshold sits a bit below `threshold`."""
  target = max(0.05, threshold - 0.1)
  best = (1, num_perm)
  for r in range(1, num_perm + 1):
    if num_perm % r:
      continue
    b = num_perm // r
    if abs((1 / b) ** (1 / r) - target) < abs(
        (1 / best[0]) ** (1 / best[1]) - target):
      best = (b, r)
  return best


def minhash(text: str, n: int = 5, num_perm: int = NUM_PERM) -> tuple[int, ...]:
  """One-permutation MinHash over word n-grams (densified, deterministic)."""
  words = _WORD.findall(text.lower())
  grams = {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}
  sig = [_MASK64] * num_perm
  for g in grams:
    b = g.encode("utf-8")
    h = (zlib.crc32(b) << 32) | zlib.crc32(b, 0x9E3779B9)
    h = (h * 0x9E3779B97F4A7C15) & _MASK64
    k = h % num_perm
    if h < sig[k]:
      sig[k] = h
  filled = [i for i, v in enumerate(sig) if v != _MASK64]
  if filled and len(filled) < num_perm:  # Densify: borrow from the next bin.
    for i in range(num_perm):
      if sig[i] == _MASK64:
        j = next(f for f in filled + [filled[0] + num_perm] if f >= i)
        sig[i] = (sig[j % num_perm] + i) & _MASK64
  return tuple(sig)


class NearDupIndex:
  """Greedy LSH near-duplicate detector: first seen wins."""

  def __init__(self, threshold: float, num_perm: int = NUM_PERM):
    self.threshold = threshold
    self.bands, self.rows = _lsh_shape(threshold, num_perm)
    self.buckets: list[dict[tuple[int, ...], list[int]]] = [
        {} for _ in range(self.bands)]
    self.sigs: list[tuple[int, ...]] = []

  def add(self, text: str) -> bool:
    """Returns True if `text` is a near-duplicate of one added before."""
    sig = minhash(text)
    keys = [sig[b * self.rows:(b + 1) * self.rows] for b in range(self.bands)]
    seen: set[int] = set()
    for b, key in enumerate(keys):
      for j in self.buckets[b].get(key, ()):
        if j in seen:
          continue
        seen.add(j)
        other = self.sigs[j]
        est = sum(x == y for x, y in zip(sig, other)) / len(sig)
        if est >= self.threshold:
          return True
    idx = len(self.sigs)
    self.sigs.append(sig)
    for b, key in enumerate(keys):
      self.buckets[b].setdefault(key, []).append(idx)
    return False
