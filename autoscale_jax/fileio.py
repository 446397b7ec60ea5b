"""Atomic writes for every file a user may rely on (local paths or gs://)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from etils import epath


def atomic_write_text(path: epath.PathLike, text: str) -> epath.Path:
  """Writes ``text`` to a unique temp file next to ``path``, then renames it.

  Readers see the old file or the new one, never a partial one; concurrent
  writers never share a temp file.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
  try:
    tmp.write_text(text)
    tmp.replace(path)
  finally:
    if tmp.exists():
      tmp.unlink()
  return path


def atomic_write_json(path: epath.PathLike, obj: Any) -> epath.Path:
  """Atomically writes ``obj`` as indented, key-sorted, NaN-free JSON."""
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True,
                                            allow_nan=False) + "\n")
