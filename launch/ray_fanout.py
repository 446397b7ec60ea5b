r"""Lease fan-out of the DDO runs on Ray: N lease workers, restarted on failure.

  python launch/ray_fanout.py --config=configs/NAME.py --workdir=/shared/study \
      --workers=8 [--address=auto] [--max_retries=3] [--num_gpus=1] \
      [--then=project,final,report] [--dry-run] [-- --config.a.b=value ...]

Each worker is a Ray task that runs one lease worker,
``python -m autoscale_jax.main --stage=ddo --worker=NAME ...``, as a child
process (its own JAX runtime; it dies with the task). Workers claim runs
from the shared workdir with leases (``autoscale_jax/experiments/leases.py``)
until every DDO run has a record, then each fits the budgets. A worker whose
process or node dies is retried by Ray (``--max_retries``, counting both a
lost task process and a failed exit); meanwhile the others take its run
over once its lease expires. A user error (exit 2) is not retried.

When every worker has succeeded, ``--then`` runs the later stages once, on
the driver (``project,final,report``); without it, run them yourself.

The workdir must be a POSIX filesystem every Ray node mounts (NFS, Filestore,
Lustre; one machine's disk for a local cluster). Every node needs the
package installed (``pip install -e '.[ray]'``); the workers run with
``--repo_dir`` (default: this checkout) as their working directory when it
exists there. Importable: :func:`plan` (pure; what ``--dry-run`` prints) and
:func:`launch`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Plan:
  """What :func:`launch` starts: one command line per worker, Ray options."""
  workers: list[dict[str, Any]]  # {"name", "argv", "log"}
  ray_options: dict[str, Any]  # ray.remote(...) options of each worker task
  then: list[list[str]]  # the later stages' command lines, run on the driver
  init: dict[str, Any]  # ray.init(...) arguments
  repo_dir: str


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The launcher's flags; arguments after ``--`` go to every worker."""
  argv = list(argv)
  extra: list[str] = []
  if "--" in argv:
    extra = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  p = argparse.ArgumentParser(
      prog="ray_fanout.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="study config file")
  p.add_argument("--workdir", required=True,
                 help="study dir on a filesystem every node mounts")
  p.add_argument("--workers", type=int, default=2, help="lease workers (2)")
  p.add_argument("--address", default=None,
                 help="Ray cluster (auto, ray://host:10001); default: "
                 "RAY_ADDRESS or a new local cluster")
  p.add_argument("--num_cpus", type=float, default=1.0,
                 help="CPUs per worker task (1)")
  p.add_argument("--num_gpus", type=float, default=0.0,
                 help="GPUs per worker task (0)")
  p.add_argument("--resources", default="{}",
                 help='other resources per worker, JSON, e.g. \'{"TPU": 4}\'')
  p.add_argument("--local_cpus", type=int, default=None,
                 help="CPUs of a new local cluster (default: all)")
  p.add_argument("--max_retries", type=int, default=3,
                 help="restarts of a failed worker (3)")
  p.add_argument("--then", default="",
                 help="stages to run on the driver after the workers, e.g. "
                 "project,final,report")
  p.add_argument("--log_dir", default=None,
                 help="worker logs (default: WORKDIR/logs/ray)")
  p.add_argument("--repo_dir", default=str(REPO),
                 help="the workers' working directory (this checkout)")
  p.add_argument("--python", default=sys.executable,
                 help="python with autoscale_jax on the workers")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run",
                 action="store_true", help="print the plan as JSON, run nothing")
  args = p.parse_args(argv)
  if args.workers < 1:
    p.error(f"--workers={args.workers}: must be >= 1")
  if args.max_retries < 0:
    p.error(f"--max_retries={args.max_retries}: must be >= 0")
  try:
    args.resources = json.loads(args.resources)
  except json.JSONDecodeError as e:
    p.error(f"--resources={args.resources!r} is not JSON: {e}")
  if not isinstance(args.resources, dict):
    p.error("--resources must be a JSON object, e.g. '{\"TPU\": 4}'")
  args.extra = extra
  return args


