"""Training throughput and MFU of the tiny config, the demo's model and GPT-2
small on this machine.

Model FLOPs per token = 6 N + 12 n_layers d_model seq_len (PaLM appendix B:
parameters plus the attention score/value matmuls, forward + backward). The
peak is a measured float32 matmul rate of this machine (a jitted 2048^3 matmul),
so MFU here means "fraction of what XLA's matmul reaches on these cores".

Usage: python bench/bench_train.py [--steps 5]
  [--only tiny,demo,gpt2_small (any of them)] [--steps_per_call 1,2,4,10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# The repository root, for `configs` (also when imported by bench_peer/gpu.sh).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autoscale_jax import config as config_lib  # noqa: E402
from autoscale_jax import models  # noqa: E402
from autoscale_jax.train import sharding, trainer  # noqa: E402
from autoscale_jax.train.synthetic import SyntheticBatches  # noqa: E402
from configs import demo, gpt2_small_redpajama  # noqa: E402


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
  """Measured float32 matmul FLOP/s (best of ``reps``)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def bench(name: str, model_cfg, seq_len: int, batch: int, vocab: int,
          steps: int, peak: float, steps_per_call: int | None = None,
          remat: bool = False) -> dict:
  """Tokens/s of the trainer's compiled training calls (after compilation).

  ``steps_per_call`` (default: the config's ``run.steps_per_call``, at
  most ``steps``) steps run per call, as ``train_run`` runs them; ``steps`` is
  rounded up to whole calls. Batches are placed on the device before timing.
  ``remat`` is ``config.run.remat`` (activation recompute).
  """
  c = config_lib.base_config()
  c.model.update(dict(model_cfg))
  c.model.max_len = max(c.model.max_len, seq_len)
  c.train.update(seq_len=seq_len, global_batch_size=batch)
  c.run.update(eval_batch_size=batch, remat=remat)
  c.run.steps_per_call = min(
      steps, steps_per_call if steps_per_call else c.run.steps_per_call)
  mesh = sharding.make_mesh([1, 1, 1], jax.devices()[:1])
  t0 = time.perf_counter()
  compiled = trainer.get_compiled(c, vocab, mesh)
  k = compiled.steps_per_call
  calls = max(1, -(-steps // k))
  state = trainer.init_state(compiled, 0, (calls + 1) * k)
  batches = SyntheticBatches((calls + 1) * k, batch, seq_len, vocab, seed=0)
  with jax.set_mesh(mesh):
    if k == 1:
      data = [sharding.put_batch(batches.batch(s), mesh)
              for s in range(calls + 1)]
      run = compiled.train_step
    else:
      data = [sharding.put_stacked_batch(
          [batches.batch(i * k + j) for j in range(k)], mesh)
              for i in range(calls + 1)]
      run = lambda st, b: compiled.train_steps(st, b, np.int32(10 ** 9))  # pylint: disable=unnecessary-lambda-assignment
    state, m = run(state, data[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    t = time.perf_counter()
    for i in range(1, calls + 1):
      state, m = run(state, data[i])
    jax.block_until_ready((state, m))
    dt = (time.perf_counter() - t) / (calls * k)
  n = models.count_params(c.model, vocab)
  tokens = batch * seq_len
  flops = (6 * n + 12 * c.model.num_layers * c.model.d_model * seq_len) * tokens
  return {"config": name, "params": n, "seq": seq_len, "batch": batch,
          "steps_per_call": k, "step_s": dt, "tokens_per_s": tokens / dt,
          "model_tflops": flops / dt / 1e12, "mfu": flops / dt / peak,
          "compile_s": compile_s}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--only", default="")
  p.add_argument("--steps_per_call", default="",
                 help="comma-separated values, one row each (default: the "
                 "config's run.steps_per_call)")
  args = p.parse_args()
  per_call = [int(v) for v in args.steps_per_call.split(",") if v] or [None]
  print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
  print(f"machine: {platform.node()} {platform.machine()} {platform.processor()}"
        f" cpus={os.cpu_count()} jax={jax.__version__} "
        f"backend={jax.default_backend()} devices={len(jax.devices())}")
  peak = matmul_peak()
  print(f"measured fp32 matmul peak (2048^3, jit): {peak / 1e9:.1f} GFLOP/s")
  # The base config's model is the tiny one; GPT-2 small's sizes come from its
  # shipped config, run in float32 without dropout like the tiny one.
  gpt2_small = gpt2_small_redpajama.get_config().model
  gpt2_small.update(dtype="float32", dropout=0.0)
  # The demo's model at its vocabulary, sequence length and batch.
  d = demo.get_config()
  runs = [("tiny", config_lib.base_config().model, 128, 16, 512),
          ("demo", d.model, d.train.seq_len, d.train.global_batch_size,
           d.data.vocab_size),
          ("gpt2_small", gpt2_small, 512, 2, 50257)]
  only = [n for n in args.only.split(",") if n]
  rows = [bench(name, cfg, seq, bs, vocab, args.steps, peak, k)
          for name, cfg, seq, bs, vocab in runs
          if not only or name in only for k in per_call]
  print()
  print("| config | params | seq x batch | steps/call | step (s) | tokens/s | "
        "model TFLOP/s | MFU | compile+first call (s) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} | {r['params'] / 1e6:.1f}M | {r['seq']} x "
          f"{r['batch']} | {r['steps_per_call']} | {r['step_s']:.3f} | "
          f"{r['tokens_per_s']:,.0f} | "
          f"{r['model_tflops']:.4f} | {100 * r['mfu']:.1f}% | "
          f"{r['compile_s']:.1f} |")


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
