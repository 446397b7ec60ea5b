"""Paths on a non-local filesystem: a micro study on a fake gs:// bucket.

The bucket is ``fake_gcs`` (fsspec over a local directory, reached by epath
through its fsspec backend; see tests/fake_gcs.py). The study reads its data
from ``gs://data/...`` globs and keeps its whole workdir in ``gs://bucket/...``;
the code under test never sees a local path for either. Also: storage
retries on an injected flaky filesystem.
"""

import errno
import functools
import os
import sys

import fake_gcs
import pytest
from absl import flags

from autoscale_jax import fileio
from autoscale_jax.data import fixture
from autoscale_jax.data import sources
from autoscale_jax.experiments import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("alpha", "beta", "gamma")
WORKDIR = "gs://bucket/study"

CONFIG = """
import sys
sys.path.insert(0, {configs!r})
import micro


def get_config():
  c = micro.get_config()
  c.data.source = "jsonl"
  for d in {domains!r}:
    c.data.paths[d] = "gs://data/rp/" + d + "/*.jsonl"
  c.run.swarm = "off"
  return c
"""


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The fake bucket's local directory; the test runs in an empty cwd."""
  root = str(tmp_path / "gcs")
  fake_gcs.install(root, monkeypatch)
  monkeypatch.setattr(fileio, "RETRY", fileio.RetryPolicy(
      attempts=3, initial_delay_s=0.0, max_delay_s=0.0))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield root
  fake_gcs.forget_filesystems()
  assert not os.listdir(cwd), "a gs:// path reached os: " + str(
      os.listdir(cwd))


def _upload_fixture_corpus(tmp_path):
  """The fixture corpus as two JSONL parts per domain under gs://data/rp/."""
  src = fixture.make_fixture_corpus(str(tmp_path / "src"), list(DOMAINS),
                                    docs_per_domain=40)
  for d in DOMAINS:
    lines = fileio.read_text(os.path.join(src, f"{d}.jsonl")
                                     ).splitlines(keepends=True)
    for part, chunk in enumerate((lines[:25], lines[25:])):
      fileio.atomic_write_text(f"gs://data/rp/{d}/part-{part}.jsonl",
                               "".join(chunk))


def _main(*args):
  """``python -m autoscale_jax.main ARGS`` in this process; exit status."""
  from autoscale_jax import main  # pylint: disable=g-import-not-at-top
  try:
    argv = main._parse_flags(["autoscale_jax.main", *args])
    main.main(argv)
    return 0
  except SystemExit as e:
    return e.code
  finally:
    flags.FLAGS.unparse_flags()


def test_globs_listing_and_streamed_reads_on_the_bucket(bucket, tmp_path):
  _upload_fixture_corpus(tmp_path)
  files = sources.expand_paths("gs://data/rp/alpha/*.jsonl")
  assert files == ["gs://data/rp/alpha/part-0.jsonl",
                   "gs://data/rp/alpha/part-1.jsonl"]
  assert sources.expand_paths("gs://data/rp/alpha") == files
  assert sources.expand_paths("gs://data/**/part-1.jsonl") == [
      f"gs://data/rp/{d}/part-1.jsonl" for d in DOMAINS]
  docs = sources.read_paths({"alpha": "gs://data/rp/alpha/*.jsonl"},
                            ["alpha"])["alpha"]
  local = sources.read_jsonl(str(tmp_path / "src" / "alpha.jsonl"))
  assert docs == local
  with pytest.raises(sources.DataError, match="gs://data/rp/nope"):
    sources.read_paths({"x": "gs://data/rp/nope/*.jsonl"}, ["x"])
  # The bucket holds the bytes; a local path named like the URI does not.
  assert os.path.exists(os.path.join(bucket, "data/rp/alpha/part-0.jsonl"))


