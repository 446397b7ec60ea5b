"""Whole-study progress: runs done, runs to go, and the time left.

A :class:`StudyProgress` knows the runs this command plans (store name ->
tokens: the DDO runs of every budget and seed, the final runs of every
mixture and seed) and which of them are done (trained or reused from the
store). The time left is the tokens still to train at the speed measured on
the runs trained so far in this process. The formatters are pure functions.
"""

from __future__ import annotations

from typing import Mapping


def fmt_duration(seconds: float) -> str:
  """``45s``, ``4m10s`` or ``1h02m`` (rounded to whole seconds)."""
  s = int(round(max(seconds, 0.0)))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s // 60 % 60:02d}m"


def study_line(done: int, total: int, eta_s: float | None) -> str:
  """``[study] 12/45 runs done, 33 to go, ETA 4m10s``.

  ``eta_s`` None: no run trained yet in this process (``ETA unknown``).
  """
  left = max(total - done, 0)
  if not left:
    return f"[study] {done}/{total} runs done"
  eta = "unknown" if eta_s is None else fmt_duration(eta_s)
  return f"[study] {done}/{total} runs done, {left} to go, ETA {eta}"


def run_line(label: str, name: str, *, tokens: int, steps: int,
             seconds: float | None, aggregate: Mapping[str, float]) -> str:
  """One finished run: ``[ddo b1 2/30]: NAME done in 12.3s: 100,002 tokens,
  49 steps, loss=5.6483 ppl_seq=296.11``.

  ``seconds`` None: the run was trained together with others (a swarm).
  """
  took = "the swarm" if seconds is None else f"{seconds:.1f}s"
  return (f"{label}: {name} done in {took}: {int(tokens):,} tokens, "
          f"{int(steps)} steps, loss={aggregate['loss']:.4f} "
          f"ppl_seq={aggregate['ppl_seq']:.2f}")


class StudyProgress:
  """Counts a command's planned runs as they finish; estimates the time left."""

  def __init__(self, planned: Mapping[str, float] | None = None):
    self.planned: dict[str, float] = dict(planned or {})
    self.done: set[str] = set()
    self.together: set[str] = set()  # trained by a swarm, not yet reported
    self.trained_tokens = 0.0
    self.trained_seconds = 0.0
    self._reused = 0

  def expect(self, planned: Mapping[str, float]) -> None:
    """Adds (or updates the tokens of) planned runs."""
    self.planned.update({n: float(t) for n, t in planned.items()})

  def trained(self, name: str, tokens: float, seconds: float) -> None:
    """Run ``name`` was trained here in ``seconds``."""
    self._count(name, tokens)
    self.trained_tokens += float(tokens)
    self.trained_seconds += float(seconds)

  def trained_together(self, tokens: Mapping[str, float],
                       seconds: float) -> None:
    """The runs ``tokens`` (name -> tokens) were trained as one program."""
    for name, t in tokens.items():
      self._count(name, t)
    self.together.update(tokens)
    self.trained_tokens += float(sum(tokens.values()))
    self.trained_seconds += float(seconds)

  def finished_earlier(self, name: str, tokens: float) -> None:
    """Run ``name`` had finished before this process (its time is unknown)."""
    self._count(name, tokens)

  def reused(self, name: str, tokens: float) -> None:
    """Run ``name``'s record was already in the store."""
    if name not in self.done:
      self._reused += 1
    self._count(name, tokens)

  def pop_together(self, name: str) -> bool:
    """Whether ``name`` was trained by a swarm (asked once per run)."""
    if name in self.together:
      self.together.discard(name)
      return True
    return False

  def pop_reused(self) -> int:
    """How many runs were reused since the last call."""
    n, self._reused = self._reused, 0
    return n

  def eta_s(self) -> float | None:
    """Seconds to train the runs left at the speed measured so far."""
    if self.trained_seconds <= 0 or self.trained_tokens <= 0:
      return None
    left = sum(t for n, t in self.planned.items() if n not in self.done)
    return left / (self.trained_tokens / self.trained_seconds)

  def line(self) -> str:
    return study_line(len(self.done), len(self.planned), self.eta_s())

  def _count(self, name: str, tokens: float) -> None:
    self.planned.setdefault(name, float(tokens))
    self.done.add(name)
