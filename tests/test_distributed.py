"""jax.distributed on CPU (2 processes x 2 devices == 1 process x 4) and fan-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import multiproc

from autoscale_jax import distributed as dist

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180

# Child program: argv = process_id num_processes port. Builds an (8, 3) global
# batch from per-process rows, reduces it, and runs 5 data-parallel SGD steps
# on a linear model; process 0 prints one RESULT line of JSON.
CHILD = textwrap.dedent("""
  import json, sys
  import numpy as np
  from autoscale_jax import distributed as dist

  pid, nproc, port = (int(a) for a in sys.argv[1:4])
  if nproc > 1:
    info = dist.maybe_initialize(f"localhost:{port}", nproc, pid,
                                 initialization_timeout=60)
  else:
    info = dist.maybe_initialize(env={})
  assert info.initialized == (nproc > 1), info

  import jax
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  assert jax.process_count() == nproc and jax.process_index() == pid
  assert jax.device_count() == 4, jax.devices()
  assert jax.local_device_count() == 4 // nproc
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch = NamedSharding(mesh, P("data"))
  repl = NamedSharding(mesh, P())

  rng = np.random.default_rng(0)
  x_all = rng.integers(-4, 5, size=(8, 3)).astype(np.float32)
  y_all = (x_all @ np.array([1.5, -2.0, 0.5], np.float32)
           + rng.normal(size=8).astype(np.float32) * 0.1)
  rows = slice(pid * 8 // nproc, (pid + 1) * 8 // nproc)
  x = jax.make_array_from_process_local_data(batch, x_all[rows], (8, 3))
  y = jax.make_array_from_process_local_data(batch, y_all[rows], (8,))
  assert x.shape == (8, 3) and len(x.addressable_shards) == 4 // nproc

  colsum = jax.jit(lambda a: a.sum(0), out_shardings=repl)(x)
  mean = jax.jit(jnp.mean, out_shardings=repl)(x)
  psum = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a.sum(0), "data"),
                               mesh=mesh, in_specs=P("data"),
                               out_specs=P()))(x)

  def loss_fn(w, x, y):
    return jnp.mean((x @ w - y) ** 2)

  @jax.jit
  def step(w, x, y):
    loss, g = jax.value_and_grad(loss_fn)(w, x, y)
    return w - 0.05 * g, loss

  w = jax.device_put(jnp.zeros(3, jnp.float32), repl)
  losses = []
  for _ in range(5):
    w, loss = step(w, x, y)
    losses.append(float(loss.addressable_data(0)))

  local = lambda a: np.asarray(a.addressable_data(0)).tolist()
  out = dict(colsum=local(colsum), mean=float(local(mean)), psum=local(psum),
             losses=losses, w=local(w), expected_colsum=x_all.sum(0).tolist())
  print("RESULT " + json.dumps(out), flush=True)
