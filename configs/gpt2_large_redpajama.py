"""GPT-2 large (774M) on a RedPajama-layout corpus: the paper's main setting.

DDO at 0.3B and 0.6B tokens, projection to 10B, as in AutoScale (COLM 2025).
"""

from configs import gpt2_small_redpajama


def get_config():
  c = gpt2_small_redpajama.get_config()
  c.study = "gpt2_large_redpajama"
  c.model.num_layers = 36  # transformer blocks
  c.model.d_model = 1280  # residual stream width
  c.model.num_heads = 20  # attention heads (d_model / num_heads = 64 per head)
  c.model.mlp_dim = 5120  # MLP hidden width (4 x d_model)
  c.run.remat = True  # recompute activations in backward (less memory)
  c.mesh.shape = [-1, 1, 1]
  c.project.target_tokens = 1.0e10
  return c
