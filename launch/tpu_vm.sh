#!/usr/bin/env bash
# Launch autoscale_jax on Cloud TPU VMs (queued resources, all workers, tmux).
# Usage: launch/tpu_vm.sh help
# Runs on bash 3.2+ (macOS laptops included). Needs gcloud unless --dry-run.
set -euo pipefail

PROG="$(basename "$0")"
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: tpu_vm.sh SUBCOMMAND [FLAGS] [-- EXTRA_MAIN_ARGS...]

Subcommands
  create   request the TPU as a queued resource (--spot or --reserved)
  wait     poll the queued resource until ACTIVE (fails after --timeout s)
  setup    copy the repo (or git clone --repo-url) to every worker and
           pip install -e .[tpu] into a venv there
  run      on every worker, detached in tmux, log to a file:
             python -m autoscale_jax.main --stage=S --config=C --workdir=W ...
  tail     tail the log of one worker (--worker, --slice)
  stop     kill the tmux session on every worker
  delete   delete the queued resource and its TPU
  help     this text

Flags (environment variable in brackets; flags win)
  --name NAME              TPU / queued-resource id [TPU_NAME] (autoscale)
  --zone ZONE              e.g. us-central2-b [ZONE] (required)
  --project PROJECT        GCP project [PROJECT] (gcloud default if unset)
  --accelerator-type T     v4-8, v5litepod-16, ... [ACCELERATOR_TYPE] (v4-8)
  --runtime-version V      [RUNTIME_VERSION] (chosen from the accelerator)
  --spot | --reserved      provisioning model [SPOT=1 | RESERVED=1]
  --slices N               N independent TPUs NAME-0..NAME-(N-1) for proxy
                           fan-out; run passes --num_workers=N
                           --worker_index=k to slice k, or with --leases
                           --worker=NAME-k [SLICES] (1)
  --num-workers N          pass --num_workers=N to main [NUM_WORKERS]
  --worker-index K         pass --worker_index=K to main [WORKER_INDEX]
  --leases                 run: lease fan-out instead of the static share:
                           each slice is one lease worker, --worker=TPU id
                           (its hosts train together); slices can die and
                           be re-created at any time. Needs --stage ddo and
                           a WORKDIR on gs:// (generation-precondition
                           leases) or on a POSIX filesystem every worker
                           mounts (Filestore/NFS) [LEASES=1]
  --stage S                [STAGE] (ddo)
  --config PATH            config file, relative to the repo [CONFIG]
  --workdir DIR            study dir, normally gs://BUCKET/... [WORKDIR]
  --repo-url URL           setup: git clone URL instead of copying this
                           working tree [REPO_URL]; --repo-ref REF [REPO_REF]
  --remote-dir DIR         repo dir on workers, relative to ~ [REMOTE_DIR]
                           (autoscale_jax)
  --venv DIR               venv on workers, relative to ~ [VENV_DIR]
                           (autoscale_venv)
  --python BIN             python used to create the venv [REMOTE_PYTHON] (python3)
  --session NAME           tmux session [SESSION] (autoscale)
  --log FILE               log file, relative to the remote dir [LOG_FILE]
                           (logs/autoscale.log)
  --worker K               tail: worker number [WORKER] (0)
  --slice K                tail: which slice with --slices [SLICE] (0)
  --lines N                tail: lines to show [TAIL_LINES] (100)
  --no-follow              tail: print and exit instead of following
  --timeout S              wait: give up after S seconds [WAIT_TIMEOUT] (3600)
  --poll S                 wait: seconds between polls [POLL_INTERVAL] (30)
  --dry-run                print every command (shell-quoted), run nothing
                           [DRY_RUN=1]
Arguments after "--" are appended to the python -m autoscale_jax.main line.

Example
  ZONE=us-central2-b PROJECT=my-proj TPU_NAME=ddo tpu_vm.sh create --spot
  tpu_vm.sh wait && tpu_vm.sh setup
  tpu_vm.sh run --config=configs/gpt2_small_redpajama.py \
      --workdir=gs://my-bucket/studies/small
