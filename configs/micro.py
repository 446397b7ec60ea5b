"""A micro study for tests and smoke runs: fixture corpus, seconds per run."""

from autoscale_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.study = "micro"
  c.data.source = "fixture"
  c.data.domains = ["alpha", "beta", "gamma"]
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 4
  c.data.heldout_max_sequences = 8
  c.model.num_layers = 1
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.mlp_dim = 64
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  c.run.eval_batch_size = 8
  c.run.checkpoint_every_steps = 20
  c.ddo.budgets = [4096.0, 8192.0]
  c.ddo.bootstrap = 20
  c.project.target_tokens = 32768.0
  c.final.mixtures = ["projected", "uniform"]
  c.final.eval_every_steps = 8
  return c
