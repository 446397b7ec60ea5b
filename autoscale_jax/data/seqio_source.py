"""``data.source = "seqio"``: users' own registered seqio Tasks as the domains.

``config.data.seqio_tasks.<domain> = "task_name"`` names one registered seqio
Task (or Mixture) per domain (default: the Task named like the domain);
``config.data.seqio_module`` (optional) is imported first to register them.
Each Task's ``train`` split is read once, in order, unshuffled, through
``Task.get_dataset`` (the user's preprocessors and vocabulary), and its
``targets`` ids become the domain's token stream: one document per example,
each followed by one EOS. From there the study
trains exactly as for the other sources (packed window Tasks, exact quotas).

Held-out evaluation uses the Task's ``validation`` split when it has one;
otherwise held-out documents are carved from ``train`` as for the other
sources. The vocabulary is the Tasks' ``targets`` feature vocabulary (a
``seqio.SentencePieceVocabulary``, the same for every domain).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import time
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


def read_tasks(config) -> tuple[Any, dict[str, SeqioDomain]]:
  """(the Tasks' vocabulary, ``{domain: SeqioDomain}``) for ``config.data``.

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
    out[d] = SeqioDomain(d, names[d], train, val)
  return vocab, out


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
