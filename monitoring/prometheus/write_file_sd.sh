#!/usr/bin/env bash
# Writes Prometheus file_sd targets for one prefill job: one target host:port per rank,
# port = base_port + local_rank, labelled rank, local_rank, host and job_id, as
#   [{"targets":["node1:9400"],"labels":{"rank":"0","local_rank":"0","host":"node1","job_id":"42"}}, ...]
# Ranks are numbered host by host (mpirun --map-by slot with a hostfile, Slurm's block
# distribution): host i's ranks follow host i-1's.
#
# Usage:
#   write_file_sd.sh --base-port P --out FILE --hosts h1,h2,... --ranks-per-host N[,N2,...]
#       (an mpirun job: one count for every host, or one per host)
#   write_file_sd.sh --base-port P --out FILE --slurm
#       (inside a Slurm job: hosts from `scontrol show hostnames $SLURM_JOB_NODELIST`, ranks
#        per host from SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE like "4(x2),3")
# Options: --job-id ID (default: SLURM_JOB_ID, else "none"). The file is written through a
# temporary file and a rename, so Prometheus never reads half of it. Point a scrape job's
# file_sd_configs at the folder (monitoring/prometheus/prometheus.yml).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "write_file_sd.sh: error: $*" >&2; exit 2; }

base_port="" out="" hosts="" per_host="" slurm=0 job_id="${SLURM_JOB_ID:-none}"
while (($#)); do
  case "$1" in
    --base-port) base_port="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    --hosts) hosts="${2:-}"; shift 2 ;;
    --ranks-per-host) per_host="${2:-}"; shift 2 ;;
    --slurm) slurm=1; shift ;;
    --job-id) job_id="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$base_port" =~ ^[0-9]+$ ]] && ((base_port >= 1 && base_port <= 65535)) \
  || die "--base-port must be a port in [1, 65535] (0 means the endpoints are off: nothing to scrape)"
[ -n "$out" ] || die "--out FILE is required"

# Expands Slurm's "4(x2),3" into "4,4,3".
expand_tasks_per_node() {
  local spec="$1" item count times result=()
  IFS=',' read -ra items <<<"$spec"
  for item in "${items[@]}"; do
    if [[ "$item" =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
      count="${BASH_REMATCH[1]}" times="${BASH_REMATCH[2]}"
      for ((k = 0; k < times; k++)); do result+=("$count"); done
    elif [[ "$item" =~ ^[0-9]+$ ]]; then
      result+=("$item")
    else
      die "cannot read tasks per node '$spec'"
    fi
  done
  (IFS=','; echo "${result[*]}")
}

host_list=()
if ((slurm)); then
  [ -n "${SLURM_JOB_NODELIST:-}" ] || die "--slurm needs SLURM_JOB_NODELIST (run it inside the job)"
  mapfile -t host_list < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  if [ -z "$per_host" ]; then
    if [ -n "${SLURM_NTASKS_PER_NODE:-}" ]; then
      per_host="$SLURM_NTASKS_PER_NODE"
    elif [ -n "${SLURM_TASKS_PER_NODE:-}" ]; then
      per_host="$(expand_tasks_per_node "$SLURM_TASKS_PER_NODE")"
    else
      die "set SLURM_NTASKS_PER_NODE (srun --ntasks-per-node) or pass --ranks-per-host"
    fi
  fi
else
  [ -n "$hosts" ] || die "give --hosts h1,h2,... (an mpirun job) or --slurm"
  IFS=',' read -ra host_list <<<"$hosts"
fi
((${#host_list[@]})) || die "no hosts"
[ -n "$per_host" ] || die "--ranks-per-host N is required"
IFS=',' read -ra counts <<<"$per_host"
if ((${#counts[@]} == 1)); then
  for ((i = 1; i < ${#host_list[@]}; i++)); do counts+=("${counts[0]}"); done
fi
((${#counts[@]} == ${#host_list[@]})) || die "${#counts[@]} rank counts for ${#host_list[@]} hosts"

json_string() {  # host names and job ids are plain, but quote \ and " anyway
  local s="${1//\\/\\\\}"
  printf '"%s"' "${s//\"/\\\"}"
}

rank=0
entries=()
for ((i = 0; i < ${#host_list[@]}; i++)); do
  host="${host_list[$i]}" n="${counts[$i]}"
  [[ "$n" =~ ^[0-9]+$ ]] || die "rank count '$n' is not a number"
  for ((local_rank = 0; local_rank < n; local_rank++)); do
    port=$((base_port + local_rank))
    ((port <= 65535)) || die "port $port of local rank $local_rank passes 65535"
    entries+=("  {\"targets\": [$(json_string "$host:$port")], \"labels\": {\"rank\": \"$rank\", \"local_rank\": \"$local_rank\", \"host\": $(json_string "$host"), \"job_id\": $(json_string "$job_id")}}")
    rank=$((rank + 1))
  done
done

tmp="$(dirname "$out")/.$(basename "$out").tmp.$$"
{
  echo "["
  for ((i = 0; i < ${#entries[@]}; i++)); do
    if ((i + 1 < ${#entries[@]})); then echo "${entries[$i]},"; else echo "${entries[$i]}"; fi
  done
  echo "]"
} >"$tmp"
mv -f "$tmp" "$out"
echo "write_file_sd.sh: $rank targets in $out"