EOF
}

die() {  # usage error: one line, exit 2
  printf '%s: %s\n' "${PROG}" "$1" >&2
  exit 2
}

fail() {  # runtime failure: one line, exit 1
  printf '%s: %s\n' "${PROG}" "$1" >&2
  exit 1
}

# ---- settings: environment first, flags override ---------------------------
NAME="${TPU_NAME:-autoscale}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
SPOT="${SPOT:-0}"
RESERVED="${RESERVED:-0}"
SLICES="${SLICES:-1}"
LEASES="${LEASES:-0}"
NUM_WORKERS="${NUM_WORKERS:-}"
WORKER_INDEX="${WORKER_INDEX:-}"
STAGE="${STAGE:-ddo}"
CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-}"
REMOTE_DIR="${REMOTE_DIR:-autoscale_jax}"
VENV_DIR="${VENV_DIR:-autoscale_venv}"
REMOTE_PYTHON="${REMOTE_PYTHON:-python3}"
SESSION="${SESSION:-autoscale}"
LOG_FILE="${LOG_FILE:-logs/autoscale.log}"
WORKER="${WORKER:-0}"
SLICE="${SLICE:-0}"
TAIL_LINES="${TAIL_LINES:-100}"
FOLLOW=1
WAIT_TIMEOUT="${WAIT_TIMEOUT:-3600}"
POLL_INTERVAL="${POLL_INTERVAL:-30}"
DRY_RUN="${DRY_RUN:-0}"
SUBCOMMAND=""
EXTRA_ARGS=()

# ---- argument parsing ------------------------------------------------------
# Each value flag accepts "--flag VALUE" and "--flag=VALUE".
while [[ $# -gt 0 ]]; do
  arg="$1"
  shift
  case "${arg}" in
    --) EXTRA_ARGS=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    --spot) SPOT=1; continue ;;
    --reserved) RESERVED=1; continue ;;
    --leases) LEASES=1; continue ;;
    --no-follow) FOLLOW=0; continue ;;
    -h|--help) SUBCOMMAND="help"; continue ;;
    --*=*) flag="${arg%%=*}"; value="${arg#*=}" ;;
    --*)
      flag="${arg}"
      case "${flag}" in
        --name|--zone|--project|--accelerator-type|--runtime-version|\
        --slices|--num-workers|--worker-index|--stage|--config|--workdir|\
        --repo-url|--repo-ref|--remote-dir|--venv|--python|--session|--log|\
        --worker|--slice|--lines|--timeout|--poll)
          [[ $# -gt 0 && "$1" != --* ]] || die "flag ${flag} needs a value"
          value="$1"
          shift ;;
        *) die "unknown flag '${flag}' (see '${PROG} help')" ;;
      esac ;;
    -*) die "unknown flag '${arg}' (see '${PROG} help')" ;;
    *)
      [[ -z "${SUBCOMMAND}" ]] || die "unexpected argument '${arg}' (extra main.py args go after --)"
      SUBCOMMAND="${arg}"
      continue ;;
  esac
  case "${flag}" in
    --name) NAME="${value}" ;;
    --zone) ZONE="${value}" ;;
    --project) PROJECT="${value}" ;;
    --accelerator-type) ACCELERATOR_TYPE="${value}" ;;
    --runtime-version) RUNTIME_VERSION="${value}" ;;
    --slices) SLICES="${value}" ;;
    --num-workers) NUM_WORKERS="${value}" ;;
    --worker-index) WORKER_INDEX="${value}" ;;
    --stage) STAGE="${value}" ;;
    --config) CONFIG="${value}" ;;
    --workdir) WORKDIR="${value}" ;;
    --repo-url) REPO_URL="${value}" ;;
    --repo-ref) REPO_REF="${value}" ;;
    --remote-dir) REMOTE_DIR="${value}" ;;
    --venv) VENV_DIR="${value}" ;;
    --python) REMOTE_PYTHON="${value}" ;;
    --session) SESSION="${value}" ;;
    --log) LOG_FILE="${value}" ;;
    --worker) WORKER="${value}" ;;
    --slice) SLICE="${value}" ;;
    --lines) TAIL_LINES="${value}" ;;
    --timeout) WAIT_TIMEOUT="${value}" ;;
    --poll) POLL_INTERVAL="${value}" ;;
    *) die "unknown flag '${flag}' (see '${PROG} help')" ;;
  esac