""")


def _run_group(script: Path, nproc: int) -> list[dict]:
  """Runs ``nproc`` children to completion (or kills them) and parses RESULT."""
  port = multiproc.free_port()
  env = multiproc.child_env(4 // nproc)
  procs = [
      subprocess.Popen([sys.executable, str(script), str(i), str(nproc),
                        str(port)], env=env, cwd=str(REPO),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True) for i in range(nproc)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT_S)[0])
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"{nproc}-process group did not finish in {TIMEOUT_S} s")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  results = []
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-4000:]}"
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, out[-4000:]
    results.append(json.loads(lines[0][len("RESULT "):]))
  return results


def test_two_processes_match_one_process(tmp_path: Path) -> None:
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  two = _run_group(script, 2)
  (one,) = _run_group(script, 1)
  assert two[0] == two[1], "processes disagree on replicated results"
  np.testing.assert_array_equal(one["colsum"], one["expected_colsum"])
  np.testing.assert_array_equal(two[0]["colsum"], one["colsum"])
  np.testing.assert_array_equal(two[0]["psum"], one["colsum"])
  np.testing.assert_allclose(two[0]["mean"], one["mean"], rtol=1e-6)
  np.testing.assert_allclose(two[0]["losses"], one["losses"], rtol=1e-6)
  np.testing.assert_allclose(two[0]["w"], one["w"], rtol=1e-6, atol=1e-7)
  assert one["losses"][-1] < one["losses"][0]


# --- detection (pure, no processes started) --------------------------------

@pytest.mark.parametrize("env,args,expected", [
    ({}, {}, None),
    ({"TPU_WORKER_HOSTNAMES": "t1k-0"}, {}, None),
    ({"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3"}, {}, "TPU_WORKER_HOSTNAMES"),
    ({"TPU_PROCESS_ADDRESSES": "a:1,b:1"}, {}, "TPU_PROCESS_ADDRESSES"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}, {},
     "MEGASCALE_COORDINATOR_ADDRESS"),
    ({"MEGASCALE_NUM_SLICES": "2"}, {}, "MEGASCALE_NUM_SLICES"),
    ({"MEGASCALE_NUM_SLICES": "1"}, {}, None),
    ({"CLOUD_TPU_TASK_ID": "0"}, {}, "CLOUD_TPU_TASK_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1234"}, {}, "JAX_COORDINATOR_ADDRESS"),
    ({"JAX_NUM_PROCESSES": "2"}, {}, "JAX_NUM_PROCESSES"),
    ({}, {"coordinator_address": "h:1234"}, "coordinator_address"),
    ({}, {"num_processes": 2}, "num_processes"),
    ({}, {"num_processes": 1}, None),
    ({"AUTOSCALE_DISTRIBUTED": "1"}, {}, "AUTOSCALE_DISTRIBUTED"),
    ({"AUTOSCALE_DISTRIBUTED": "0", "TPU_WORKER_HOSTNAMES": "a,b"},
     {"coordinator_address": "h:1"}, None),
])
def test_multihost_reason(env, args, expected) -> None:
  assert dist.multihost_reason(env, **args) == expected


def test_multihost_reason_rejects_bad_switch() -> None:
  with pytest.raises(ValueError, match="AUTOSCALE_DISTRIBUTED"):
    dist.multihost_reason({"AUTOSCALE_DISTRIBUTED": "maybe"})


def test_single_host_does_not_initialize() -> None:
  info = dist.maybe_initialize(env={})
  assert info == dist.DistributedInfo(False, 0, 1, "single-process")
  assert info.is_primary
  assert dist.is_primary()
  assert dist.primary_only(lambda a, b=1: a + b)(2, b=3) == 5


# --- proxy fan-out ---------------------------------------------------------

RUNS = [f"ddo/run_{i:02d}" for i in range(11)]  # 2m+1 with m = 5


@pytest.mark.parametrize("num_workers", [1, 2, 3, 4, 11, 16])
def test_worker_share_partitions_every_run_once(num_workers: int) -> None:
  shares = [dist.worker_share(RUNS, k, num_workers) for k in range(num_workers)]
  flat = [r for s in shares for r in s]
  assert sorted(flat) == sorted(RUNS) and len(flat) == len(set(flat))
  sizes = [len(s) for s in shares]
  assert max(sizes) - min(sizes) <= 1


def test_worker_share_is_order_independent_and_round_robin() -> None:
  shuffled = list(reversed(RUNS)) + RUNS[:3]  # any order, duplicates ignored
  for k in range(3):
    assert dist.worker_share(shuffled, k, 3) == dist.worker_share(RUNS, k, 3)
  assert dist.worker_share(RUNS, 1, 3) == [RUNS[1], RUNS[4], RUNS[7], RUNS[10]]


@pytest.mark.parametrize("k,w", [(0, 0), (2, 2), (-1, 2), (0, 1.5), (True, 2)])
def test_worker_share_rejects_bad_indices(k, w) -> None:
  with pytest.raises(ValueError):
    dist.worker_share(RUNS, k, w)
