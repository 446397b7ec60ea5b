"""Shared Transformer blocks (Flax NNX) whose parameters carry logical axis names.

Logical axis names used by the parameters (mapped onto the mesh by
``autoscale_jax.train.sharding.LOGICAL_RULES``):

* ``vocab``: vocabulary rows of the (tied) embedding and the MLM output bias.
* ``embed``: the model width.
* ``mlp``: the hidden width of the feed-forward block.
* ``heads`` / ``kv``: attention heads and the per-head width.
* ``pos`` / ``type``: rows of the position and token-type tables.
* ``norm``: LayerNorm scales and biases.

Parameters are always float32; ``dtype`` is the compute dtype (activations and
matmul inputs). Softmax, LayerNorm statistics and logits are computed in float32.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jax.Array]
NEG_INF = -1e9  # finite, so a fully masked row (padding query) stays finite


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int],
          names: Sequence[str | None]) -> nnx.Param:
  """A float32 ``nnx.Param`` annotated with logical axis ``names``."""
  assert len(shape) == len(names), (shape, names)
  value = init(rngs.params(), tuple(shape), jnp.float32)
  return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)


def normal(stddev: float) -> Initializer:
  return jax.nn.initializers.normal(stddev)


zeros = jax.nn.initializers.zeros
ones = jax.nn.initializers.ones


@jax.custom_vjp
def _matmul_2d(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
  return jnp.dot(x_NxI, w_IxO)


def _matmul_2d_fwd(x_NxI, w_IxO):
  return jnp.dot(x_NxI, w_IxO), (x_NxI, w_IxO)


def _matmul_2d_bwd(res, g_NxO):
  x_NxI, w_IxO = res
  dx_NxI = jax.lax.dot_general(g_NxO, w_IxO, (((1,), (1,)), ((), ())))
  dw_IxO = jax.lax.dot_general(x_NxI, g_NxO, (((0,), (0,)), ((), ())))
  return dx_NxI.astype(x_NxI.dtype), dw_IxO.astype(w_IxO.dtype)


_matmul_2d.defvjp(_matmul_2d_fwd, _matmul_2d_bwd)


def matmul(x: jax.Array, w: jax.Array, in_dims: int = 1) -> jax.Array:
  """``x[..., I] @ w[I, O]`` where I/O are the first ``in_dims`` / rest of ``w``."""
  i_shape, o_shape = w.shape[:in_dims], w.shape[in_dims:]
  lead = x.shape[:x.ndim - in_dims]
  i, o = math.prod(i_shape), math.prod(o_shape)
  y = _matmul_2d(x.reshape(-1, i), w.reshape(i, o))
  return y.reshape(*lead, *o_shape)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis with float32 statistics."""

  def __init__(self, dim: int, *, eps: float, dtype: jnp.dtype, rngs: nnx.Rngs):
    self.scale = param(rngs, ones, (dim,), ("norm",))
    self.bias = param(rngs, zeros, (dim,), ("norm",))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    x = x_BxLxD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...] + self.bias[...]
    return y.astype(self.dtype)