done

case "${SUBCOMMAND}" in
  ""|help) usage; exit 0 ;;
  create|wait|setup|run|tail|stop|delete) ;;
  *) die "unknown subcommand '${SUBCOMMAND}' (see '${PROG} help')" ;;
esac

# ---- validation ------------------------------------------------------------
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_on() { [[ "$1" == 1 || "$1" == true || "$1" == yes ]]; }

[[ -n "${ZONE}" ]] || die "ZONE is not set (--zone or ZONE=...)"
[[ "${NAME}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "bad TPU name '${NAME}': lowercase letters, digits and '-'"
is_uint "${SLICES}" && [[ "${SLICES}" -ge 1 ]] \
  || die "--slices must be an integer >= 1, got '${SLICES}'"
for pair in "worker:${WORKER}" "slice:${SLICE}" "lines:${TAIL_LINES}" \
            "timeout:${WAIT_TIMEOUT}" "poll:${POLL_INTERVAL}"; do
  is_uint "${pair#*:}" || die "--${pair%%:*} must be a non-negative integer, got '${pair#*:}'"
done
if is_on "${SPOT}" && is_on "${RESERVED}"; then
  die "--spot and --reserved are mutually exclusive"
fi
if [[ "${SUBCOMMAND}" == run ]]; then
  [[ -n "${CONFIG}" ]] || die "run needs --config (e.g. configs/demo.py)"
  [[ -n "${WORKDIR}" ]] || die "run needs --workdir (e.g. gs://BUCKET/study)"
  if [[ -n "${NUM_WORKERS}${WORKER_INDEX}" ]]; then
    [[ "${SLICES}" -eq 1 ]] \
      || die "--num-workers/--worker-index conflict with --slices (slices set them)"
    is_uint "${NUM_WORKERS}" && [[ "${NUM_WORKERS}" -ge 1 ]] \
      || die "--num-workers must be an integer >= 1, got '${NUM_WORKERS}'"
    is_uint "${WORKER_INDEX}" && [[ "${WORKER_INDEX}" -lt "${NUM_WORKERS}" ]] \
      || die "--worker-index must be an integer in [0, ${NUM_WORKERS}), got '${WORKER_INDEX}'"
  fi
  if is_on "${LEASES}"; then
    [[ -z "${NUM_WORKERS}${WORKER_INDEX}" ]] \
      || die "--leases and --num-workers/--worker-index exclude each other (lease workers need no share)"
    [[ "${STAGE}" == ddo ]] \
      || die "--leases applies to --stage ddo only (got '${STAGE}'); run later stages once, without --leases"
    [[ "${WORKDIR}" != *://* || "${WORKDIR}" == gs://* ]] \
      || die "--leases needs WORKDIR on gs:// or on a POSIX filesystem every worker mounts (e.g. Filestore at /mnt/study), not '${WORKDIR}'"
  fi
fi
if [[ "${SUBCOMMAND}" == tail && "${SLICE}" -ge "${SLICES}" ]]; then
  die "--slice ${SLICE} is out of range for --slices ${SLICES}"
fi

if [[ -z "${RUNTIME_VERSION}" ]]; then
  case "${ACCELERATOR_TYPE}" in
    v4-*) RUNTIME_VERSION="tpu-ubuntu2204-base" ;;
    v5litepod-*|v5e-*) RUNTIME_VERSION="v2-alpha-tpuv5-lite" ;;
    v5p-*) RUNTIME_VERSION="v2-alpha-tpuv5" ;;
    v6e-*) RUNTIME_VERSION="v2-alpha-tpuv6e" ;;
    *) die "no default runtime version for '${ACCELERATOR_TYPE}'; pass --runtime-version" ;;
  esac
fi

