"""Quota-mode data pipeline throughput per tokenizer (a bench, not a test).

Usage:
  python bench/bench_pipeline.py                      # fixture corpus
  python bench/bench_pipeline.py --corpus_dir DIR --domains code,wiki
  python bench/bench_pipeline.py --scale_tokens 1e9   # + resume cost at 1e9

Prints a markdown table: set-up (read + SentencePiece training + tokenize to
the store, cold cache), batch throughput (tokens/s of ``batch(step)``, rows
read by index from the domains' seqio window Tasks, over a quota run using
all available tokens up to --max_tokens per domain) and the same run
streamed through its seqio Mixture (``QuotaBatches.dataset()``), plus the
command and machine. With --scale_tokens, a second table: one domain of that
many tokens (a memory-mapped, sparse token file) as a seqio window Task: the
run's plan, and ``batch(step)`` at the first and the last step (the cost of a
resume at step k), against the tf.data ``skip`` rate of the Mixture stream.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autoscale_jax import config as config_lib  # noqa: E402
from autoscale_jax.data import fixture  # noqa: E402
from autoscale_jax.data import pipeline  # noqa: E402
from autoscale_jax.data import windows  # noqa: E402
import seqio  # noqa: E402


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--corpus_dir", default="")
  ap.add_argument("--domains", default="alpha,beta,gamma")
  ap.add_argument("--docs_per_domain", type=int, default=400)
  ap.add_argument("--tokenizers", default="byte,sentencepiece,gpt2")
  ap.add_argument("--seq_len", type=int, default=128)
  ap.add_argument("--batch_size", type=int, default=16)
  ap.add_argument("--vocab_size", type=int, default=2048)
  ap.add_argument("--kind", default="gpt2", choices=["gpt2", "bert"])
  ap.add_argument("--max_tokens", type=float, default=2e6)
  ap.add_argument("--scale_tokens", type=float, default=0.0)
  ap.add_argument("--scale_seq_len", type=int, default=1024)
  ap.add_argument("--scale_batch_size", type=int, default=256)
  args = ap.parse_args()
  domains = args.domains.split(",")
  tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
  corpus = args.corpus_dir
  if not corpus:
    corpus = fixture.make_fixture_corpus(os.path.join(tmp, "corpus"), domains,
                                         args.docs_per_domain)
  nbytes = sum(os.path.getsize(os.path.join(corpus, f"{d}.jsonl"))
               for d in domains)
  rows = []
  for name in args.tokenizers.split(","):
    if args.kind == "bert" and name == "gpt2":
      continue
    c = config_lib.base_config()
    c.data.source = "fixture" if not args.corpus_dir else "embedded"
    c.data.corpus_dir = corpus
    c.data.domains = domains
    c.data.tokenizer = name
    c.data.vocab_size = args.vocab_size
    c.data.heldout_docs = 4
    c.data.cache_dir = os.path.join(tmp, "cache", name)
    c.model.kind = args.kind
    c.train.seq_len = args.seq_len
    c.train.global_batch_size = args.batch_size
    t0 = time.perf_counter()
    bundle = pipeline.prepare_data(c, tmp)
    setup_s = time.perf_counter() - t0
    n_tok = sum(len(s) for s in bundle.train_streams.values())
    quota = {d: min(a, int(args.max_tokens))
             for d, a in bundle.available_tokens.items()}
    t0 = time.perf_counter()
    qb = bundle.quota_batches(quota, seed=0)
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(qb.num_steps):
      qb.batch(s)
    batch_s = time.perf_counter() - t0
    served = qb.num_steps * args.batch_size * args.seq_len
    t0 = time.perf_counter()
    for _ in qb.dataset():
      pass
    stream_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    next(iter(qb.dataset(start_step=qb.num_steps - 1)))
    skip_s = time.perf_counter() - t0
    skip_rate = (qb.num_steps - 1) * args.batch_size / max(skip_s, 1e-9)
    t0 = time.perf_counter()
    pipeline.prepare_data(c, tmp)
    warm_s = time.perf_counter() - t0
    rows.append((name, bundle.tokenizer.vocab_size, n_tok, nbytes / n_tok,
                 setup_s, warm_s, plan_s, qb.num_steps, served / batch_s,
                 served / stream_s, skip_rate))
  print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
  print(f"machine: {_machine()}")
  print(f"corpus: {corpus if args.corpus_dir else 'fixture'} ({len(domains)} "
        f"domains, {nbytes / 1e6:.2f} MB jsonl), model={args.kind}, "
        f"L={args.seq_len}, B={args.batch_size}")
  print()
  print("| tokenizer | vocab | train tokens | jsonl bytes/token | set-up cold (s) "
        "| set-up cached (s) | plan (s) | steps | batch(step) tokens/s "
        "| Mixture stream tokens/s | stream skip rows/s (incl. start) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:.2f} | {r[4]:.2f} | "
          f"{r[5]:.2f} | {r[6]:.3f} | {r[7]} | {r[8] / 1e6:.2f} M | "
          f"{r[9] / 1e6:.2f} M | {r[10]:,.0f} |")
  if args.scale_tokens:
    _scale(args, tmp)
  shutil.rmtree(tmp, ignore_errors=True)


def _scale(args, tmp: str) -> None:
  """Plan and random access of a run over one domain of --scale_tokens."""
  n = int(args.scale_tokens)
  L, B = args.scale_seq_len, args.scale_batch_size
  path = os.path.join(tmp, "scale.tokens.npy")
  stream = np.lib.format.open_memmap(path, mode="w+", dtype=np.int32,
                                     shape=(n,))  # sparse: no disk used
  del stream
  stream = np.load(path, mmap_mode="r")
  src = windows.window_source("big", {"train": stream}, L, False)
  name = windows.window_task_name("bench", "big")
  windows.register_window_task(name, src, seqio.PassThroughVocabulary(2048))
  src = windows.get_window_source(name)
  quota = {"big": src.num_windows("train") * L}
  t0 = time.perf_counter()
  qb = pipeline.QuotaBatches({"big": src}, quota, seed=0, batch_size=B,
                             pad_id=0)
  plan_s = time.perf_counter() - t0
  times = {}
  for label, step in (("first", 0), ("last", qb.num_steps - 1)):
    for _ in range(2):  # second call: permutation cached, pages warm
      t0 = time.perf_counter()
      qb.batch(step)
      times[label] = time.perf_counter() - t0
  print()
  print(f"scale: one domain of {n:,} tokens (memory-mapped), L={L}, B={B}")
  print()
  print("| train tokens | rows | steps | plan (s) | batch(0) (ms) "
        "| batch(last) (ms) |")
  print("|---|---|---|---|---|---|")
  print(f"| {n:,} | {qb.num_rows:,} | {qb.num_steps:,} | {plan_s:.2f} | "
        f"{times['first'] * 1e3:.1f} | {times['last'] * 1e3:.1f} |")


if __name__ == "__main__":
  main()
