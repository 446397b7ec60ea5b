"""Metric writers: clu's default writer (logging + TensorBoard event files)."""

from __future__ import annotations

import os
from typing import Any

from clu import metric_writers

from autoscale_jax.tfenv import hide_accelerators_from_tf


def create_writer(logdir: str | os.PathLike, *, just_logging: bool = False
                  ) -> Any:
  """clu writer: TensorBoard under ``logdir`` plus logging, or logging only.

  ``just_logging`` is for processes other than process 0 in a multi-host run.
  """
  if just_logging:
    return metric_writers.create_default_writer(just_logging=True)
  hide_accelerators_from_tf()
  return metric_writers.create_default_writer(str(logdir))
