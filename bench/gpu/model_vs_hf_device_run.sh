#!/usr/bin/env bash
# Issue 24 item 4 in one device call: `prefill model --device cuda` against Hugging Face
# transformers on the same random Llama-3.1-8B-shaped model (written by transformers'
# save_pretrained) and the same tokens: time, tokens/s, MFU against the GPU's measured bf16 GEMM
# rate, load time, last-token logits and K/V agreement (bench/gpu/model_vs_hf.py does the work).
# Only summary.txt, model_vs_hf.json and logs.tgz stay in $OUT (a device call brings back few files).
# Usage (repository root; `prefill` from bench/gpu/device_bundle, see run_device_bench.sh pack;
# carry bench/gpu/device_bundle.tar.xz and unpack it with
# `python3 -m tarfile -e bench/gpu/device_bundle.tar.xz bench/gpu` first):
#   bash bench/gpu/model_vs_hf_device_run.sh
#   LENGTHS="32768" MODES="dense" LAYERS=8 bash bench/gpu/model_vs_hf_device_run.sh
#   TARGET_DENSITY=0.5 bash bench/gpu/model_vs_hf_device_run.sh    # tau by bisection at the smallest L
# Knobs (environment): LENGTHS (32768 131072), MODES (dense sparse), LAYERS (4), RUNS (3, timed
# transformers runs per length), TAU (0.5), TARGET_DENSITY (unset: TAU as given), SEED (0),
# OURS_TIMEOUT (150 s per prefill process), BUDGET (570: seconds the whole call may take; the
# python stage gets what is left of it less 25 s for packing up), BUNDLE, BUILD.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/device_out}
WORK=$OUT/work
mkdir -p "$WORK"
BUNDLE=${BUNDLE:-$ROOT/bench/gpu/device_bundle}
BUILD=${BUILD:-$ROOT/build}
BUDGET=${BUDGET:-570}
PYTHON=(/usr/bin/env python3)

log() { echo "[model_vs_hf] $*" | tee -a "$OUT/summary.txt"; }

finish() {
  tar -czf "$OUT/logs.tgz" -C "$OUT" work && rm -rf "$WORK"
  echo "==== summary ===="
  cat "$OUT/summary.txt"
  exit "$1"
}

# prefill's libraries (the bundle's, then cuBLAS/NCCL from the image) go to the prefill
# processes only (PREFILL_LD_LIBRARY_PATH, read by model_vs_hf.py): torch keeps its own.
if [ -x "$BUNDLE/bin/prefill" ]; then
  PREFILL=$BUNDLE/bin/prefill
  PREFILL_LD_LIBRARY_PATH=$(
    export LD_LIBRARY_PATH=$BUNDLE/lib:${LD_LIBRARY_PATH:-}
    . "$ROOT/bench/gpu/device_cuda_libraries.sh"
    echo "$LD_LIBRARY_PATH"
  )
  export PREFILL_LD_LIBRARY_PATH
  export OPAL_PREFIX=$BUNDLE/ompi OMPI_MCA_ess_singleton_isolated=1  # prefill as an MPI singleton
elif [ -x "$BUILD/bin/prefill" ]; then
  PREFILL=$BUILD/bin/prefill
else
  log "no prefill in $BUNDLE/bin or $BUILD/bin (run run_device_bench.sh pack and carry the bundle)"
  finish 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1  # no network on the device
# The bundle's binaries were built from the commit it records (the device's copy of the tree
# reports its own base); without a bundle, the tree's.
COMMIT=$(cat "$BUNDLE/COMMIT" 2>/dev/null || git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

if ! timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
  >"$WORK/gpu.txt" 2>&1; then
  log "nvidia-smi failed: $(tail -1 "$WORK/gpu.txt")"
  finish 1
fi
log "GPU: $(cat "$WORK/gpu.txt"); prefill: $PREFILL; commit $COMMIT"
if ! timeout 90 "${PYTHON[@]}" -c 'import numpy, torch, transformers; print("torch", torch.__version__,
"transformers", transformers.__version__, "cuda", torch.cuda.is_available())' >"$WORK/python.txt" 2>&1; then
  log "python3 lacks numpy/torch/transformers: $(tail -1 "$WORK/python.txt")"
  finish 1
fi
log "$(cat "$WORK/python.txt"); free in /dev/shm: $(df -h --output=avail /dev/shm 2>/dev/null | tail -1)"

# shellcheck disable=SC2206  # LENGTHS and MODES are word lists
args=(--prefill "$PREFILL" --lengths ${LENGTHS:-32768 131072} --modes ${MODES:-dense sparse}
  --layers "${LAYERS:-4}" --runs "${RUNS:-3}" --tau "${TAU:-0.5}" --seed "${SEED:-0}"
  --ours-timeout "${OURS_TIMEOUT:-150}" --out "$OUT/model_vs_hf.json" --work-dir "$WORK" --git-commit "$COMMIT")
[ -n "${TARGET_DENSITY:-}" ] && args+=(--target-density "$TARGET_DENSITY")
budget=$((BUDGET - SECONDS - 25))
[ "$budget" -lt 60 ] && budget=60

# SM clock, power and memory once a second while it runs: MFU depends on the sustained clock.
nvidia-smi --query-gpu=clocks.sm,power.draw,memory.used --format=csv,noheader,nounits -lms 1000 \
  >"$WORK/gpu_samples.csv" 2>/dev/null &
sampler=$!
timeout --kill-after=10 $((budget + 15)) "${PYTHON[@]}" "$ROOT/bench/gpu/model_vs_hf.py" "${args[@]}" \
  --budget-s "$budget" 2>&1 | tee "$WORK/model_vs_hf.log"
rc=${PIPESTATUS[0]}
kill "$sampler" 2>/dev/null
log "model_vs_hf.py: exit $rc (budget ${budget}s)"
sort -t, -k1 -n "$WORK/gpu_samples.csv" | awk -F', ' 'BEGIN {n = 0; m = 0}
  {if ($3 > m) m = $3} $2 > 300 {c[n++] = $1}
  END {printf "  GPU: %d samples over 300 W, SM clock median %s MHz; peak memory used %d MiB\n",
       n, n ? c[int(n / 2)] : "-", m}' | tee -a "$OUT/summary.txt"
sed -n '/^==== model_vs_hf ====/,$p' "$WORK/model_vs_hf.log" >>"$OUT/summary.txt"
[ -f "$OUT/model_vs_hf.json" ] || log "no model_vs_hf.json (see logs.tgz: work/model_vs_hf.log)"
finish "$rc"
