"""experiments/kv_leases.py and lease_tables.py: leases with CAS on a KvStore.

The behaviour tests run on tensorstore's ``memory``, ``file`` and ``gcs``
drivers; ``gcs`` is the real driver (HTTP, ``ifGenerationMatch``) talking to
tests/fake_gcs_server.py on 127.0.0.1, never to Google.
Time is a fake monotonic clock the test advances, so expiry is exact and no
test sleeps for a lease to run out. Expiry is per observer: a table counts a
lease expired once it has itself seen the lease unchanged for its duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import fake_gcs_server
from test_leases import FakeClock
import pytest
import tensorstore as ts

from autoscale_jax import config as config_lib
from autoscale_jax import errors
from autoscale_jax.experiments import kv_leases
from autoscale_jax.experiments import lease_tables
from autoscale_jax.experiments import leases

REPO = Path(__file__).resolve().parents[1]
DURATION = 10.0


# Retries of a 5xx reply after 10 ms rather than tensorstore's 1 s.
FAST_RETRIES = {"max_retries": 4, "initial_delay": "10ms",
                "max_delay": "50ms"}


@pytest.fixture(scope="module")
def gcs_server():
  with fake_gcs_server.FakeGcsServer() as server:
    yield server


_buckets = iter(range(10**6))


@pytest.fixture
def gcs(gcs_server, monkeypatch) -> tuple[fake_gcs_server.FakeGcsServer, str]:
  """The fake GCS server, tensorstore pointed at it, and a fresh bucket.

  The driver reads the URL when a store is opened, so setting it per test
  works whatever gcs stores this process opened before.
  """
  for name, value in gcs_server.environ().items():
    monkeypatch.setenv(name, value)
  return gcs_server, f"test-bucket-{next(_buckets)}"


@pytest.fixture(params=["memory", "file", "gcs"])
def open_store(request, tmp_path: Path) -> Callable[[], ts.KvStore]:
  """Opens the test's store: one shared memory store, or a fresh handle on
  one directory (one bucket) per call (as separate workers open it)."""
  if request.param == "memory":
    store = ts.KvStore.open({"driver": "memory"}).result()
    return lambda: store
  if request.param == "file":
    spec = {"driver": "file", "path": str(tmp_path / "leases") + "/"}
  else:
    _, bucket = request.getfixturevalue("gcs")
    spec = {"driver": "gcs", "bucket": bucket, "path": "study/leases/",
            "gcs_request_retries": FAST_RETRIES}
  return lambda: ts.KvStore.open(spec).result()


def tables(open_store, *owners: str, clock=None):
  clock = clock or FakeClock()
  return clock, [kv_leases.KvLeaseTable(open_store(), o, DURATION, clock=clock)
                 for o in owners]


def stored(table: kv_leases.KvLeaseTable, name: str) -> Any:
  """The run's lease object as JSON, or None when there is none."""
  read = table.kvstore.read(f"{name}.lease").result()
  return json.loads(read.value) if read.state == "value" else None


def test_claim_is_exclusive_and_names_its_holder(open_store) -> None:
  _, (a, b) = tables(open_store, "a", "b")
  lease = a.acquire("run1")
  assert lease is not None and lease.generation == 0 and lease.held()
  assert b.acquire("run1") is None
  assert a.acquire("run1") is None  # a second claim by the holder too
  holder = b.holder("run1")
  assert holder.owner == "a" and holder.generation == 0
  assert holder.expires_in_s == pytest.approx(DURATION)
  info = stored(b, "run1")
  assert info["token"] == lease.token and info["owner"] == "a"
  assert info["duration_s"] == DURATION and info["renewals"] == 0
  assert b.acquire("run2") is not None  # other runs are free
  assert b.holder("run3") is None
  with pytest.raises(leases.LeaseError, match="run name 'a/b'"):
    a.acquire("a/b")


def test_renewal_keeps_the_lease_past_its_first_expiry(open_store) -> None:
  clock, (a, b) = tables(open_store, "a", "b")
  lease = a.acquire("run")
  assert b.acquire("run") is None  # b starts observing
  for k in range(5):  # 5 x 0.6 durations: alive only thanks to renewals
    clock.now += 0.6 * DURATION
    assert lease.renew() and lease.held()
    assert b.acquire("run") is None
    assert stored(b, "run")["renewals"] == k + 1
  assert b.holder("run").expires_in_s == pytest.approx(DURATION)


