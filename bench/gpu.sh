#!/usr/bin/env bash
# Train-step throughput and MFU of GPT-2 small and large in bf16 on one GPU.
#
# Usage: bash bench/gpu.sh [OUT_FILE]   (default: $OUT/gpu_bench.md if $OUT is
#        set, else bench/gpu_bench.md). Env: PYTHON (default .venv/bin/python,
#        else python3), STEPS (timed steps, default 10), LIMIT_S (default 280).
# Needs a JAX with CUDA (e.g. pip install "jax[cuda12]") that sees a GPU; it
# exits 2 with a message otherwise. Whole run is capped at LIMIT_S seconds.
# Compute in bf16 (model.dtype=bfloat16), parameters and AdamW state in fp32;
# GPT-2 large uses remat (activation recompute; MFU counts model FLOPs only).
# MFU is against a measured bf16 8192^3 matmul peak of this GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT_FILE="${1:-${OUT:+$OUT/gpu_bench.md}}"
OUT_FILE="${OUT_FILE:-bench/gpu_bench.md}"
STEPS="${STEPS:-10}"
LIMIT_S="${LIMIT_S:-280}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU found (nvidia-smi -L failed); nothing to benchmark" >&2
  exit 2
fi
if ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  echo "gpu.sh: $PY's JAX does not see the GPU (backend: $("$PY" -c 'import jax; print(jax.default_backend())' 2>&1 | tail -1));" \
       'install a CUDA JAX, e.g. pip install "jax[cuda12]"' >&2
  exit 2
fi
nvidia-smi -L
mkdir -p "$(dirname "$OUT_FILE")"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export STEPS OUT_FILE
timeout "$LIMIT_S" "$PY" - <<'PYEOF'
import os, platform, sys, time
sys.path.insert(0, "bench")
import jax, jax.numpy as jnp
import bench_train
from configs import gpt2_large_redpajama, gpt2_small_redpajama

def bf16_peak(n=8192, reps=10):
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter(); f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best

steps = int(os.environ["STEPS"])
dev = jax.devices()[0]
head = [f"command: bash bench/gpu.sh {os.environ['OUT_FILE']} (STEPS={steps})",
        f"machine: {platform.node()} {dev.device_kind} x{jax.device_count()} "
        f"jax={jax.__version__}"]
peak = bf16_peak()
head.append(f"measured bf16 matmul peak (8192^3, jit): {peak / 1e12:.1f} TFLOP/s")
print("\n".join(head), flush=True)

def model_of(config_module, **overrides):
  """The shipped config's model section (sizes from there) plus overrides."""
  m = config_module.get_config().model
  m.update(overrides)
  return m

runs = [("gpt2_small bf16", model_of(gpt2_small_redpajama, dropout=0.0,
                                     dtype="bfloat16"), 1024, 16, False),
        ("gpt2_large bf16 remat", model_of(gpt2_large_redpajama, dropout=0.0,
                                           dtype="bfloat16"), 1024, 8, True)]
rows = []
for name, cfg, seq, batch, remat in runs:
  r = bench_train.bench(name, cfg, seq, batch, 50257, steps, peak,
                        remat=remat)
  rows.append(r)
  print(f"{name}: {r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}%",
        flush=True)
table = ["| config | params | seq x batch | step (s) | tokens/s | model TFLOP/s "
         "| MFU | compile+first step (s) |", "|---|---|---|---|---|---|---|---|"]
for r in rows:
  table.append(f"| {r['config']} | {r['params'] / 1e6:.0f}M | {r['seq']} x "
               f"{r['batch']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
               f"{r['model_tflops']:.1f} | {100 * r['mfu']:.1f}% | "
               f"{r['compile_s']:.1f} |")
text = "\n".join(head + [""] + table) + "\n"
with open(os.environ["OUT_FILE"], "w") as f:
  f.write(text)
print("\n" + text)
PYEOF
echo "gpu.sh: table written to $OUT_FILE"
