"""seqio integration: one Task per domain over the token store, rate mixtures.

Quota-mode runs (DDO, final: all training) use :class:`pipeline.QuotaBatches`
over the per-domain window Tasks of ``windows.py``, exact and a pure function
of the step. Open-ended rate mixtures (per-example sampling) are here: :func:`register_domain_tasks` registers one ``seqio.Task`` per domain
(explicitly, from the bundle, never at import time; an existing task of the
same name is removed first), :func:`rate_mixture` a ``seqio.Mixture`` with the
given rates, and :func:`rate_batches` yields numpy batches in the batch format
of docs/architecture.md.

The sources are ``seqio.FunctionDataSource``s over the pre-tokenized ids of
the token store (a ``tf.RaggedTensor`` of document chunks, no
``tf.py_function``). Each document (ending in EOS) is cut into chunks of at
most ``L`` tokens (BERT: ``L - 2`` plus [CLS]/[SEP]); packing is done by the
seqio feature converters: ``DecoderFeatureConverter(pack=True)`` for LM and
``EncoderFeatureConverter(pack=True)`` for BERT, whose MLM masking (80/10/10)
is then applied on the packed numpy rows by :func:`pipeline.mlm_mask`,
deterministic per (seed, batch, row).

Rate-mode sampling is per example (stochastic), so token counts follow the
rates only on average; ``FunctionDataSource`` cannot shard at the source, so
each host reads the mixed stream and keeps every ``num_shards``-th example.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterator, Mapping

import numpy as np

from autoscale_jax.data import pipeline as pipeline_lib
from autoscale_jax import names
from autoscale_jax.data.sources import DataError
from autoscale_jax.tfenv import hide_accelerators_from_tf


task_name = names.seqio_task_name


def _chunk_splits(stream: np.ndarray, eos_id: int, chunk: int) -> np.ndarray:
  """Row splits cutting ``stream`` at document ends and every ``chunk``."""
  n = len(stream)
  if n == 0:
    return np.zeros([1], np.int64)
  pos = np.arange(n, dtype=np.int64)
  is_start = np.zeros(n, bool)
  is_start[0] = True
  ends = np.nonzero(stream[:-1] == eos_id)[0] + 1
  is_start[ends] = True
  doc_start = np.maximum.accumulate(np.where(is_start, pos, 0))
  cut = ((pos - doc_start) % chunk) == 0
  return np.concatenate([np.nonzero(cut)[0], [n]]).astype(np.int64)


def _dataset_fn(bundle, domain: str, domain_id: int):
  """A FunctionDataSource ``dataset_fn`` over the domain's token rows."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  bert = bundle.bert
  chunk = bundle.seq_len - 2 if bert else bundle.seq_len
  eos = bundle.tokenizer.eos_id
  spec = bundle.mlm_spec()

  def fn(split: str, shuffle_files: bool, seed: int | None = None):
    stream = (bundle.train_streams if split == "train"
              else bundle.heldout_streams)[domain]
    splits = _chunk_splits(np.asarray(stream), eos, chunk)
    lengths = np.diff(splits)
    order = np.arange(len(lengths))
    if shuffle_files:
      order = np.random.default_rng(
          [0 if seed is None else int(seed) % (1 << 63),
           pipeline_lib._domain_key(domain)]).permutation(len(lengths))  # pylint: disable=protected-access
    starts = splits[:-1][order]
    lens = lengths[order]
    idx = (np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]),
                     lens) + np.arange(lens.sum()))
    values = np.asarray(stream)[idx].astype(np.int32)
    new_splits = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    rt = tf.RaggedTensor.from_row_splits(values, new_splits)
    ds = tf.data.Dataset.from_tensor_slices(rt)

    def to_example(x):
      ex = {"domain_id": tf.constant(domain_id, tf.int32)}
      if bert:
        x = tf.concat([[spec.cls_id], x, [spec.sep_id]], axis=0)
        ex["inputs"] = x
      ex["targets"] = x
      return ex

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)

  return fn


def _output_features(bundle) -> dict:
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vocab = bundle.tokenizer.seqio_vocabulary()
  feats = {"targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32)}
  if bundle.bert:
    feats["inputs"] = seqio.Feature(vocab, add_eos=False, dtype=tf.int32)
  return feats


def register_domain_tasks(bundle, study_name: str) -> list[str]:
  """Registers one seqio Task per domain of ``bundle``; returns their names."""
  hide_accelerators_from_tf()
  import seqio  # pylint: disable=g-import-not-at-top
  names = []
  for i, d in enumerate(bundle.domains):
    name = task_name(study_name, d)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(
            _dataset_fn(bundle, d, i), splits=["train", "validation"]),
        preprocessors=[],
        output_features=_output_features(bundle),
        metric_fns=[])
    names.append(name)
  return names


