"""What the trainer consumes: a batch source (the data contract).

A batch source is any object with these four members; the data layer's
``QuotaBatches`` and the tests' ``SyntheticBatches`` both satisfy it
structurally (neither imports this module). ``batch`` is a pure function of
the step, so the data position saved with a checkpoint is the step itself.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np

# The batch arrays the model reads (a source may return more, e.g. num_bytes).
BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions",
              "token_type_ids")


@runtime_checkable
class BatchSource(Protocol):
  """A run's training batches, one global batch per step.

  Attributes:
    num_steps: steps of the run (one optimizer update each).
    tokens_per_domain: domain -> training tokens the run's batches hold.
    padded_final_step: the last step's batch is partial (padding rows carry
      zero weight).
  """

  @property
  def num_steps(self) -> int: ...

  @property
  def tokens_per_domain(self) -> Mapping[str, float]: ...

  @property
  def padded_final_step(self) -> bool: ...

  def batch(self, step: int, shard: int = 0, num_shards: int = 1
            ) -> Mapping[str, np.ndarray]:
    """The rows of process ``shard`` (of ``num_shards``) of step's global batch.

    Arrays are ``[B / num_shards, L]`` with the keys in ``BATCH_KEYS``
    (``token_type_ids`` only for BERT); a pure function of ``step``.
    """
    ...


def model_arrays(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The arrays of ``batch`` the model reads (``BATCH_KEYS``; source order)."""
  return {k: v for k, v in batch.items() if k in BATCH_KEYS}
