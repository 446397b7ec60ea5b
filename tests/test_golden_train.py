"""Golden: one train step of the micro GPT-2 gives the stored metrics.

Pins what a refactor must not change: the model's forward pass and init, the
loss, the gradient, the optimizer update and the LR schedule. A fixed seed and
a fixed batch built here (no data pipeline) on one CPU device; the values are
in ``tests/golden/train_step.json``.

When a change is meant to alter these numbers (a new init, another optimizer
default), regenerate the file and commit it with the reason:

    REGEN_GOLDEN=1 python -m pytest tests/test_golden_train.py
"""

import json
import os

import jax
import numpy as np
import optax

from autoscale_jax.train import sharding, trainer
from configs import micro

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "train_step.json")
VOCAB = 64
SEED = 0
NUM_STEPS = 10  # the run length the LR schedule sees
# float32 on a CPU; the margin covers XLA versions reordering a reduction.
RTOL, ATOL = 1e-5, 1e-6
HOW_TO_UPDATE = (
    "If this change is meant to alter one train step's numbers, regenerate "
    "the golden with `REGEN_GOLDEN=1 python -m pytest "
    "tests/test_golden_train.py` and commit tests/golden/train_step.json "
    "with the reason in the commit message; otherwise the change broke the "
    "model, the loss, the gradient or the optimizer update.")


def _batch() -> dict[str, np.ndarray]:
  """A fixed next-token batch [8, 32]: two packed documents per row."""
  c = micro.get_config().train
  rows, length = int(c.global_batch_size), int(c.seq_len)
  rng = np.random.default_rng(1234)
  tokens = rng.integers(1, VOCAB, size=(rows, length + 1), dtype=np.int32)
  half = length // 2
  segment_ids = np.repeat(np.array([[1] * half + [2] * (length - half)],
                                   np.int32), rows, axis=0)
  positions = np.concatenate([np.arange(half), np.arange(length - half)])
  weights = np.ones((rows, length), np.float32)
  weights[:, -3:] = 0.0  # some padding at the end of each row
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "weights": weights, "segment_ids": segment_ids,
          "positions": np.repeat(positions[None].astype(np.int32), rows, 0)}


def _one_step() -> dict[str, float]:
  config = micro.get_config()
  mesh = sharding.make_mesh([1, 1, 1], jax.devices()[:1])
  compiled = trainer.get_compiled(config, VOCAB, mesh)
  state = trainer.init_state(compiled, SEED, NUM_STEPS)
  with jax.set_mesh(mesh):
    init_norm = float(optax.tree.norm(state["params"]))
    state, metrics = compiled.train_step(
        state, sharding.put_batch(_batch(), mesh))
  metrics = jax.device_get(metrics)
  out = {name: float(metrics[name])
         for name in ("loss", "grad_norm", "lr", "tokens")}
  out["param_norm_before"] = init_norm
  out["param_norm_after"] = float(optax.tree.norm(state["params"]))
  out["step_after"] = float(state["step"])
  return out


def test_one_train_step_matches_golden():
  got = _one_step()
  if os.environ.get("REGEN_GOLDEN"):
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
      f.write("\n")
  with open(GOLDEN) as f:
    want = json.load(f)
  assert set(got) == set(want), f"golden keys differ. {HOW_TO_UPDATE}"
  for name, value in want.items():
    assert np.isclose(got[name], value, rtol=RTOL, atol=ATOL), (
        f"{name}: got {got[name]!r}, golden {value!r} "
        f"(rtol {RTOL}, atol {ATOL}). {HOW_TO_UPDATE}")
