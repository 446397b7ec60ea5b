"""GPT-2 small (124M) on a RedPajama-layout corpus (one JSONL glob per domain).

Point `data.paths.<domain>` at your files, e.g.
  --config.data.paths.github='gs://bucket/redpajama/github/*.jsonl'
Budgets follow the paper's scale: DDO at 0.3B and 0.6B tokens, target 3B.
"""

from autoscale_jax import config as config_lib

REDPAJAMA_DOMAINS = ["common_crawl", "c4", "github", "book", "arxiv",
                     "wikipedia", "stackexchange"]


def get_config():
  c = config_lib.base_config()
  c.study = "gpt2_small_redpajama"
  c.data.source = "jsonl"
  c.data.domains = list(REDPAJAMA_DOMAINS)
  for d in REDPAJAMA_DOMAINS:
    c.data.paths[d] = f"data/redpajama/{d}/*.jsonl"
  c.data.tokenizer = "gpt2"
  c.data.heldout_docs = 10000
  c.data.heldout_max_sequences = 2048
  c.model.kind = "gpt2"  # architecture: gpt2 (causal LM) | bert (masked LM)
  c.model.num_layers = 12  # transformer blocks
  c.model.d_model = 768  # residual stream width
  c.model.num_heads = 12  # attention heads (d_model / num_heads = 64 per head)
  c.model.mlp_dim = 3072  # MLP hidden width (4 x d_model)
  c.model.max_len = 1024  # learned position embeddings: longest sequence
  c.model.dropout = 0.1  # dropout rate (residual, attention, embeddings)
  c.model.dtype = "bfloat16"  # compute dtype; parameters stay float32
  c.train.seq_len = 1024
  c.train.global_batch_size = 80
  c.train.learning_rate = 2e-4
  c.train.b2 = 0.999
  c.run.eval_batch_size = 80
  c.run.checkpoint_every_steps = 1000
  c.run.log_every_steps = 50
  # 15 stacked GPT-2 small train states (fp32 params + Adam) are ~22 GB:
  # train the proxies one at a time, or fan them out over workers.
  c.run.swarm = "off"
  c.mesh.shape = [-1, 1, 1]
  c.ddo.budgets = [3.0e8, 6.0e8]
  c.project.target_tokens = 3.0e9
  c.final.mixtures = ["projected", "uniform", "llama", "ddo_small"]
  c.final.eval_every_steps = 500
  return c
