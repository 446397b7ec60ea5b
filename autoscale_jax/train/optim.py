"""AdamW with decoupled, masked weight decay, clipping and a per-run LR schedule.

The learning rate is *not* baked into the optax transform: ``make_optimizer``
returns AdamW with unit learning rate, and the train step multiplies its
updates by ``lr_schedule(step, num_steps, ...)`` where ``num_steps`` is a traced
value carried in the train state. One compiled step therefore serves runs of
any length (every DDO proxy run gets its own warmup + decay to 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# Parameter leaf names that never get weight decay.
_NO_DECAY_SUFFIXES = ("bias", "scale")
_POSITION_TABLES = ("pos_embed", "type_embed")


def decay_mask(params: Any, decay_embeddings_of_positions: bool = False) -> Any:
  """True where weight decay applies: kernels and the word embedding."""

  def mask(path: tuple[Any, ...], _: Any) -> bool:
    name = str(getattr(path[-1], "key", path[-1]))
    if name.endswith(_NO_DECAY_SUFFIXES):
      return False
    if name in _POSITION_TABLES and not decay_embeddings_of_positions:
      return False
    return True

  return jax.tree_util.tree_map_with_path(mask, params)


def make_optimizer(train_config: Any, params: Any) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW (lr 1; the schedule scales the update)."""
  c = train_config
  return optax.chain(
      optax.clip_by_global_norm(float(c.clip_norm)),
      optax.adamw(learning_rate=1.0, b1=float(c.b1), b2=float(c.b2), eps=1e-8,
                  weight_decay=float(c.weight_decay),
                  mask=decay_mask(params,
                                  bool(c.get("decay_position_embeddings", False)))),
  )


def warmup_steps(num_steps: jax.Array | int, warmup_frac: float) -> jax.Array:
  return jnp.floor(jnp.asarray(num_steps, jnp.float32) * warmup_frac)


def lr_schedule(step: jax.Array | int, num_steps: jax.Array | int, *,
                peak: float, warmup_frac: float, kind: str) -> jax.Array:
  """LR of the update taken at 0-based ``step`` of a ``num_steps``-step run.

  Linear warmup to ``peak`` over ``floor(warmup_frac * num_steps)`` steps (the
  first update already uses ``peak / W``), then linear or cosine decay that
  reaches 0 at ``step == num_steps`` (after the last update).
  """
  s = jnp.asarray(step, jnp.float32)
  total = jnp.maximum(jnp.asarray(num_steps, jnp.float32), 1.0)
  warm = warmup_steps(num_steps, warmup_frac)
  warm_lr = (s + 1.0) / jnp.maximum(warm, 1.0)
  frac = jnp.clip((s - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
  if kind == "linear":
    decay = 1.0 - frac
  elif kind == "cosine":
    decay = 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  else:
    raise ValueError(f"config.train.schedule={kind!r} is invalid: "
                     "allowed: linear, cosine")
  return peak * jnp.where(s < warm, warm_lr, decay)


def schedule_fn(train_config: Any):
  """``(step, num_steps) -> lr`` for ``config.train``."""
  c = train_config
  return lambda step, num_steps: lr_schedule(
      step, num_steps, peak=float(c.learning_rate),
      warmup_frac=float(c.warmup_frac), kind=str(c.schedule))
