"""Proxy fan-out through the CLI: 3 workers, one shared workdir and store.

Workers 0, 1 and 2 run `--stage=ddo --worker_index=k --num_workers=3` on one
micro budget (2m + 1 = 7 runs) at the same time. Worker 0 is SIGKILLed as
soon as its first run is recorded and then relaunched; the plan completes,
every run is finished (recorded) exactly once, and `--stage=fit` on the
shared store writes the budget's mixture.json.
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

from autoscale_jax import distributed as dist
from autoscale_jax.data import fixture

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("alpha", "beta", "gamma")
NUM_RUNS = 2 * len(DOMAINS) + 1
WORKERS = 3
TIMEOUT_S = 600  # a hang guard only; the test takes about 60 s on an idle 2-core machine

# ml_collections cannot override a list field (config.ddo.budgets) from the
# command line, so the single-budget plan is a config file of its own.
CONFIG = """
from configs import micro


def get_config():
  c = micro.get_config()
  c.ddo.budgets = [4096.0]
  return c
"""

TRAINING = re.compile(r"\]: training (\S+):")
DONE = re.compile(r"\]: (\S+) done in ")
REUSED = re.compile(r"\]: (\S+) already done ")


def _env() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                              "JAX_PROCESS_ID", "AUTOSCALE_DISTRIBUTED",
                              "TPU_", "MEGASCALE_", "CLOUD_TPU"))}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             OPENBLAS_NUM_THREADS="1")
  env.pop("XLA_FLAGS", None)  # one CPU device per worker, as a user runs it
  return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
  with open(log, "w") as f:  # the child keeps its own descriptor
    return subprocess.Popen(
        [sys.executable, "-m", "autoscale_jax.main", *args], cwd=str(REPO),
        env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, deadline: float) -> str:
  try:
    proc.wait(timeout=max(1.0, deadline - time.time()))
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    pytest.fail(f"{proc.args[3:]} did not finish in time:\n"
                f"{log.read_text()[-3000:]}")
  out = log.read_text()
  assert proc.returncode == 0, f"{proc.args[3:]} exited {proc.returncode}:\n" \
      f"{out[-3000:]}"
  return out


def _names(pattern: re.Pattern, text: str) -> list[str]:
  return pattern.findall(text)


@pytest.mark.slow  # about 70 s in CI (three CLI workers, a kill, a relaunch)
def test_three_workers_kill_relaunch_fit(tmp_path: Path) -> None:
  t_start = time.time()
  deadline = t_start + TIMEOUT_S
  cfg = tmp_path / "micro_one_budget.py"
  cfg.write_text(CONFIG)
  work = tmp_path / "study"
  # The fixture corpus is written once up front: make_fixture_corpus uses one
  # fixed temp name per file, so workers creating it at the same moment can
  # race (os.replace of a temp file another worker already renamed). A real
  # study builds its corpus before launching workers.
  fixture.make_fixture_corpus(str(work / "corpus"), DOMAINS,
                              docs_per_domain=40)
  # --verbosity=0: the per-run "training" / "already done" INFO lines too.
  base = ["--stage=ddo", f"--config={cfg}", f"--workdir={work}",
          f"--num_workers={WORKERS}", "--verbosity=0"]
  logs = {k: tmp_path / f"worker{k}.log" for k in range(WORKERS)}
  procs = {k: _start(base + [f"--worker_index={k}"], logs[k])
           for k in range(WORKERS)}
  try:
    # SIGKILL worker 0 once its first run is recorded (mid-plan: it has 3).
    while True:
      text = logs[0].read_text()
      if DONE.search(text) or procs[0].poll() is not None:
        break
      if time.time() > deadline:
        pytest.fail("worker 0 recorded no run in time:\n" + text[-3000:])
      time.sleep(0.05)
    assert procs[0].poll() is None, "worker 0 finished before it was killed"
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    killed = logs[0].read_text()
    outs = {k: _wait(procs[k], logs[k], deadline) for k in (1, 2)}
    relaunch_log = tmp_path / "worker0-relaunch.log"
    procs[0] = _start(base + ["--worker_index=0"], relaunch_log)
    relaunched = _wait(procs[0], relaunch_log, deadline)
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()

  for k, text in ((0, killed), (1, outs[1]), (2, outs[2]), (0, relaunched)):
    n = len(range(k, NUM_RUNS, WORKERS))
    assert f"{NUM_RUNS} runs ({n} on this worker)" in text, text[-2000:]
  # The plan and each worker's share, as the stage computes them.
  records = [json.loads(p.read_text())
             for p in sorted((work / "store").glob("*.json"))]
  names = sorted(r["name"] for r in records)
  assert len(names) == NUM_RUNS == len(set(names)), names
  plan = [n[len("b0_"):] for n in names]
  shares = {k: {f"b0_{n}" for n in dist.worker_share(plan, k, WORKERS)}
            for k in range(WORKERS)}

  # Workers 1 and 2 trained exactly their shares, once each.
  for k in (1, 2):
    assert sorted(_names(TRAINING, outs[k])) == sorted(shares[k]), outs[k]
    assert sorted(_names(DONE, outs[k])) == sorted(shares[k])
    assert not _names(REUSED, outs[k])
  # Worker 0: first run finished before the kill, the rest after relaunch.
  first = _names(DONE, killed)
  assert len(first) >= 1 and set(first) <= shares[0], killed
  assert sorted(_names(REUSED, relaunched)) == sorted(first), relaunched
  assert sorted(_names(DONE, relaunched)) == sorted(shares[0] - set(first))
  # Every planned run finished (was recorded) exactly once across workers.
  finished = [n for text in (killed, outs[1], outs[2], relaunched)
              for n in _names(DONE, text)]
  assert sorted(finished) == names, finished
  for r in records:
    assert r["steps"] >= 1 and r["kind"] == "ddo", r["name"]

  # The last worker to finish saw every record and fitted the budget; the
  # fit stage (any machine, no worker flags) rewrites the same mixture.
  mixture = work / "ddo" / "budget_0" / "mixture.json"
  assert mixture.exists()
  fitted = json.loads(mixture.read_text())
  mixture.unlink()
  fit_log = tmp_path / "fit.log"
  proc = _start(["--stage=fit", f"--config={cfg}", f"--workdir={work}"],
                fit_log)
  try:
    fit_out = _wait(proc, fit_log, deadline)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert ": training " not in fit_out
  refit = json.loads(mixture.read_text())
  assert refit["weights"] == fitted["weights"]
  assert set(refit["weights"]) == set(DOMAINS)
  assert abs(sum(refit["weights"].values()) - 1) < 1e-6
  assert time.time() - t_start < TIMEOUT_S


# --- lease fan-out: a worker SIGKILLed while it holds a lease ---------------

LEASE_S = 3.0
TOOK_OVER = re.compile(r"\]: took over (\S+) from (\S+) \(its lease expired\)")


def _lease_files(root: Path, backend: str) -> list[Path]:
  """The lease files under ``root``: ``<run>/<generation>.lease`` (posix) or
  ``<run>.lease`` (kvstore, the tensorstore file driver)."""
  return list(root.glob("*/*.lease" if backend == "posix" else "*.lease"))


def _run_of(lease: Path, backend: str) -> str:
  return lease.parent.name if backend == "posix" else lease.stem


def _leases_of(root: Path, owner: str, backend: str) -> list[Path]:
  """The lease files under ``root`` whose owner is ``owner``."""
  found = []
  for path in _lease_files(root, backend):
    try:
      if json.loads(path.read_text()).get("owner") == owner:
        found.append(path)
    except (OSError, ValueError):  # released, or being written
      continue
  return found


@pytest.mark.slow  # about 80 s on 2 busy cores: two CLI starts, one compile
@pytest.mark.parametrize("backend", ["posix", "kvstore"])
def test_lease_worker_killed_holding_a_lease_is_taken_over(
    tmp_path: Path, backend: str) -> None:
  """Two lease workers; one is SIGKILLed mid-run while it holds a lease.

  The survivor trains the other runs, takes the dead worker's run over once
  its lease has expired, and every run is recorded exactly once. With either
  lease backend (config.run.lease_backend) on the local workdir.
  """
  deadline = time.time() + 600  # a hang guard only (about 80 s when idle)
  cfg = tmp_path / "micro_one_budget.py"
  cfg.write_text(CONFIG)
  work = tmp_path / "study"
  fixture.make_fixture_corpus(str(work / "corpus"), DOMAINS,
                              docs_per_domain=40)
  base = ["--stage=ddo", f"--config={cfg}", f"--workdir={work}",
          "--verbosity=0", "--config.run.swarm=off",
          f"--config.run.lease_seconds={LEASE_S}",
          "--config.run.heartbeat_seconds=0.5",
          f"--config.run.lease_backend={backend}"]
  logs = {w: tmp_path / f"{w}.log" for w in ("a", "b")}
  procs = {w: _start(base + [f"--worker={w}"], logs[w]) for w in ("a", "b")}
  try:
    # Kill worker a as soon as it holds a lease (it is training that run).
    while not (held := _leases_of(work / "leases", "a", backend)):
      if procs["a"].poll() is not None or time.time() > deadline:
        pytest.fail("worker a held no lease:\n" + logs["a"].read_text()[-3000:])
      time.sleep(0.02)
    os.kill(procs["a"].pid, signal.SIGKILL)
    procs["a"].wait()
    orphan = _run_of(held[0], backend)
    assert held[0].exists(), "the killed worker's lease must stay behind"
    out_b = _wait(procs["b"], logs["b"], deadline)
  finally:
    for p in procs.values():
      if p.poll() is None:
        p.kill()
        p.wait()
  out_a = logs["a"].read_text()

  assert procs["a"].returncode == -signal.SIGKILL
  # The orphaned run was not finished by a; b took it over from a.
  assert orphan not in _names(DONE, out_a)
  assert TOOK_OVER.findall(out_b) == [(orphan, "a")], out_b[-3000:]
  # Every run recorded exactly once; each finished by exactly one worker.
  records = [json.loads(p.read_text())
             for p in sorted((work / "store").glob("*.json"))]
  names = sorted(r["name"] for r in records)
  assert len(names) == NUM_RUNS == len(set(names)), names
  finished = _names(DONE, out_a) + _names(DONE, out_b)
  assert sorted(finished) == names, finished
  assert not _names(REUSED, out_b)
  for r in records:
    assert r["steps"] >= 1 and r["kind"] == "ddo", r["name"]
  # Every lease was released; the survivor fitted the budget.
  assert not _lease_files(work / "leases", backend)
  assert (work / "ddo" / "budget_0" / "mixture.json").exists()
