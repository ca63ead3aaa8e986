#!/usr/bin/env bash
# write_file_sd.sh: mpirun mode, Slurm mode (with a stand-in scontrol) and bad input.
set -euo pipefail
script="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check_json() { /usr/bin/python3 - "$@" <<'PY'
import json, sys
path, expected = sys.argv[1], json.loads(sys.argv[2])
got = json.load(open(path))
if got != expected:
    sys.exit(f"{path}:\n got      {got}\n expected {expected}")
PY
}
entry() { echo "{\"targets\":[\"$1:$2\"],\"labels\":{\"rank\":\"$3\",\"local_rank\":\"$4\",\"host\":\"$1\",\"job_id\":\"$5\"}}"; }

# mpirun: two hosts, two ranks each.
"$script" --base-port 9400 --out "$work/mpi.json" --hosts n1,n2 --ranks-per-host 2 --job-id run7
check_json "$work/mpi.json" "[$(entry n1 9400 0 0 run7),$(entry n1 9401 1 1 run7),$(entry n2 9400 2 0 run7),$(entry n2 9401 3 1 run7)]"

# Per-host counts.
"$script" --base-port 9000 --out "$work/uneven.json" --hosts a,b --ranks-per-host 1,2 --job-id x
check_json "$work/uneven.json" "[$(entry a 9000 0 0 x),$(entry b 9000 1 0 x),$(entry b 9001 2 1 x)]"

# Slurm: scontrol expands the node list; SLURM_TASKS_PER_NODE "2(x2),1".
mkdir "$work/bin"
cat >"$work/bin/scontrol" <<'SH'
#!/bin/sh
[ "$1 $2" = "show hostnames" ] && [ "$3" = "gpu[01-03]" ] && printf 'gpu01\ngpu02\ngpu03\n'
SH
chmod +x "$work/bin/scontrol"
PATH="$work/bin:$PATH" SLURM_JOB_NODELIST='gpu[01-03]' SLURM_TASKS_PER_NODE='2(x2),1' SLURM_JOB_ID=4242 \
  "$script" --base-port 9400 --out "$work/slurm.json" --slurm
check_json "$work/slurm.json" "[$(entry gpu01 9400 0 0 4242),$(entry gpu01 9401 1 1 4242),$(entry gpu02 9400 2 0 4242),$(entry gpu02 9401 3 1 4242),$(entry gpu03 9400 4 0 4242)]"
PATH="$work/bin:$PATH" SLURM_JOB_NODELIST='gpu[01-03]' SLURM_NTASKS_PER_NODE=1 SLURM_JOB_ID=5 \
  "$script" --base-port 9500 --out "$work/slurm1.json" --slurm
check_json "$work/slurm1.json" "[$(entry gpu01 9500 0 0 5),$(entry gpu02 9500 1 0 5),$(entry gpu03 9500 2 0 5)]"

# Bad input: exit 2 with a message, and no file.
expect_error() {
  local pattern="$1"; shift
  if out="$("$script" "$@" 2>&1)"; then fail "accepted: $*"; fi
  grep -q -- "$pattern" <<<"$out" || fail "'$*' said: $out (expected '$pattern')"
}
expect_error "base-port" --base-port 0 --out "$work/x.json" --hosts a --ranks-per-host 1
expect_error "--out" --base-port 9400 --hosts a --ranks-per-host 1
expect_error "--hosts" --base-port 9400 --out "$work/x.json" --ranks-per-host 1
expect_error "2 rank counts for 3 hosts" --base-port 9400 --out "$work/x.json" --hosts a,b,c --ranks-per-host 1,2
expect_error "passes 65535" --base-port 65535 --out "$work/x.json" --hosts a --ranks-per-host 2
expect_error "unknown argument" --bogus
[ ! -e "$work/x.json" ] || fail "a failed run left a file"
echo "write_file_sd.sh: all cases passed"
