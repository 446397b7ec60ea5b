"""Quota-mode data pipeline throughput per tokenizer (a bench, not a test).

Usage:
  python bench/bench_pipeline.py                      # fixture corpus
  python bench/bench_pipeline.py --corpus_dir DIR --domains code,wiki

Prints a markdown table: set-up (read + SentencePiece training + tokenize to
the store, cold cache) and batch throughput (tokens/s of ``batch(step)`` over
a quota run using all available tokens up to --max_tokens per domain), plus
the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autoscale_jax import config as config_lib  # noqa: E402
from autoscale_jax.data import fixture  # noqa: E402
from autoscale_jax.data import pipeline  # noqa: E402


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
    pipeline.prepare_data(c, tmp)
    warm_s = time.perf_counter() - t0
    rows.append((name, bundle.tokenizer.vocab_size, n_tok, nbytes / n_tok,
                 setup_s, warm_s, plan_s, qb.num_steps, served / batch_s))
  print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
  print(f"machine: {_machine()}")
  print(f"corpus: {corpus if args.corpus_dir else 'fixture'} ({len(domains)} "
        f"domains, {nbytes / 1e6:.2f} MB jsonl), model={args.kind}, "
        f"L={args.seq_len}, B={args.batch_size}")
  print()
  print("| tokenizer | vocab | train tokens | jsonl bytes/token | set-up cold (s) "
        "| set-up cached (s) | plan (s) | steps | batch tokens/s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:.2f} | {r[4]:.2f} | "
          f"{r[5]:.2f} | {r[6]:.3f} | {r[7]} | {r[8] / 1e6:.2f} M |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
