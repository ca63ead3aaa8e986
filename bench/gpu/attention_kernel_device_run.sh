#!/usr/bin/env bash
# Issue 22 item 2 (the sm90a attention kernel against cuDNN) in one device call, into $OUT:
#   test      cuda_attention_test (all cases, both kernel paths);
#   sanitize  compute-sanitizer memcheck, racecheck and synccheck on a subset of the sm90 cases
#             (causal, zigzag, rows without visible keys, per-KV-head positions);
#   sass      HGMMA / MUFU.EX2 / local-memory counts of the sm90 kernel (cuobjdump, if present);
#   bench     attention_gpu_benchmark without estimation: TFLOP/s on computed blocks at 32K and
#             128K, densities 1 / 0.5 / 0.25, causal and not (attention.json);
#   torch     cuDNN / flash SDPA and FlexAttention on the same shapes and block lists
#             (torch_anchors.json), in the same call so the two sides share clocks;
#   ncu       SpeedOfLight, compute workload, warp state and scheduler sections of one
#             AttentionSm90Kernel launch at 32K: dense non-causal, dense causal, and density
#             0.25 non-causal (ncu_attention_*.csv).
# Only the summary and the JSON files stay in $OUT; the logs go into $OUT/logs.tgz (a device
# call brings back few files).
# Usage (repository root; binaries from BIN_DIR, default bench/gpu/device_bundle/bin, with
# their libraries in ../lib; see run_device_bench.sh pack):
#   STAGES="test sanitize sass bench torch ncu" bench/gpu/attention_kernel_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
FINAL_OUT=${OUT:-$ROOT/device_out}
OUT=$FINAL_OUT/work
mkdir -p "$OUT"
BIN_DIR=${BIN_DIR:-$ROOT/bench/gpu/device_bundle/bin}
export LD_LIBRARY_PATH=$BIN_DIR/../lib:${LD_LIBRARY_PATH:-}
. "$ROOT/bench/gpu/device_cuda_libraries.sh"
STAGES=${STAGES:-"test sanitize sass bench torch ncu"}
LENGTHS=${LENGTHS:-"32768 131072"}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SANITIZE_FILTER='Grid/CudaAttentionTest.MatchesCpuAndReference/bf16_d128_causal_gqa_sparse:Grid/CudaAttentionTest.MatchesCpuAndReference/f16_d64_full_mha_dense:CudaAttention.ZigzagPositions:CudaAttention.RowsWithoutVisibleKeys:CudaAttention.PerKvHeadKeyPositions:CudaAttention.ManyItemsUnevenRows'

