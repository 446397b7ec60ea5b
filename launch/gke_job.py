r"""Lease fan-out of the DDO runs on GKE: render an Indexed Job manifest.

  python launch/gke_job.py --image=IMAGE --config=configs/NAME.py \
      --workdir=/study/NAME --pvc=study-filestore --workers=8 \
      [--tpu-type=tpu-v5-lite-podslice --tpu-topology=2x2 --chips=4 |
       --gpus=1 --gpu-type=nvidia-l4] [-- --config.a.b=value ...] \
      | kubectl apply -f -

The Job has ``--workers`` pods (``completionMode: Indexed``, parallelism =
completions = workers); each pod is one lease worker
(``python -m autoscale_jax.main --stage=ddo --worker=<pod name>``) on the
workdir, a ReadWriteMany volume (Filestore) mounted at ``--mount``. A pod
that is preempted or evicted is replaced without counting against
``--backoff-limit`` (pod failure policy: ``DisruptionTarget`` is ignored); a
user error (exit 2) fails the Job at once; other failures are retried up to
the limit. The other pods take a lost pod's run over when its lease expires.

After the Job completes, run the later stages once (a one-pod Job, or
anywhere the volume is mounted): ``--stage=all`` on the same workdir.

``--xpk`` prints ``xpk workload create`` commands instead: one single-slice
workload per worker (an xpk workload over several slices is one JAX program,
not independent workers). Importable: :func:`manifest` (a dict),
:func:`xpk_commands`.
"""

from __future__ import annotations

import argparse
import posixpath
import shlex
import sys
from typing import Any, Optional, Sequence

import yaml


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  argv = list(argv)
  extra: list[str] = []
  if "--" in argv:
    extra = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  p = argparse.ArgumentParser(
      prog="gke_job.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--name", default="autoscale-ddo", help="Job name")
  p.add_argument("--namespace", default=None)
  p.add_argument("--image", required=True,
                 help="container image with autoscale_jax installed")
  p.add_argument("--config", required=True,
                 help="config file, as a path inside the image")
  p.add_argument("--workdir", required=True,
                 help="study dir inside the mounted volume")
  p.add_argument("--pvc", default=None,
                 help="ReadWriteMany PersistentVolumeClaim holding the "
                 "workdir (required unless --xpk)")
  p.add_argument("--mount", default="/study", help="where the PVC is mounted")
  p.add_argument("--workers", type=int, default=4, help="lease workers (4)")
  p.add_argument("--backoff-limit", type=int, default=6,
                 help="failed pods (not preemptions) before the Job fails")
  p.add_argument("--python", default="python", help="python in the image")
  p.add_argument("--cpu", default="4", help="CPU request per pod")
  p.add_argument("--memory", default="16Gi", help="memory request per pod")
  p.add_argument("--gpus", type=int, default=0, help="GPUs per pod")
  p.add_argument("--gpu-type", default=None,
                 help="cloud.google.com/gke-accelerator, e.g. nvidia-l4")
  p.add_argument("--tpu-type", default=None,
                 help="cloud.google.com/gke-tpu-accelerator, e.g. "
                 "tpu-v5-lite-podslice")
  p.add_argument("--tpu-topology", default=None, help="e.g. 2x2 (one host)")
  p.add_argument("--chips", type=int, default=0, help="TPU chips per pod")
  p.add_argument("--spot", action="store_true", help="schedule on Spot VMs")
  p.add_argument("--xpk", action="store_true",
                 help="print xpk workload commands instead of a manifest")
  p.add_argument("--cluster", default=None, help="--xpk: GKE cluster")
  p.add_argument("--xpk-tpu-type", default=None,
                 help="--xpk: each worker's slice, e.g. v5litepod-8")
  args = p.parse_args(argv)
  if args.workers < 1:
    p.error(f"--workers={args.workers}: must be >= 1")
  if "://" in args.workdir:
    p.error(f"--workdir={args.workdir}: leases need a POSIX filesystem "
            "(a Filestore PVC), not a bucket URL")
  if not args.xpk:
    if not args.pvc:
      p.error("--pvc is required: a ReadWriteMany claim (Filestore) that "
              "holds --workdir")
    inside = posixpath.normpath(args.workdir)
    mount = posixpath.normpath(args.mount)
    if not (inside == mount or inside.startswith(mount + "/")):
      p.error(f"--workdir={args.workdir} is not under --mount={args.mount}")
  if bool(args.tpu_type) != bool(args.chips) or (
      args.tpu_topology and not args.tpu_type):
    p.error("--tpu-type, --tpu-topology and --chips go together")
  if args.xpk and not (args.cluster and args.xpk_tpu_type):
    p.error("--xpk needs --cluster and --xpk-tpu-type")
  args.extra = extra
  return args


