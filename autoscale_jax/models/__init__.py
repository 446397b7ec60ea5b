"""Flax NNX models: GPT-2 (causal LM) and BERT (masked LM)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from autoscale_jax.models.bert import BertMLM
from autoscale_jax.models.gpt2 import GPT2

__all__ = ["BertMLM", "GPT2", "build_model", "count_params"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(model_config: Any, vocab_size: int, rngs: nnx.Rngs, *,
                remat: bool = False) -> GPT2 | BertMLM:
  """Builds ``config.model`` (kind gpt2 | bert) with float32 parameters.

  Parameters carry logical axis names but are not sharded here (eager sharding
  is off); the trainer places them on the mesh. ``remat`` (``config.run.remat``,
  an execution setting) recomputes each block's activations in the backward
  pass; it changes neither the parameters nor the results.
  """
  c = model_config
  kwargs = dict(vocab_size=vocab_size, num_layers=c.num_layers,
                d_model=c.d_model, num_heads=c.num_heads, mlp_dim=c.mlp_dim,
                max_len=c.max_len, dropout=float(c.dropout),
                dtype=_DTYPES[c.get("dtype", "float32")],
                remat=bool(remat), rngs=rngs)
  with nnx.use_eager_sharding(False):
    if c.kind == "gpt2":
      return GPT2(**kwargs)
    if c.kind == "bert":
      return BertMLM(type_vocab_size=c.get("type_vocab_size", 2), **kwargs)
  raise ValueError(f"config.model.kind={c.kind!r} is invalid: allowed: gpt2, bert")


def count_params(model_config: Any, vocab_size: int) -> int:
  """Number of parameters, computed abstractly (no allocation)."""
  abstract = nnx.eval_shape(
      lambda: build_model(model_config, vocab_size, nnx.Rngs(0)))
  state = nnx.state(abstract, nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(state))
