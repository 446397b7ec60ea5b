"""Finished micro studies shared by the test modules, built once per session.

Training is most of the suite's time, and several modules need a finished
micro study (``configs/micro.py``, every stage) that differs only in its
seeds and final mixtures. They are built here in layers, each from a copy of
the one before, so a run is trained once and the later layers reuse it from
the store (a run's store key is its identity, the same in every layer):

* ``base``: ``--stage=all`` one run at a time (``run.swarm=off``), as a user
  runs it; 2 budgets x 7 DDO runs + 2 final runs, all trained here.
* ``seeds``: ``ddo.seeds=(0,1)`` and ``final.seeds=(0,1)``, from ``base``
  without its final runs: trains the 14 seed-1 DDO runs and all 4 final runs
  (so its final stage is a fresh one, as a user sees it).
* ``report``: ``seeds`` plus the ``ddo_small`` final mixture, by a partial
  final stage (``--stage=final --mixture=ddo_small``, merged into the
  comparison): trains its 2 final runs.

Each layer is a subprocess of the CLI (one CPU device, as a user would run
it). Under pytest-xdist the layers live in the directory all workers share
and the first worker that asks builds one under a file lock; the others wait
for it and reuse it. A built layer is never changed afterwards: a test that
runs a stage in it takes a copy (:func:`copy_workdir`) first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Callable, Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICRO = "--config=configs/micro.py"
SEEDS = ("--config.ddo.seeds=(0,1)", "--config.final.seeds=(0,1)")
REPORT_MIXTURES = ("projected", "uniform", "ddo_small")


@dataclasses.dataclass(frozen=True)
class Layer:
  """How one shared study is made: from which layer, with which flags (the
  CLI's, besides ``--config`` and ``--workdir``)."""
  name: str
  args: tuple[str, ...]
  parent: str | None = None
  # Run on the copy of the parent's workdir before the CLI.
  prepare: Callable[[pathlib.Path], None] | None = None


@dataclasses.dataclass(frozen=True)
class Built:
  """A finished study: its workdir and the CLI's stdout and stderr."""
  workdir: pathlib.Path
  out: str
  err: str


def _drop_final_runs(workdir: pathlib.Path) -> None:
  """Removes the final stage's records, runs and outputs (and the report)."""
  for path in workdir.glob("store/final_*.json"):
    path.unlink()
  for path in workdir.glob("runs/final_*"):
    shutil.rmtree(path)
  for name in ("final", "report"):
    shutil.rmtree(workdir / name, ignore_errors=True)


LAYERS = {
    "base": Layer("base", ("--stage=all", "--config.run.swarm=off")),
    "seeds": Layer("seeds", ("--stage=all",) + SEEDS, parent="base",
                   prepare=_drop_final_runs),
    "report": Layer("report", ("--stage=final",) + SEEDS + (
        "--mixture=ddo_small",), parent="seeds"),
}


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
  """``python -m autoscale_jax.main ARGS`` from the repository root, on one
  CPU device (as a user would run it)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
      [sys.executable, "-m", "autoscale_jax.main", *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)


def copy_workdir(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  """A private copy of a finished workdir (for a test that changes it)."""
  shutil.copytree(src, dst, symlinks=True)
  return dst


def assert_same_ddo_runs(ours: pathlib.Path, ref: pathlib.Path,
                         domains: tuple[str, ...], budget: int) -> None:
  """Budget ``budget``'s DDO runs of workdir ``ours`` are those of ``ref``:
  the same runs in the same order, the same token quotas, and every
  per-domain metric equal to float tolerance (rel 1e-4), as a swarm and the
  one-by-one runs must give."""
  def runs(workdir):
    path = workdir / "ddo" / f"budget_{budget}" / "runs.json"
    return json.loads(path.read_text())["runs"]

  a_runs, b_runs = runs(ours), runs(ref)
  assert [r["name"] for r in a_runs] == [r["name"] for r in b_runs]
  for a, b in zip(a_runs, b_runs):
    assert a["tokens"] == b["tokens"], a["name"]
    for d in domains:
      assert a["eval"][d] == pytest.approx(b["eval"][d], rel=1e-4), a["name"]


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def shared_root(tmp_path_factory) -> pathlib.Path:
  """Where the layers live: the directory every xdist worker shares (the
  session's own temporary directory without xdist)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  root = base / "micro_studies"
  root.mkdir(exist_ok=True)
  return root


def build(root: pathlib.Path, name: str) -> Built:
  """Layer ``name`` under ``root``, built (with its parents) if not yet."""
  layer = LAYERS[name]
  parent = build(root, layer.parent) if layer.parent else None
  workdir = root / name
  done = root / f"{name}.done.json"
  with _locked(root / f"{name}.lock"):
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)  # a failed attempt's
      if parent:
        copy_workdir(parent.workdir, workdir)
        if layer.prepare:
          layer.prepare(workdir)
      r = cli(MICRO, f"--workdir={workdir}", *layer.args)
      assert r.returncode == 0, (f"micro study {name!r} failed:\n"
                                 + r.stdout[-3000:] + r.stderr[-3000:])
      done.write_text(json.dumps({"out": r.stdout, "err": r.stderr}))
  saved = json.loads(done.read_text())
  return Built(workdir, saved["out"], saved["err"])