@pytest.mark.slow  # a whole micro study: 16 runs (about 60 s of CPU)
def test_micro_study_with_data_and_workdir_on_the_bucket(
    bucket, tmp_path, monkeypatch):
  _upload_fixture_corpus(tmp_path)
  fake_gcs.route_trainer_io(monkeypatch)
  config = tmp_path / "remote_micro.py"
  config.write_text(CONFIG.format(configs=os.path.join(ROOT, "configs"),
                                  domains=DOMAINS))
  args = [f"--config={config}", f"--workdir={WORKDIR}"]
  assert _main("--stage=all", *args) == 0

  def in_bucket(*parts):
    return os.path.join(fake_gcs.local(WORKDIR), *parts)
  records = os.listdir(in_bucket("store"))
  assert len(records) == 2 * (2 * len(DOMAINS) + 1) + 2
  for path in ("ddo/budget_0/mixture.json", "ddo/budget_1/mixture.json",
               "project/mixture.json", "final/comparison.json",
               "report/index.html", "report/README.md"):
    assert os.path.getsize(in_bucket(path)) > 0, path
  assert any(f.endswith(".png") for f in os.listdir(in_bucket("report")))
  tokens = os.listdir(in_bucket("cache", "tokens"))
  assert sorted(f for f in tokens if f.endswith(".json")) == sorted(
      f for f in tokens if f.endswith(".json") and f.split("-")[0] in DOMAINS)
  assert len([f for f in tokens if f.endswith(".json")]) == len(DOMAINS)
  runs = os.listdir(in_bucket("runs"))
  assert all(os.path.exists(in_bucket("runs", r, "result.json")) for r in runs)

  # The raw data gone: the later stages read only the cache and the store.
  for d in DOMAINS:
    for part in (0, 1):
      fileio.remove(f"gs://data/rp/{d}/part-{part}.jsonl")

  def no_raw_reads(path, *a, **k):
    raise AssertionError(f"raw text read: {path}")
  monkeypatch.setattr(sources, "read_file", no_raw_reads)
  monkeypatch.setattr(sources, "read_jsonl", no_raw_reads)
  report = os.path.join(in_bucket("report"), "index.html")
  before = os.path.getmtime(report)
  for stage in ("fit", "project", "report"):
    assert _main(f"--stage={stage}", *args) == 0, stage
  assert os.path.getmtime(report) >= before
  assert len(os.listdir(in_bucket("store"))) == len(records)


class _Flaky:
  """A filesystem method failing ``failures`` times with ``error``, then
  delegating to the real one."""

  def __init__(self, fn, failures, error):
    self.fn, self.failures, self.error, self.calls = fn, failures, error, 0

  def __get__(self, instance, owner):
    return functools.partial(self, instance)

  def __call__(self, instance, *args, **kwargs):
    self.calls += 1
    if self.calls <= self.failures:
      raise self.error
    return self.fn(instance, *args, **kwargs)


@pytest.mark.parametrize("error", [
    OSError(errno.EIO, "Input/output error"),
    TimeoutError("read timed out"),
    ConnectionResetError(errno.ECONNRESET, "connection reset by peer"),
])
def test_store_write_retries_transient_errors(bucket, monkeypatch, error):
  store = store_lib.ExperimentStore(f"{WORKDIR}/store")
  cls = fake_gcs.FakeGCS
  flaky = _Flaky(cls.mv, 2, error)
  monkeypatch.setattr(cls, "mv", flaky)
  path = store.put({"name": "r1", "fingerprint": "ab" * 32, "x": 1})
  assert flaky.calls == 3  # failed twice, then succeeded
  assert str(path).startswith("gs://bucket/study/store/r1__")
  # Reads retry too.
  flaky_open = _Flaky(cls.open, 2, error)
  monkeypatch.setattr(cls, "open", flaky_open)
  assert store.get("r1", "ab" * 32)["x"] == 1
  assert flaky_open.calls == 3


def test_storage_that_keeps_failing_is_one_line_naming_the_path(
    bucket, monkeypatch):
  store = store_lib.ExperimentStore(f"{WORKDIR}/store")
  flaky = _Flaky(fake_gcs.FakeGCS.mv, 10**9,
                 OSError(errno.ETIMEDOUT, "Connection timed out"))
  monkeypatch.setattr(fake_gcs.FakeGCS, "mv", flaky)
  with pytest.raises(fileio.StorageError) as e:
    store.put({"name": "r1", "fingerprint": "ab" * 32})
  msg = str(e.value)
  assert "\n" not in msg
  assert f"{WORKDIR}/store/r1__{'ab' * 8}.json" in msg
  assert "failed 3 times" in msg
  assert flaky.calls == 3
  # No temp file left behind by the failed attempts.
  assert not [f for f in os.listdir(fake_gcs.local(f"{WORKDIR}/store"))
              if ".tmp-" in f]


def test_errors_that_are_not_transient_are_not_retried(bucket, monkeypatch):
  flaky = _Flaky(fake_gcs.FakeGCS.mv, 10**9, PermissionError(
      errno.EACCES, "Permission denied"))
  monkeypatch.setattr(fake_gcs.FakeGCS, "mv", flaky)
  with pytest.raises(PermissionError):
    fileio.atomic_write_text(f"{WORKDIR}/x.json", "{}")
  assert flaky.calls == 1


@pytest.mark.parametrize("error,transient", [
    (OSError(errno.EIO, "io"), True),
    (OSError(errno.EAGAIN, "again"), True),
    (TimeoutError(), True),
    (ConnectionError(), True),
    (FileNotFoundError(errno.ENOENT, "missing"), False),
    (PermissionError(errno.EACCES, "denied"), False),
    (ValueError("bug"), False),
    (type("HttpError", (Exception,), {"code": 503})(), True),
    (type("HttpError", (Exception,), {"code": 404})(), False),
    (type("ServiceUnavailable", (Exception,), {})(), True),
])
def test_transient_error_classes(error, transient):
  assert fileio.is_transient(error) is transient


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
