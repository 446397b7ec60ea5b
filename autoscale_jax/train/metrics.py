"""Metric writers: clu's logging + TensorBoard writers, plus any extra writer."""

from __future__ import annotations

import os
from typing import Sequence

from clu import metric_writers
from clu.metric_writers import interface

from autoscale_jax.tfenv import hide_accelerators_from_tf


def create_writer(logdir: str | os.PathLike, *, just_logging: bool = False,
                  extra: Sequence[interface.MetricWriter] = ()
                  ) -> interface.MetricWriter:
  """clu writer: TensorBoard under ``logdir`` plus logging (plus ``extra``).

  ``just_logging`` is for processes other than process 0 in a multi-host run
  (no files, no ``extra`` writers).
  """
  if just_logging:
    return metric_writers.create_default_writer(just_logging=True)
  hide_accelerators_from_tf()
  return metric_writers.AsyncMultiWriter(
      [metric_writers.LoggingWriter(),
       metric_writers.SummaryWriter(os.fspath(logdir)), *extra])
