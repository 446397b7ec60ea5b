"""BERT masked language model (Flax NNX).

Word + position + token-type embeddings followed by LayerNorm, post-LN blocks
as in BERT, and the MLM head (dense + GELU + LayerNorm, output tied to the word
embeddings, plus a per-token bias). Padding (``segment_ids == 0``) is masked out
of attention, so the outputs at real tokens do not depend on padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from autoscale_jax.models import layers


class BertMLM(nnx.Module):
  """Bidirectional encoder with an MLM head returning float32 logits."""

  def __init__(self, *, vocab_size: int, num_layers: int, d_model: int,
               num_heads: int, mlp_dim: int, max_len: int,
               type_vocab_size: int = 2, dropout: float = 0.0,
               dtype: jnp.dtype = jnp.float32, remat: bool = False,
               rngs: nnx.Rngs):
    init = layers.normal(0.02)
    self.embed = layers.param(rngs, init, (vocab_size, d_model),
                              ("vocab", "embed"))
    self.pos_embed = layers.param(rngs, init, (max_len, d_model),
                                  ("pos", "embed"))
    self.type_embed = layers.param(rngs, init, (type_vocab_size, d_model),
                                   ("type", "embed"))
    self.ln_embed = layers.LayerNorm(d_model, eps=1e-12, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        layers.Block(d_model, num_heads, mlp_dim, dropout=dropout, pre_ln=False,
                     ln_eps=1e-12, dtype=dtype, rngs=rngs)
        for _ in range(num_layers)])
    self.mlm_dense = layers.Dense(d_model, d_model, ("embed", "mlp"),
                                  dtype=dtype, rngs=rngs)
    self.mlm_ln = layers.LayerNorm(d_model, eps=1e-12, dtype=dtype, rngs=rngs)
    self.mlm_bias = layers.param(rngs, layers.zeros, (vocab_size,), ("vocab",))
    self.dropout = nnx.Dropout(dropout)
    self.dtype = dtype
    self.remat = remat

  def __call__(self, inputs_BxL: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array, *, deterministic: bool = True,
               token_type_ids_BxL: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """MLM logits at every position."""
    if token_type_ids_BxL is None:
      token_type_ids_BxL = jnp.zeros_like(inputs_BxL)
    emb_VxD = self.embed[...]
    x_BxLxD = jnp.take(emb_VxD, inputs_BxL, axis=0)
    x_BxLxD += jnp.take(self.pos_embed[...], positions_BxL, axis=0)
    x_BxLxD += jnp.take(self.type_embed[...], token_type_ids_BxL, axis=0)
    x_BxLxD = self.dropout(self.ln_embed(x_BxLxD), deterministic=deterministic,
                           rngs=rngs)
    mask = layers.attention_mask(segment_ids_BxL, causal=False)
    x_BxLxD = layers.run_blocks(self.blocks, x_BxLxD, mask,
                                deterministic=deterministic, rngs=rngs,
                                remat=self.remat)
    h_BxLxD = self.mlm_ln(jax.nn.gelu(self.mlm_dense(x_BxLxD), approximate=False))
    logits_BxLxV = jnp.einsum("bld,vd->blv", h_BxLxD, emb_VxD.astype(self.dtype))
    logits_BxLxV = logits_BxLxV.astype(jnp.float32) + self.mlm_bias[...]
    return logits_BxLxV