class Dense(nnx.Module):
  """``x @ W + b`` with a 2-D kernel annotated ``names``."""

  def __init__(self, din: int, dout: int, names: tuple[str, str], *,
               dtype: jnp.dtype, rngs: nnx.Rngs, stddev: float = 0.02):
    self.kernel = param(rngs, normal(stddev), (din, dout), names)
    self.bias = param(rngs, zeros, (dout,), (names[1],))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = matmul(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


def attention_mask(segment_ids_BxL: jax.Array, causal: bool) -> jax.Array:
  """Boolean ``[B, 1, L, L]`` mask: same segment, key not padding, causal."""
  q = segment_ids_BxL[:, :, None]
  k = segment_ids_BxL[:, None, :]
  mask_BxLxL = (q == k) & (k != 0)
  if causal:
    length = segment_ids_BxL.shape[1]
    mask_BxLxL &= jnp.tril(jnp.ones((length, length), dtype=bool))[None]
  return mask_BxLxL[:, None]


class MultiHeadAttention(nnx.Module):
  """Multi-head self-attention with per-head kernels ``[D, H, K]``."""

  def __init__(self, d_model: int, num_heads: int, *, dropout: float,
               dtype: jnp.dtype, rngs: nnx.Rngs, out_stddev: float = 0.02):
    head_dim = d_model // num_heads
    names = ("embed", "heads", "kv")
    self.query = param(rngs, normal(0.02), (d_model, num_heads, head_dim), names)
    self.key = param(rngs, normal(0.02), (d_model, num_heads, head_dim), names)
    self.value = param(rngs, normal(0.02), (d_model, num_heads, head_dim), names)
    self.query_bias = param(rngs, zeros, (num_heads, head_dim), ("heads", "kv"))
    self.key_bias = param(rngs, zeros, (num_heads, head_dim), ("heads", "kv"))
    self.value_bias = param(rngs, zeros, (num_heads, head_dim), ("heads", "kv"))
    self.out = param(rngs, normal(out_stddev), (num_heads, head_dim, d_model),
                     ("heads", "kv", "embed"))
    self.out_bias = param(rngs, zeros, (d_model,), ("embed",))
    self.dropout = nnx.Dropout(dropout)
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array, *,
               deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
    dt = self.dtype
    x = x_BxLxD.astype(dt)
    q_BxLxHxK = matmul(x, self.query[...].astype(dt))
    k_BxLxHxK = matmul(x, self.key[...].astype(dt))
    v_BxLxHxK = matmul(x, self.value[...].astype(dt))
    q_BxLxHxK += self.query_bias[...].astype(dt)
    k_BxLxHxK += self.key_bias[...].astype(dt)
    v_BxLxHxK += self.value_bias[...].astype(dt)
    scale = q_BxLxHxK.shape[-1] ** -0.5
    logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK * scale,
                                k_BxLxHxK).astype(jnp.float32)
    logits_BxHxLxL = jnp.where(mask_Bx1xLxL, logits_BxHxLxL, NEG_INF)
    probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(dt)
    probs_BxHxLxL = self.dropout(probs_BxHxLxL, deterministic=deterministic,
                                 rngs=rngs)
    ctx_BxLxHxK = jnp.einsum("bhqs,bshk->bqhk", probs_BxHxLxL, v_BxLxHxK)
    out_BxLxD = matmul(ctx_BxLxHxK, self.out[...].astype(dt), in_dims=2)
    return out_BxLxD + self.out_bias[...].astype(dt)


class Mlp(nnx.Module):
  """GELU feed-forward block ``D -> F -> D``."""

  def __init__(self, d_model: int, mlp_dim: int, *, dtype: jnp.dtype,
               rngs: nnx.Rngs, out_stddev: float = 0.02):
    self.fc_in = Dense(d_model, mlp_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc_out = Dense(mlp_dim, d_model, ("mlp", "embed"), dtype=dtype,
                        rngs=rngs, stddev=out_stddev)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    h_BxLxF = jax.nn.gelu(self.fc_in(x_BxLxD), approximate=True)
    return self.fc_out(h_BxLxF)


class Block(nnx.Module):
  """Transformer block; ``pre_ln`` (GPT-2) or post-LN (BERT)."""

  def __init__(self, d_model: int, num_heads: int, mlp_dim: int, *,
               dropout: float, pre_ln: bool, ln_eps: float, dtype: jnp.dtype,
               rngs: nnx.Rngs, out_stddev: float = 0.02):
    self.ln1 = LayerNorm(d_model, eps=ln_eps, dtype=dtype, rngs=rngs)
    self.attn = MultiHeadAttention(d_model, num_heads, dropout=dropout,
                                   dtype=dtype, rngs=rngs, out_stddev=out_stddev)
    self.ln2 = LayerNorm(d_model, eps=ln_eps, dtype=dtype, rngs=rngs)
    self.mlp = Mlp(d_model, mlp_dim, dtype=dtype, rngs=rngs,
                   out_stddev=out_stddev)
    self.dropout = nnx.Dropout(dropout)
    self.pre_ln = pre_ln

  def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array, *,
               deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
    drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
    x = x_BxLxD
    if self.pre_ln:
      x = x + drop(self.attn(self.ln1(x), mask_Bx1xLxL,
                             deterministic=deterministic, rngs=rngs))
      x = x + drop(self.mlp(self.ln2(x)))
    else:
      x = self.ln1(x + drop(self.attn(x, mask_Bx1xLxL,
                                      deterministic=deterministic, rngs=rngs)))
      x = self.ln2(x + drop(self.mlp(x)))
    return x


def run_blocks(blocks: Sequence[Block], x_BxLxD: jax.Array,
               mask_Bx1xLxL: jax.Array, *, deterministic: bool,
               rngs: nnx.Rngs | None, remat: bool) -> jax.Array:
  """Applies ``blocks`` in order, each under ``nnx.remat`` when ``remat``."""

  def apply(block: Block, x: jax.Array, mask: jax.Array,
            rngs: nnx.Rngs | None) -> jax.Array:
    return block(x, mask, deterministic=deterministic, rngs=rngs)

  fn = nnx.remat(apply) if remat else apply
  for block in blocks:
    x_BxLxD = fn(block, x_BxLxD, mask_Bx1xLxL, rngs)
  return x_BxLxD
