"""TensorFlow (pulled in by seqio, tfds, clu and TensorBoard): off accelerators, quiet.

TensorFlow >= 2.18 logs through absl's C++ logging, which ignores
``TF_CPP_MIN_LOG_LEVEL`` before ``absl::InitializeLog()``: every process that
imports it prints ``cudart_stub.cc ... Could not find cuda drivers`` and the
``oneDNN custom operations are on`` notice (twice, one per shared library).
:func:`quiet_tf_startup` (call it before anything imports TensorFlow) filters
those start-up lines out of what the import writes to stderr; oneDNN itself
and every numeric setting stay as they are.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
from typing import Iterator

# absl C++ log line: severity letter, MMDD, time, thread, file:line] message.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def hide_accelerators_from_tf() -> None:
  """Keeps TensorFlow off GPUs/TPUs (JAX owns them); safe to call twice."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # already initialised, or no such device type


def filter_startup_log(text: str, min_level: int) -> str:
  """``text`` without the absl C++ lines below ``min_level`` (0 keeps all).

  ``min_level`` means what ``TF_CPP_MIN_LOG_LEVEL`` means: 1 drops INFO,
  2 also WARNING, 3 also ERROR; FATAL lines always stay. The
  "before absl::InitializeLog()" banner goes with the lines it announces.
  Any other text (Python warnings, tracebacks) is kept.
  """
  if min_level <= 0:
    return text
  kept = []
  for line in text.splitlines(keepends=True):
    m = _ABSL_LINE.match(line)
    if m and _SEVERITY[m.group(1)] < min(min_level, 3):
      continue
    if line.startswith(_PRE_INIT):
      continue
    kept.append(line)
  return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr(min_level: int) -> Iterator[None]:
  """Captures file descriptor 2 (C++ writes too) and re-emits it filtered."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      text = filter_startup_log(
          capture.read().decode("utf-8", "replace"), min_level)
      if text:
        sys.stderr.write(text)
        sys.stderr.flush()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
  """Runs the first ``import tensorflow`` with its start-up log filtered."""

  def find_spec(self, fullname, path, target=None):  # noqa: D102
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)  # once: find the real spec, then step aside
    import importlib.util  # pylint: disable=g-import-not-at-top
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None:
      return spec
    exec_module = spec.loader.exec_module
    level = _min_level()

    def quiet_exec(module):
      with _filtered_stderr(level):
        exec_module(module)
    spec.loader.exec_module = quiet_exec  # type: ignore[method-assign]
    return spec


def _min_level() -> int:
  try:
    return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return 0


def quiet_tf_startup() -> None:
  """Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (unless set) and filters TF's import log.

  Call before the first TensorFlow import of the process (later calls, or
  calls after TensorFlow was imported, do nothing).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if "tensorflow" in sys.modules or any(
      isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
    return
  sys.meta_path.insert(0, _QuietTensorFlowFinder())
