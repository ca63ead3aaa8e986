#!/usr/bin/env bash
# Issue 22 item 1 (GPU round-robin estimation) in one device call, everything into $OUT:
#   before  the baseline binaries (BEFORE=dir with bin/ and lib/, if present): the benchmark's
#           host-timed estimation at 32K/128K next to dense attention;
#   ncubefore  ncu's per-kernel durations of the baseline's estimation kernels at 128K
#           (ncu_before.csv, summed per stage in bench/gpu/estimator_notes.md);
#   test    cuda_mask_estimator_test (all cases);
#   sanitize  compute-sanitizer memcheck and racecheck on a subset (the new kernels: scores,
#           selection, CSR);
#   bench   attention_gpu_benchmark: dense attention + estimation (bf16 and split precision,
#           per-stage device times) at 32K and 128K, estimation alone at 1M causal;
#   ncu     SpeedOfLight, warp state and scheduler sections of one BlockScores and one
#           SelectBlocks launch at 128K.
# Usage (repository root; binaries from bench/gpu/device_bundle, see run_device_bench.sh pack):
#   STAGES="before test bench ncubefore sanitize ncu" bench/gpu/estimator_device_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device_out}
mkdir -p "$OUT"
# Everything but the JSON and the summary is archived into $OUT/logs.tgz at the end (a device
# call brings back few files).
FINAL_OUT=$OUT
OUT=$FINAL_OUT/work
mkdir -p "$OUT"
NEW=${NEW:-$ROOT/bench/gpu/device_bundle}
BEFORE=${BEFORE:-$ROOT/build-bundle-before}
STAGES=${STAGES:-"before test bench ncubefore sanitize ncu"}  # before: once is enough
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
EST_KERNELS='regex:PoolKeys|SplitPooled|GatherSampled|BlockScores|SelectBlocks|ScanRowCounts|FillCsr'

