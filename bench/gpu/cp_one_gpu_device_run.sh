#!/usr/bin/env bash
# Issue 19 on a one-GPU machine, in one device call (repository root; carry
# bench/gpu/device_bundle.tar.xz, made by `bench/gpu/run_device_bench.sh pack`):
#   1. gpu_communicators_test, HostStaged instances: 2 ranks sharing the GPU;
#   2. tests/gpu/model_on_gpu.sh with RANKS_LAUNCH: the tiny models, and 2 and 4 ranks on one
#      GPU (--comm host-staged) against the float64 numpy forward;
#   3. bench/gpu/cp_scaling.sh one-gpu: 1, 2, 4 ranks against 1 rank, both layouts, dense and
#      sparse (exits non-zero on a mismatch);
#   4. the 128K dense ring on 1 and 2 ranks: exchange_seconds and exchange_exposed_seconds.
# Results: $OUT (default device_out); bench/results/gpu/cp_one_gpu/ holds the 2026-12-07 run.
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-$PWD/device_out}; mkdir -p "$OUT"
python3 -m tarfile -e bench/gpu/device_bundle.tar.xz bench/gpu || exit 1
B=$PWD/bench/gpu/device_bundle
export LD_LIBRARY_PATH=$B/lib:${LD_LIBRARY_PATH:-}
. bench/gpu/device_cuda_libraries.sh
export OPAL_PREFIX=$B/ompi
MPI="$B/ompi/bin/orterun --oversubscribe --allow-run-as-root -x LD_LIBRARY_PATH -x OPAL_PREFIX"
timeout 120 $MPI -np 2 "$B/bin/gpu_communicators_test" --gtest_filter='*/HostStaged:ChooseLocalDevice.*' >"$OUT/gpu_communicators.log" 2>&1
echo "gpu_communicators HostStaged np2: exit $? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/gpu_communicators.log" | tr '\n' ' ')"
grep -E "Failure|FAILED" "$OUT/gpu_communicators.log" | head -5
timeout 300 env PYTHON=python3 RANKS_LAUNCH="$MPI" sh tests/gpu/model_on_gpu.sh "$B/bin/prefill" /tmp/model_on_gpu \
  >"$OUT/model_on_gpu.log" 2>&1
echo "model_on_gpu: exit $?"; grep -E "^==|FAIL|error|logits|kv cache" "$OUT/model_on_gpu.log" | tail -40
timeout 200 env PYTHON=python3 bash bench/gpu/cp_scaling.sh "$B/bin/prefill" "$OUT/cp_one_gpu" one-gpu >"$OUT/cp_one_gpu.log" 2>&1
echo "cp_scaling one-gpu: exit $?"; cat "$OUT/cp_one_gpu/summary.md" 2>/dev/null | tail -20; grep -i "fail" "$OUT/cp_one_gpu/summary.log" | head
for np in 1 2; do
  timeout 120 $MPI -np $np "$B/bin/prefill" attention --device cuda --comm host-staged --workload random --seq-len 131072 \
    --heads 32 --kv-heads 8 --head-dim 128 --dtype bf16 --layout zigzag --mode dense --json "$OUT/ring128k_np$np.json" \
    >"$OUT/ring128k_np$np.log" 2>&1
  echo "ring 128K np$np: exit $? $(python3 -c "import json;j=json.load(open('$OUT/ring128k_np$np.json'));print('total',j['total_seconds'],'attention',j['attention_seconds'],'exchange',j['exchange_seconds'],'exposed',j['exchange_exposed_seconds'],j['transport'])" 2>&1)"
done
