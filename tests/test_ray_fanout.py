"""launch/ray_fanout.py: the plan (--dry-run) and a real local Ray cluster.

The real test starts the launcher as a user does (a local Ray cluster on
CPU, 3 lease workers on a micro study), SIGKILLs the Ray worker process of
one lease holder mid-run, and checks that Ray restarted it, the study
completed, and every run was recorded exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import ray_fanout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import test_fanout  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_dry_run_plan_has_one_lease_worker_per_slot(capsys) -> None:
  assert ray_fanout.main([
      "--config=configs/micro.py", "--workdir=/nfs/study", "--workers=3",
      "--num_gpus=1", "--max_retries=5", "--then=project,final",
      "--dry-run", "--", "--config.run.lease_seconds=60"]) == 0
  plan = json.loads(capsys.readouterr().out)
  assert [w["name"] for w in plan["workers"]] == ["ray0", "ray1", "ray2"]
  for w in plan["workers"]:
    assert w["argv"][1:] == ["-m", "autoscale_jax.main", "--stage=ddo",
                             "--config=configs/micro.py",
                             "--workdir=/nfs/study",
                             "--config.run.lease_seconds=60"]
    assert w["log"] == f"/nfs/study/logs/ray/{w['name']}.log"
  assert plan["ray_options"] == {"num_cpus": 1.0, "num_gpus": 1.0,
                                 "max_retries": 5, "retry_exceptions": True}
  assert [a[3] for a in plan["then"]] == ["--stage=project", "--stage=final"]
  assert plan["init"] == {"address": None}


@pytest.mark.parametrize("argv,message", [
    (["--workers=0"], "--workers=0: must be >= 1"),
    (["--resources=[1]"], "--resources must be a JSON object"),
    (["--resources={TPU}"], "is not JSON"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys) -> None:
  with pytest.raises(SystemExit) as e:
    ray_fanout.parse_args(["--config=c.py", "--workdir=w", *argv])
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def _lease_pids(root: Path) -> dict[str, int]:
  """{run name: pid of the Ray task process holding its lease}."""
  held = {}
  for path in root.glob("*/*.lease"):
    try:
      owner = json.loads(path.read_text())["owner"]
    except (OSError, ValueError, KeyError):
      continue
    held[path.parent.name] = int(owner.rsplit("-", 1)[1])
  return held


@pytest.mark.slow  # a local Ray cluster and 3 CLI workers: minutes on 2 cores
def test_ray_fanout_survives_a_killed_worker(tmp_path: Path) -> None:
  pytest.importorskip("ray")
  deadline = time.time() + 600
  cfg = tmp_path / "micro_one_budget.py"
  cfg.write_text(test_fanout.CONFIG)
  work = tmp_path / "study"
  test_fanout.fixture.make_fixture_corpus(
      str(work / "corpus"), test_fanout.DOMAINS, docs_per_domain=40)
  env = test_fanout._env()  # pylint: disable=protected-access
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  env["RAY_AUTH_MODE"] = "disabled"
  log = tmp_path / "launcher.log"
  argv = [sys.executable, str(REPO / "launch" / "ray_fanout.py"),
          f"--config={cfg}", f"--workdir={work}", "--workers=3",
          "--local_cpus=3", "--max_retries=2", "--then=fit", "--",
          "--verbosity=0", "--config.run.swarm=off",
          "--config.run.lease_seconds=6", "--config.run.heartbeat_seconds=0.5"]
  with open(log, "w") as f:
    launcher = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=f,
                                stderr=subprocess.STDOUT)
  try:
    while not (held := _lease_pids(work / "leases")):
      if launcher.poll() is not None or time.time() > deadline:
        pytest.fail("no worker took a lease:\n" + log.read_text()[-3000:])
      time.sleep(0.02)
    orphan, pid = sorted(held.items())[0]
    os.kill(pid, signal.SIGKILL)  # the Ray worker process of a lease holder
    launcher.wait(timeout=max(1.0, deadline - time.time()))
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()
  out = log.read_text()
  assert launcher.returncode == 0, out[-3000:]
  assert "ray_fanout: exit status 0" in out  # the fit stage on the driver

  logs = {p.name: p.read_text() for p in (work / "logs" / "ray").glob("*.log")}
  text = "\n".join(logs.values())
  starts = re.findall(r"=== lease worker (ray\d)-\S+-(\d+) starts", text)
  # Ray restarted the killed worker: its slot started twice, once as `pid`.
  killed_slot = [slot for slot, p in starts if int(p) == pid]
  assert len(killed_slot) == 1, starts
  assert [s for s, _ in starts].count(killed_slot[0]) == 2, starts
  assert len(starts) == 4, starts
  # Another worker (or the restarted one) took the orphaned run over. On a
  # starved machine a live worker can stall past its lease too: then its run
  # is taken over as well, and that worker says it lost the lease and
  # stopped the run (so each run is still finished once, checked below).
  took = [(n, int(o.rsplit("-", 1)[1]))
          for n, o in test_fanout.TOOK_OVER.findall(text)]
  assert took.count((orphan, pid)) == 1, took
  others = [n for n, p in took if (n, p) != (orphan, pid)]
  lost = re.findall(r"\]: lease on (\S+) lost ", text)
  assert sorted(lost) == sorted(others), (took, lost)
  # Every run recorded exactly once, and finished by exactly one worker.
  records = [json.loads(p.read_text())
             for p in sorted((work / "store").glob("*.json"))]
  names = sorted(r["name"] for r in records)
  assert len(names) == test_fanout.NUM_RUNS == len(set(names)), names
  finished = test_fanout.DONE.findall(text)
  assert sorted(finished) == names, finished
  assert not list((work / "leases").glob("*/*.lease"))
  assert (work / "ddo" / "budget_0" / "mixture.json").exists()
