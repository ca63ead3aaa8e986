#!/usr/bin/env bash
# The one script a device session runs (from the repository root), everything into $OUT:
#   1. build for sm_90a (+ sm_80) -- or, where the device image lacks the project's
#      dependencies (absl, GTest, MPI, CLI11, nlohmann_json), use the bundle that
#      `run_device_bench.sh pack` made on the build machine (bench/gpu/device_bundle: the
#      binaries and the non-system shared libraries they need; carry it with the run);
#   2. the GPU tests (ctest -L gpu when built here, the test binaries directly from a bundle);
#   3. compute-sanitizer memcheck on the attention test, once (a subset of cases);
#   4. attention_gpu_benchmark (JSON);
#   5. bench/gpu/torch_attention_anchors.py: cuDNN / flash SDPA and FlexAttention on the
#      identical shapes and KV block lists (JSON);
#   6. model: `prefill model|run --device cuda` on the tiny models against the numpy forward
#      (tests/gpu/model_on_gpu.sh), one rank as an MPI singleton when the image has no mpirun
#      (the bundle carries a relocated OpenMPI: OPAL_PREFIX).
# Stages: pack | build | test | sanitize | bench | torch | model | all (default: all but pack).
# Each stage fits one 10-minute device call; run them one per call if needed (the build
# folder survives between calls of one machine). The last lines printed are a summary table.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/device_out}
mkdir -p "$OUT"
BUILD=${BUILD:-$ROOT/build-device}
BUNDLE=$ROOT/bench/gpu/device_bundle
JOBS=$(nproc 2>/dev/null || echo 8)
GPU_TESTS="cuda_ops_test cuda_attention_test cuda_mask_estimator_test cuda_layer_backend_test cuda_resident_mask_test gpu_communicators_test"
# sparse_e2e_benchmark: bench/gpu/sparse_e2e_device_run.sh (end to end on structured inputs).
GPU_BENCHES="attention_gpu_benchmark sparse_e2e_benchmark"
STAGE=${1:-all}
BIN=""

log() { echo "[run_device_bench] $*" | tee -a "$OUT/summary.txt"; }

pick_bin() {
  if [ -x "$BUILD/bin/attention_gpu_benchmark" ]; then
    BIN=$BUILD/bin
  elif [ -x "$BUNDLE/bin/attention_gpu_benchmark" ]; then
    BIN=$BUNDLE/bin
    export LD_LIBRARY_PATH=$BUNDLE/lib:${LD_LIBRARY_PATH:-}
    . "$ROOT/bench/gpu/device_cuda_libraries.sh"
    # OpenMPI finds its plugins and help files under OPAL_PREFIX; a singleton needs no daemon.
    export OPAL_PREFIX=$BUNDLE/ompi OMPI_MCA_ess_singleton_isolated=1
  else
    log "no binaries: run the build stage (or carry bench/gpu/device_bundle)"
    return 1
  fi
  log "binaries from $BIN"
}

