"""A tiny GPT-2 trained on real text (stdlib sources, bytes) beats unigram."""

import glob
import math
import os

import numpy as np

from autoscale_jax import config as config_lib
from autoscale_jax.train import trainer
from autoscale_jax.train.synthetic import SyntheticBatches

L = 32


def _windows(paths, n_max):
  data = b"".join(open(p, "rb").read() for p in paths)
  tokens = np.frombuffer(data, np.uint8).astype(np.int32) + 1  # 0 = padding
  n = min(len(tokens) // (L + 1), n_max)
  return tokens[:n * (L + 1)].reshape(n, L + 1), tokens


def test_tiny_gpt2_beats_unigram_entropy_on_real_text(tmp_path):
  files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
  train, train_tokens = _windows(files[:40], 20000)
  held, _ = _windows(files[40:50], 64)
  counts = np.bincount(train_tokens, minlength=257)[1:].astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  unigram_nats = float(-(p * np.log(p)).sum())

  c = config_lib.base_config()
  c.model.update(num_layers=2, d_model=64, num_heads=4, mlp_dim=256, max_len=L)
  c.train.update(seq_len=L, global_batch_size=16, learning_rate=3e-3)
  c.run.update(eval_batch_size=16, checkpoint_every_steps=1000,
               log_every_steps=100)
  c.mesh.shape = [-1, 1, 1]
  batches = SyntheticBatches(300, 16, L, 260, seed=0, domains=["py"], data=train)
  evals = {"py": {"inputs": held[:, :L], "targets": held[:, 1:],
                  "weights": np.ones((len(held), L), np.float32),
                  "segment_ids": np.ones((len(held), L), np.int32),
                  "positions": np.tile(np.arange(L, dtype=np.int32),
                                       (len(held), 1)),
                  "num_bytes": np.full((len(held),), float(L), np.float32)}}
  r = trainer.train_run(c, batches, evals, tmp_path, vocab_size=260)
  loss = r["final_eval"]["domains"]["py"]["loss"]
  assert loss < unigram_nats - 0.5, (loss, unigram_nats)
  bpb = r["final_eval"]["domains"]["py"]["bpb"]
  assert math.isclose(bpb, loss / math.log(2), rel_tol=1e-6)  # 1 byte/token
