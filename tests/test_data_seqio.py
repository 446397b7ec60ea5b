"""The training data path through seqio: window Tasks, Mixture, hosts, resume.

Every run reads its rows from one registered seqio Task per domain (packed
windows, see data/windows.py). These tests check on that path what the
quota pipeline guarantees: the batches are those of the former numpy
pipeline (golden digests), the run's seqio Mixture streams exactly
``batch(step)``, the tf.data view with ``seqio.ShardInfo`` reads only a
host's windows, two processes reading their shards equal one process, and a
process killed with SIGKILL and restarted gives the same batches from any
step. The data-level multi-host check stands in for the trainer-level one
(tests/test_multihost_train.py), which trains from a BatchSource too.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import multiproc
from autoscale_jax import config as config_lib
from autoscale_jax.data import pipeline
from autoscale_jax.data import windows

seqio = pytest.importorskip("seqio")

DOMAINS = ["alpha", "beta", "gamma"]
QUOTA = {"alpha": 1000, "beta": 2345, "gamma": 1}
# sha256 over every batch of the run above (seed 3, byte tokenizer, L = 32,
# B = 8), computed with the numpy QuotaBatches this path replaced.
GOLDEN = {
    "gpt2": (14, "a7382b553abdb724bf3472168bfd2868"
                 "d54525748bad63c8d73a2d88a14839d9"),
    "bert": (15, "a28551530874a26a74ad2fe8d72107fa"
                 "b906daf426a11412a965d1b6f364f43b"),
}


def _config(kind="gpt2", workdir=""):
  c = config_lib.base_config()
  c.data.source = "fixture"
  c.data.domains = DOMAINS
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 4
  c.data.heldout_max_sequences = 4
  if workdir:
    c.data.corpus_dir = os.path.join(workdir, "corpus")
    c.data.cache_dir = os.path.join(workdir, "cache")
  c.model.kind = kind
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("wd"))


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def bundle(request, workdir):
  return pipeline.prepare_data(_config(request.param), workdir)


def _digest(qb):
  h = hashlib.sha256()
  for s in range(qb.num_steps):
    b = qb.batch(s)
    for k in sorted(b):
      h.update(k.encode())
      h.update(np.ascontiguousarray(b[k]).tobytes())
  return qb.num_steps, h.hexdigest()


def test_batches_equal_the_former_numpy_pipeline(bundle):
  qb = bundle.quota_batches(QUOTA, seed=3)
  assert _digest(qb) == GOLDEN[bundle.model_kind]


def test_rows_come_from_the_registered_domain_tasks(bundle):
  names = bundle.window_tasks()
  assert set(names) == set(DOMAINS)
  qb = bundle.quota_batches(QUOTA, seed=3)
  task = seqio.get_mixture_or_task(names["beta"])
  src = task.source
  assert src is windows.get_window_source(names["beta"])
  # Task.get_dataset (unshuffled) yields window k as example k.
  exs = list(task.get_dataset(None, split="train", shuffle=False,
                              num_epochs=1).take(5).as_numpy_iterator())
  for k, ex in enumerate(exs):
    np.testing.assert_array_equal(ex["targets"], src.windows("train", [k])[0])
  # Each row of a batch is the window the schedule names.
  dom, _, win = qb.batch_windows(1)
  b = qb.batch(1)
  beta = DOMAINS.index("beta")
  for r in np.nonzero(dom == beta)[0]:
    w = src.windows("train", [win[r]])[0]
    if bundle.bert:
      n = int(b["segment_ids"][r].sum()) - 2
      np.testing.assert_array_equal(b["targets"][r, 1:n + 1], w[:n])
    else:
      np.testing.assert_array_equal(b["inputs"][r], w[:-1])
      np.testing.assert_array_equal(b["targets"][r], w[1:])
  # The validation split is the held-out stream, cut the same way.
  assert src.num_windows("validation") == windows.num_windows(
      len(bundle.heldout_streams["beta"]), 32, bundle.bert)


def test_seqio_mixture_streams_exactly_the_batches(bundle):
  avail = bundle.available_tokens["beta"]
  for quota, repeat in ((QUOTA, False),
                        ({"alpha": 10, "beta": avail + 77}, True)):
    qb = bundle.quota_batches(quota, seed=3, allow_repeat=repeat)
    mix = qb.mixture()
    assert [t.name for t in mix.tasks] == [
        bundle.window_tasks()[d] for d in quota if quota[d] > 0]
    streamed = list(qb.dataset())
    assert len(streamed) == qb.num_steps
    for s, b in enumerate(streamed):
      for k, v in qb.batch(s).items():
        np.testing.assert_array_equal(b[k], v)
    # Starting late (skip) gives the same tail.
    tail = list(qb.dataset(start_step=qb.num_steps - 2))
    for s, b in zip(range(qb.num_steps - 2, qb.num_steps), tail):
      np.testing.assert_array_equal(b["inputs"], qb.batch(s)["inputs"])


def test_shard_info_reads_only_the_hosts_windows(bundle):
  src = windows.get_window_source(bundle.window_tasks()["alpha"])
  n = src.num_windows("train")
  got = []
  for i in range(2):
    ds = src.get_dataset("train", shuffle=True, seed=5,
                         shard_info=seqio.ShardInfo(i, 2))
    got.append([ex["window_id"] for ex in ds.as_numpy_iterator()])
  order = windows.window_permutation(5, "alpha", 0, n)
  np.testing.assert_array_equal(got[0], order[0::2])
  np.testing.assert_array_equal(got[1], order[1::2])
  ex = next(src.get_dataset("train", shuffle=True, seed=5).as_numpy_iterator())
  np.testing.assert_array_equal(ex["targets"],
                                src.windows("train", [order[0]])[0])


def test_quota_exact_on_every_host_shard(bundle):
  qb = bundle.quota_batches(QUOTA, seed=3)
  got = {d: 0 for d in DOMAINS}
  for s in range(qb.num_steps):
    for i in range(4):
      b = qb.batch(s, shard=i, num_shards=4)
      dom = qb.batch_domains(s, shard=i, num_shards=4)
      for k, d in enumerate(DOMAINS):
        rows = dom == k
        if bundle.bert:
          got[d] += int((b["segment_ids"][rows] > 0).sum()) - 2 * int(
              rows.sum())
        else:
          got[d] += int(b["weights"][rows].sum())
  assert got == QUOTA


# A fresh process: prepares the data, writes batches of its shard from
# argv[3] on, one .npz per step (written then renamed), optionally sleeping.
CHILD = textwrap.dedent("""
  import os, sys, time
  import numpy as np
  from autoscale_jax.data import pipeline
  sys.path.insert(0, os.path.join({repo!r}, "tests"))
  import test_data_seqio as t
  shard, num_shards, start = (int(a) for a in sys.argv[1:4])
  out, pause = sys.argv[4], float(sys.argv[5])
  b = pipeline.prepare_data(t._config({kind!r}, {workdir!r}), {workdir!r})
  qb = b.quota_batches(t.QUOTA, seed=3)
  for s in range(start, qb.num_steps):
    x = qb.batch(s, shard=shard, num_shards=num_shards)
    np.savez(os.path.join(out, f"tmp{{s}}.npz"), **x)
    os.replace(os.path.join(out, f"tmp{{s}}.npz"),
               os.path.join(out, f"step{{s}}.npz"))
    time.sleep(pause)
