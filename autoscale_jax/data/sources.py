"""Per-domain document sources: corpus directory, bring-your-own files, TFDS.

Every source ends in the same shape, ``{domain: [document, ...]}`` with the
documents in a deterministic order, so the token store, the held-out split
and the pipeline never know where the text came from.

* corpus directory (``embedded`` / ``fixture``): ``<dir>/<domain>.jsonl``.
* ``jsonl`` (bring your own, RedPajama layout): ``config.data.paths[domain]``
  is a glob, a directory (all ``*.jsonl``, ``*.jsonl.gz``, ``*.txt`` below
  it), or a list of those. ``.jsonl``/``.jsonl.gz`` hold one JSON object per
  line with the text in ``config.data.text_field``; ``.txt`` is one document
  per file.
* ``tfds``: ``config.data.tfds[domain] = "name[:config]/split"`` and the text
  in ``config.data.tfds_text_feature``; datasets must already be prepared in
  the TFDS data dir (nothing is downloaded).

Every path goes through :mod:`autoscale_jax.fileio` (local or ``gs://``
alike); JSONL is streamed line by line. :func:`list_files` names a source's
files without reading them (the corpus identity, see ``token_store``).

A missing, empty or corrupt input raises :class:`DataError`, one line naming
the file (and the line) and the fix.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from typing import Any, Mapping, Sequence

from autoscale_jax import errors
from autoscale_jax import fileio
from autoscale_jax.tfenv import hide_accelerators_from_tf

log = logging.getLogger(__name__)

_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".txt")


class DataError(errors.UserError, ValueError):
  """A user error in the data (missing/empty/corrupt file, too few tokens)."""


def read_jsonl(path: str, text_field: str = "text") -> list[str]:
  """Documents of one JSONL file (``.jsonl`` or ``.jsonl.gz``).

  Blank lines are skipped; records whose text is empty are skipped and
  counted in a warning. Raises DataError on a missing or empty file, on a
  line that is not a JSON object, or on a record without a string text field.
  """
  if not fileio.isfile(path):
    raise DataError(f"{path}: file not found; check config.data paths or "
                    "rebuild the corpus")
  docs: list[str] = []
  empty = 0
  lineno = 0
  try:
    for lineno, line in enumerate(fileio.open_lines(path), start=1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: corrupt JSON ({e.msg} at column "
                        f"{e.colno}); fix or remove that line") from None
      if not isinstance(rec, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                        f"{type(rec).__name__}; write one object per line")
      if text_field not in rec:
        raise DataError(
            f"{path}:{lineno}: no field {text_field!r} (fields: "
            f"{', '.join(sorted(rec)[:8])}); set config.data.text_field")
      text = rec[text_field]
      if not isinstance(text, str):
        raise DataError(f"{path}:{lineno}: field {text_field!r} is "
                        f"{type(text).__name__}, expected a string")
      if text:
        docs.append(text)
      else:
        empty += 1
  except fileio.StorageError:
    raise
  except (UnicodeDecodeError, EOFError, OSError, gzip.BadGzipFile) as e:
    raise DataError(f"{path}:{lineno + 1}: unreadable ({type(e).__name__}: "
                    f"{e}); the file is corrupt or not UTF-8") from None
  if empty:
    log.warning("%s: skipped %d records with empty %r", path, empty,
                text_field)
  if not docs:
    raise DataError(f"{path}: empty (no documents with a non-empty "
                    f"{text_field!r}); remove the file or fill it")
  return docs


def read_txt(path: str) -> list[str]:
  """One ``.txt`` file = one document."""
  if not fileio.isfile(path):
    raise DataError(f"{path}: file not found")
  try:
    text = "".join(fileio.open_lines(path))
  except fileio.StorageError:
    raise
  except (UnicodeDecodeError, OSError, EOFError) as e:
    raise DataError(f"{path}:1: unreadable ({type(e).__name__}); the file is "
                    "corrupt or not UTF-8") from None
  if not text.strip():
    raise DataError(f"{path}: empty text file; remove it or fill it")
  return [text]


def read_file(path: str, text_field: str = "text") -> list[str]:
  """Documents of one file, by suffix."""
  if path.endswith((".txt", ".txt.gz")):
    return read_txt(path)
  if path.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".json")):
    return read_jsonl(path, text_field)
  raise DataError(f"{path}: unknown file type; use .jsonl, .jsonl.gz or .txt")


def expand_paths(spec: str | Sequence[str]) -> list[str]:
  """Files named by a glob, a directory or a list of those (sorted, unique).

  Local paths and URIs (``gs://bucket/dir/*.jsonl``) alike; nothing is read.
  """
  specs = [spec] if isinstance(spec, str) else list(spec)
  files: set[str] = set()
  for s in specs:
    s = str(s) if fileio.is_remote(str(s)) else os.path.expanduser(str(s))
    if fileio.isdir(s):
      files.update(p for p in fileio.walk_files(s)
                   if p.endswith(_FILE_SUFFIXES))
    elif fileio.is_remote(s):
      files.update(p for p in fileio.glob(s)
                   if p.endswith(_FILE_SUFFIXES) or fileio.isfile(p))
    else:
      files.update(p for p in fileio.glob(s) if os.path.isfile(p))
  return sorted(files)


def corpus_file(corpus_dir: str, domain: str) -> str:
  """``<corpus_dir>/<domain>.jsonl``."""
  return fileio.join(corpus_dir, f"{domain}.jsonl")


def read_corpus_dir(corpus_dir: str, domains: Sequence[str]
                    ) -> dict[str, list[str]]:
  """Documents per domain from ``<corpus_dir>/<domain>.jsonl``."""
  out = {}
  for d in domains:
    path = corpus_file(corpus_dir, d)
    if not fileio.isfile(path):
      raise DataError(f"{path}: missing domain file for {d!r}; rebuild with "
                      f"`python -m autoscale_jax.data.corpus --out "
                      f"{corpus_dir}` or remove {d!r} from config.data.domains")
    out[d] = read_jsonl(path, "text")
  return out


def read_paths(paths: Mapping[str, Any], domains: Sequence[str],
               text_field: str = "text") -> dict[str, list[str]]:
  """Documents per domain from bring-your-own globs/directories."""
  out = {}
  for d in domains:
    docs: list[str] = []
    for p in domain_paths(paths, d):
      docs.extend(read_file(p, text_field))
    out[d] = docs
  return out


def domain_paths(paths: Mapping[str, Any], domain: str) -> list[str]:
  """The files of ``config.data.paths[domain]`` (DataError if none)."""
  if domain not in paths:
    raise DataError(f"config.data.paths.{domain} is missing; give a glob or a "
                    "directory for every domain")
  files = expand_paths(paths[domain])
  if not files:
    raise DataError(f"config.data.paths.{domain}={paths[domain]!r} matches no "
                    ".jsonl, .jsonl.gz or .txt file; fix the glob")
  return files


def parse_tfds_spec(spec: str) -> tuple[str, str | None, str]:
  """``"name[:config]/split"`` -> (name, config or None, split).

  The split may carry TFDS slicing, e.g. ``"wiki40b:en/train[:1%]"``.
  """
  if not isinstance(spec, str) or "/" not in spec:
    raise DataError(f"TFDS spec {spec!r} is invalid: use 'name[:config]/split'"
                    ", e.g. 'wiki40b:en/train'")
  head, split = spec.split("/", 1)
  if not head or not split:
    raise DataError(f"TFDS spec {spec!r} is invalid: use 'name[:config]/split'")
  parts = head.split(":")
  if len(parts) > 2 or not all(parts):
    raise DataError(f"TFDS spec {spec!r} is invalid: use 'name[:config]/split'")
  return parts[0], (parts[1] if len(parts) == 2 else None), split


def read_tfds(spec: str, text_feature: str = "text",
              data_dir: str | None = None) -> list[str]:
  """Documents of one prepared TFDS split (never downloads)."""
  name, cfg, split = parse_tfds_spec(spec)
  hide_accelerators_from_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  full = f"{name}/{cfg}" if cfg else name
  try:
    builder = tfds.builder(full, data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"TFDS {spec!r}: cannot load ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); prepare it "
                    "first with tfds (no download happens here)") from None
  if text_feature not in ds.element_spec:
    raise DataError(f"TFDS {spec!r}: no feature {text_feature!r} (features: "
                    f"{', '.join(sorted(ds.element_spec))}); set "
                    "config.data.tfds_text_feature")
  docs = []
  for ex in tfds.as_numpy(ds.map(lambda e: e[text_feature])):
    text = ex.decode("utf-8") if isinstance(ex, bytes) else str(ex)
    if text:
      docs.append(text)
  if not docs:
    raise DataError(f"TFDS {spec!r}: split is empty")
  return docs


def list_files(config, corpus_dir: str | None = None,
               domains: Sequence[str] | None = None
               ) -> dict[str, list[str]] | None:
  """The files each domain's documents come from, or None (TFDS, seqio).

  Lists and stats only; raises DataError when a domain has no file.
  """
  data = config.data
  domains = list(data.domains if domains is None else domains)
  if data.source in ("embedded", "fixture"):
    if not corpus_dir:
      raise DataError("corpus_dir is required for the embedded/fixture source")
    out = {}
    for d in domains:
      path = corpus_file(corpus_dir, d)
      if not fileio.isfile(path):
        raise DataError(f"{path}: missing domain file for {d!r}")
      out[d] = [path]
    return out
  if data.source == "jsonl":
    return {d: domain_paths(dict(data.paths), d) for d in domains}
  return None


def load_documents(config, corpus_dir: str | None = None,
                   domains: Sequence[str] | None = None
                   ) -> dict[str, list[str]]:
  """Documents per domain for ``config.data`` (one code path for all sources).

  Args:
    config: the study config (uses ``config.data.*``).
    corpus_dir: the corpus directory for ``embedded``/``fixture`` sources.
    domains: the domains to read (default ``config.data.domains``).

  Returns:
    ``{domain: [text, ...]}`` in ``domains`` order.
  """
  data = config.data
  domains = list(data.domains if domains is None else domains)
  if data.source in ("embedded", "fixture"):
    if not corpus_dir:
      raise DataError("corpus_dir is required for the embedded/fixture source")
    return read_corpus_dir(corpus_dir, domains)
  if data.source == "jsonl":
    return read_paths(dict(data.paths), domains, data.text_field)
  if data.source == "tfds":
    tfds_dir = data.get("tfds_data_dir", None) or None
    return {d: read_tfds(data.tfds[d], data.tfds_text_feature, tfds_dir)
            for d in domains}
  raise DataError(f"config.data.source={data.source!r} is unknown; use "
                  "embedded, jsonl, tfds or fixture")