if ! is_on "${DRY_RUN}" && ! command -v gcloud >/dev/null 2>&1; then
  fail "gcloud not found on PATH (install the Google Cloud CLI, or use --dry-run)"
fi

# ---- helpers ---------------------------------------------------------------
# q ARG: ARG quoted for a bash command line (printf %q).
q() { printf '%q' "$1"; }

# cmd ARGS...: run ARGS, or with --dry-run print them on one line, each
# shell-quoted, so the line can be pasted back into a shell.
cmd() {
  if is_on "${DRY_RUN}"; then
    local line="" a
    for a in "$@"; do
      line="${line}$(q "${a}") "
    done
    printf '%s\n' "${line% }"
  else
    "$@"
  fi
}

# node_name K: the TPU id of slice K.
node_name() {
  if [[ "${SLICES}" -eq 1 ]]; then
    printf '%s' "${NAME}"
  else
    printf '%s-%s' "${NAME}" "$1"
  fi
}

GCLOUD_LOC=("--zone=${ZONE}")
if [[ -n "${PROJECT}" ]]; then
  GCLOUD_LOC+=("--project=${PROJECT}")
fi

# ssh_on NODE WORKER REMOTE_COMMAND: run REMOTE_COMMAND (bash) on WORKER (or all).
ssh_on() {
  cmd gcloud compute tpus tpu-vm ssh "$1" "${GCLOUD_LOC[@]}" \
    "--worker=$2" "--command=$3"
}

# ---- subcommands -----------------------------------------------------------
do_create() {
  local k node model=()
  if is_on "${SPOT}"; then
    model=(--spot)
  elif is_on "${RESERVED}"; then
    model=(--reserved)
  fi
  for ((k = 0; k < SLICES; k++)); do
    node="$(node_name "${k}")"
    cmd gcloud compute tpus queued-resources create "${node}" \
      "--node-id=${node}" "${GCLOUD_LOC[@]}" \
      "--accelerator-type=${ACCELERATOR_TYPE}" \
      "--runtime-version=${RUNTIME_VERSION}" ${model[@]+"${model[@]}"}
  done
}

do_wait() {
  local k node state start
  for ((k = 0; k < SLICES; k++)); do
    node="$(node_name "${k}")"
    if is_on "${DRY_RUN}"; then
      cmd gcloud compute tpus queued-resources describe "${node}" \
        "${GCLOUD_LOC[@]}" "--format=value(state.state)"
      continue
    fi
    start="${SECONDS}"
    while true; do
      state="$(gcloud compute tpus queued-resources describe "${node}" \
        "${GCLOUD_LOC[@]}" "--format=value(state.state)")" \
        || fail "cannot describe queued resource '${node}'"
      printf '%s: %s is %s (%ss)\n' "${PROG}" "${node}" "${state}" \
        "$((SECONDS - start))" >&2
      case "${state}" in
        ACTIVE) break ;;
        FAILED|SUSPENDED) fail "queued resource '${node}' is ${state}" ;;
      esac
      if [[ $((SECONDS - start)) -ge "${WAIT_TIMEOUT}" ]]; then
        fail "queued resource '${node}' not ACTIVE after ${WAIT_TIMEOUT}s (last: ${state})"
      fi
      sleep "${POLL_INTERVAL}"
    done
  done
}

