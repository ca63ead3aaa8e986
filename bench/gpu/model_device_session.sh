#!/usr/bin/env bash
# One device call for the GPU model (issue 24): the layer kernels' tests
# (cuda_layer_backend_test, cuda_ops_test, cuda_resident_mask_test), the tiny Llama/Qwen2
# models against the float64 numpy forward (tests/gpu/model_on_gpu.sh), then
# model_vs_hf_device_run.sh (ours against transformers on the same GPU).
# Usage (repository root, bench/gpu/device_bundle.tar.xz carried; see run_device_bench.sh pack):
#   TOTAL=570 bash bench/gpu/model_device_session.sh
# Knobs: TOTAL (seconds for the whole call), TESTS, SKIP_MODEL_TEST, CP_BALANCE (set: also
# bench/cp_balance.sh on the CPU cores; CP_BALANCE_RANKS, CP_BALANCE_LENGTHS, CP_BALANCE_TIMEOUT), and model_vs_hf's own
# (LENGTHS, MODES, RUNS, TAU, TARGET_DENSITY, LAYERS).
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
python3 -m tarfile -e bench/gpu/device_bundle.tar.xz bench/gpu || exit 1
B=$PWD/bench/gpu/device_bundle
(
  export LD_LIBRARY_PATH=$B/lib:${LD_LIBRARY_PATH:-}
  . bench/gpu/device_cuda_libraries.sh
  for t in ${TESTS:-cuda_layer_backend_test cuda_ops_test cuda_resident_mask_test}; do
    timeout 200 "$B/bin/$t" >"$OUT/$t.log" 2>&1
    echo "$t: exit $? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E "^\[  FAILED" "$OUT/$t.log" | head -5
  done
  if [ -z "${SKIP_MODEL_TEST:-}" ]; then
    export OPAL_PREFIX=$B/ompi OMPI_MCA_ess_singleton_isolated=1  # prefill as an MPI singleton
    timeout 300 env PYTHON=python3 \
      RANKS_LAUNCH="$B/ompi/bin/orterun --oversubscribe --allow-run-as-root -x LD_LIBRARY_PATH -x OPAL_PREFIX" \
      sh tests/gpu/model_on_gpu.sh "$B/bin/prefill" /tmp/model_on_gpu \
      >"$OUT/model_on_gpu.log" 2>&1
    echo "model_on_gpu: exit $? ($(tail -1 "$OUT/model_on_gpu.log"))"
  fi
)
# Issue 17 on the device's CPU cores (one core per rank, which the 2-core build machine lacks):
# bench/cp_balance.sh through the bundle's OpenMPI, CP_BALANCE_TIMEOUT seconds at most.
if [ -n "${CP_BALANCE:-}" ]; then
  (
    export OPAL_PREFIX=$B/ompi LD_LIBRARY_PATH=$B/lib:${LD_LIBRARY_PATH:-}
    timeout "${CP_BALANCE_TIMEOUT:-100}" env PREFILL="$B/bin/prefill" MPIRUN="$B/ompi/bin/orterun" PYTHON=python3 \
      RANKS="${CP_BALANCE_RANKS:-4 8}" LENGTHS="${CP_BALANCE_LENGTHS:-32768}" VARIANTS="auto off" REPEAT=3 \
      bash bench/cp_balance.sh "$OUT/cp_balance.json" >"$OUT/cp_balance.log" 2>&1
    echo "cp_balance: exit $?"; grep -E "ranks L=" "$OUT/cp_balance.log"
  )
fi
BUDGET=$((${TOTAL:-570} - SECONDS)) RUNS=${RUNS:-3} bash bench/gpu/model_vs_hf_device_run.sh 2>&1 | tail -45
