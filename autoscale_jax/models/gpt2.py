"""GPT-2 causal language model (Flax NNX).

Learned positions, pre-LayerNorm blocks, GELU MLP, tied input/output
embeddings, dropout on embeddings, attention probabilities and residuals.
Residual output projections use the GPT-2 scaled init ``0.02 / sqrt(2 L)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from autoscale_jax.models import layers


class GPT2(nnx.Module):
  """Decoder-only causal LM returning float32 logits ``[B, L, V]``."""

  def __init__(self, *, vocab_size: int, num_layers: int, d_model: int,
               num_heads: int, mlp_dim: int, max_len: int, dropout: float = 0.0,
               dtype: jnp.dtype = jnp.float32, remat: bool = False,
               rngs: nnx.Rngs):
    self.embed = layers.param(rngs, layers.normal(0.02), (vocab_size, d_model),
                              ("vocab", "embed"))
    self.pos_embed = layers.param(rngs, layers.normal(0.01), (max_len, d_model),
                                  ("pos", "embed"))
    out_std = 0.02 / math.sqrt(2 * num_layers)
    self.blocks = nnx.List([
        layers.Block(d_model, num_heads, mlp_dim, dropout=dropout, pre_ln=True,
                     ln_eps=1e-5, dtype=dtype, rngs=rngs, out_stddev=out_std)
        for _ in range(num_layers)])
    self.ln_f = layers.LayerNorm(d_model, eps=1e-5, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.dtype = dtype
    self.remat = remat

  def __call__(self, inputs_BxL: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array, *, deterministic: bool = True,
               token_type_ids_BxL: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits for the next token at every position (``token_type_ids`` unused)."""
    del token_type_ids_BxL
    emb_VxD = self.embed[...]
    x_BxLxD = jnp.take(emb_VxD, inputs_BxL, axis=0)
    x_BxLxD += jnp.take(self.pos_embed[...], positions_BxL, axis=0)
    x_BxLxD = self.dropout(x_BxLxD.astype(self.dtype),
                           deterministic=deterministic, rngs=rngs)
    mask = layers.attention_mask(segment_ids_BxL, causal=True)
    x_BxLxD = layers.run_blocks(self.blocks, x_BxLxD, mask,
                                deterministic=deterministic, rngs=rngs,
                                remat=self.remat)
    x_BxLxD = self.ln_f(x_BxLxD)
    logits_BxLxV = jnp.einsum("bld,vd->blv", x_BxLxD,
                              emb_VxD.astype(self.dtype))
    return logits_BxLxV.astype(jnp.float32)