def test_expiry_counts_only_what_the_observer_saw_unchanged(open_store) -> None:
  """A lease expires for b once b saw one generation unchanged for its
  duration on b's clock; how old the lease was before b looked is unknown
  to b and does not count (no wall clocks are compared)."""
  clock, (a, b) = tables(open_store, "a", "b")
  old = a.acquire("run")
  clock.now += 5 * DURATION  # a stalls; b has not looked yet
  assert not old.held()  # a's own clock: its lease ran out
  assert b.acquire("run") is None  # b's first look: fresh to b
  assert b.holder("run").expires_in_s == pytest.approx(DURATION)
  clock.now += DURATION - 0.01
  assert b.acquire("run") is None
  assert b.holder("run").expires_in_s == pytest.approx(0.01)
  clock.now += 0.02
  assert b.holder("run").expires_in_s == pytest.approx(-0.01)
  new = b.acquire("run")
  assert new is not None and new.generation == 1 and new.taken_from == "a"
  assert new.held() and stored(a, "run")["owner"] == "b"


def test_lost_holder_fails_to_renew_and_cannot_release_the_new_lease(
    open_store) -> None:
  clock, (a, b) = tables(open_store, "a", "b")
  old = a.acquire("run")
  assert b.acquire("run") is None
  clock.now += DURATION
  new = b.acquire("run")
  assert new is not None
  assert not old.renew()  # the generation it renews on is gone
  assert not old.held()
  with pytest.raises(leases.LeaseLost, match="run 'run'"):
    old.confirm()
  old.release()  # a conditional delete on its generation: deletes nothing
  assert stored(a, "run")["token"] == new.token
  assert new.held()
  new.confirm()
  new.release()
  assert stored(a, "run") is None and not new.held()
  again = a.acquire("run")  # a released run can be claimed again
  assert again is not None and again.generation == 0


class _RenewBeforeWrite:
  """The store as the taker sees it: the old holder's renewal lands between
  the taker's read and its CAS write."""

  def __init__(self, store: ts.KvStore, renew: Callable[[], bool]):
    self.store = store
    self.renew = renew
    self.renewed: list[bool] = []

  def read(self, key: str) -> Any:
    return self.store.read(key)

  def write(self, key: str, value: Any, if_equal: bytes) -> Any:
    if not self.renewed:
      self.renewed.append(self.renew())
    return self.store.write(key, value, if_equal=if_equal)


def test_slow_holder_that_renews_before_the_takeover_keeps_the_run(
    open_store) -> None:
  clock, (a, b) = tables(open_store, "a", "b")
  old = a.acquire("run")
  assert b.acquire("run") is None
  clock.now += DURATION + 1  # a stalled past its lease, b saw it unchanged
  assert not old.held()
  b.kvstore = _RenewBeforeWrite(b.kvstore, old.renew)
  assert b.acquire("run") is None  # b's CAS on the old generation failed
  assert b.kvstore.renewed == [True]
  assert old.held() and stored(a, "run")["token"] == old.token
  b.kvstore = b.kvstore.store
  assert b.acquire("run") is None  # a new generation: b starts over
  assert b.holder("run").expires_in_s == pytest.approx(DURATION)


def test_renewal_whose_reply_was_lost_is_adopted(open_store) -> None:
  """A renewal that was written but reported as failed (a lost reply)
  leaves the lease held: the next renewal finds its own token and goes on."""
  _, (a,) = tables(open_store, "a")
  lease = a.acquire("run")
  store = lease.kvstore

  class LostReply:
    def read(self, key):
      return store.read(key)

    def write(self, key, value, if_equal):
      store.write(key, value, if_equal=if_equal).result()
      return self  # the future: its reply is lost

    def result(self):
      raise ValueError("UNAVAILABLE: connection reset")

  lease.kvstore = LostReply()
  with pytest.raises(kv_leases.KvStoreError, match="renewing run.lease"):
    lease.renew()
  lease.kvstore = store
  assert lease.renew() and lease.held()
  assert stored(a, "run")["renewals"] == 2


def _race(racers: list, name: str) -> list:
  won, barrier = [], threading.Barrier(len(racers))

  def race(table) -> None:
    barrier.wait()
    lease = table.acquire(name)
    if lease is not None:
      won.append(lease)

  threads = [threading.Thread(target=race, args=(t,)) for t in racers]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return won


def test_racing_claims_of_a_free_run_have_one_winner(open_store) -> None:
  _, racers = tables(open_store, *[f"w{k}" for k in range(8)])
  for run in ("r0", "r1", "r2"):
    won = _race(racers, run)
    assert len(won) == 1, won
    assert stored(racers[0], run)["token"] == won[0].token


