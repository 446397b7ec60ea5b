"""The token cache: built once, shared, checked.

* a corrupt cache (truncated, or same-size garbage) is caught on load and
  rebuilt from the raw data, or named in one line when the data is gone;
  ``verify`` checks every block and names the bad file;
* the corpus is named by its file manifest: a warm start reads no raw text;
* two processes of one job share one cache that process 0 builds once, on a
  (fake) gs:// workdir: process 1 reads no raw text and builds nothing.
"""

import json
import os
import subprocess
import sys
import textwrap

import fake_gcs
import multiproc
import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.data import pipeline
from autoscale_jax.data import sources
from autoscale_jax.data import token_store

DOMAINS = ["alpha", "beta", "gamma"]
QUOTA = {"alpha": 600, "beta": 300, "gamma": 900}


def _config(workdir):
  c = config_lib.base_config()
  c.data.source = "fixture"
  c.data.domains = DOMAINS
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 4
  c.data.heldout_max_sequences = 4
  c.data.corpus_dir = os.path.join(workdir, "corpus")
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  return c


def _batches(bundle):
  qb = bundle.quota_batches(QUOTA, seed=1)
  return [qb.batch(s) for s in range(qb.num_steps)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _tokens_file(workdir, domain="beta"):
  root = os.path.join(workdir, "cache", "tokens")
  (name,) = [f for f in os.listdir(root)
             if f.startswith(domain + "-") and f.endswith(".tokens.npy")]
  return os.path.join(root, name)


@pytest.fixture
def study(tmp_path):
  """A workdir with a built cache, and the reference batches."""
  wd = str(tmp_path / "wd")
  bundle = pipeline.prepare_data(_config(wd), wd)
  return wd, _batches(bundle)


def _no_raw_reads(monkeypatch):
  def fail(path, *a, **k):
    raise AssertionError(f"raw text read: {path}")
  monkeypatch.setattr(sources, "read_jsonl", fail)


def _verify(target):
  return token_store.main(["token_store", "verify", str(target)])


def test_warm_start_reads_no_raw_text(study, monkeypatch):
  wd, ref = study
  _no_raw_reads(monkeypatch)
  _assert_same(_batches(pipeline.prepare_data(_config(wd), wd)), ref)


def test_sentencepiece_warm_start_reads_no_raw_text(tmp_path, monkeypatch):
  wd = str(tmp_path / "wd")
  c = _config(wd)
  c.data.tokenizer = "sentencepiece"
  c.data.vocab_size = 400
  cold = pipeline.prepare_data(c, wd)
  _no_raw_reads(monkeypatch)
  warm = pipeline.prepare_data(c, wd)
  assert warm.tokenizer.fingerprint == cold.tokenizer.fingerprint
  assert warm.fingerprints == cold.fingerprints
  _assert_same(_batches(warm), _batches(cold))


def test_verify_passes_on_a_good_cache(study, capsys):
  wd, _ = study
  assert _verify(wd) == 0
  assert "3 stores, every block matches" in capsys.readouterr().out


def test_truncated_cache_is_rebuilt(study, caplog):
  wd, ref = study
  path = _tokens_file(wd)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  bundle = pipeline.prepare_data(_config(wd), wd)
  assert "truncated" in caplog.text and "rebuilding" in caplog.text
  _assert_same(_batches(bundle), ref)
  assert _verify(wd) == 0


def test_same_size_garbage_is_caught_on_load_and_rebuilt(study, caplog):
  wd, ref = study
  path = _tokens_file(wd)
  size = os.path.getsize(path)
  with open(path, "wb") as f:
    f.write(np.random.default_rng(0).bytes(size))
  assert os.path.getsize(path) == size
  bundle = pipeline.prepare_data(_config(wd), wd)
  assert "corrupt" in caplog.text and "rebuilding" in caplog.text
  _assert_same(_batches(bundle), ref)


def test_verify_names_same_size_garbage(study, capsys):
  wd, _ = study
  path = _tokens_file(wd, "gamma")
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF  # one flipped byte, size unchanged
  with open(path, "wb") as f:
    f.write(bytes(data))
  assert _verify(wd) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ")
  assert path in err[0] and "corrupt" in err[0]


def test_corrupt_cache_without_raw_data_is_one_line(study, monkeypatch):
  wd, _ = study
  path = _tokens_file(wd)
  with open(path, "r+b") as f:
    f.truncate(100)
  for d in DOMAINS:  # the raw data is gone: nothing to rebuild from
    os.remove(os.path.join(wd, "corpus", f"{d}.jsonl"))
  monkeypatch.setattr(pipeline.fixture_lib, "make_fixture_corpus",
                      lambda *a, **k: None)
  with pytest.raises(token_store.TokenCacheError) as e:
    pipeline.prepare_data(_config(wd), wd)
  msg = str(e.value)
  assert "\n" not in msg and path in msg and "truncated" in msg


def test_cache_without_checksums_is_rebuilt(study):
  wd, ref = study
  root = os.path.join(wd, "cache", "tokens")
  for name in os.listdir(root):
    if name.endswith(".json"):
      meta = json.load(open(os.path.join(root, name)))
      for key in ("format", "files", "block_bytes"):
        meta.pop(key)
      json.dump(meta, open(os.path.join(root, name), "w"))
  assert _verify(wd) == 2
  _assert_same(_batches(pipeline.prepare_data(_config(wd), wd)), ref)
  assert _verify(wd) == 0


def test_changed_data_is_read_again(study, monkeypatch):
  wd, _ = study
  path = os.path.join(wd, "corpus", "alpha.jsonl")
  lines = open(path).read().splitlines(keepends=True)
  with open(path, "w") as f:
    f.writelines(lines[:-1])
  before = pipeline.prepare_data(_config(wd), wd)
  assert before.num_docs["alpha"] == len(lines) - 1


# argv: process_id num_processes port workdir bucket_root out_json
CHILD = textwrap.dedent("""
  import json, os, sys
  sys.path.insert(0, os.path.join({repo!r}, "tests"))
  import fake_gcs
  pid, nproc, port = (int(a) for a in sys.argv[1:4])
  workdir, bucket, out = sys.argv[4:7]
  fake_gcs.install(bucket)
  from autoscale_jax import distributed as dist
  info = dist.maybe_initialize(f"localhost:{{port}}", nproc, pid,
                               initialization_timeout=60)
  assert info.initialized and info.process_index == pid, info
  from autoscale_jax.data import pipeline, sources, token_store
  import test_token_cache as t
  counts = {{"raw_reads": 0, "builds": 0}}
  read_jsonl, build = sources.read_jsonl, token_store.build_domain
  def counted_read(*a, **k):
    counts["raw_reads"] += 1
    return read_jsonl(*a, **k)
  def counted_build(*a, **k):
    counts["builds"] += 1
    return build(*a, **k)
  sources.read_jsonl, token_store.build_domain = counted_read, counted_build
  c = t._config(workdir)
  c.data.source = "jsonl"
  for d in t.DOMAINS:
    c.data.paths[d] = "gs://data/" + d + "/*.jsonl"
  b = pipeline.prepare_data(c, workdir)
  qb = b.quota_batches(t.QUOTA, seed=1)
  batch = qb.batch(qb.num_steps - 1)
  with open(out, "w") as f:
    json.dump({{**counts, "fingerprints": b.fingerprints,
               "targets": batch["targets"].tolist()}}, f)
  print("CHILD DONE", pid, flush=True)
""")


def test_two_processes_share_one_cache_built_once(tmp_path):
  bucket = str(tmp_path / "gcs")  # the children serve gs:// from here
  src = os.path.join(bucket, "data")
  from autoscale_jax.data import fixture  # pylint: disable=g-import-not-at-top
  fixture.make_fixture_corpus(str(tmp_path / "src"), DOMAINS,
                              docs_per_domain=40)
  for d in DOMAINS:
    os.makedirs(os.path.join(src, d))
    os.replace(tmp_path / "src" / f"{d}.jsonl",
               os.path.join(src, d, "part-0.jsonl"))
  workdir = "gs://bucket/shared"
  script = tmp_path / "child.py"
  script.write_text(CHILD.format(repo=str(multiproc.REPO)))
  port = multiproc.free_port()
  env = multiproc.child_env(1)
  env[token_store.LOCAL_CACHE_ENV] = str(tmp_path / "local")
  procs = []
  for i in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, str(script), str(i), "2", str(port), workdir, bucket,
         str(tmp_path / f"out{i}.json")], env=env, cwd=str(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=300)
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, p in enumerate(procs):
    assert p.returncode == 0 and f"CHILD DONE {i}" in outs[i], outs[i][-3000:]
  res = [json.load(open(tmp_path / f"out{i}.json")) for i in range(2)]
  # Process 0 read and tokenized each domain once; process 1 neither.
  assert res[0]["builds"] == len(DOMAINS)
  assert res[0]["raw_reads"] == len(DOMAINS)
  assert res[1]["builds"] == 0 and res[1]["raw_reads"] == 0
  assert res[0]["fingerprints"] == res[1]["fingerprints"]
  assert res[0]["targets"] == res[1]["targets"]
  # One cache, in the bucket; the local copies are keyed by content.
  tokens = os.listdir(os.path.join(bucket, "bucket", "shared", "cache",
                                   "tokens"))
  assert len([f for f in tokens if f.endswith(".tokens.npy")]) == len(DOMAINS)
  assert len(os.listdir(tmp_path / "local")) == 2 * len(DOMAINS)
  assert not os.path.exists(tmp_path / "gs:")
