"""Readers of what a run logged: TensorBoard event files and W&B offline runs.

Both read the files back with the tools' own formats (TensorBoard's event
loader and hparams protos; W&B's record protos in its ``.wandb`` log), so
the tests check what a user's TensorBoard or ``wandb sync`` would see.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def tensorboard(run_dir) -> tuple[dict[str, dict[int, float]], dict]:
  """``({tag: {step: value}}, hparams)`` of every event file in ``run_dir``."""
  scalars: dict[str, dict[int, float]] = {}
  hparams: dict = {}
  for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents*"))):
    for event in event_file_loader.EventFileLoader(path).Load():
      for v in event.summary.value:
        if v.tag == "_hparams_/session_start_info":
          data = plugin_data_pb2.HParamsPluginData.FromString(
              v.metadata.plugin_data.content)
          for name, value in data.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            hparams[name] = getattr(value, kind)
        elif v.HasField("tensor") and not v.tag.startswith("_hparams_"):
          scalars.setdefault(v.tag, {})[event.step] = float(
              np.asarray(tensor_util.make_ndarray(v.tensor)))
  return scalars, hparams


# The W&B transaction log (``run-<id>.wandb``): a 7-byte header (":W&B",
# magic 0xBEE1, version 0), then LevelDB-log style records in 32 KiB blocks,
# each with a 7-byte header (crc32, length, type: full/first/middle/last).
_WANDB_HEADER = 7
_BLOCK = 32 * 1024


def _wandb_payloads(path: str) -> list[bytes]:
  data = open(path, "rb").read()
  assert data[:4] == b":W&B", path
  out, pending, pos = [], b"", _WANDB_HEADER
  while pos + 7 <= len(data):
    left = _BLOCK - pos % _BLOCK
    if left < 7:  # block trailer: padding
      pos += left
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    chunk = data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind == 0 and length == 0:
      continue
    pending += chunk
    if kind in (1, 4):  # full or last
      out.append(pending)
      pending = b""
  return out


def wandb_offline(wandb_dir) -> list[dict]:
  """Every offline W&B run under ``wandb_dir``: name, project, group, config,
  history (``{step: {key: value}}``) and whether it ``exited`` (its last
  record is written), read from its ``.wandb`` file."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top
  runs = []
  for path in sorted(glob.glob(os.path.join(
      wandb_dir, "**", "offline-run-*", "run-*.wandb"), recursive=True)):
    run = {"name": None, "project": None, "group": None, "config": {},
           "history": {}, "exited": False}
    for payload in _wandb_payloads(path):
      rec = wandb_internal_pb2.Record.FromString(payload)
      kind = rec.WhichOneof("record_type")
      if kind == "run":
        run.update(name=rec.run.display_name, project=rec.run.project,
                   group=rec.run.run_group)
        for item in rec.run.config.update:
          run["config"][item.key] = json.loads(item.value_json)
      elif kind == "config":
        for item in rec.config.update:
          run["config"][item.key] = json.loads(item.value_json)
      elif kind == "history":
        row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
               for i in rec.history.item}
        run["history"][int(rec.history.step.num)] = row
      elif kind == "exit":
        run["exited"] = True
    runs.append(run)
  return runs