def worker_argv(args: argparse.Namespace, worker: str) -> list[str]:
  """One lease worker's command line."""
  return [args.python, "-m", "autoscale_jax.main", "--stage=ddo",
          f"--config={args.config}", f"--workdir={args.workdir}",
          f"--worker={worker}", *args.extra]


def manifest(args: argparse.Namespace) -> dict[str, Any]:
  """The Indexed Job as a dict (``yaml.safe_dump`` writes it)."""
  resources: dict[str, Any] = {"cpu": args.cpu, "memory": args.memory}
  limits: dict[str, Any] = {}
  selector: dict[str, str] = {}
  if args.gpus:
    limits["nvidia.com/gpu"] = args.gpus
    if args.gpu_type:
      selector["cloud.google.com/gke-accelerator"] = args.gpu_type
  if args.tpu_type:
    limits["google.com/tpu"] = args.chips
    selector["cloud.google.com/gke-tpu-accelerator"] = args.tpu_type
    if args.tpu_topology:
      selector["cloud.google.com/gke-tpu-topology"] = args.tpu_topology
  if args.spot:
    selector["cloud.google.com/gke-spot"] = "true"
  container: dict[str, Any] = {
      "name": "lease-worker",
      "image": args.image,
      # $(POD_NAME) is expanded by Kubernetes: a replaced pod is a new worker.
      "command": worker_argv(args, "$(POD_NAME)"),
      "env": [
          {"name": "POD_NAME",
           "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
          # each pod is its own worker, never one multi-process program
          {"name": "AUTOSCALE_DISTRIBUTED", "value": "0"},
      ],
      "resources": {"requests": dict(resources, **limits),
                    **({"limits": limits} if limits else {})},
      "volumeMounts": [{"name": "study", "mountPath": args.mount}],
  }
  pod: dict[str, Any] = {
      "restartPolicy": "Never",
      "containers": [container],
      "volumes": [{"name": "study", "persistentVolumeClaim": {
          "claimName": args.pvc}}],
  }
  if selector:
    pod["nodeSelector"] = selector
  metadata: dict[str, Any] = {"name": args.name,
                              "labels": {"app": "autoscale-jax"}}
  if args.namespace:
    metadata["namespace"] = args.namespace
  return {
      "apiVersion": "batch/v1",
      "kind": "Job",
      "metadata": metadata,
      "spec": {
          "completionMode": "Indexed",
          "completions": args.workers,
          "parallelism": args.workers,
          "backoffLimit": args.backoff_limit,
          "podFailurePolicy": {"rules": [
              {"action": "Ignore",
               "onPodConditions": [{"type": "DisruptionTarget"}]},
              {"action": "FailJob",
               "onExitCodes": {"containerName": "lease-worker",
                               "operator": "In", "values": [2]}},
          ]},
          "template": {"metadata": {"labels": {"app": "autoscale-jax"}},
                       "spec": pod},
      },
  }


def xpk_commands(args: argparse.Namespace) -> list[list[str]]:
  """One ``xpk workload create`` per worker (each its own single slice)."""
  out = []
  for k in range(args.workers):
    name = f"{args.name}-{k}"
    cmd = ["xpk", "workload", "create", f"--cluster={args.cluster}",
           f"--workload={name}", f"--docker-image={args.image}",
           f"--tpu-type={args.xpk_tpu_type}", "--num-slices=1",
           f"--command={shlex.join(worker_argv(args, name))}"]
    out.append(cmd)
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.xpk:
    for cmd in xpk_commands(args):
      print(shlex.join(cmd))
  else:
    sys.stdout.write(yaml.safe_dump(manifest(args), sort_keys=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