def test_racing_takeovers_have_one_winner(open_store) -> None:
  clock, ts_ = tables(open_store, "dead", *[f"w{k}" for k in range(8)])
  dead, racers = ts_[0], ts_[1:]
  assert dead.acquire("run") is not None
  assert all(t.acquire("run") is None for t in racers)  # all observe it
  clock.now += DURATION
  won = _race(racers, "run")
  assert len(won) == 1 and won[0].generation == 1, won
  assert won[0].taken_from == "dead"
  assert [t.holder("run").owner for t in racers] == [won[0].owner] * 8


_RACER = textwrap.dedent("""
    import sys
    from autoscale_jax.experiments import lease_tables
    table = lease_tables.open_table(sys.argv[1], sys.argv[2], 60.0,
                                    backend="kvstore")
    sys.stdin.readline()  # every racer is ready: go
    won = [n for n in sys.argv[3:] if table.acquire(n) is not None]
    print(" ".join(won))
""")


@pytest.mark.parametrize("driver", ["file", "gcs"])
def test_processes_racing_have_one_winner_per_run(request, driver: str,
                                                  tmp_path: Path) -> None:
  """Three processes claim six runs at once through ``open_table``: a
  local workdir (file driver) or ``gs://`` (gcs driver, fake server)."""
  runs = [f"run{k}" for k in range(6)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  workdir = str(tmp_path)
  if driver == "gcs":
    server, bucket = request.getfixturevalue("gcs")
    workdir = f"gs://{bucket}/study"
    env.update(server.environ())

  def lease_of(run: str) -> dict[str, Any]:
    if driver == "file":
      return json.loads((tmp_path / "leases" / f"{run}.lease").read_text())
    return json.loads(server.get(bucket, f"study/leases/{run}.lease").data)

  procs = [subprocess.Popen(
      [sys.executable, "-c", _RACER, workdir, f"p{k}", *runs],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=env, text=True) for k in range(3)]
  for p in procs:  # all have started; each reads "go" once it is ready
    p.stdin.write("go\n")
    p.stdin.flush()
  outs = [p.communicate(timeout=120) for p in procs]
  assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
  won = [n for out, _ in outs for n in out.split()]
  assert sorted(won) == runs, outs
  for run in runs:
    info = lease_of(run)
    assert [info["owner"]] == [f"p{k}" for k, (out, _) in enumerate(outs)
                               if run in out.split()]


def test_heartbeat_renews_a_kv_lease_and_reports_its_loss(tmp_path) -> None:
  """leases.Heartbeat works unchanged on a KvLease (real clock, 30 s)."""
  table = lease_tables.open_table(str(tmp_path), "a", 30.0,
                                  backend="kvstore")
  lease = table.acquire("run")
  calls = []
  with leases.Heartbeat(lease, 0.02, on_lost=lambda: calls.append(1)) as beat:
    while stored(table, "run")["renewals"] < 2:
      assert not beat.lost.is_set()
    assert lease.held()
    # Another worker's takeover: a new generation with another token.
    table.kvstore.write("run.lease", b'{"owner": "b"}').result()
    assert beat.lost.wait(30)
  assert calls == [1] and not lease.held()


def test_lost_lease_on_a_multi_process_slice_exits_75(tmp_path) -> None:
  """lease_worker's on_lost of a slice: process 0 exits with status 75."""
  script = textwrap.dedent("""
      import sys, time
      from autoscale_jax.experiments import lease_tables, leases
      from autoscale_jax.study import lease_worker
      table = lease_tables.open_table(sys.argv[1], "slice", 30.0,
                                      backend="kvstore")
      lease = table.acquire("run")
      job = lease_worker.Job("run", {}, 0, "[ddo 1/1]")
      with leases.Heartbeat(lease, 0.02,
                            on_lost=lease_worker._exit_slice(job)):
        print("holding", flush=True)
        sys.stdin.readline()  # the test takes the run over, then says go
        for _ in range(3000):  # the slice trains on until it exits
          time.sleep(0.01)
      sys.exit(1)  # the heartbeat never noticed
  """)
  proc = subprocess.Popen(
      [sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert proc.stdout.readline() == "holding\n", proc.stderr.read()
  store = ts.KvStore.open({"driver": "file",
                           "path": str(tmp_path / "leases") + "/"}).result()
  store.write("run.lease", b'{"owner": "other"}').result()  # a takeover
  out, err = proc.communicate("go\n", timeout=120)
  assert proc.returncode == 75, err
  assert "lease on run lost" in out and "exit status 75" in out


# --- the gcs driver against the fake server ---------------------------------


def _requests(server, method: str, bucket: str) -> list[tuple[int, str]]:
  """(status, ifGenerationMatch) of the server's ``method`` requests on
  ``bucket``'s objects, in order."""
  return [(r.status, r.query.get("ifGenerationMatch", "-"))
          for r in server.requests if r.method == method
          and f"/b/{bucket}/o" in r.path]


def test_open_table_on_a_gs_workdir_reaches_the_bucket(gcs) -> None:
  server, bucket = gcs
  workdir = f"gs://{bucket}/studies/v4"
  a = lease_tables.open_table(workdir, "a", DURATION)  # auto: kvstore
  b = lease_tables.open_table(workdir, "b", DURATION, backend="kvstore")
  assert isinstance(a, kv_leases.KvLeaseTable)
  lease = a.acquire("run")
  assert lease is not None and lease.held()
  assert server.names(bucket) == ["studies/v4/leases/run.lease"]
  stored_lease = server.get(bucket, "studies/v4/leases/run.lease")
  assert json.loads(stored_lease.data)["token"] == lease.token
  assert b.acquire("run") is None and b.holder("run").owner == "a"
  assert lease.renew()
  assert server.get(bucket, "studies/v4/leases/run.lease").generation > (
      stored_lease.generation)
  lease.release()
  assert server.names(bucket) == []
  # The claim was a create conditional on "no object" (ifGenerationMatch=0),
  # the renewal and the release conditional on the generation written.
  assert _requests(server, "POST", bucket) == [
      (200, "0"), (200, str(stored_lease.generation))]
  assert [s for s, _ in _requests(server, "DELETE", bucket)] == [204]


def test_gcs_precondition_failures_are_lost_leases_not_errors(gcs) -> None:
  """Another client's write changes the generation: the server answers the
  lease's conditional requests 412, which the lease reports as lost (no
  exception) and a claimer as a failed claim."""
  server, bucket = gcs
  spec = {"driver": "gcs", "bucket": bucket, "path": "s/leases/"}
  clock = FakeClock()
  a, b = (kv_leases.KvLeaseTable(ts.KvStore.open(spec).result(), owner,
                                 DURATION, clock=clock) for owner in "ab")
  lease = a.acquire("run")
  server.put(bucket, "s/leases/run.lease", b'{"owner": "other"}')
  assert not lease.renew()
  assert not lease.held()
  with pytest.raises(leases.LeaseLost):
    lease.confirm()
  lease.release()  # deletes nothing
  assert json.loads(server.get(bucket, "s/leases/run.lease").data) == {
      "owner": "other"}
  # A claim of a free run that another client creates between b's read and
  # b's conditional create.
  b.kvstore = _RenewBeforeWrite(
      b.kvstore, lambda: bool(server.put(bucket, "s/leases/free.lease",
                                         b'{"owner": "other"}')))
  assert b.acquire("free") is None
  statuses = [s for s, _ in _requests(server, "POST", bucket)]
  # a's claim, renew and confirm; b's claim.
  assert statuses == [200, 412, 412, 412], statuses
  assert [s for s, _ in _requests(server, "DELETE", bucket)] == [412]


def _gcs_tables(server, bucket: str, *owners: str):
  spec = {"driver": "gcs", "bucket": bucket, "path": "s/leases/",
          "gcs_request_retries": FAST_RETRIES}
  clock = FakeClock()
  return clock, [kv_leases.KvLeaseTable(ts.KvStore.open(spec).result(), o,
                                        DURATION, clock=clock)
                 for o in owners]


def test_gcs_renewal_and_release_whose_replies_were_lost(gcs) -> None:
  """The server carries out a request but its reply is lost (503): the
  driver retries it, the retry fails its precondition (the first attempt
  already changed the generation), and the lease finds its own write."""
  server, bucket = gcs
  _, (a, b) = _gcs_tables(server, bucket, "a", "b")
  lease = a.acquire("run")
  server.lose_next_reply("POST")
  assert lease.renew() and lease.held()
  assert stored(b, "run")["renewals"] == 2  # the lost one and its successor
  assert [s for s, _ in _requests(server, "POST", bucket)] == [
      200, 503, 412, 200]
  server.lose_next_reply("DELETE")
  lease.release()
  assert server.names(bucket) == []
  assert [s for s, _ in _requests(server, "DELETE", bucket)] == [503, 404]
  assert b.acquire("run") is not None


def test_gcs_claim_whose_reply_was_lost_is_held(gcs) -> None:
  """A claim the server carried out but whose reply was lost: the driver's
  retry fails its precondition (the object now exists), so the claimer
  reads the object back and finds its own token: it holds the run, rather
  than leaving behind a lease nobody renews that blocks the run for its
  whole duration."""
  server, bucket = gcs
  _, (a, b) = _gcs_tables(server, bucket, "a", "b")
  server.lose_next_reply("POST")
  lease = a.acquire("run")
  assert [s for s, _ in _requests(server, "POST", bucket)] == [503, 412]
  assert lease is not None and lease.generation == 0 and lease.held()
  assert stored(b, "run")["token"] == lease.token
  assert b.acquire("run") is None
  assert lease.renew() and stored(b, "run")["renewals"] == 1
  lease.release()
  assert server.names(bucket) == []


# --- backend choice (lease_tables) ------------------------------------------


def test_gs_workdir_maps_to_the_gcs_driver() -> None:
  spec = lease_tables.kvstore_spec
  assert spec("gs://my-bucket/studies/v4") == {
      "driver": "gcs", "bucket": "my-bucket", "path": "studies/v4/leases/"}
  assert spec("gs://my-bucket/s/") == {
      "driver": "gcs", "bucket": "my-bucket", "path": "s/leases/"}
  assert spec("gs://my-bucket") == {
      "driver": "gcs", "bucket": "my-bucket", "path": "leases/"}
  assert spec("/mnt/study") == {"driver": "file",
                                "path": "/mnt/study/leases/"}
  assert spec("rel")["path"] == os.path.join(os.getcwd(), "rel", "leases/")
  for bad in ("gs://", "s3://b/s"):
    with pytest.raises(leases.LeaseError) as e:
      spec(bad)
    assert bad in str(e.value) and "\n" not in str(e.value)


def test_backend_choice() -> None:
  backend_of = lease_tables.backend_of
  assert backend_of("gs://my-bucket/s", "auto") == "kvstore"
  assert backend_of("/mnt/s", "auto") == "posix"
  assert backend_of("/mnt/s", "kvstore") == "kvstore"
  assert backend_of("gs://my-bucket/s", "kvstore") == "kvstore"
  assert backend_of("/mnt/s", "posix") == "posix"
  for workdir, backend, needle in [
      ("gs://my-bucket/s", "posix", "lease_backend='posix' needs a POSIX"),
      ("s3://b/s", "auto", "need a gs:// bucket or a shared POSIX"),
      ("s3://b/s", "kvstore", "need a gs:// bucket or a shared POSIX"),
      ("/mnt/s", "nfs", "lease_backend='nfs'")]:
    with pytest.raises(leases.LeaseError) as e:
      backend_of(workdir, backend)
    assert isinstance(e.value, errors.UserError)
    assert needle in str(e.value) and "\n" not in str(e.value), e.value


def test_open_table_picks_the_backend(tmp_path: Path) -> None:
  posix = lease_tables.open_table(str(tmp_path), "a", DURATION)
  assert isinstance(posix, leases.LeaseTable)
  kv = lease_tables.open_table(str(tmp_path), "a", DURATION,
                               backend="kvstore")
  assert isinstance(kv, kv_leases.KvLeaseTable)
  assert kv.acquire("run") is not None
  assert (tmp_path / "leases" / "run.lease").is_file()
  gcs = lease_tables.open_table("gs://my-bucket/s", "a", DURATION)  # no I/O
  assert isinstance(gcs, kv_leases.KvLeaseTable)
  assert gcs.kvstore.url == "gs://my-bucket/s/leases/"
  with pytest.raises(leases.LeaseError, match="cannot open the lease store"):
    lease_tables.open_table("gs://b/s", "a", DURATION)  # bucket too short


def test_lease_backend_is_validated() -> None:
  c = config_lib.base_config()
  assert c.run.lease_backend == "auto"
  assert config_lib.LEASE_BACKENDS == lease_tables.BACKENDS
  for ok in lease_tables.BACKENDS:
    c.run.lease_backend = ok
    config_lib.validate(c)
  c.run.lease_backend = "gcs"
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.run\.lease_backend='gcs'.*auto, posix, "
                     r"kvstore"):
    config_lib.validate(c)