# The summary grows as it goes, so that it comes back even if the call is cut short.
log() { echo "[attention_kernel_device_run] $*" | tee -a "$FINAL_OUT/summary.txt"; }
bench() {  # bench NAME [env...]: one benchmark pass into $FINAL_OUT/NAME.json
  local name=$1
  shift
  # SM clock and power once a second while it runs: sustained tensor work is power-capped.
  nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 1000 >"$OUT/clocks_$name.csv" &
  local sampler=$!
  # shellcheck disable=SC2086
  env "$@" "$BIN_DIR/attention_gpu_benchmark" --lengths $LENGTHS --densities 1 0.5 0.25 --skip-estimation \
    --out "$FINAL_OUT/$name.json" --git-commit "${GIT_COMMIT:-unknown}" >"$OUT/$name.log" 2>&1
  log "attention_gpu_benchmark $name: exit $?"
  kill "$sampler" 2>/dev/null
  sort -n "$OUT/clocks_$name.csv" | awk -F', ' 'BEGIN {n = 0} $2 > 300 {c[n++] = $1} END {
    if (n) printf "  under load (%d samples over 300 W): SM clock median %d MHz (min %d, max %d)\n", n, c[int(n / 2)], c[0], c[n - 1]}' |
    tee -a "$FINAL_OUT/summary.txt"
  grep -E '^[0-9]+ ' "$OUT/$name.log" | tee -a "$FINAL_OUT/summary.txt"
}
ncu_point() {  # ncu_point NAME benchmark-args...: one profiled AttentionSm90Kernel launch
  local name=$1
  shift
  "$NCU" --clock-control none -k regex:AttentionSm90Kernel --launch-skip 1 -c 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --csv --page details "$BIN_DIR/attention_gpu_benchmark" --skip-estimation --runs 1 --out "$OUT/ncu_run.json" "$@" \
    >"$OUT/ncu_$name.csv" 2>"$OUT/ncu_$name.log"
  log "ncu $name ($*): exit $?"
  grep '^"' "$OUT/ncu_$name.csv" | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
want = ("SM Frequency", "Duration", "Compute (SM) Throughput", "DRAM Throughput", "L2 Cache Throughput",
        "Issue Slots Busy", "Eligible Warps Per Scheduler", "No Eligible")
for row in rows[1:]:
    d = dict(zip(rows[0], row))
    if d.get("Metric Name") in want:
        print("  %s: %s %s" % (d["Metric Name"], d["Metric Value"], d["Metric Unit"]))
' | tee -a "$FINAL_OUT/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$OUT/gpu.txt"

for stage in $STAGES; do
  case $stage in
    test)
      "$BIN_DIR/cuda_attention_test" >"$OUT/cuda_attention_test.log" 2>&1
      log "cuda_attention_test: exit $? ($(grep -E '^\[  (PASSED|FAILED) ' "$OUT/cuda_attention_test.log" | tr '\n' ' '))"
      grep -E '^\[  FAILED  \]' "$OUT/cuda_attention_test.log" | head -10
      ;;
    sanitize)
      command -v compute-sanitizer >/dev/null || { log "no compute-sanitizer"; continue; }
      for tool in memcheck racecheck synccheck; do
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN_DIR/cuda_attention_test" \
          --gtest_filter="$SANITIZE_FILTER" >"$OUT/sanitize_$tool.log" 2>&1
        log "compute-sanitizer $tool: exit $? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | tail -1))"
      done
      ;;
    sass)
      command -v cuobjdump >/dev/null || { log "no cuobjdump"; continue; }
      cuobjdump -sass "$BIN_DIR/attention_gpu_benchmark" | awk '/Function : .*AttentionSm90Kernel/ {on = 1} /Function : / && !/AttentionSm90Kernel/ {on = 0} on' >"$OUT/attention_sm90.sass" 2>&1
      log "sm90 SASS: $(grep -c 'HGMMA' "$OUT/attention_sm90.sass") HGMMA, $(grep -c 'MUFU.EX2' "$OUT/attention_sm90.sass") MUFU.EX2, $(grep -cE '\b(LDL|STL)\b' "$OUT/attention_sm90.sass") LDL/STL"
      ;;
    bench) bench attention ;;
    torch)
      # shellcheck disable=SC2086
      PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu/torch_attention_anchors.py" --lengths $LENGTHS \
        --out "$FINAL_OUT/torch_anchors.json" >"$OUT/torch.log" 2>&1
      log "torch anchors: exit $?"
      grep -E 'sdpa_cudnn' "$OUT/torch.log" | tee -a "$FINAL_OUT/summary.txt"
      ;;
    ncu)
      [ -n "$NCU" ] || { log "no ncu"; continue; }
      ncu_point dense --lengths 32768 --densities 1 --causal 0
      ncu_point causal --lengths 32768 --densities 1 --causal 1
      ncu_point sparse025 --lengths 32768 --densities 0.25 --causal 0
      ;;
    *) log "unknown stage $stage" ;;
  esac
done
tar -czf "$FINAL_OUT/logs.tgz" -C "$OUT" . && rm -rf "$OUT"
echo "==== summary ===="
cat "$FINAL_OUT/summary.txt"