# The summary grows in $FINAL_OUT as it goes, so that it comes back even if the call is cut short.
log() { echo "[estimator_device_run] $*" | tee -a "$FINAL_OUT/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw --format=csv | tee "$OUT/gpu.txt"

for stage in $STAGES; do
  case $stage in
    before)
      [ -x "$BEFORE/bin/attention_gpu_benchmark" ] || { log "no baseline binaries in $BEFORE"; continue; }
      (
        export LD_LIBRARY_PATH=$BEFORE/lib:${LD_LIBRARY_PATH:-}
        timeout 100 "$BEFORE/bin/attention_gpu_benchmark" --lengths 32768 131072 --densities 1 \
          --out "$OUT/before.json" >"$OUT/before.log" 2>&1
        log "before bench: exit $?"
        grep -E '^[0-9]+ |^estimate' "$OUT/before.log" | tee -a "$FINAL_OUT/summary.txt"
      )
      ;;
    ncubefore)
      [ -x "$BEFORE/bin/attention_gpu_benchmark" ] || continue
      (
        export LD_LIBRARY_PATH=$BEFORE/lib:${LD_LIBRARY_PATH:-}
        if [ -n "$NCU" ]; then
          timeout 150 "$NCU" --clock-control none -k "$EST_KERNELS" --metrics gpu__time_duration.sum --csv \
            --page raw "$BEFORE/bin/attention_gpu_benchmark" --lengths 131072 --densities 1 --runs 1 \
            --out /dev/null >"$OUT/ncu_before.csv" 2>"$OUT/ncu_before.err"
          log "ncu before: exit $? ($(grep -c BlockScores "$OUT/ncu_before.csv") BlockScores rows)"
        fi
      )
      ;;
    test)
      (
        export LD_LIBRARY_PATH=$NEW/lib:${LD_LIBRARY_PATH:-}
        timeout 100 "$NEW/bin/cuda_mask_estimator_test" >"$OUT/estimator_test.log" 2>&1
        log "cuda_mask_estimator_test: exit $? ($(grep -E '^\[  (PASSED|FAILED) ' "$OUT/estimator_test.log" | tr '\n' ' '))"
        grep -E '^\[  FAILED  \]' "$OUT/estimator_test.log" | head -20 | tee -a "$FINAL_OUT/summary.txt"
      )
      ;;
    sanitize)
      (
        export LD_LIBRARY_PATH=$NEW/lib:${LD_LIBRARY_PATH:-}
        if command -v compute-sanitizer >/dev/null; then
          filter='Grid/CudaMaskEstimatorTest.ValidAndAgreesWithCpu/bf16_d128_s8_causal_tau95_*:Grid/CudaMaskEstimatorTest.ValidAndAgreesWithCpu/f32_d64_s4_full_tau90_*:Grid/CudaMaskEstimatorTest.ValidAndAgreesWithCpu/f16_d128_s16_causal_tau90_split*:Grid/CudaMaskEstimatorTest.ValidAndAgreesWithCpu/bf16_d64_s16_full_tau90_*:CudaMaskEstimator.ChunkingDoesNotChangeTheMask:CudaMaskEstimator.RejectsQueryBlockIdsOutOfRange:CudaMaskEstimator.SelectFromMassesTiesAndThresholds:CudaMaskEstimator.SelectVariantsGiveTheSameMask'
          for tool in ${SANITIZERS:-memcheck racecheck synccheck}; do
            timeout 70 compute-sanitizer --tool $tool --error-exitcode 9 "$NEW/bin/cuda_mask_estimator_test" \
              --gtest_filter="$filter" >"$OUT/sanitize_$tool.log" 2>&1
            log "compute-sanitizer $tool: exit $? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize_$tool.log" | tail -1))"
          done
        fi
      )
      ;;
    bench)
      (
        export LD_LIBRARY_PATH=$NEW/lib:${LD_LIBRARY_PATH:-}
        timeout 150 "$NEW/bin/attention_gpu_benchmark" --lengths 32768 131072 --densities 1 --precision both \
          --mma-path ${MMA_PATHS:-auto} --select-variants ${SELECT_VARIANTS:-0 1} --out "$FINAL_OUT/after.json" \
          >"$OUT/after.log" 2>&1
        log "after bench: exit $?"
        grep -E '^[0-9]+ |^estimate' "$OUT/after.log" | tee -a "$FINAL_OUT/summary.txt"
        timeout 100 "$NEW/bin/attention_gpu_benchmark" --lengths 1048576 --estimation-only --causal 1 \
          --precision ${PRECISION_1M:-bf16} --select-variants ${SELECT_VARIANTS:-0 1} --out "$FINAL_OUT/after_1m.json" \
          >"$OUT/after_1m.log" 2>&1
        log "after bench 1M: exit $?"
        grep -E '^estimate' "$OUT/after_1m.log" | tee -a "$FINAL_OUT/summary.txt"
      )
      ;;
    ncu)
      (
        export LD_LIBRARY_PATH=$NEW/lib:${LD_LIBRARY_PATH:-}
        [ -n "$NCU" ] || { log "no ncu"; exit 0; }
        for k in BlockScores SelectBlocks; do
          timeout 120 "$NCU" --clock-control none -k regex:$k --launch-skip 1 --launch-count 1 \
            --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
            --section WarpStateStats --section SchedulerStats --section InstructionStats \
            "$NEW/bin/attention_gpu_benchmark" --lengths 131072 --estimation-only --causal 0 --precision bf16 \
            --runs 1 --out /dev/null >"$OUT/ncu_${k}_after.txt" 2>&1
          log "ncu after $k: exit $?"
          grep -E 'Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Issue Slots Busy|Stall|Warp Cycles Per Issued' \
            "$OUT/ncu_${k}_after.txt" | head -14 | tee -a "$FINAL_OUT/summary.txt"
        done
      )
      ;;
  esac
done
mv "$OUT"/*.json "$FINAL_OUT/" 2>/dev/null
tar -czf "$FINAL_OUT/logs.tgz" -C "$OUT" . && rm -rf "$OUT"
echo "==== summary ===="
cat "$FINAL_OUT/summary.txt"
