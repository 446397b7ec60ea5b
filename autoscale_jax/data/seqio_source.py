"""``data.source = "seqio"``: users' own registered seqio Tasks as the domains.

``config.data.seqio_tasks.<domain> = "task_name"`` names one registered seqio
Task (or Mixture) per domain (default: the Task named like the domain);
``config.data.seqio_module`` (optional) is imported first to register them.
Each Task's ``train`` split is read once, in order, unshuffled, through
``Task.get_dataset`` (the user's preprocessors and vocabulary), and its
``targets`` ids become the domain's token stream: one document per example,
each followed by one EOS. From there the study
trains exactly as for the other sources (packed window Tasks, exact quotas).

The documents read are cached under ``<cache_dir>/seqio/`` (``read_tasks``'
``cache_dir``, the study's ``cache/`` by default), keyed by the Task's name
and :func:`data_key`: a fingerprint of what the Task reads (its source's
kind, its shards' paths, sizes and modification times, its dataset function's
or preprocessors' code, its vocabulary), so a later stage of the same study
does not read the Tasks again; a changed file, function or vocabulary reads
them anew. Data that changes behind an unchanged source (a function reading
something else) is not seen: delete ``cache/seqio/`` then.

Held-out evaluation uses the Task's ``validation`` split when it has one;
otherwise held-out documents are carved from ``train`` as for the other
sources. The vocabulary is the Tasks' ``targets`` feature vocabulary (a
``seqio.SentencePieceVocabulary``, the same for every domain).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import logging
import os
import re
import time
import uuid
from typing import Any, Mapping

import numpy as np

from autoscale_jax.data.sources import DataError
from autoscale_jax.tfenv import hide_accelerators_from_tf

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SeqioDomain:
  """One domain read from a user's Task: documents as token ids."""
  domain: str
  task: str
  train_docs: list[np.ndarray]
  validation_docs: list[np.ndarray] | None  # None: the Task has none

  def fingerprint(self, vocab_fingerprint: str) -> str:
    h = hashlib.sha256(f"seqio:{self.task}:{vocab_fingerprint}".encode())
    for split in (self.train_docs, self.validation_docs or []):
      h.update(len(split).to_bytes(8, "little"))
      for doc in split:
        h.update(len(doc).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(doc, np.int32).tobytes())
    return h.hexdigest()


def task_names(data) -> dict[str, str]:
  """``{domain: task name}``: ``data.seqio_tasks``, else the domain's name."""
  given = dict(data.seqio_tasks)
  return {d: str(given.get(d, d)) for d in data.domains}


def import_task_module(module: str) -> None:
  """Imports ``config.data.seqio_module`` (which registers the Tasks)."""
  if not module:
    return
  try:
    importlib.import_module(module)
  except ImportError as e:
    raise DataError(f"config.data.seqio_module={module!r} cannot be imported "
                    f"({e}); put it on PYTHONPATH or fix the name") from None


def _provider(name: str, domain: str):
  import seqio  # pylint: disable=g-import-not-at-top
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(seqio.TaskRegistry.names())
    raise DataError(
        f"config.data.seqio_tasks.{domain}={name!r} is not a registered seqio "
        f"Task or Mixture ({len(known)} registered"
        + (f", e.g. {', '.join(known[:5])}" if known else "")
        + "); set config.data.seqio_module to the module that registers it"
    ) from None


def _read_split(provider, split: str, eos_id: int) -> list[np.ndarray]:
  """Every example's ``targets`` ids (trailing EOS removed), in order."""
  ds = provider.get_dataset(None, split=split, shuffle=False, num_epochs=1,
                            trim_output_features=False)
  docs = []
  for ex in ds.as_numpy_iterator():
    ids = np.asarray(ex["targets"], np.int32).reshape(-1)
    if len(ids) and ids[-1] == eos_id:
      ids = ids[:-1]
    if len(ids):
      docs.append(ids)
  return docs


