"""experiments/leases.py: claim, renew, expire, take over, release.

Time is a fake clock the test advances, so expiry is exact and no test
sleeps for a lease to run out (the heartbeat tests use short real waits).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from autoscale_jax import config as config_lib
from autoscale_jax import errors
from autoscale_jax.experiments import leases

DURATION = 10.0


class FakeClock:

  def __init__(self, now: float = 1_000_000.0):
    self.now = now

  def __call__(self) -> float:
    return self.now


def tables(root: Path, *owners: str, clock=None):
  clock = clock or FakeClock()
  return clock, [leases.LeaseTable(root, o, DURATION, clock=clock)
                 for o in owners]


def lease_files(root: Path, name: str) -> list[str]:
  return sorted(os.listdir(root / name)) if (root / name).exists() else []


def test_claim_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
  _, (a, b) = tables(tmp_path, "a", "b")
  lease = a.acquire("run1")
  assert lease is not None and lease.generation == 0 and lease.held()
  assert b.acquire("run1") is None
  assert a.acquire("run1") is None  # a second claim by the holder too
  holder = b.holder("run1")
  assert holder.owner == "a" and holder.generation == 0
  assert holder.expires_in_s == pytest.approx(DURATION)
  assert json.loads((tmp_path / "run1" / "0.lease").read_text())["token"] == (
      lease.token)
  assert b.acquire("run2") is not None  # other runs are free


def test_renewal_keeps_the_lease_past_its_first_expiry(tmp_path: Path) -> None:
  clock, (a, b) = tables(tmp_path, "a", "b")
  lease = a.acquire("run")
  for _ in range(5):  # 5 x 0.6 durations: alive only thanks to renewals
    clock.now += 0.6 * DURATION
    assert lease.renew()
    assert b.acquire("run") is None
  assert b.holder("run").expires_in_s == pytest.approx(DURATION)


def test_expired_lease_is_taken_over_and_the_old_holder_loses_it(
    tmp_path: Path) -> None:
  clock, (a, b) = tables(tmp_path, "a", "b")
  old = a.acquire("run")
  clock.now += DURATION - 0.01
  assert b.acquire("run") is None  # not yet expired
  assert old.held()
  clock.now += 0.02
  assert not old.held()  # expired: no longer held, even before a takeover
  new = b.acquire("run")
  assert new is not None and new.generation == 1 and new.taken_from == "a"
  assert new.held()
  assert not old.renew()  # renewing an expired, taken-over lease fails
  assert new.held()
  with pytest.raises(leases.LeaseLost):
    old.confirm()
  old.release()  # not held: removes nothing
  assert lease_files(tmp_path, "run") == ["0.lease", "1.lease"]
  assert new.held()
  new.release()
  assert lease_files(tmp_path, "run") == []
  again = a.acquire("run")  # a released run can be claimed again
  assert again is not None and again.generation == 0


def test_old_holder_that_renews_during_a_takeover_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  """The taker re-reads the expired lease after its exclusive create."""
  clock, (a, b) = tables(tmp_path, "a", "b")
  old = a.acquire("run")
  clock.now += DURATION + 1
  create = leases.LeaseTable._create

  def create_then_old_holder_renews(self, name, generation):
    lease = create(self, name, generation)
    assert old.renew() is False  # a higher generation exists right now
    return lease

  monkeypatch.setattr(leases.LeaseTable, "_create",
                      create_then_old_holder_renews)
  assert b.acquire("run") is None  # renewed meanwhile: b backs off
  monkeypatch.undo()
  assert lease_files(tmp_path, "run") == ["0.lease"]
  assert old.held()  # a's lease is current again and fresh
  assert b.acquire("run") is None


def test_racing_takeovers_have_one_winner(tmp_path: Path) -> None:
  clock = FakeClock()
  owners = [f"w{k}" for k in range(8)]
  _, ts = tables(tmp_path, "dead", *owners, clock=clock)
  dead, racers = ts[0], ts[1:]
  assert dead.acquire("run") is not None
  clock.now += DURATION + 1
  won: list[leases.Lease] = []
  barrier = threading.Barrier(len(racers))

  def race(table: leases.LeaseTable) -> None:
    barrier.wait()
    lease = table.acquire("run")
    if lease is not None:
      won.append(lease)

  threads = [threading.Thread(target=race, args=(t,)) for t in racers]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(won) == 1 and won[0].generation == 1, won
  assert [t.holder("run").owner for t in racers] == [won[0].owner] * 8


def test_racing_claims_of_a_free_run_have_one_winner(tmp_path: Path) -> None:
  _, racers = tables(tmp_path, *[f"w{k}" for k in range(8)])
  won = []
  barrier = threading.Barrier(len(racers))

  def race(table):
    barrier.wait()
    won.append(table.acquire("run"))

  threads = [threading.Thread(target=race, args=(t,)) for t in racers]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len([w for w in won if w is not None]) == 1


def test_partial_lease_file_expires_by_its_time(tmp_path: Path) -> None:
  """A writer killed between create and write leaves an empty file."""
  clock, (b,) = tables(tmp_path, "b")
  (tmp_path / "run").mkdir()
  empty = tmp_path / "run" / "0.lease"
  empty.write_text("")
  os.utime(empty, (clock.now, clock.now))
  assert b.acquire("run") is None  # fresh: its writer may be alive
  clock.now += DURATION + 1
  lease = b.acquire("run")
  assert lease is not None and lease.generation == 1 and lease.held()


def test_heartbeat_renews_while_running(tmp_path: Path) -> None:
  a = leases.LeaseTable(tmp_path, "a", 0.5)
  b = leases.LeaseTable(tmp_path, "b", 0.5)
  lease = a.acquire("run")
  with leases.Heartbeat(lease, 0.05) as beat:
    time.sleep(1.2)  # more than two lease durations
    assert b.acquire("run") is None
    assert not beat.lost.is_set()
  deadline = time.time() + 5
  while (taken := b.acquire("run")) is None:  # the heartbeat stopped
    assert time.time() < deadline, "lease never expired"
    time.sleep(0.05)
  assert taken.taken_from == "a" and not lease.held()


def test_heartbeat_reports_a_taken_over_lease(tmp_path: Path) -> None:
  a = leases.LeaseTable(tmp_path, "a", 30.0)
  lease = a.acquire("run")
  calls = []
  with leases.Heartbeat(lease, 0.02, on_lost=lambda: calls.append(1)) as beat:
    (tmp_path / "run" / "1.lease").write_text("{}")  # as a takeover makes it
    assert beat.lost.wait(5)
  assert calls == [1]


def test_heartbeat_raises_in_the_training_thread(tmp_path: Path) -> None:
  """The lease worker's on_lost stops the run where it is (LeaseLost)."""
  lease = leases.LeaseTable(tmp_path, "a", 30.0).acquire("run")
  stop = leases.raise_in(threading.current_thread())
  with pytest.raises(leases.LeaseLost):
    with leases.Heartbeat(lease, 0.02, on_lost=stop):
      (tmp_path / "run" / "1.lease").write_text("{}")
      deadline = time.time() + 5
      while time.time() < deadline:  # a training loop, in Python
        sum(range(1000))
  assert time.time() < deadline


def test_gs_workdir_is_a_one_line_user_error() -> None:
  with pytest.raises(leases.LeaseError) as e:
    leases.lease_root("gs://bucket/study")
  assert isinstance(e.value, errors.UserError)
  assert "POSIX shared filesystem" in str(e.value)
  assert "\n" not in str(e.value)
  assert leases.lease_root("/mnt/nfs/study") == Path("/mnt/nfs/study/leases")


@pytest.mark.parametrize("key,value,match", [
    ("lease_seconds", 0.0, r"config\.run\.lease_seconds=0\.0"),
    ("heartbeat_seconds", -1.0, r"config\.run\.heartbeat_seconds=-1\.0"),
    ("heartbeat_seconds", 61.0, r"at most half of run\.lease_seconds=120"),
])
def test_lease_settings_are_validated(key, value, match) -> None:
  c = config_lib.base_config()
  c.run[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)
