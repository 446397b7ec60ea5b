"""A synthetic batch source implementing the data contract (for tests/bench).

``batch(step, shard, num_shards)`` is a pure function of ``(seed, step)``: the
global batch is generated from a key folded with the step and the process's
rows are sliced out, so resuming at step k reproduces the unbroken stream.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class SyntheticBatches:
  """Random-token GPT-2 (or BERT) batches ``[B, L]`` in the contract format.

  Args:
    num_steps: steps of the run.
    batch_size: global batch size B.
    seq_len: sequence length L.
    vocab_size: tokens are drawn from ``[1, vocab_size)`` (0 is padding).
    seed: seed of the stream.
    domains: names the (fake) tokens are attributed to, round-robin by row.
    kind: "gpt2" (next-token targets) or "bert" (15% masked positions).
    docs_per_row: packed documents per row (segment ids 1..n, positions restart).
    pad_final: the last step's batch is half padding (``padded_final_step``).
    nan_at_step: if set, that step's weights are NaN (to test divergence).
    data: optional token array ``[N, L + 1]`` sampled instead of random tokens.
  """

  def __init__(self, num_steps: int, batch_size: int, seq_len: int,
               vocab_size: int, *, seed: int = 0,
               domains: Sequence[str] = ("a", "b"), kind: str = "gpt2",
               docs_per_row: int = 1, pad_final: bool = False,
               nan_at_step: int | None = None, data: np.ndarray | None = None):
    self.num_steps = int(num_steps)
    self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
    self.seed, self.domains, self.kind = seed, list(domains), kind
    self.docs_per_row = docs_per_row
    self.padded_final_step = bool(pad_final)
    self.nan_at_step = nan_at_step
    self.data = data
    self.tokens_per_domain = self._count_tokens()

  def _count_tokens(self) -> dict[str, float]:
    counts = {d: 0.0 for d in self.domains}
    for step in range(self.num_steps):
      w = np.nan_to_num(self.batch(step)["weights"])
      for r in range(self.batch_size):
        counts[self.domains[r % len(self.domains)]] += float(w[r].sum())
    return counts

  def batch(self, step: int, shard: int = 0, num_shards: int = 1
            ) -> dict[str, np.ndarray]:
    """The rows of ``shard`` of the global batch of ``step``."""
    rng = np.random.default_rng([self.seed, step])
    b, l = self.batch_size, self.seq_len
    if self.data is not None:
      rows = self.data[rng.integers(0, len(self.data), size=b)]
      tokens = rows.astype(np.int32)
    else:
      tokens = rng.integers(1, self.vocab_size, size=(b, l + 1), dtype=np.int32)
    seg = np.ones((b, l), np.int32)
    pos = np.tile(np.arange(l, dtype=np.int32), (b, 1))
    if self.docs_per_row > 1:
      bounds = l // self.docs_per_row
      seg = (np.arange(l) // bounds + 1).clip(max=self.docs_per_row)
      seg = np.tile(seg.astype(np.int32), (b, 1))
      pos = np.tile((np.arange(l) - (seg[0] - 1) * bounds).astype(np.int32),
                    (b, 1))
    if self.kind == "bert":
      inputs, targets = tokens[:, :l].copy(), tokens[:, :l].copy()
      masked = rng.random((b, l)) < 0.15
      inputs[masked] = self.vocab_size - 1  # a [MASK] stand-in
      weights = masked.astype(np.float32)
    else:
      inputs, targets = tokens[:, :l], tokens[:, 1:l + 1]
      weights = np.ones((b, l), np.float32)
    if self.padded_final_step and step == self.num_steps - 1:
      half = b // 2
      inputs, targets = inputs.copy(), targets.copy()
      inputs[half:] = targets[half:] = 0
      seg[half:] = 0
      pos[half:] = 0
      weights[half:] = 0
    weights = weights * (seg > 0)
    if self.nan_at_step is not None and step == self.nan_at_step:
      weights = weights * np.nan
    out = {"inputs": inputs, "targets": targets, "weights": weights,
           "segment_ids": seg, "positions": pos}
    if self.kind == "bert":
      out["token_type_ids"] = np.zeros((b, l), np.int32)
    if num_shards > 1:
      rows = b // num_shards
      out = {k: v[shard * rows:(shard + 1) * rows] for k, v in out.items()}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}

  def eval_set(self, num_sequences: int, seed: int = 12345
               ) -> dict[str, np.ndarray]:
    """A held-out set in the eval format (``num_bytes`` = 1 byte per token)."""
    src = SyntheticBatches(1, num_sequences, self.seq_len, self.vocab_size,
                           seed=seed, domains=self.domains, kind=self.kind,
                           docs_per_row=self.docs_per_row, data=self.data)
    out = src.batch(0)
    out["num_bytes"] = out["weights"].sum(1).astype(np.float32)
    return out