stage_pack() {  # on the build machine (no GPU needed)
  local b=${PACK_BUILD:-$ROOT/build-pack}
  cmake -S "$ROOT" -B "$b" -DPREFILL_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="80-real;90a-real" >/dev/null || return 1
  cmake --build "$b" -j"$JOBS" --target $GPU_TESTS $GPU_BENCHES prefill || return 1
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  for t in $GPU_TESTS $GPU_BENCHES prefill; do cp "$b/bin/$t" "$BUNDLE/bin/"; done
  # OpenMPI's plugins (dlopen'ed from its libdir) and help files, laid out under a prefix of
  # their own so that OPAL_PREFIX relocates them (Debian: prefix /usr).
  local ompi=$BUNDLE/ompi/lib/x86_64-linux-gnu
  mkdir -p "$ompi" "$BUNDLE/ompi/share"
  cp -rL /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 "$ompi/"
  rm -rf "$ompi/openmpi/include"
  cp -r /usr/share/openmpi "$BUNDLE/ompi/share/"
  # mpirun for the multi-GPU runs (bench/gpu/cp_scaling.sh): orterun finds orted in OPAL_PREFIX/bin.
  mkdir -p "$BUNDLE/ompi/bin" && cp -L /usr/bin/orterun /usr/bin/orted "$BUNDLE/ompi/bin/"
  # Every shared library but the C runtime's own (libc, libm, libdl, libpthread, librt, ld.so)
  # and the big CUDA ones the device image has.
  for t in "$BUNDLE"/bin/* "$BUNDLE"/ompi/bin/* "$ompi"/openmpi/lib/openmpi3/*.so; do ldd "$t"; done | awk '/=>/ {print $3}' | sort -u |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
    grep -v -E '/(libcublas|libcublasLt|libnccl)\.so' |  # from the device image: device_cuda_libraries.sh
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
  strip --strip-unneeded "$BUNDLE"/lib/*.so* 2>/dev/null || true
  cp "$ROOT/bench/gpu/torch_attention_anchors.py" "$BUNDLE/"
  # The commit the binaries were built from (the device's copy of the tree reports another),
  # "-dirty" when the tree had uncommitted changes.
  git -C "$ROOT" describe --always --abbrev=12 --dirty=-dirty --exclude='*' >"$BUNDLE/COMMIT" 2>/dev/null ||
    echo unknown >"$BUNDLE/COMMIT"
  du -sh "$BUNDLE"
  # Carried compressed (a device call carries 64 MiB): unpack there with
  #   python3 -m tarfile -e bench/gpu/device_bundle.tar.xz bench/gpu
  tar -C "$ROOT/bench/gpu" -cJf "$BUNDLE.tar.xz" device_bundle
  du -sh "$BUNDLE.tar.xz"
  echo "name bench/gpu/device_bundle.tar.xz in carry (git-ignored)"
}

stage_build() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  nvcc --version | tail -1 | tee -a "$OUT/gpu.txt"
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  if cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" -DPREFILL_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_CUDA_ARCHITECTURES="90a-real;80-real" >"$OUT/configure.log" 2>&1; then
    if cmake --build "$BUILD" -j"$JOBS" >"$OUT/build.log" 2>&1; then
      log "build: ok"
      # The sm90a kernel must show HGMMA (warpgroup MMA), UTMALDG (TMA) and no local memory.
      local obj
      obj=$(find "$BUILD" -name 'attention_sm90_hdim128.cu.o' | head -1)
      if [ -n "$obj" ] && command -v cuobjdump >/dev/null; then
        cuobjdump -sass "$obj" >"$OUT/attention_sm90_hdim128.sass" 2>&1
        log "sm90 SASS: $(grep -cE 'HGMMA' "$OUT/attention_sm90_hdim128.sass") HGMMA, $(grep -cE 'UTMALDG' "$OUT/attention_sm90_hdim128.sass") UTMALDG, $(grep -cE '\b(LDL|STL)\b' "$OUT/attention_sm90_hdim128.sass") LDL/STL"
      fi
      return 0
    fi
    log "build: FAILED (tail of build.log follows)"
    tail -30 "$OUT/build.log"
    return 1
  fi
  log "configure failed here (missing dependencies?); falling back to the bundle"
  tail -5 "$OUT/configure.log"
  [ -x "$BUNDLE/bin/attention_gpu_benchmark" ] || { log "no bundle either"; return 1; }
}

stage_test() {
  pick_bin || return 1
  if [ "$BIN" = "$BUILD/bin" ]; then
    (cd "$BUILD" && ctest -L gpu --output-on-failure --timeout 600) >"$OUT/ctest_gpu.log" 2>&1
    log "ctest -L gpu: exit $? ($(grep -E 'tests passed|tests failed' "$OUT/ctest_gpu.log" | tail -1))"
    (cd "$BUILD" && ctest -LE gpu --timeout 600 -j"$JOBS") >"$OUT/ctest_rest.log" 2>&1
    log "ctest (other labels): exit $? ($(grep -E 'tests passed|tests failed' "$OUT/ctest_rest.log" | tail -1))"
  else
    for t in $GPU_TESTS; do
      "$BIN/$t" >"$OUT/$t.log" 2>&1
      log "$t: exit $? ($(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' '))"
    done
  fi
}

stage_sanitize() {
  pick_bin || return 1
  command -v compute-sanitizer >/dev/null || { log "no compute-sanitizer"; return 1; }
  compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/cuda_attention_test" \
    --gtest_filter='Grid/CudaAttentionTest.MatchesCpuAndReference/bf16_d128_causal_gqa_sparse:CudaAttention.ZigzagPositions:CudaAttention.RowsWithoutVisibleKeys:CudaAttention.PerKvHeadKeyPositions' \
    >"$OUT/memcheck.log" 2>&1
  log "compute-sanitizer memcheck cuda_attention_test: exit $? ($(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1))"
}

stage_bench() {
  pick_bin || return 1
  local commit
  commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  "$BIN/attention_gpu_benchmark" --out "$OUT/attention_gpu.json" --git-commit "$commit" 2>&1 | tee "$OUT/bench.log"
  log "attention_gpu_benchmark: exit ${PIPESTATUS[0]}"
  if [ "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -c H100)" = 1 ]; then
    "$BIN/attention_gpu_benchmark" --path sm80 --lengths 32768 --densities 1 --skip-estimation \
      --out "$OUT/attention_gpu_sm80.json" --git-commit "$commit" 2>&1 | tee -a "$OUT/bench.log"
  fi
}

stage_torch() {
  PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu/torch_attention_anchors.py" --out "$OUT/torch_anchors.json" \
    2>&1 | tee "$OUT/torch.log" | tail -40
  log "torch anchors: exit ${PIPESTATUS[0]}"
}

stage_model() {
  pick_bin || return 1
  PYTHON=${PYTHON:-python3} sh "$ROOT/tests/gpu/model_on_gpu.sh" "$BIN/prefill" "$OUT/model_on_gpu" \
    >"$OUT/model_on_gpu.log" 2>&1
  log "model_on_gpu: exit $? ($(tail -1 "$OUT/model_on_gpu.log"))"
  rm -rf "$OUT/model_on_gpu"
}

summary() {
  echo "==== summary ===="
  cat "$OUT/summary.txt" 2>/dev/null
  [ -f "$OUT/bench.log" ] && grep -E '^[0-9]+ |^estimate' "$OUT/bench.log"
  true
}

case "$STAGE" in
  pack) stage_pack ;;
  build) stage_build ;;
  test) stage_test ;;
  sanitize) stage_sanitize ;;
  bench) stage_bench ;;
  torch) stage_torch ;;
  model) stage_model ;;
  all)
    stage_build
    stage_test
    stage_sanitize
    stage_bench
    stage_torch
    stage_model
    ;;
  *) echo "usage: $0 [pack|build|test|sanitize|bench|torch|model|all]"; exit 2 ;;
esac
summary
