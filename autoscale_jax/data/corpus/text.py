"""Text utilities for extraction: decode, split, pack, strip markup.

Documents are capped at `MAX_DOC_CHARS` (split at paragraph breaks); short
units (dictionary entries, FAQ answers) are packed to at least `PACK_CHARS`.
"""

from __future__ import annotations

import bz2
import gzip
import re
from pathlib import Path
from typing import Iterable, Sequence

from autoscale_jax.data.corpus.domains import Doc

MAX_DOC_CHARS = 100_000
PACK_CHARS = 3_000


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
