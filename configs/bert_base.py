"""BERT-base (110M) masked LM with DDO, as in AutoScale's BERT experiments.

Perturbation factors 1/3 and 2, as the paper uses for BERT.
"""

from autoscale_jax import config as config_lib
from configs import gpt2_small_redpajama


def get_config():
  c = config_lib.base_config()
  c.study = "bert_base"
  c.data.source = "jsonl"
  c.data.domains = list(gpt2_small_redpajama.REDPAJAMA_DOMAINS)
  for d in c.data.domains:
    c.data.paths[d] = f"data/redpajama/{d}/*.jsonl"
  c.data.tokenizer = "sentencepiece"
  c.data.vocab_size = 30522
  c.data.heldout_docs = 10000
  c.data.heldout_max_sequences = 2048
  c.model.kind = "bert"  # architecture: gpt2 (causal LM) | bert (masked LM)
  c.model.num_layers = 12  # transformer blocks
  c.model.d_model = 768  # residual stream width
  c.model.num_heads = 12  # attention heads (d_model / num_heads = 64 per head)
  c.model.mlp_dim = 3072  # MLP hidden width (4 x d_model)
  c.model.max_len = 512  # learned position embeddings: longest sequence
  c.model.dropout = 0.1  # dropout rate (residual, attention, embeddings)
  c.model.dtype = "bfloat16"  # compute dtype; parameters stay float32
  c.train.seq_len = 128
  c.train.global_batch_size = 256
  c.train.learning_rate = 1e-4
  c.train.b2 = 0.999
  c.run.eval_batch_size = 256
  c.run.checkpoint_every_steps = 1000
  # 15 stacked BERT-base train states (fp32 params + Adam) are ~20 GB: train
  # the proxies one at a time, or fan them out over workers.
  c.run.swarm = "off"
  c.ddo.budgets = [1.0e8, 3.0e8]
  c.ddo.factors = [1 / 3, 2.0]
  c.ddo.metric = "loss"
  c.project.target_tokens = 1.0e9
  c.final.mixtures = ["projected", "uniform"]
  return c