""")


def _child(kind, workdir, *args):
  code = CHILD.format(repo=str(multiproc.REPO), kind=kind, workdir=workdir)
  return subprocess.Popen(
      [sys.executable, "-c", code, *[str(a) for a in args]],
      env=multiproc.child_env(1), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _load(out, step):
  with np.load(os.path.join(out, f"step{step}.npz")) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_two_processes_equal_one_process(kind, tmp_path):
  wd = str(tmp_path / "wd")
  os.makedirs(wd)
  ref = pipeline.prepare_data(_config(kind, wd), wd).quota_batches(
      QUOTA, seed=3)
  outs = [str(tmp_path / f"p{i}") for i in range(2)]
  for o in outs:
    os.makedirs(o)
  procs = [_child(kind, wd, i, 2, 0, outs[i], 0) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  for s in range(ref.num_steps):
    halves = [_load(o, s) for o in outs]
    for k, v in ref.batch(s).items():
      np.testing.assert_array_equal(
          np.concatenate([h[k] for h in halves]), v)


def test_sigkill_and_restart_gives_the_same_batches(tmp_path):
  wd = str(tmp_path / "wd")
  os.makedirs(wd)
  ref = pipeline.prepare_data(_config("bert", wd), wd).quota_batches(
      QUOTA, seed=3)
  killed, resumed = str(tmp_path / "killed"), str(tmp_path / "resumed")
  os.makedirs(killed)
  os.makedirs(resumed)
  p = _child("bert", wd, 0, 1, 0, killed, 0.5)
  deadline = time.time() + 300
  while not os.path.exists(os.path.join(killed, "step3.npz")):
    assert p.poll() is None and time.time() < deadline, p.stderr.read()
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait(timeout=60)
  done = sorted(int(f[4:-4]) for f in os.listdir(killed)
                if f.startswith("step"))
  assert done[-1] < ref.num_steps - 1  # killed mid-run
  # Restart at the first step not written: no replay of earlier steps.
  r = _child("bert", wd, 0, 1, done[-1] + 1, resumed, 0)
  _, err = r.communicate(timeout=300)
  assert r.returncode == 0, err[-3000:]
  assert not os.path.exists(os.path.join(resumed, f"step{done[-1]}.npz"))
  for s in range(ref.num_steps):
    got = _load(killed if s <= done[-1] else resumed, s)
    for k, v in ref.batch(s).items():
      np.testing.assert_array_equal(got[k], v)
