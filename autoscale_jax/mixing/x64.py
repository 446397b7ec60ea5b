"""Scoped float64 for the mixing maths.

JAX defaults to float32. Fits and the constrained solver need float64 (the
exact 3-point interpolant and a KKT certificate at 1e-9 are out of reach in
float32), but flipping ``jax_enable_x64`` globally would change the trainer's
dtypes. :func:`float64` scopes it with ``jax.enable_x64`` (a context manager in
jax >= 0.7). Everything that leaves a scoped function is converted to numpy
first, so no float64 jax array escapes into float32 code.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax


@contextlib.contextmanager
def float64() -> Iterator[None]:
  """Context in which JAX creates and computes float64 arrays."""
  with jax.enable_x64(True):
    yield