def plan(args: argparse.Namespace) -> Plan:
  """The workers' command lines and Ray options (pure; nothing starts)."""
  log_dir = args.log_dir or os.path.join(args.workdir, "logs", "ray")
  main = [args.python, "-m", "autoscale_jax.main"]
  common = [f"--config={args.config}", f"--workdir={args.workdir}"]
  workers = [{"name": f"ray{k}",
              "argv": main + ["--stage=ddo", *common, *args.extra],
              "log": os.path.join(log_dir, f"ray{k}.log")}
             for k in range(args.workers)]
  options = {"num_cpus": args.num_cpus, "max_retries": args.max_retries,
             "retry_exceptions": True}
  if args.num_gpus:
    options["num_gpus"] = args.num_gpus
  if args.resources:
    options["resources"] = dict(args.resources)
  then = [main + [f"--stage={s.strip()}", *common, *args.extra]
          for s in args.then.split(",") if s.strip()]
  init: dict[str, Any] = {"address": args.address}
  if args.address is None and args.local_cpus is not None:
    init["num_cpus"] = args.local_cpus
  return Plan(workers=workers, ray_options=options, then=then, init=init,
              repo_dir=args.repo_dir)


def _worker_task():
  """The Ray task body; defined here so Ray ships it by value (stdlib only)."""

  def run_worker(name: str, argv: list[str], log: str, repo_dir: str) -> int:
    import ctypes  # pylint: disable=g-import-not-at-top,redefined-outer-name
    import os  # pylint: disable=g-import-not-at-top,redefined-outer-name,reimported
    import signal  # pylint: disable=g-import-not-at-top
    import socket  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top,redefined-outer-name,reimported

    def die_with_parent() -> None:  # Linux: the child dies with this task
      try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
      except OSError:
        pass

    # A fresh name per attempt: the task's pid is in it, so the logs and
    # leases tell a restarted worker from the one that died.
    worker = f"{name}-{socket.gethostname()}-{os.getpid()}"
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    with open(log, "a") as f:
      f.write(f"=== lease worker {worker} starts (task pid {os.getpid()})\n")
      f.flush()
      proc = subprocess.Popen(
          [*argv, f"--worker={worker}"], stdout=f, stderr=subprocess.STDOUT,
          cwd=repo_dir if os.path.isdir(repo_dir) else None,
          preexec_fn=die_with_parent)
      rc = proc.wait()
      f.write(f"=== lease worker {worker} exit status {rc}\n")
    if rc not in (0, 2):  # 2: a user error; retrying cannot fix it
      raise RuntimeError(f"lease worker {worker} exited with status {rc}; "
                         f"see {log}")
    return rc

  return run_worker


def launch(p: Plan, *, say=print) -> int:
  """Starts the workers on Ray, waits for all, then runs ``p.then``.

  Returns:
    0 when every worker (and every later stage) succeeded, else 1 (2 for a
    user error reported by a worker).
  """
  import ray  # pylint: disable=g-import-not-at-top

  init = {k: v for k, v in p.init.items() if v is not None}
  ray.init(**init, include_dashboard=False, log_to_driver=False)
  try:
    task = ray.remote(**p.ray_options)(_worker_task())
    refs = {task.remote(w["name"], w["argv"], w["log"], p.repo_dir): w
            for w in p.workers}
    say(f"ray_fanout: {len(refs)} lease workers started; logs in "
        f"{os.path.dirname(p.workers[0]['log'])}")
    status = 0
    pending = list(refs)
    while pending:
      ready, pending = ray.wait(pending, num_returns=1)
      w = refs[ready[0]]
      try:
        rc = ray.get(ready[0])
      except Exception as e:  # pylint: disable=broad-except
        say(f"ray_fanout: {w['name']} failed after its retries: "
            f"{str(e).strip().splitlines()[-1]}")
        status = max(status, 1)
        continue
      say(f"ray_fanout: {w['name']} finished (exit status {rc})")
      status = max(status, rc)
  finally:
    ray.shutdown()
  if status:
    say("ray_fanout: not every worker succeeded; the later stages are not "
        "run (start the launcher again: finished runs are kept)")
    return status
  for argv in p.then:
    say("ray_fanout: " + " ".join(argv[2:]))
    t0 = time.time()
    rc = subprocess.call(argv, cwd=p.repo_dir)
    say(f"ray_fanout: exit status {rc} after {time.time() - t0:.0f}s")
    if rc:
      return rc
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  p = plan(args)
  if args.dry_run:
    print(json.dumps(dataclasses.asdict(p), indent=1))
    return 0
  return launch(p)


if __name__ == "__main__":
  sys.exit(main())