def _describe(value: Any, depth: int = 0) -> str:
  """A stable description of a source's or preprocessor's parts.

  Callables by module, qualified name and source code (a ``partial`` by its
  function and arguments); plain values by ``repr``; other objects by type
  (never by address).
  """
  if depth > 3:
    return type(value).__name__
  if isinstance(value, functools.partial):
    return (f"partial({_describe(value.func, depth + 1)}, "
            f"{[_describe(a, depth + 1) for a in value.args]}, "
            f"{ {k: _describe(v, depth + 1) for k, v in sorted(value.keywords.items())} })")
  if isinstance(value, (str, int, float, bool, type(None), bytes)):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr([_describe(v, depth + 1) for v in value])
  if isinstance(value, Mapping):
    return repr({str(k): _describe(v, depth + 1) for k, v in value.items()})
  if callable(value) and hasattr(value, "__qualname__"):
    try:
      code = hashlib.sha256(inspect.getsource(value).encode()).hexdigest()
    except (OSError, TypeError):
      code = "?"
    return f"{getattr(value, '__module__', '?')}.{value.__qualname__}:{code}"
  return type(value).__qualname__


def _shard_stat(path: str) -> str:
  """``path:size:mtime`` of a shard file (``path`` alone when not a file)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    st = tf.io.gfile.stat(path)
    return f"{path}:{st.length}:{st.mtime_nsec}"
  except (tf.errors.OpError, ValueError):
    return path


def data_key(provider, vocab_fingerprint: str) -> str:
  """A fingerprint of what a Task (or Mixture) reads, without reading it.

  The source's kind and shards (files by path, size and modification time),
  its dataset function or TFDS name, the preprocessors, and the vocabulary.
  """
  h = hashlib.sha256(f"seqio-data:1:{provider.name}:{vocab_fingerprint}"
                     .encode())
  if hasattr(provider, "tasks") and not hasattr(provider, "source"):
    for task in provider.tasks:  # a Mixture: its Tasks and rates
      h.update(data_key(task, vocab_fingerprint).encode())
      h.update(repr(provider.get_rate(task)).encode())
    return h.hexdigest()
  source = provider.source
  h.update(type(source).__qualname__.encode())
  for attr in ("_dataset_fn", "_split_to_filepattern", "_file_shuffle_buffer"):
    if hasattr(source, attr):
      h.update(f"{attr}={_describe(getattr(source, attr))}".encode())
  tfds = getattr(source, "tfds_dataset", None)
  if tfds is not None:
    h.update(f"tfds={tfds.name}:{getattr(tfds, 'data_dir', '')}".encode())
  for split in sorted(provider.splits):
    h.update(f"split={split}".encode())
    for shard in source.list_shards(split):
      h.update(_shard_stat(str(shard)).encode())
  h.update(_describe(list(provider.preprocessors)).encode())
  return h.hexdigest()


def _cache_path(cache_dir: str, task: str, key: str) -> str:
  safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task)
  return os.path.join(cache_dir, "seqio", f"{safe}-{key[:24]}.npz")


def _pack(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.asarray([len(x) for x in docs], np.int64)
  ids = (np.concatenate(docs).astype(np.int32, copy=False) if docs
         else np.zeros([0], np.int32))
  return ids, lengths


def _unpack(ids: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
  return np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _save_cached(path: str, train: list[np.ndarray],
                 val: list[np.ndarray] | None) -> None:
  """Writes the documents atomically (a reader sees all of it or none)."""
  arrays = {}
  arrays["train_ids"], arrays["train_lengths"] = _pack(train)
  if val is not None:
    arrays["validation_ids"], arrays["validation_lengths"] = _pack(val)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with open(tmp, "wb") as f:
      f.write(buf.getvalue())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load_cached(path: str) -> tuple[list[np.ndarray],
                                     list[np.ndarray] | None] | None:
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as z:
      train = _unpack(z["train_ids"], z["train_lengths"])
      val = (_unpack(z["validation_ids"], z["validation_lengths"])
             if "validation_ids" in z else None)
  except (OSError, ValueError, KeyError) as e:
    log.warning("ignoring unreadable seqio cache %s (%s); reading the Task",
                path, e)
    return None
  return train, val


def read_tasks(config, cache_dir: str | None = None
               ) -> tuple[Any, dict[str, SeqioDomain]]:
  """(the Tasks' vocabulary, ``{domain: SeqioDomain}``) for ``config.data``.

  With ``cache_dir``, each Task's documents are read once and kept under
  ``cache_dir/seqio/`` keyed by the Task name and :func:`data_key`.

  Raises:
    DataError: a Task is missing, has no ``train`` split or no ``targets``
      feature, the vocabularies differ or are not SentencePiece, or a split
      is empty.
  """
  hide_accelerators_from_tf()
  import seqio  # pylint: disable=g-import-not-at-top
  data = config.data
  import_task_module(str(data.get("seqio_module", "") or ""))
  names = task_names(data)
  vocab, vocab_of = None, None
  out: dict[str, SeqioDomain] = {}
  for d in data.domains:
    provider = _provider(names[d], d)
    feats = provider.output_features
    if "targets" not in feats:
      raise DataError(f"seqio Task {names[d]!r} has no 'targets' feature "
                      f"(features: {', '.join(sorted(feats))}); the study "
                      "trains on 'targets'")
    v = feats["targets"].vocabulary
    if not isinstance(v, seqio.SentencePieceVocabulary):
      raise DataError(f"seqio Task {names[d]!r} has a {type(v).__name__} "
                      "'targets' vocabulary; data.source=seqio needs a "
                      "seqio.SentencePieceVocabulary")
    if vocab is None:
      vocab, vocab_of = v, names[d]
    elif v.sp_model != vocab.sp_model or v.extra_ids != vocab.extra_ids:
      raise DataError(f"seqio Tasks {vocab_of!r} and {names[d]!r} use "
                      "different vocabularies; every domain must share one")
    splits = list(provider.splits)
    if "train" not in splits:
      raise DataError(f"seqio Task {names[d]!r} has no 'train' split "
                      f"(splits: {', '.join(splits)})")
    t0 = time.time()
    path = (_cache_path(cache_dir, names[d], data_key(
        provider, _vocab_fingerprint(v))) if cache_dir else None)
    cached = _load_cached(path) if path else None
    if cached is not None:
      train, val = cached
      log.info("seqio Task %s: %d train / %s validation examples from %s",
               names[d], len(train), "-" if val is None else len(val), path)
      out[d] = SeqioDomain(d, names[d], train, val)
      continue
    train = _read_split(provider, "train", int(v.eos_id))
    if not train:
      raise DataError(f"seqio Task {names[d]!r}: split 'train' is empty")
    val = None
    if "validation" in splits:
      val = _read_split(provider, "validation", int(v.eos_id))
      if not val:
        raise DataError(f"seqio Task {names[d]!r}: split 'validation' is "
                        "empty; fill it or drop the split")
    log.info("read seqio Task %s: %d train / %s validation examples in "
             "%.1f s", names[d], len(train),
             "-" if val is None else len(val), time.time() - t0)
    if path:
      _save_cached(path, train, val)
    out[d] = SeqioDomain(d, names[d], train, val)
  return vocab, out


def _vocab_fingerprint(vocab) -> str:
  """The SentencePiece model's bytes and extra ids of a seqio vocabulary."""
  h = hashlib.sha256(vocab.sp_model or b"")
  h.update(f":{vocab.extra_ids}".encode())
  return h.hexdigest()


def concat_docs(docs: list[np.ndarray], eos_id: int) -> np.ndarray:
  """Documents' ids, each followed by one EOS, concatenated (int32)."""
  if not docs:
    return np.zeros([0], np.int32)
  eos = np.asarray([eos_id], np.int32)
  return np.concatenate([x for doc in docs for x in (doc, eos)]).astype(
      np.int32, copy=False)


def heldout_split(dom: SeqioDomain, eos_id: int, heldout_docs: int,
                  fingerprint: str, carve) -> tuple[np.ndarray, np.ndarray,
                                                    np.ndarray]:
  """(train stream, held-out stream, held-out doc ids) of one domain.

  The Task's validation split when present (ids then empty); else the
  documents ``carve(domain, n_docs, heldout_docs, fingerprint)`` picks.
  """
  if dom.validation_docs is not None:
    return (concat_docs(dom.train_docs, eos_id),
            concat_docs(dom.validation_docs, eos_id), np.zeros([0], np.int64))
  held = carve(dom.domain, len(dom.train_docs), heldout_docs, fingerprint)
  mask = np.ones(len(dom.train_docs), bool)
  mask[held] = False
  return (concat_docs([x for x, m in zip(dom.train_docs, mask) if m], eos_id),
          concat_docs([dom.train_docs[i] for i in held], eos_id), held)


def num_train_docs(domains: Mapping[str, SeqioDomain]) -> dict[str, int]:
  return {d: len(x.train_docs) for d, x in domains.items()}
