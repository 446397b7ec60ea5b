"""GPT-2 large (774M) on a RedPajama-layout corpus: the paper's main setting.

DDO at 0.3B and 0.6B tokens, projection to 10B, as in AutoScale (COLM 2025).
"""

from configs import gpt2_small_redpajama


def get_config():
  c = gpt2_small_redpajama.get_config()
  c.study = "gpt2_large_redpajama"
  c.model.num_layers = 36
  c.model.d_model = 1280
  c.model.num_heads = 20
  c.model.mlp_dim = 5120
  c.model.remat = True
  c.mesh.shape = [-1, 1, 1]
  c.project.target_tokens = 1.0e10
  return c
