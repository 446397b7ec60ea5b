"""Command-line options of a stage and the stage's user error."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from autoscale_jax import errors


class StageError(errors.UserError, ValueError):
  """A stage cannot run with what the workdir or flags provide."""


@dataclasses.dataclass(frozen=True)
class Options:
  """Command-line options that are not part of the study config."""
  workdir: str | None = None
  results: str | None = None
  optima: Sequence[str] | None = None
  target_tokens: float | None = None
  mixtures: Sequence[str] | None = None
  allow_repeat: bool = False
  worker_index: int | None = None
  num_workers: int | None = None
  worker: str | None = None  # lease fan-out worker name (study/lease_worker)
  available_tokens: str | None = None
  allow_interpolation: bool = False


def require(value: Any, flag: str, what: str) -> None:
  """Raises StageError when the flag ``flag`` (needed for ``what``) is unset."""
  if not value:
    raise StageError(f"{flag} is required ({what})")
