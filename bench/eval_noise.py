"""Evaluation noise: a paired bootstrap over held-out sequences of y.

Restores two runs' final checkpoints (a perturbed run and its seed's base
run) from a study's workdir, evaluates every held-out sequence of every
domain, and resamples each domain's sequences with replacement (the same
resample for both runs, 2,000 times): the sd of log y = log(aggregate(run) /
aggregate(base)) over the resamples is the noise the finite held-out set adds
to one y. docs/results.md ("Evaluation noise") was made with:

    PYTHONPATH=$PWD .venv/bin/python bench/eval_noise.py workdir/demo '{}' \
        b0_latex_x3_s0:b0_base_s0 b1_legal_x3_s1:b1_base_s1

The second argument is a JSON object of config overrides ("section.key":
value) applied to configs/demo.py.
"""
import glob, json, sys, math, importlib.util
import numpy as np, jax
from autoscale_jax.data import pipeline
from autoscale_jax.train import trainer, checkpoint

def load_config(overrides):
  spec = importlib.util.spec_from_file_location("demo", "configs/demo.py")
  mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
  c = mod.get_config()
  for k, v in overrides.items():
    sec, key = k.split(".")
    c[sec][key] = v
  return c

def per_seq(compiled, params, ev, bs):
  arrays = {k: np.asarray(ev[k]) for k in trainer.BATCH_KEYS if k in ev}
  n = len(arrays["inputs"]); out_l, out_c = [], []
  with jax.set_mesh(compiled.mesh):
    for s in range(0, n, bs):
      chunk = {k: v[s:s + bs] for k, v in arrays.items()}
      chunk = trainer.sharding.put_global_batch(trainer._pad_rows(chunk, bs), compiled.mesh)
      l, c = jax.device_get(compiled.eval_step(params, chunk))
      out_l.append(np.asarray(l, np.float64)); out_c.append(np.asarray(c, np.float64))
  return np.concatenate(out_l)[:n], np.concatenate(out_c)[:n]

def main(wd, overrides, pairs, reps=2000):
  c = load_config(overrides)
  bundle = pipeline.prepare_data(c, wd)
  evs = bundle.eval_sets()
  compiled = trainer.get_compiled(c, bundle.tokenizer.vocab_size)
  abstract = jax.eval_shape(compiled.init, jax.random.PRNGKey(0), np.int32(10))
  def load(name):
    d = glob.glob(f"{wd}/runs/{name}-*")[0]
    mgr = checkpoint.manager(f"{d}/checkpoints", max_to_keep=2)
    st, _ = checkpoint.restore(mgr, mgr.latest_step(), compiled.state_shardings, abstract)
    return {dom: per_seq(compiled, st["params"], ev, 16) for dom, ev in evs.items()}
  rng = np.random.default_rng(0)
  for a, b in pairs:
    A, B = load(a), load(b)
    doms = list(evs)
    idx = {d: rng.integers(0, len(A[d][0]), (reps, len(A[d][0]))) for d in doms}
    def agg(R, metric, ix=None):
      vals = []
      for d in doms:
        l, n = R[d]; has = n > 0
        if ix is not None:
          l, n = l[ix[d]], n[ix[d]]; has = n > 0
        if metric == "loss":
          vals.append(l.sum(-1) / n.sum(-1))
        else:
          vals.append(np.where(has, np.exp(l / np.maximum(n, 1)), 0).sum(-1) / has.sum(-1))
      return np.mean(vals, axis=0)
    for metric in ("loss", "ppl_seq"):
      y0 = agg(A, metric) / agg(B, metric)
      yb = agg(A, metric, idx) / agg(B, metric, idx)
      print(f"{a} / {b} {metric}: y={y0:.4f} eval-bootstrap sd(log y)={np.std(np.log(yb)):.5f} "
            f"(held-out seqs per domain {[len(A[d][0]) for d in doms]})")

if __name__ == "__main__":
  wd = sys.argv[1]
  ov = json.loads(sys.argv[2])
  pairs = [p.split(":") for p in sys.argv[3:]]
  main(wd, ov, pairs)
