"""Proxy swarm vs sequential: 15 tiny DDO proxies, ``train_run`` one by one
versus ``train_swarm`` (one program, members batched or scanned).

The plan is the DDO shape: 7 domains, base run + 14 runs with one domain's
quota scaled by 0.2 or 3.0 (``ddo.plan_runs``), so run lengths differ
(~0.89x-1.29x of the base). Data: ``SyntheticBatches`` with each run's step
count; every run evaluates on 7 held-out domains at its end and checkpoints
like a real DDO run. Both paths are compiled first (a 2-step warm-up of each),
so the times compare steady-state training; compile times are printed too.

Usage: python bench/bench_swarm.py [--preset micro|tiny] [--base_steps 40]
  [--layout vmap|scan] [--compaction auto|always|never]

With compaction, finished runs leave the program; the recompilations for the
smaller stacks happen inside the timed swarm window (a real cost).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

from autoscale_jax import config as config_lib
from autoscale_jax.mixing import ddo
from autoscale_jax.train import swarm, trainer
from autoscale_jax.train.synthetic import SyntheticBatches

DOMAINS = [f"d{i}" for i in range(7)]
# name -> (model overrides, seq_len, batch, vocab)
PRESETS = {
    "micro": (dict(num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
                   max_len=32, dropout=0.0), 32, 8, 260),
    "tiny": ({}, 128, 16, 512),  # The base config's model is the tiny one.
}


def make_config(preset: str) -> tuple[config_lib.ml_collections.ConfigDict, int]:
  model, seq, batch, vocab = PRESETS[preset]
  c = config_lib.base_config()
  c.model.update(model)
  c.train.update(seq_len=seq, global_batch_size=batch)
  c.run.update(eval_batch_size=batch, checkpoint_every_steps=20,
               log_every_steps=10)
  c.mesh.shape = [1, 1, 1]
  return c, vocab


def plan_sources(c, vocab: int, base_steps: int) -> list[SyntheticBatches]:
  tokens_per_step = c.train.global_batch_size * c.train.seq_len
  plan = ddo.plan_runs(DOMAINS, base_steps * tokens_per_step)
  return [SyntheticBatches(
      max(1, math.ceil(sum(r["tokens"].values()) / tokens_per_step)),
      c.train.global_batch_size, c.train.seq_len, vocab, seed=i,
      domains=DOMAINS) for i, r in enumerate(plan)]


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--preset", default="micro", choices=sorted(PRESETS))
  p.add_argument("--base_steps", type=int, default=40)
  p.add_argument("--layout", default="vmap", choices=swarm.LAYOUTS,
                 help="members batched (vmap) or one after another (scan)")
  p.add_argument("--compaction", default="auto",
                 choices=("auto", "always", "never"),
                 help="when finished runs leave the swarm program")
  args = p.parse_args()
  print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
  print(f"machine: {platform.node()} {platform.machine()} cpus={os.cpu_count()}"
        f" jax={jax.__version__} backend={jax.default_backend()} "
        f"devices={len(jax.devices())}")
  c, vocab = make_config(args.preset)
  srcs = plan_sources(c, vocab, args.base_steps)
  steps = [s.num_steps for s in srcs]
  evals = {d: SyntheticBatches(1, 8, c.train.seq_len, vocab).eval_set(
      8, seed=100 + i) for i, d in enumerate(DOMAINS)}
  print(f"preset {args.preset}: {dict(c.model)}, seq {c.train.seq_len}, "
        f"batch {c.train.global_batch_size}, vocab {vocab}")
  print(f"{len(srcs)} runs, steps {min(steps)}-{max(steps)} (sum "
        f"{sum(steps)}; swarm member-steps {len(steps) * max(steps)})")
  root = tempfile.mkdtemp(prefix="bench_swarm_")
  try:
    warm = [SyntheticBatches(2, c.train.global_batch_size, c.train.seq_len,
                             vocab, seed=99, domains=DOMAINS)] * len(srcs)
    t = time.perf_counter()
    trainer.train_run(c, warm[0], evals, f"{root}/warm_seq", vocab_size=vocab)
    compile_seq = time.perf_counter() - t
    t = time.perf_counter()
    swarm.train_swarm(c, warm, evals, [f"{root}/warm_sw{i}" for i in
                                       range(len(srcs))], vocab_size=vocab,
                      layout=args.layout)
    compile_sw = time.perf_counter() - t

    t = time.perf_counter()
    seq = [trainer.train_run(c, s, evals, f"{root}/seq{i}", vocab_size=vocab)
           for i, s in enumerate(srcs)]
    seq_s = time.perf_counter() - t
    t = time.perf_counter()
    sw = swarm.train_swarm(c, srcs, evals, [f"{root}/sw{i}" for i in
                                            range(len(srcs))],
                           vocab_size=vocab, layout=args.layout,
                           compaction=args.compaction)
    sw_s = time.perf_counter() - t
  finally:
    shutil.rmtree(root, ignore_errors=True)
  diff = max(abs(a["final_eval"]["aggregate"]["loss"] -
                 b["final_eval"]["aggregate"]["loss"]) for a, b in zip(seq, sw))
  tokens = sum(steps) * c.train.global_batch_size * c.train.seq_len
  print()
  print("| preset | layout | compaction | runs | steps | sequential (s) | "
        "swarm (s) | "
        "speed-up | "
        "seq tok/s | swarm tok/s | first call seq / swarm (s) | "
        "max abs diff final loss |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  print(f"| {args.preset} | {args.layout} | {args.compaction} | {len(srcs)} | {min(steps)}-{max(steps)} | "
        f"{seq_s:.1f} | {sw_s:.1f} | {seq_s / sw_s:.2f}x | "
        f"{tokens / seq_s:,.0f} | {tokens / sw_s:,.0f} | "
        f"{compile_seq:.1f} / {compile_sw:.1f} | {diff:.1e} |")


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
