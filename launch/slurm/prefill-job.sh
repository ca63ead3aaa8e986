#!/usr/bin/env bash
# The body shared by the sbatch templates (prefill-cpu.sbatch, prefill-gpu.sbatch), which
# set their defaults and `exec` this script from the job, so that it is the batch shell that
# Slurm signals. It runs `prefill "$@"` on every task of the allocation and:
#   - writes Prometheus file_sd targets for the ranks (monitoring/prometheus/write_file_sd.sh)
#     when PREFILL_METRICS_PORT is set, and removes them when the job ends;
#   - on SIGTERM (--signal=B:TERM@120 before the time limit, or scancel --batch --signal=TERM)
#     passes SIGTERM to the ranks, never to srun (srun answers SIGTERM with SIGKILL to its
#     tasks); `prefill run` finishes the requests in flight and exits 0; then the job
#     requeues itself and the rerun resumes (same --out: what is done is skipped).
# Settings, from the environment (sbatch exports the caller's):
#   PREFILL_HOME          repository root (default: the folder sbatch was called from)
#   PREFILL_BIN           the binary (default: $PREFILL_HOME/build/bin/prefill)
#   PREFILL_ARGS          prefill's arguments when the job got none
#   PREFILL_LAUNCHER      srun (default: srun --mpi=pmix) or mpirun (inside the allocation)
#   PREFILL_SRUN_ARGS     more srun flags (the GPU template adds its GPU binding here)
#   PREFILL_METRICS_PORT  first /metrics port (local rank r: port + r); 0 (default): off
#   PREFILL_FILE_SD_DIR   where the targets go (default /var/lib/prometheus/file_sd/prefill
#                         when writable, else $PREFILL_HOME/file_sd): prefill-<job id>.json
#   PREFILL_REQUEUE       1 (default): requeue after a SIGTERM stop that exited 0; 0: do not
#   PREFILL_MAX_RESTARTS  20 (default): no requeue once the job has restarted this often (a
#                         request longer than the time limit would otherwise loop forever)
set -uo pipefail

PREFILL_HOME="${PREFILL_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}"
PREFILL_BIN="${PREFILL_BIN:-$PREFILL_HOME/build/bin/prefill}"
PREFILL_LAUNCHER="${PREFILL_LAUNCHER:-srun}"
PREFILL_METRICS_PORT="${PREFILL_METRICS_PORT:-0}"
PREFILL_REQUEUE="${PREFILL_REQUEUE:-1}"
PREFILL_MAX_RESTARTS="${PREFILL_MAX_RESTARTS:-20}"
say() { echo "prefill-job: $*" >&2; }

if (($#)); then args=("$@"); else read -ra args <<<"${PREFILL_ARGS:-attention --workload needle --seq-len 65536 --check}"; fi
[ -x "$PREFILL_BIN" ] || { say "error: $PREFILL_BIN is not an executable (set PREFILL_HOME or PREFILL_BIN)"; exit 2; }
[ -n "${SLURM_JOB_ID:-}" ] || { say "error: not inside a Slurm job (submit it with sbatch)"; exit 2; }

say "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NTASKS:-?} ranks," \
    "${SLURM_CPUS_PER_TASK:-1} CPUs each, via $PREFILL_LAUNCHER: prefill ${args[*]}"

# Prometheus targets for the ranks.
file_sd=""
if [ "$PREFILL_METRICS_PORT" != 0 ]; then
  writer="$PREFILL_HOME/monitoring/prometheus/write_file_sd.sh"
  dir="${PREFILL_FILE_SD_DIR:-}"
  if [ -z "$dir" ]; then
    dir=/var/lib/prometheus/file_sd/prefill
    [ -d "$dir" ] && [ -w "$dir" ] || dir="$PREFILL_HOME/file_sd"
  fi
  if [ -x "$writer" ]; then
    mkdir -p "$dir" && file_sd="$dir/prefill-$SLURM_JOB_ID.json"
    "$writer" --base-port "$PREFILL_METRICS_PORT" --out "$file_sd" --slurm >&2 || { say "warning: no file_sd targets"; file_sd=""; }
  else
    say "warning: $writer is missing: no Prometheus targets written"
  fi
  # The ranks serve /metrics only with a prefill whose command has --metrics-port.
  if "$PREFILL_BIN" "${args[0]}" --help 2>/dev/null | grep -q -- '--metrics-port'; then
    args+=(--metrics-port "$PREFILL_METRICS_PORT")
  else
    say "warning: prefill ${args[0]} has no --metrics-port: its targets will show as down"
  fi
fi

case "$PREFILL_LAUNCHER" in
  # srun of 22.05+ does not take --cpus-per-task over from sbatch: pass it on.
  srun) launch=(srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}")
        read -ra extra <<<"${PREFILL_SRUN_ARGS:-}"
        launch+=("${extra[@]}") ;;
  # mpirun takes hosts and slots from the allocation and starts its daemons with srun.
  mpirun) launch=(mpirun)
          if [ "${SLURM_CPUS_PER_TASK:-1}" -gt 1 ]; then launch+=(--map-by "slot:PE=$SLURM_CPUS_PER_TASK" --bind-to core); fi
          if [ "$(id -u)" = 0 ]; then launch+=(--allow-run-as-root); fi ;;
  *) say "error: PREFILL_LAUNCHER=$PREFILL_LAUNCHER (valid: srun, mpirun)"; exit 2 ;;
esac

stop_requested=0 step=""
on_term() {
  stop_requested=1
  say "SIGTERM: asking the ranks to finish what is in flight and stop"
  if [ "$PREFILL_LAUNCHER" = srun ]; then
    # Every step of the job, not the batch step (this shell and srun): no --full.
    scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null || true
  else
    # mpirun ends its job on SIGTERM instead of passing it on, and its remote daemons would
    # do the same: signal the ranks it started on this node, its own children. A graceful
    # stop under mpirun therefore covers single-node jobs only; use srun across nodes.
    local mpirun_pid
    [ -n "$step" ] || return 0
    for mpirun_pid in $(pgrep -P "$step" 2>/dev/null); do pkill -TERM -P "$mpirun_pid" 2>/dev/null || true; done
  fi
}
trap on_term TERM
status_file="$(mktemp "${TMPDIR:-/tmp}/prefill-job.XXXXXX")"
trap 'rm -f "$status_file"; [ -z "$file_sd" ] || rm -f "$file_sd"' EXIT

("${launch[@]}" "$PREFILL_BIN" "${args[@]}"; echo $? >"$status_file") &
step=$!
# A trapped signal interrupts `wait` (status > 128): wait again until the step has ended.
while kill -0 "$step" 2>/dev/null; do wait "$step"; done
rc="$(cat "$status_file")"
rc="${rc:-1}"
say "prefill exited with $rc"

if ((stop_requested)) && [ "$rc" = 0 ] && [ "$PREFILL_REQUEUE" = 1 ]; then
  trap - TERM
  if ((${SLURM_RESTART_COUNT:-0} >= PREFILL_MAX_RESTARTS)); then
    say "stopped early after ${SLURM_RESTART_COUNT:-0} restarts (PREFILL_MAX_RESTARTS): not requeueing;" \
        "raise --time, or resubmit with the same arguments to resume"
    exit 0
  fi
  say "stopped early: requeueing job $SLURM_JOB_ID to resume"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
  say "warning: scontrol requeue failed: resubmit the job with the same arguments to resume"
fi
exit "$rc"
