"""Metric writers: clu's default (logging + TensorBoard) with a TF-only fallback.

clu's TensorBoard writer needs the ``tensorboard`` package; when it is missing
we write the same TensorBoard event files through ``tf.summary`` directly.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging


def _hide_accelerators_from_tf() -> Any:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass
  return tf


class TFScalarWriter:
  """Scalars to TensorBoard event files via ``tf.summary`` (no tensorboard pkg)."""

  def __init__(self, logdir: str):
    tf = _hide_accelerators_from_tf()
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"  # read by TensorBoard's scalars tab
    self._meta = meta.SerializeToString()

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Mapping[str, Any] | None = None) -> None:
    del metadata
    self.write_scalars(step, values)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    logging.info("[%d] %s", step, ", ".join(
        f"{k}={float(v):.6g}" for k, v in scalars.items()))
    with self._writer.as_default():
      for k, v in scalars.items():
        self._tf.summary.write(k, self._tf.constant(float(v), self._tf.float32),
                               step=int(step), metadata=self._meta)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def create_writer(logdir: str | os.PathLike, *, just_logging: bool = False
                  ) -> Any:
  """clu writer (logging + TensorBoard under ``logdir``; just logging if asked).

  Falls back to :class:`TFScalarWriter` (same event files, same
  ``write_scalars``/``flush``/``close`` interface) when ``clu.metric_writers``
  cannot be imported because the ``tensorboard`` package is not installed.
  """
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return TFScalarWriter(str(logdir))
  if just_logging:
    return metric_writers.create_default_writer(just_logging=True)
  _hide_accelerators_from_tf()
  return metric_writers.create_default_writer(str(logdir))
