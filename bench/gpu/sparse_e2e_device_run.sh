#!/usr/bin/env bash
# Issue 22 items 3 and 4 in one device call, everything into $OUT (few files come back):
#   check  the GPU tests of what these numbers rest on, when the bundle has them:
#          cuda_resident_mask_test (the device-resident mask equals the host mask, same
#          attention bits) and cuda_ops_test (the memory ledger's counts);
#   e2e    sparse_e2e_benchmark, one process per length (a failing length does not stop the
#          others): the synthetic workloads, estimation (device and host-call time), sparse and
#          dense attention, the estimated masks written to a scratch dir;
#   torch  sparse_e2e_torch.py: cuDNN SDPA dense and FlexAttention on the same masks, merged
#          into $OUT/sparse_e2e.json (points with L, causal, workload, estimated_density,
#          estimate_ms, sparse_ms, cudnn_dense_ms, flex_ms, speedup_vs_cudnn);
#   cli    `prefill attention --device cuda --mode sparse` at CLI_LENGTHS (default 128K, 256K,
#          1M; H=32, Hkv=8, D=128, bf16): completion, phase times and peak GPU memory into
#          $OUT/cli_memory.json, to show the memory linear in L.
# Usage (repository root; binaries from bench/gpu/device_bundle, see run_device_bench.sh pack):
#   bash bench/gpu/sparse_e2e_device_run.sh 32768 131072          # check + e2e + torch (default)
#   STAGES=cli bash bench/gpu/sparse_e2e_device_run.sh            # the CLI runs alone
#   bash bench/gpu/sparse_e2e_device_run.sh 524288 1048576        # long lengths: fewer points
# Knobs (environment): WORKLOADS, CONCENTRATIONS, TAUS, TARGETS (target densities, reached by
# bisection over tau), CAUSAL ("1", or "0 1"), and the same with _LARGE for L >= 512K;
# L_TIMEOUT (seconds per length, default by L); MAX_DENSE_LEN (longest L at which our own
# dense attention is timed; cuDNN's always is); BUDGET (seconds the whole call may take, 570:
# each stage's timeout is cut to what is left, keeping 120 s for torch); MASK_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device_out}
mkdir -p "$OUT"
WORK=$OUT/work
mkdir -p "$WORK"
BUNDLE=${BUNDLE:-$ROOT/bench/gpu/device_bundle}
BUILD=${BUILD:-$ROOT/build}
STAGES=${STAGES:-"check e2e torch"}
LENGTHS=("$@")
[ ${#LENGTHS[@]} -gt 0 ] || LENGTHS=(32768 131072)
CLI_LENGTHS=${CLI_LENGTHS:-"131072 262144 1048576"}
BUDGET=${BUDGET:-570}

# min(want, what the budget leaves after `keep` seconds for later stages), at least 30.
time_left() {
  local want=$1 keep=$2 left=$((BUDGET - SECONDS - $2))
  [ $left -lt "$want" ] && want=$left
  [ "$want" -lt 30 ] && want=30
  echo "$want"
}

log() { echo "[sparse_e2e] $*" | tee -a "$OUT/summary.txt"; }

if [ -x "$BUNDLE/bin/sparse_e2e_benchmark" ]; then
  BIN=$BUNDLE/bin
  export LD_LIBRARY_PATH=$BUNDLE/lib:${LD_LIBRARY_PATH:-}
  . "$ROOT/bench/gpu/device_cuda_libraries.sh"
  export OPAL_PREFIX=$BUNDLE/ompi OMPI_MCA_ess_singleton_isolated=1  # prefill as an MPI singleton
elif [ -x "$BUILD/bin/sparse_e2e_benchmark" ]; then
  BIN=$BUILD/bin
else
  log "no sparse_e2e_benchmark in $BUNDLE/bin or $BUILD/bin (run run_device_bench.sh pack and carry the bundle)"
  exit 1
fi
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$WORK/gpu.txt"
log "binaries from $BIN, commit $COMMIT, stages: $STAGES, lengths: ${LENGTHS[*]}"

# Masks are scratch (up to ~1 GB each at 1M): RAM-backed when /dev/shm has room.
if [ -z "${MASK_DIR:-}" ]; then
  MASK_DIR=/tmp/sparse_e2e_masks
  shm_free=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)
  [ "${shm_free:-0}" -gt 41943040 ] && MASK_DIR=/dev/shm/sparse_e2e_masks
fi
mkdir -p "$MASK_DIR"

stage_check() {
  for t in cuda_resident_mask_test cuda_ops_test; do
    [ -x "$BIN/$t" ] || { log "$t: not in $BIN"; continue; }
    timeout 120 "$BIN/$t" >"$WORK/$t.log" 2>&1
    log "$t: exit $? ($(grep -E '^\[  (PASSED|FAILED) ' "$WORK/$t.log" | tr '\n' ' '))"
  done
}

stage_e2e() {
  for L in "${LENGTHS[@]}"; do
    local large=0 timeout_s
    [ "$L" -ge 524288 ] && large=1
    if [ $large = 1 ]; then
      local workloads=${WORKLOADS_LARGE:-"needle video"} concs=${CONCENTRATIONS_LARGE:-"0.5"}
      local taus=${TAUS_LARGE:-"0.95"} targets=${TARGETS_LARGE:-"0.25"} causal=${CAUSAL_LARGE:-"1"}
      timeout_s=${L_TIMEOUT:-$([ "$L" -ge 1048576 ] && echo 300 || echo 240)}
    else
      local workloads=${WORKLOADS:-"needle stripes video random"} concs=${CONCENTRATIONS:-"0.3 0.5 1"}
      local taus=${TAUS:-"0.95"} targets=${TARGETS:-"0.5 0.25"}
      local causal=${CAUSAL:-$([ "$L" -le 32768 ] && echo "0 1" || echo "1")}
      timeout_s=${L_TIMEOUT:-$([ "$L" -le 32768 ] && echo 120 || echo 240)}
    fi
    local keep=0
    [[ " $STAGES " == *" torch "* ]] && keep=120
    timeout_s=$(time_left "$timeout_s" $keep)
    # shellcheck disable=SC2086
    timeout "$timeout_s" "$BIN/sparse_e2e_benchmark" --lengths "$L" --workloads $workloads \
      --concentrations $concs --taus $taus --target-densities ${targets:-0} --causal $causal --mask-dir "$MASK_DIR" \
      --max-dense-len "${MAX_DENSE_LEN:-1048576}" \
      --git-commit "$COMMIT" --out "$WORK/cuda_L$L.json" >"$WORK/cuda_L$L.log" 2>&1
    log "sparse_e2e_benchmark L=$L: exit $? ($(grep -c '^[0-9]' "$WORK/cuda_L$L.log") points, timeout ${timeout_s}s)"
    tail -3 "$WORK/cuda_L$L.log"
  done
}

stage_torch() {
  local inputs=()
  for L in "${LENGTHS[@]}"; do [ -f "$WORK/cuda_L$L.json" ] && inputs+=("$WORK/cuda_L$L.json"); done
  [ ${#inputs[@]} -gt 0 ] || { log "torch: no C++ results to merge"; return 1; }
  local suffix=""
  [ -f "$OUT/sparse_e2e.json" ] && suffix="_$(date +%H%M%S)"
  PYTHONUNBUFFERED=1 timeout "$(time_left "${TORCH_TIMEOUT:-400}" 10)" python3 "$ROOT/bench/gpu/sparse_e2e_torch.py" \
    --inputs "${inputs[@]}" --out "$OUT/sparse_e2e$suffix.json" >"$WORK/torch.log" 2>&1
  log "sparse_e2e_torch: exit $?"
  sed -n '/^ *L causal/,$p' "$WORK/torch.log" | tee -a "$OUT/summary.txt"
  if [ ! -f "$OUT/sparse_e2e$suffix.json" ]; then  # torch failed early: keep the C++ points
    python3 -c 'import json, sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], "w"), indent=1)' \
      "$OUT/sparse_e2e_cuda_only$suffix.json" "${inputs[@]}"
    log "torch wrote nothing: the C++ points are in sparse_e2e_cuda_only$suffix.json"
  fi
}

stage_cli() {
  local files=() timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)  # the host's peak RSS too
  for L in $CLI_LENGTHS; do
    timeout "$(time_left 300 5)" "${timer[@]}" "$BIN/prefill" attention --device cuda --mode sparse --seq-len "$L" --heads 32 --kv-heads 8 \
      --head-dim 128 --dtype bf16 --workload needle --layout contiguous --json "$WORK/cli_L$L.json" \
      >"$WORK/cli_L$L.log" 2>&1
    local rc=$? rss
    rss=$(grep -oP 'Maximum resident set size \(kbytes\): \K[0-9]+' "$WORK/cli_L$L.log" | awk '{printf "%.1f GiB", $1/1048576}')
    log "prefill attention --device cuda --mode sparse L=$L: exit $rc (host peak RSS: ${rss:-n/a})"
    grep -E '^ +(mask|time|memory|needle) ' "$WORK/cli_L$L.log" | tee -a "$OUT/summary.txt"
    [ -f "$WORK/cli_L$L.json" ] && files+=("$WORK/cli_L$L.json")
  done
  [ ${#files[@]} -gt 0 ] || return 1
  python3 - "$OUT/cli_memory.json" "${files[@]}" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
rows = []
for path in sys.argv[2:]:
    r = json.load(open(path))
    rows.append({k: r.get(k) for k in ("seq_len", "heads", "kv_heads", "head_dim", "dtype", "density",
                                       "estimate_seconds", "attention_seconds", "total_seconds", "needle_recall",
                                       "device_memory_peak_bytes", "backend_memory_peak_bytes",
                                       "device_memory_used_bytes", "gpu_name")})
for a, b in zip(rows, rows[1:]):
    b["backend_peak_ratio_to_previous"] = b["backend_memory_peak_bytes"] / a["backend_memory_peak_bytes"]
    b["length_ratio_to_previous"] = b["seq_len"] / a["seq_len"]
import datetime, subprocess
commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
json.dump({"device": rows[0].get("gpu_name") if rows else None,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "commit": commit or "unknown",
           "command": "prefill attention --device cuda --mode sparse --seq-len L --heads 32 --kv-heads 8 --head-dim 128 "
                      "--dtype bf16 --workload needle --layout contiguous (bench/gpu/sparse_e2e_device_run.sh, stage cli)",
           "runs": rows}, open(sys.argv[1], "w"), indent=1)
for r in rows:
    print(f"L={r['seq_len']:>8} density {r['density']:.3f} total {r['total_seconds']:.2f} s  GPU peak "
          f"{r['device_memory_peak_bytes'] / 2**30:.2f} GiB  backend peak {r['backend_memory_peak_bytes'] / 2**30:.2f} GiB")
EOF
}

for stage in $STAGES; do
  case $stage in
    check) stage_check ;;
    e2e) stage_e2e ;;
    torch) stage_torch ;;
    cli) stage_cli ;;
    *) log "unknown stage $stage (check, e2e, torch, cli)" ;;
  esac
done
rm -rf "$MASK_DIR"
tar -czf "$OUT/logs.tgz" -C "$OUT" work && rm -rf "$WORK"
echo "==== summary ===="
cat "$OUT/summary.txt"
