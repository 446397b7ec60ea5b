"""Tests for the embedded corpus builder (no network, no apt, seconds)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pytest

from autoscale_jax.data import corpus as C
from autoscale_jax.data.corpus import build, clean, extract, readers
from autoscale_jax.errors import UserError

WORDS = ("the of and to in a is that it for on with as was he by at from this "
         "river mountain quiet stone letter garden window morning silver road "
         "captain kernel buffer packet license court judge novel chapter "
         "evening village harbour lantern promise thunder orchard meadow").split()


def prose(seed: int, n_words: int = 300) -> str:
  rng = random.Random(seed)
  lines, line = [], []
  for i in range(n_words):
    line.append(rng.choice(WORDS))
    if len(line) == 12:
      lines.append(" ".join(line) + ".")
      line = []
    if i % 120 == 119:
      lines.append("")
  lines.append(" ".join(line))
  return "\n".join(lines).strip()


def fake_tree(tmp: Path) -> C.Fetched:
  """A tiny fake of the extracted packages for qa, wiki and code."""
  perl = tmp / "perl-doc"
  pod = perl / "usr/share/perl/5.36.0/pod"
  pod.mkdir(parents=True)
  (pod / "perlfaq1.pod").write_text("=head1 NAME\n\nperlfaq1\n\n" + "".join(
      f"=head2 Question {i}?\n\n{prose(i)}\n\n" for i in range(6)))
  (pod / "perlfaq2.pod").write_text(  # Exact duplicate of a perlfaq1 part.
      "=head1 NAME\n\nperlfaq1\n\n" + "".join(
          f"=head2 Question {i}?\n\n{prose(i)}\n\n" for i in range(6)))
  git = tmp / "git-doc"
  (git / "usr/share/doc/git-doc").mkdir(parents=True)
  (git / "usr/share/doc/git-doc/gitfaq.txt").write_text(
      "gitfaq(7)\n=========\n\n" + "".join(
          f"[[q{i}]]\nWhy {i}?::\n{prose(100 + i)}\n\n" for i in range(4)) +
      "[[short]]\nShort?::\nno.\n")
  jargon = tmp / "jargon-text"
  (jargon / "usr/share/doc/jargon-text").mkdir(parents=True)
  (jargon / "usr/share/doc/jargon-text/jargon.txt.gz").write_bytes(
      gzip.compress("\n\n".join(prose(200 + i, 2000) for i in range(3)).encode()))
  stdlib = tmp / "stdlib"
  (stdlib / "pkg").mkdir(parents=True)
  for i in range(3):
    body = "".join(f"def f{i}_{j}(x):\n  return x + {j}  # add {j}\n\n"
                   for j in range(30))
    (stdlib / "pkg" / f"m{i}.py").write_text(body)
  (stdlib / "pkg" / "wide.py").write_text("x = '" + "a" * 1500 + "'\n")
  (stdlib / "site-packages").mkdir()
  (stdlib / "site-packages" / "ignored.py").write_text("y = 1\n" * 500)
  roots = {"perl-doc": perl, "git-doc": git, "jargon-text": jargon,
           "python-stdlib": stdlib}
  versions = {"perl-doc": "5.36-fake", "git-doc": "2.39-fake",
              "jargon-text": "4.4-fake", "python-stdlib": "3.11-fake"}
  return C.Fetched(roots, versions, {}, {"deb": "no apt (test)"})


# -------------------------------------------------------------------- filters

def test_filters():
  assert C.code_ok("def f(x):\n  return x\n" * 50)
  assert not C.code_ok("x = '" + "a" * 1200 + "'\n")
  assert not C.code_ok(("y" * 150 + "\n") * 10)  # Mean line > 100.
  assert not C.code_ok("{}[]();:.,+-*/ \n" * 100)  # Alnum fraction < 0.25.
  assert C.stopword_ratio(prose(0)) > 0.3
  assert C.stopword_ratio("Der Hund und die Katze sind im Haus") < 0.08
  assert C.normalise("A  b\n\tC") == "a b c"


def test_split_and_pack():
  text = "\n\n".join(prose(i, 200) for i in range(20))
  parts = C.split_paragraphs(text, limit=3000)
  assert all(len(p) <= 3000 for p in parts) and len(parts) > 1
  assert " ".join(" ".join(parts).split()) == " ".join(text.split())
  huge = "word " * 10000  # One paragraph: split at the hard limit.
  assert all(len(p) <= 1000 for p in C.split_paragraphs(huge, limit=1000))
  packed = C.pack(["a" * 500] * 10, min_chars=1200)
  assert len(packed) == 4 and all(len(p) >= 1200 for p in packed[:-1])
  assert C.split_at("x\nA 1\ny\nA 2\nz", r"^A \d") == ["x", "A 1\ny", "A 2\nz"]


def test_markup_strippers():
  assert C.strip_pod("=head1 NAME\n\nB<bold> and C<code> L<perlfaq|x>\n=cut\n") \
      == "NAME\n\nbold and code x"
  wiki = "'''Anarchism''' is a [[political philosophy|philosophy]]{{cite|x}}.<ref>r</ref>"
  assert C.strip_wiki(wiki) == "Anarchism is a philosophy."
  gut = "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nbody\n" \
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicense"
  assert C.strip_gutenberg(gut) == "body"


# -------------------------------------------------------------------- minhash

def test_minhash_near_duplicates():
  base = prose(1, 400)
  words = base.split()
  words[200] = "zebra"
  near = " ".join(words)
  other = prose(2, 400)
  idx = C.NearDupIndex(0.8)
  assert not idx.add(base)
  assert idx.add(near)
  assert not idx.add(other)
  assert C.minhash(base) == C.minhash(base)
  same = sum(a == b for a, b in zip(C.minhash(base), C.minhash(near))) / C.NUM_PERM
  diff = sum(a == b for a, b in zip(C.minhash(base), C.minhash(other))) / C.NUM_PERM
  assert same > 0.8 > 0.3 > diff
  b, r = clean._lsh_shape(0.8)
  assert b * r == C.NUM_PERM


# ------------------------------------------------------------ R unserializer

def _i(v: int) -> bytes:
  return struct.pack(">i", v)


def _chars(s: str) -> bytes:
  b = s.encode()
  return _i(9 | (8 << 12)) + _i(len(b)) + b


def _attrs(pairs: list[tuple[str, bytes]]) -> bytes:
  out = b""
  for tag, val in pairs:
    out += _i(2 | (1 << 10)) + _i(1) + _chars(tag) + val
  return out + _i(254)


def _strsxp(items: list[str | None], names: list[str] | None = None) -> bytes:
  flags = 16 | ((1 << 9) if names else 0)
  body = b"".join(_i(9) + _i(-1) if s is None else _chars(s) for s in items)
  out = _i(flags) + _i(len(items)) + body
  return out + (_attrs([("names", _strsxp(names))]) if names else b"")


def _intsxp(vals: list[int]) -> bytes:
  return _i(13) + _i(len(vals)) + b"".join(_i(v) for v in vals)


def _vecsxp(items: list[bytes], names: list[str]) -> bytes:
  return (_i(19 | (1 << 9)) + _i(len(items)) + b"".join(items) +
          _attrs([("names", _strsxp(names))]))


HEADER = b"X\n" + _i(3) + _i(0x040201) + _i(0x030500) + _i(5) + b"UTF-8"


def test_r_unserialize_vector():
  blob = HEADER + _strsxp(["It is a truth", None, "universally"], ["a", "b", "c"])
  v = C.r_unserialize(blob)
  assert list(v) == ["It is a truth", None, "universally"]
  assert v.names == ["a", "b", "c"] and v.rtype == 16
  assert C.r_unserialize(gzip.compress(HEADER + _intsxp([1, -2]))) == [1, -2]
  with pytest.raises(C.CorpusError, match="XDR"):
    C.r_unserialize(b"A\n" + HEADER[2:])


def test_read_rdb(tmp_path):
  objs = {"emma": ["CHAPTER I", "", "Emma Woodhouse, handsome."],
          "tiny": ["x"]}
  rdb = b""
  offsets = {}
  for name, lines in objs.items():
    raw = HEADER + _strsxp(lines)
    entry = struct.pack(">I", len(raw)) + zlib.compress(raw)
    offsets[name] = (len(rdb), len(entry))
    rdb += entry
  variables = _vecsxp([_intsxp(list(offsets[n])) for n in objs], list(objs))
  index = _vecsxp([variables, _i(254), _i(10) + _i(1) + _i(1)],
                  ["variables", "references", "compressed"])
  (tmp_path / "Rdata.rdb").write_bytes(rdb)
  (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(HEADER + index))
  out = C.read_rdb(tmp_path / "Rdata.rdx")
  assert out["emma"][2] == "Emma Woodhouse, handsome." and out["tiny"] == ["x"]


# --------------------------------------------------------------- unpickling

class Bunch(dict):
  pass


def test_safe_unpickle_stubs_unknown_classes():
  data = pickle.dumps(Bunch(data=["post one", "post two"], target=[0, 1]),
                      protocol=2)
  obj = C.safe_unpickle(data)
  assert obj["data"] == ["post one", "post two"]
  assert type(obj).__module__.startswith("stub.")
  evil = b"cos\nsystem\n(S'echo pwned'\ntR."  # Would run a shell if unsafe.
  assert isinstance(C.safe_unpickle(evil), readers._Stub)


# ------------------------------------------------------------------- builder

def _build(out: Path, fetched: C.Fetched, **kw) -> dict:
  kw = {"domains": ["code", "wiki", "qa"], "max_mb": 1.0, "near_dup": 0.8,
        "min_chars": 300, "log": lambda m: None, **kw}
  return C.build_from_roots(out, fetched, **kw)


def test_build_deterministic_and_manifest(tmp_path):
  fetched = fake_tree(tmp_path / "src")
  m1 = _build(tmp_path / "a", fetched)
  m2 = _build(tmp_path / "b", fetched)
  for d in ("code", "wiki", "qa"):
    a = (tmp_path / "a" / f"{d}.jsonl").read_bytes()
    assert a == (tmp_path / "b" / f"{d}.jsonl").read_bytes()
    rows = [json.loads(l) for l in a.decode().splitlines()]
    assert rows == sorted(rows, key=lambda r: (r["src"], r["text"]))
    assert all(len(r["text"]) >= 300 and ":" in r["src"] for r in rows)
  for m in (m1, m2):
    for d in m["domains"].values():
      d.pop("seconds")
  assert m1 == m2
  qa = m1["domains"]["qa"]
  perl = qa["sources"]["perlfaq"]
  assert set(perl) == {"raw_docs", "raw_bytes", "dropped_short",
                       "dropped_quality", "dropped_duplicate",
                       "dropped_near_duplicate", "dropped_cap", "kept_docs",
                       "kept_bytes"}
  assert perl["dropped_duplicate"] > 0  # perlfaq2 repeats perlfaq1.
  assert qa["versions"] == {"perl-doc": "5.36-fake", "git-doc": "2.39-fake"}
  assert "debian-faq" in qa["failures"]  # Missing sources are recorded.
  assert len(qa["sha256"]) == 64 and qa["docs"] == sum(
      s["kept_docs"] for s in qa["sources"].values())
  code = m1["domains"]["code"]
  assert "python-local" in code["sources"] and "go" in code["failures"]
  assert code["sources"]["python-local"]["dropped_quality"] == 1  # wide.py
  assert all("site-packages" not in json.loads(l)["src"] for l in
             (tmp_path / "a" / "code.jsonl").read_text().splitlines())
  assert json.loads((tmp_path / "a" / "manifest.json").read_text())[
      "total_docs"] == m1["total_docs"]


def test_build_independent_of_hash_seed(tmp_path):
  script = (
      "import sys, pathlib; sys.path.insert(0, 'tests');"
      "import test_corpus as t; from autoscale_jax.data import corpus as C;"
      "p = pathlib.Path(sys.argv[1]);"
      "t._build(p / 'out', t.fake_tree(p / 'src'), domains=['qa', 'wiki'])")
  root = Path(__file__).resolve().parent.parent
  for seed in ("1", "2"):
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / seed)],
                   cwd=root, env=env, check=True)
  for d in ("qa", "wiki"):
    assert (tmp_path / "1/out" / f"{d}.jsonl").read_bytes() == \
        (tmp_path / "2/out" / f"{d}.jsonl").read_bytes()


def test_cap_is_hash_ordered_sample(tmp_path):
  fetched = fake_tree(tmp_path / "src")
  full = _build(tmp_path / "full", fetched, domains=["wiki"], max_mb=0)
  cap = 0.03
  capped = _build(tmp_path / "cap", fetched, domains=["wiki"], max_mb=cap)
  w = capped["domains"]["wiki"]
  assert 0 < w["bytes"] <= cap * 1e6 < full["domains"]["wiki"]["bytes"]
  assert w["sources"]["jargon"]["dropped_cap"] > 0
  texts = [json.loads(l)["text"] for l in
           (tmp_path / "full" / "wiki.jsonl").read_text().splitlines()]
  expect, total = set(), 0
  for t in sorted(texts, key=C.sha256):  # Greedy fill in sha256 order.
    if total + len(t.encode()) <= cap * 1e6:
      expect.add(t)
      total += len(t.encode())
  kept = {json.loads(l)["text"] for l in
          (tmp_path / "cap" / "wiki.jsonl").read_text().splitlines()}
  assert kept == expect


def test_near_dup_zero_disables(tmp_path, monkeypatch):
  base = prose(7, 400)
  words = base.split()
  words[10] = "zebra"
  units = [("a", base), ("b", " ".join(words)), ("c", prose(8, 400))]
  monkeypatch.setattr(extract, "SOURCES", (
      C.Source("wiki", "fake", "deb", "fake-pkg", lambda root: iter(units)),))
  fetched = C.Fetched({"fake-pkg": tmp_path}, {"fake-pkg": "1"}, {}, {})
  on = _build(tmp_path / "on", fetched, domains=["wiki"])
  off = _build(tmp_path / "off", fetched, domains=["wiki"], near_dup=0)
  assert on["domains"]["wiki"]["sources"]["fake"]["dropped_near_duplicate"] == 1
  assert on["domains"]["wiki"]["docs"] == 2
  assert off["domains"]["wiki"]["docs"] == 3


def test_empty_domain_is_error(tmp_path):
  fetched = C.Fetched({}, {}, {"r-cran-janeaustenr": "download failed"}, {})
  with pytest.raises(C.CorpusError, match="'books'"):
    _build(tmp_path / "o", fetched, domains=["books"])


def test_unknown_domain_cli(tmp_path, capsys):
  assert C.main(["--out", str(tmp_path), "--domains", "code,news"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: unknown domain(s) ['news']")


def test_corpus_error_is_a_user_error():
  with pytest.raises(UserError):
    C.parse_domains("news")
  assert issubclass(C.CorpusError, ValueError)


def test_module_entry_point_runs_the_cli(tmp_path):
  root = Path(__file__).resolve().parent.parent
  r = subprocess.run(
      [sys.executable, "-m", "autoscale_jax.data.corpus", "--out",
       str(tmp_path), "--domains", "news"], cwd=root, capture_output=True,
      text=True, check=False)
  assert r.returncode == 2
  assert r.stderr.startswith("error: unknown domain(s) ['news']"), r.stderr


# ---------------------------------------------------------------- fetch/apt

def test_missing_apt_lists_message(tmp_path, monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

  def fake_run(cmd, **kw):
    msg = f"E: Unable to locate package {cmd[-1]}\nE: No packages found\n"
    return subprocess.CompletedProcess(cmd, 100, "", msg)

  monkeypatch.setattr(subprocess, "run", fake_run)
  with pytest.raises(C.CorpusError) as e:
    C.fetch_debs(["git-doc", "perl-doc"], tmp_path, log=lambda m: None)
  msg = str(e.value)
  assert "apt-get update" in msg and "root" in msg and "\n" not in msg


def test_no_apt_skips_deb_domains(tmp_path, monkeypatch):
  fetched = fake_tree(tmp_path / "src")
  stdlib = fetched.roots["python-stdlib"]
  monkeypatch.setattr(shutil, "which", lambda name: None)
  monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(stdlib)})
  logs: list[str] = []
  kw = dict(domains="code,techdocs", cache_dir=tmp_path / "cache",
            min_chars=300, log=logs.append)
  m = C.build_corpus(tmp_path / "out", **kw)
  assert set(m["domains"]) == {"code"} and not m["cached"]
  reason = m["skipped_domains"]["techdocs"]
  assert "apt-get" in reason and "not found" in reason
  assert any("skipped domain techdocs" in l for l in logs)
  assert "golang-1.19-src" in m["domains"]["code"]["failures"]["go"]
  first = (tmp_path / "out" / "code.jsonl").read_bytes()
  m2 = C.build_corpus(tmp_path / "out2", **kw)  # Second build: from cache.
  assert m2["cached"] and m2["cache_key"] == m["cache_key"]
  # The command's one stdout line says where it is and that it was cached.
  line = C.summary_line(m2, tmp_path / "out2")
  assert line.startswith(f"corpus: {m2['total_docs']} docs, ")
  assert str(tmp_path / "out2") in line and m["cache_key"] in line
  assert "cached" not in C.summary_line(m, tmp_path / "out")
  assert (tmp_path / "out2" / "code.jsonl").read_bytes() == first
  saved = json.loads((tmp_path / "out2" / "manifest.json").read_text())
  assert saved["skipped_domains"] == m["skipped_domains"]


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
  target = tmp_path / "corpus.txt"
  target.write_text("not a directory")
  assert build.main(["--out", str(target)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:"), err
  assert str(target) in err[0] and "not a directory" in err[0]
  assert target.read_text() == "not a directory"