def rate_mixture(bundle, study_name: str, weights: Mapping[str, float]):
  """Registers and returns a ``seqio.Mixture`` sampling domains by ``weights``.

  Tasks are (re-)registered first. Domains with weight 0 are left out.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  for d, w in weights.items():
    if d not in bundle.domains:
      raise DataError(f"rate mixture names unknown domain {d!r}; known: "
                      f"{', '.join(bundle.domains)}")
    if not np.isfinite(w) or w < 0:
      raise DataError(f"rate for domain {d!r} is {w!r}; rates are >= 0")
  if sum(weights.values()) <= 0:
    raise DataError(f"rate mixture {dict(weights)} has no positive rate")
  register_domain_tasks(bundle, study_name)
  tag = hashlib.sha256(json.dumps(
      {d: float(w) for d, w in sorted(weights.items())}).encode()).hexdigest()
  name = re.sub(r"[^\w]", "_", f"{study_name}__rate_{tag[:12]}")
  seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(
      name, [(task_name(study_name, d), float(w))
             for d, w in weights.items() if w > 0])


def task_feature_lengths(bundle) -> dict[str, int]:
  lengths = {"targets": bundle.seq_len}
  if bundle.bert:
    lengths["inputs"] = bundle.seq_len
  return lengths


def rate_batches(bundle, mixture, seed: int, batch_size: int | None = None,
                 split: str = "train", shard: int = 0, num_shards: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Endless packed numpy batches from ``mixture`` (this shard's rows).

  Args:
    bundle: the DataBundle the tasks were registered from.
    mixture: from :func:`rate_mixture`.
    seed: shuffling, sampling and (BERT) masking seed.
    batch_size: global batch (default ``train.global_batch_size``).
    split: ``train`` or ``validation``.
    shard: this host's index.
    num_shards: number of hosts; must divide ``batch_size``.

  Yields:
    ``[batch_size // num_shards, L]`` batches in the architecture.md format.
  """
  hide_accelerators_from_tf()
  import seqio  # pylint: disable=g-import-not-at-top
  batch_size = batch_size or bundle.batch_size
  if batch_size % num_shards:
    raise ValueError(f"num_shards={num_shards} must divide {batch_size}")
  lengths = task_feature_lengths(bundle)
  ds = mixture.get_dataset(lengths, split=split, shuffle=True, seed=seed,
                           num_epochs=None)
  if num_shards > 1:
    ds = ds.shard(num_shards, shard)
  if bundle.bert:
    conv = seqio.EncoderFeatureConverter(
        mask_id=bundle.tokenizer.mask_id, pack=True)
  else:
    conv = seqio.DecoderFeatureConverter(pack=True)
  ds = conv(ds, lengths).batch(batch_size // num_shards, drop_remainder=True)
  spec = bundle.mlm_spec()
  for step, ex in enumerate(ds.as_numpy_iterator()):
    if not bundle.bert:
      yield {
          "inputs": ex["decoder_input_tokens"].astype(np.int32),
          "targets": ex["decoder_target_tokens"].astype(np.int32),
          "weights": ex["decoder_loss_weights"].astype(np.float32),
          "segment_ids": ex["decoder_segment_ids"].astype(np.int32),
          "positions": ex["decoder_positions"].astype(np.int32),
      }
      continue
    targets = ex["encoder_target_tokens"].astype(np.int32)
    seg = ex["encoder_segment_ids"].astype(np.int32)
    inputs = targets.copy()
    weights = np.zeros(targets.shape, np.float32)
    for r in range(len(targets)):
      content = (seg[r] > 0) & (targets[r] != spec.cls_id) & (
          targets[r] != spec.sep_id)
      rng = pipeline_lib._rng(seed, step, shard, r, 0x5A7E)  # pylint: disable=protected-access
      inputs[r], weights[r] = pipeline_lib.mlm_mask(targets[r], content, rng,
                                                    spec)
    yield {
        "inputs": inputs, "targets": targets, "weights": weights,
        "segment_ids": seg,
        "positions": ex["encoder_positions"].astype(np.int32),
        "token_type_ids": np.zeros_like(targets),
    }


def sample_domain_counts(bundle, mixture, seed: int, num_examples: int
                         ) -> dict[str, int]:
  """Examples per domain among the first ``num_examples`` mixed examples."""
  ds = mixture.get_dataset(task_feature_lengths(bundle), split="train",
                           shuffle=True, seed=seed, num_epochs=None,
                           passthrough_features=["domain_id"])
  counts = np.zeros(len(bundle.domains), np.int64)
  for ex in ds.take(num_examples).as_numpy_iterator():
    counts[int(ex["domain_id"])] += 1
  return {d: int(counts[i]) for i, d in enumerate(bundle.domains)}
