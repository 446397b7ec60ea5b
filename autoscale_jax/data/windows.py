"""Per-domain seqio Tasks of packed fixed-length windows, index-addressable.

Training reads every domain through a registered ``seqio.Task`` whose source
is a :class:`WindowSource`: the domain's token stream (documents each ending
in EOS, concatenated) cut into non-overlapping packed windows

* LM: window ``k`` is ``stream[k L : k L + L + 1]`` (``L + 1`` tokens, stride
  ``L``; a row's inputs are ``w[:-1]``, its targets ``w[1:]``);
* BERT: window ``k`` is ``stream[k C : (k + 1) C]`` with ``C = L - 2`` content
  tokens (the row adds [CLS] and [SEP]).

The source serves the windows two ways that agree exactly:

* random access, :meth:`WindowSource.windows` ``(split, ids) -> [n, W]``: a
  gather from the (memory-mapped) stream, O(n W) whatever the ids, so a run's
  batch at step ``s`` costs the same at step 0 and at step 10**6;
* tf.data, :meth:`WindowSource.get_dataset` (what ``Task.get_dataset``
  calls): ``{"targets": window, "window_id": k}``, in window order, or with
  ``shuffle=True`` in the run's order (epoch ``e`` is the permutation
  :func:`window_permutation` ``(seed, domain, e)``), sharded at the source by
  ``seqio.ShardInfo``.

Tasks are registered explicitly (never at import time); a Task of the same
name is replaced.
"""

from __future__ import annotations

import hashlib
import re
from typing import Mapping

import numpy as np

from autoscale_jax.tfenv import hide_accelerators_from_tf


def domain_key(domain: str) -> int:
  """A 64-bit key of a domain name (seeds per-domain randomness)."""
  return int.from_bytes(hashlib.sha256(domain.encode()).digest()[:8], "little")


def rng(*keys: int) -> np.random.Generator:
  """A numpy Generator keyed by integers (each taken mod 2**64)."""
  return np.random.default_rng(
      np.random.SeedSequence([int(k) % (1 << 64) for k in keys]))


def window_permutation(seed: int, domain: str, epoch: int,
                       num_windows: int) -> np.ndarray:
  """Order of the domain's windows in epoch ``epoch`` of a run seeded ``seed``.

  Keyed by ``(seed, domain, epoch)`` only, so runs that differ in another
  domain's quota read this domain's windows in the same order.
  """
  return rng(seed, domain_key(domain), epoch).permutation(num_windows)


def content_per_row(seq_len: int, bert: bool) -> int:
  """Training tokens one full row counts: ``L`` (LM) or ``L - 2`` (BERT)."""
  return seq_len - 2 if bert else seq_len


def num_windows(stream_len: int, seq_len: int, bert: bool) -> int:
  """Full windows in a stream of ``stream_len`` tokens."""
  c = content_per_row(seq_len, bert)
  if c < 1:
    return 0
  return stream_len // c if bert else max(stream_len - 1, 0) // c


def window_task_name(prefix: str, domain: str) -> str:
  """Registry name of a domain's window Task (letters, digits, '_' only)."""
  return re.sub(r"[^\w]", "_", f"{prefix}__{domain}__windows")


def _make_source_class():
  """Defines WindowSource lazily (seqio and TensorFlow import on first use)."""
  hide_accelerators_from_tf()
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class WindowSource(seqio.DataSource):
    """A domain's packed windows, by index or as a (sharded) tf.data stream."""

    def __init__(self, domain: str, streams: Mapping[str, np.ndarray],
                 seq_len: int, bert: bool):
      self.domain = domain
      self.seq_len = int(seq_len)
      self.bert = bool(bert)
      self.stride = content_per_row(self.seq_len, self.bert)
      self.width = self.stride if self.bert else self.seq_len + 1
      self._streams = {s: np.asarray(v) for s, v in streams.items()}
      self._count = {s: num_windows(len(v), self.seq_len, self.bert)
                     for s, v in self._streams.items()}
      # Epochs the shuffled stream covers (see get_dataset); only grows.
      self.shuffled_epochs = 1
      super().__init__(splits=list(self._streams),
                       num_input_examples=dict(self._count),
                       caching_permitted=False,
                       performs_internal_shuffling=True)

    @property
    def supports_arbitrary_sharding(self) -> bool:
      return True

    def list_shards(self, split: str) -> list[str]:
      return [split]

    def num_windows(self, split: str = "train") -> int:
      return self._count[split]

    def windows(self, split: str, ids: np.ndarray) -> np.ndarray:
      """``[len(ids), width]`` int32: the windows ``ids`` (random access)."""
      ids = np.asarray(ids, np.int64)
      if len(ids) and (ids.min() < 0 or ids.max() >= self._count[split]):
        raise IndexError(f"{self.domain}/{split}: window ids outside "
                         f"[0, {self._count[split]})")
      idx = ids[:, None] * self.stride + np.arange(self.width)[None, :]
      return np.asarray(self._streams[split][idx], np.int32)

    def order(self, seed: int, epochs: int) -> np.ndarray:
      """Window ids of ``epochs`` shuffled epochs of a run seeded ``seed``."""
      n = self._count["train"]
      return np.concatenate(
          [window_permutation(seed, self.domain, e, n) for e in range(epochs)]
          + [np.zeros([0], np.int64)]).astype(np.int64)

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None
                    ) -> tf.data.Dataset:
      n = self._count[split]
      if shuffle:
        ids = self.order(0 if seed is None else int(seed),
                         self.shuffled_epochs)
      else:
        ids = np.arange(n, dtype=np.int64)
      ds = tf.data.Dataset.from_tensor_slices(ids)
      if shard_info and shard_info.num_shards > 1:
        ds = ds.shard(shard_info.num_shards, shard_info.index)
      stream = tf.constant(self._streams[split].astype(np.int32))
      offsets = tf.range(self.width, dtype=tf.int64)
      stride = self.stride

      def window(k):
        return {"targets": tf.gather(stream, k * stride + offsets),
                "window_id": k}

      return ds.map(window, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)

  return WindowSource


_SOURCE_CLASS = None


def window_source(domain: str, streams: Mapping[str, np.ndarray],
                  seq_len: int, bert: bool):
  """A ``WindowSource`` (a ``seqio.DataSource``) over ``streams[split]``."""
  global _SOURCE_CLASS
  if _SOURCE_CLASS is None:
    _SOURCE_CLASS = _make_source_class()
  return _SOURCE_CLASS(domain, streams, seq_len, bert)


def register_window_task(name: str, source, vocabulary):
  """Registers (or replaces) the Task ``name`` over a ``WindowSource``."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, preprocessors=[],
      output_features={"targets": seqio.Feature(vocabulary, add_eos=False,
                                                dtype=tf.int32)},
      metric_fns=[], shuffle_buffer_size=None)


def get_window_source(name: str):
  """The ``WindowSource`` of the registered Task ``name``."""
  import seqio  # pylint: disable=g-import-not-at-top
  return seqio.get_mixture_or_task(name).source
