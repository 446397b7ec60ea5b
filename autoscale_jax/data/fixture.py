"""A tiny synthetic multi-domain corpus for tests and smoke runs, built in ms.

Each domain gets its own seeded "language": a private vocabulary of made-up
words (built from syllables only that domain uses), its own punctuation and
line layout, and a first-order Markov grammar over its words. Domains are
therefore clearly distinct (a model can tell them apart from a few tokens)
and learnable (the grammar is low-entropy), which is what mixing tests need.

The output has the same layout as an embedded corpus directory:
``<domain>.jsonl`` with one ``{"text", "src"}`` object per line, plus
``manifest.json``. Same arguments -> byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np

from autoscale_jax import fileio
from autoscale_jax.fileio import atomic_write_text

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_PUNCT = [".", ";", "!", "?", ":", " --"]
_MIN_CHARS = 1000


def _domain_rng(domain: str, seed: int, salt: str) -> np.random.Generator:
  digest = hashlib.sha256(f"{salt}:{seed}:{domain}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _domain_language(domain: str, seed: int) -> dict:
  """Vocabulary, Markov successors and layout of one domain."""
  rng = _domain_rng(domain, seed, "language")
  cons = rng.choice(list(_CONSONANTS), size=6, replace=False)
  vows = rng.choice(list(_VOWELS), size=3, replace=False)
  syllables = sorted({c + v for c in cons for v in vows} |
                     {v + c for c in cons[:2] for v in vows[:1]})
  words: list[str] = []
  seen = set()
  while len(words) < 120:
    n = int(rng.integers(1, 4))
    w = "".join(rng.choice(syllables, size=n))
    if w not in seen:
      seen.add(w)
      words.append(w)
  successors = rng.integers(0, len(words), size=(len(words), 3))
  return {
      "words": words,
      "successors": successors,
      "punct": str(rng.choice(_PUNCT)),
      "sentence_len": int(rng.integers(5, 12)),
      "sentences_per_line": int(rng.integers(1, 4)),
      "indent": " " * int(rng.integers(0, 5)),
      "capitalize": bool(rng.integers(0, 2)),
  }


def _document(lang: dict, rng: np.random.Generator, title: str) -> str:
  words, succ = lang["words"], lang["successors"]
  lines = [title]
  total = len(title)
  w = int(rng.integers(0, len(words)))
  while total < _MIN_CHARS + int(rng.integers(0, 600)):
    sentences = []
    for _ in range(lang["sentences_per_line"]):
      n = lang["sentence_len"] + int(rng.integers(-2, 3))
      toks = []
      for _ in range(max(n, 2)):
        toks.append(words[w])
        w = int(succ[w, int(rng.integers(0, 3))])
      s = " ".join(toks)
      if lang["capitalize"]:
        s = s[0].upper() + s[1:]
      sentences.append(s + lang["punct"])
    line = lang["indent"] + " ".join(sentences)
    lines.append(line)
    total += len(line) + 1
  return "\n".join(lines) + "\n"


def make_fixture_corpus(out_dir: str, domains: Sequence[str],
                        docs_per_domain: int = 40, seed: int = 0) -> str:
  """Writes a synthetic corpus directory (``<domain>.jsonl`` + manifest).

  Args:
    out_dir: directory to create (existing files of the same names are
      overwritten atomically).
    domains: domain names (arbitrary, e.g. ``["alpha", "beta"]``).
    docs_per_domain: documents per domain, each >= 1000 characters.
    seed: changes every domain's language and documents.

  Returns:
    ``out_dir``.
  """
  fileio.makedirs(out_dir)
  manifest = {"kind": "fixture", "seed": seed, "domains": {}}
  for domain in domains:
    lang = _domain_language(domain, seed)
    rng = _domain_rng(domain, seed, "documents")
    h = hashlib.sha256()
    lines = []
    nbytes = 0
    for i in range(docs_per_domain):
      title = f"{domain} {i}: " + " ".join(
          lang["words"][int(j)] for j in rng.integers(0, 120, size=3))
      text = _document(lang, rng, title)
      line = json.dumps({"text": text, "src": f"fixture:{domain}:{i}"},
                        ensure_ascii=False)
      lines.append(line)
      h.update(text.encode())
      nbytes += len(text.encode())
    # Unique temp names: workers that build the fixture at once never clash.
    atomic_write_text(fileio.join(out_dir, f"{domain}.jsonl"),
                      "\n".join(lines) + "\n")
    manifest["domains"][domain] = {
        "documents": docs_per_domain, "bytes": nbytes,
        "sha256": h.hexdigest()}
  atomic_write_text(fileio.join(out_dir, "manifest.json"),
                    json.dumps(manifest, indent=1, sort_keys=True))
  return out_dir
