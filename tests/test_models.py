"""GPT-2 / BERT model tests: sizes, causality, padding, jit, remat, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from autoscale_jax import config as config_lib
from autoscale_jax import models
from configs import bert_base, gpt2_large_redpajama, gpt2_small_redpajama

V, L = 128, 16


def _tiny(kind: str, **kw):
  c = config_lib.base_config().model
  c.update(dict(kind=kind, num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
                max_len=32))
  c.update(kw)
  return c


def _inputs(batch: int = 2, seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(1, V, (batch, L)), jnp.int32)
  pos = jnp.tile(jnp.arange(L, dtype=jnp.int32), (batch, 1))
  seg = jnp.ones((batch, L), jnp.int32)
  return tokens, pos, seg


GPT2_VOCAB = 50257  # OpenAI's GPT-2 BPE, the `gpt2` tokenizer.


# Shipped config -> (vocab, published parameter count).
@pytest.mark.parametrize("config_module, vocab, published", [
    (gpt2_small_redpajama, GPT2_VOCAB, 124e6),
    (gpt2_large_redpajama, GPT2_VOCAB, 774e6),
    (bert_base, bert_base.get_config().data.vocab_size, 110e6),
], ids=["gpt2_small", "gpt2_large", "bert_base"])
def test_shipped_model_sizes_match_published_counts(config_module, vocab,
                                                    published):
  c = config_module.get_config().model
  n = models.count_params(c, vocab)  # Abstract (eval_shape): no allocation.
  assert abs(n - published) / published < 0.01, (config_module.__name__, n)


def test_gpt2_is_causal_by_gradient():
  model = models.build_model(_tiny("gpt2"), V, nnx.Rngs(0))
  graphdef, state = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(state)
  tokens, pos, seg = _inputs(1)
  t = 7

  def out_at_t(pos_table):
    m = nnx.merge(graphdef, dict(params, pos_embed=pos_table))
    return m(tokens, pos, seg)[0, t].sum()

  # Position j's embedding only enters the sequence at position j.
  g_LxD = jax.grad(out_at_t)(params["pos_embed"])[:L]
  norms = np.abs(np.asarray(g_LxD)).sum(-1)
  assert np.all(norms[t + 1:] == 0), norms
  assert np.all(norms[:t + 1] > 0), norms


def test_gpt2_packed_documents_do_not_attend_across_segments():
  model = models.build_model(_tiny("gpt2"), V, nnx.Rngs(0))
  tokens, pos, _ = _inputs(1)
  seg = jnp.asarray([[1] * 8 + [2] * 8], jnp.int32)
  pos2 = jnp.asarray([list(range(8)) * 2], jnp.int32)
  packed = model(tokens, pos2, seg)
  alone = model(tokens[:, 8:], pos2[:, 8:], jnp.ones((1, 8), jnp.int32))
  np.testing.assert_allclose(packed[:, 8:], alone, atol=1e-5)
  del pos


def test_bert_output_invariant_to_padding():
  model = models.build_model(_tiny("bert"), V, nnx.Rngs(1))
  tokens, pos, _ = _inputs(1)
  n = 10
  seg_a = jnp.asarray([[1] * n + [0] * (L - n)], jnp.int32)
  padded_b = tokens.at[:, n:].set(5)  # different padding content
  out_a = model(tokens, pos, seg_a)
  out_b = model(padded_b, pos, seg_a)
  short = model(tokens[:, :n], pos[:, :n], jnp.ones((1, n), jnp.int32))
  np.testing.assert_allclose(out_a[:, :n], out_b[:, :n], atol=1e-5)
  np.testing.assert_allclose(out_a[:, :n], short, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_jit_equals_no_jit(kind):
  model = models.build_model(_tiny(kind), V, nnx.Rngs(0))
  tokens, pos, seg = _inputs()
  eager = model(tokens, pos, seg)
  jitted = nnx.jit(lambda m, a, b, c: m(a, b, c))(model, tokens, pos, seg)
  assert eager.shape == (2, L, V) and eager.dtype == jnp.float32
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)


def _loss_and_grads(model_config, remat=False):
  model = models.build_model(model_config, V, nnx.Rngs(3), remat=remat)
  tokens, pos, seg = _inputs()

  def loss(m):
    logits = m(tokens, pos, seg)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

  return nnx.value_and_grad(loss)(model)


def test_remat_equals_no_remat():
  l0, g0 = _loss_and_grads(_tiny("gpt2"), remat=False)
  l1, g1 = _loss_and_grads(_tiny("gpt2"), remat=True)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_bf16_compute_keeps_fp32_params():
  model = models.build_model(_tiny("gpt2", dtype="bfloat16"), V, nnx.Rngs(0))
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  ref = models.build_model(_tiny("gpt2"), V, nnx.Rngs(0))
  tokens, pos, seg = _inputs()
  out = model(tokens, pos, seg)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref(tokens, pos, seg), atol=0.1)


def test_dropout_is_active_only_when_not_deterministic():
  model = models.build_model(_tiny("gpt2", dropout=0.5), V, nnx.Rngs(0))
  tokens, pos, seg = _inputs()
  a = model(tokens, pos, seg, deterministic=True)
  b = model(tokens, pos, seg, deterministic=True)
  c = model(tokens, pos, seg, deterministic=False, rngs=nnx.Rngs(dropout=1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_params_carry_logical_axis_names():
  model = models.build_model(_tiny("gpt2"), V, nnx.Rngs(0))
  assert model.embed.get_metadata()["out_sharding"] == ("vocab", "embed")
  assert model.blocks[0].mlp.fc_in.kernel.get_metadata()["out_sharding"] == (
      "embed", "mlp")
  assert model.blocks[0].attn.query.get_metadata()["out_sharding"] == (
      "embed", "heads", "kv")