# venv_python: the workers' venv python, as a bash word (absolute or ~-based).
venv_python() {
  if [[ "${VENV_DIR}" == /* ]]; then
    q "${VENV_DIR}/bin/python"
  else
    printf "\"\$HOME\"/%s" "$(q "${VENV_DIR}/bin/python")"
  fi
}

do_setup() {
  local k node tarball="" fetch install branch=""
  install="cd && $(q "${REMOTE_PYTHON}") -m venv $(q "${VENV_DIR}") && $(venv_python) -m pip install -q -U pip && cd $(q "${REMOTE_DIR}") && $(venv_python) -m pip install -q -e '.[tpu]'"
  if [[ -n "${REPO_URL}" ]]; then
    [[ -z "${REPO_REF}" ]] || branch="--branch $(q "${REPO_REF}") "
    fetch="if [ -d $(q "${REMOTE_DIR}/.git") ]; then git -C $(q "${REMOTE_DIR}") pull --ff-only; else git clone --depth 1 ${branch}$(q "${REPO_URL}") $(q "${REMOTE_DIR}"); fi"
  else
    tarball="${TMPDIR:-/tmp}/autoscale_jax-${NAME}.tar.gz"
    cmd tar -czf "${tarball}" -C "${REPO_ROOT}" --exclude=./.venv \
      --exclude=./.git --exclude=./workdir --exclude=./runs \
      --exclude=__pycache__ --exclude=./.pytest_cache .
    fetch="mkdir -p $(q "${REMOTE_DIR}") && tar -xzf autoscale_jax.tar.gz -C $(q "${REMOTE_DIR}")"
  fi
  for ((k = 0; k < SLICES; k++)); do
    node="$(node_name "${k}")"
    if [[ -n "${tarball}" ]]; then
      cmd gcloud compute tpus tpu-vm scp "${tarball}" \
        "${node}:autoscale_jax.tar.gz" "${GCLOUD_LOC[@]}" --worker=all
    fi
    ssh_on "${node}" all "set -e; ${fetch} && ${install}"
  done
}

# main_command K: the python line for slice K (one string, bash-quoted parts).
main_command() {
  local k="$1" line a
  line="AUTOSCALE_DISTRIBUTED=1 $(venv_python) -m autoscale_jax.main"
  line="${line} $(q "--stage=${STAGE}") $(q "--config=${CONFIG}") $(q "--workdir=${WORKDIR}")"
  if is_on "${LEASES}"; then
    line="${line} $(q "--worker=$(node_name "${k}")")"
  elif [[ "${SLICES}" -gt 1 ]]; then
    line="${line} --num_workers=${SLICES} --worker_index=${k}"
  elif [[ -n "${NUM_WORKERS}" ]]; then
    line="${line} --num_workers=${NUM_WORKERS} --worker_index=${WORKER_INDEX}"
  fi
  for a in ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}; do
    line="${line} $(q "${a}")"
  done
  printf '%s' "${line}"
}

do_run() {
  local k node script remote log_dir
  log_dir="$(dirname "${LOG_FILE}")"
  for ((k = 0; k < SLICES; k++)); do
    node="$(node_name "${k}")"
    # The worker writes the job to logs/run.sh and starts it in a detached
    # tmux session; output is appended to the log, ending with the status.
    script="set -o pipefail; $(main_command "${k}") 2>&1 | tee -a $(q "${LOG_FILE}"); echo \"exit status \$?\" >> $(q "${LOG_FILE}")"
    remote="cd $(q "${REMOTE_DIR}") && mkdir -p $(q "${log_dir}") && printf '%s\n' $(q "${script}") > $(q "${log_dir}/run.sh") && tmux new-session -d -s $(q "${SESSION}") $(q "bash $(q "${log_dir}/run.sh")")"
    ssh_on "${node}" all "${remote}"
  done
}

do_tail() {
  local follow=-F log="${REMOTE_DIR}/${LOG_FILE}"
  [[ "${FOLLOW}" -eq 1 ]] || follow=""
  [[ "${LOG_FILE}" != /* ]] || log="${LOG_FILE}"
  ssh_on "$(node_name "${SLICE}")" "${WORKER}" \
    "tail -n ${TAIL_LINES} ${follow:+${follow} }$(q "${log}")"
}

do_stop() {
  local k
  for ((k = 0; k < SLICES; k++)); do
    ssh_on "$(node_name "${k}")" all \
      "tmux kill-session -t $(q "${SESSION}") 2>/dev/null || true"
  done
}

do_delete() {
  local k
  for ((k = 0; k < SLICES; k++)); do
    # --force also deletes the TPU node the queued resource created.
    cmd gcloud compute tpus queued-resources delete "$(node_name "${k}")" \
      "${GCLOUD_LOC[@]}" --force --quiet
  done
}

"do_${SUBCOMMAND}"
