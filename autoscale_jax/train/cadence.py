"""When a run logs, evaluates and checkpoints, and the divergence guard.

``RunSettings`` is read from the config once per run; its predicates say
which steps are stops (a log, eval or checkpoint step), and ``call_end`` ends
a compiled multi-step call at the next stop so the stop sees exactly that
step's state. Metrics of dispatched calls wait in a ``MetricsQueue`` and are
read back (which blocks on the device) only when a stop needs them, so the
host keeps dispatching ahead of the device.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterable, Iterator

from autoscale_jax import errors


class TrainingDiverged(errors.UserError, RuntimeError):
  """The training loss became NaN or Inf (the message names the step)."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """How a run executes and logs (none of these change its results).

  Attributes:
    eval_every: evaluate every this many steps (0: only at the end).
    ckpt_every: save a checkpoint every this many steps (and at the end).
    log_every: log the train metrics every this many steps (and at the end).
    eval_batch_size: rows per evaluation call.
    tokens_per_step: ``global_batch_size * seq_len`` (for tokens per second).
    keep_checkpoints: checkpoints kept on disk (older ones are deleted).
  """
  eval_every: int
  ckpt_every: int
  log_every: int
  eval_batch_size: int
  tokens_per_step: int
  keep_checkpoints: int

  @classmethod
  def from_config(cls, config: Any, eval_every_steps: int = 0
                  ) -> RunSettings:
    """From ``config.run`` and ``config.train``; ``eval_every_steps`` (if > 0)
    overrides ``config.train.eval_every_steps``."""
    train, run = config.train, config.run
    return cls(
        eval_every=int(eval_every_steps or train.get("eval_every_steps", 0)
                       or 0),
        ckpt_every=int(run.checkpoint_every_steps),
        log_every=max(1, int(run.log_every_steps)),
        eval_batch_size=int(run.eval_batch_size),
        tokens_per_step=int(train.global_batch_size) * int(train.seq_len),
        keep_checkpoints=int(run.keep_checkpoints))

  def logs_at(self, step: int, num_steps: int) -> bool:
    """Whether the train metrics are logged after ``step`` updates."""
    return step % self.log_every == 0 or step == num_steps

  def evals_at(self, step: int, num_steps: int) -> bool:
    """Whether a curve point is evaluated after ``step`` (the end has its own)."""
    return bool(self.eval_every) and step % self.eval_every == 0 and (
        step < num_steps)

  def saves_at(self, step: int, num_steps: int) -> bool:
    """Whether a checkpoint is saved after ``step`` updates."""
    return step % self.ckpt_every == 0 or step == num_steps

  def call_end(self, step: int, num_steps: int, per_call: int) -> int:
    """The step a compiled call from ``step`` trains up to (at most per_call).

    It ends at the next log, eval or checkpoint step, or the run's end.
    """
    stops = [(step // n + 1) * n
             for n in (self.log_every, self.eval_every, self.ckpt_every) if n]
    return min([num_steps, step + per_call] + stops)


def check_finite(losses: Iterable[float], first_step: int, *, num_steps: int,
                 last_saved: int, ckpt_dir: Any, label: str = "") -> None:
  """The divergence guard: raises at the first NaN/Inf loss.

  Args:
    losses: the losses of consecutive steps, the first one ``first_step``.
    first_step: the 1-based step number of ``losses[0]``.
    num_steps: the run's length (for the message).
    last_saved: the last checkpointed step (finite by construction).
    ckpt_dir: where that checkpoint is (for the message).
    label: the run's progress prefix.

  Raises:
    TrainingDiverged: naming the step, the loss and the last good checkpoint.
  """
  for i, loss in enumerate(losses):
    loss = float(loss)
    if not math.isfinite(loss):
      raise TrainingDiverged(
          f"{label}loss is {loss} at step {first_step + i} of {num_steps}; "
          f"stopping. Last good checkpoint: step {last_saved} in {ckpt_dir}")


class MetricsQueue:
  """Device metrics of dispatched calls, keyed by the step they end at."""

  def __init__(self) -> None:
    self._items: collections.deque[tuple[int, Any]] = collections.deque()

  def push(self, end_step: int, item: Any) -> None:
    self._items.append((end_step, item))

  def pop_upto(self, step: int) -> Iterator[tuple[int, Any]]:
    """Yields (and removes) the ``(end_step, item)`` pairs ending at <= step."""
    while self._items and self._items[0][0] <= step:
      yield self._items.popleft()
