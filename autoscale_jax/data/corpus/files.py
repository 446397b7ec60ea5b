"""Atomic writes for the download cache and the built corpus.

A reader (another build sharing the cache, or one that was interrupted) never
sees a half-written file or directory: each is filled under a temporary name
and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_dir(final: Path, fill: Callable[[Path], None]) -> Path:
  """Fills a temp dir next to `final` and renames it into place."""
  if final.is_dir():
    return final
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
  try:
    fill(tmp)
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


def atomic_write(path: Path, data: bytes) -> None:
  """Writes `data` to a temp file next to `path` and renames it into place."""
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path) -> None:
  """Hard-links `src` to `dst` (copies if it cannot link), atomically."""
  tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
  if tmp.exists():
    tmp.unlink()
  try:
    os.link(src, tmp)
  except OSError:
    shutil.copyfile(src, tmp)
  os.replace(tmp, dst)
