#!/usr/bin/env bash
# Issue 7 in one device call: the NCCL context-parallel path on every GPU of the machine.
#   1. correctness: N GPUs against 1 GPU on the same input (outputs within bf16 tolerance,
#      identical mask density), dense ring and sparse;
#   2. strong scaling of one attention layer (H=32, Hkv=8, D=128, bf16, causal, zigzag) at
#      the largest L that one GPU holds, 1 -> N GPUs, dense ring and sparse at density ~0.5:
#      time, efficiency, KV bytes on the wire (and the dense ring's), exchange time;
#   3. weak scaling: 128K tokens per GPU, up to 1M on 8 GPUs, GPU memory per rank;
#   4. results/*.json and a table (summary.md) for bench/README.md.
# Exits 1 when a correctness job failed, an N-GPU output differs from the 1-GPU one by more
# than 2e-2 (max abs; outputs are O(1): bf16 inputs with fp32 accumulation, where N ranks
# round P to bf16 per partial softmax, leave ~2^-9 relative; a wrong block moves O by O(1)),
# or a density differs from the 1-GPU mask's (same inputs, same estimator: identical masks).
#
#   cp_scaling.sh PREFILL OUT [small]
# `small` shrinks every length 16x (a dry run of the script, e.g. on one GPU). mpirun comes
# from PATH or, on a bare device image, from the bundle (OPAL_PREFIX/bin/orterun).
# NCCL_NVLS_ENABLE=0: NVLink SHARP multicast is off on the lent machines (device/KINDS.md).
set -uo pipefail
prefill=$1 out=$2 scale=${3:-full}
mkdir -p "$out/results"
export NCCL_NVLS_ENABLE=0
gpus=$(nvidia-smi -L | grep -c GPU)
mpirun=$(command -v mpirun || echo "${OPAL_PREFIX:-}/bin/orterun")
div=1; [ "$scale" = small ] && div=16
common=(--device cuda --heads 32 --kv-heads 8 --head-dim 128 --dtype bf16 --layout zigzag --block 128)
log() { echo "[cp_scaling] $*" | tee -a "$out/summary.log"; }

run() {  # NAME NP ARGS...: one job; its JSON in results/NAME.json
  local name=$1 np=$2
  shift 2
  timeout 300 "$mpirun" --allow-run-as-root --oversubscribe -np "$np" -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH \
    -x OPAL_PREFIX "$prefill" attention "${common[@]}" --json "$out/results/$name.json" "$@" \
    >"$out/results/$name.log" 2>&1
  log "$name: exit $?"
}

sizes=()
for n in 1 2 4 8; do [ "$n" -le "$gpus" ] && sizes+=("$n"); done
log "$gpus GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); sizes ${sizes[*]}"

# 1. correctness at 64K: every size against one GPU.
L=$((65536 / div))
for n in "${sizes[@]}"; do
  run check_dense_np$n "$n" --workload needle --seq-len $L --mode dense --out "$out/results/o_dense_np$n.safetensors"
  run check_sparse_np$n "$n" --workload needle --seq-len $L --mode sparse --tau 0.95 \
    --out "$out/results/o_sparse_np$n.safetensors"
done

# 2. strong scaling at the largest L one GPU holds (Q, K, V, O and the exchange buffers of
#    256K tokens at H=32, D=128 bf16 take ~10 GiB; dense 256K causal is ~1 s of attention).
L=$((262144 / div))
for n in "${sizes[@]}"; do
  run strong_dense_np$n "$n" --workload random --seq-len $L --mode dense
  run strong_sparse_np$n "$n" --workload random --seq-len $L --mode sparse --tau 0.4
done

# 3. weak scaling: 128K tokens per GPU.
for n in "${sizes[@]}"; do
  L=$((131072 * n / div))
  run weak_dense_np$n "$n" --workload random --seq-len $L --mode dense
  run weak_sparse_np$n "$n" --workload random --seq-len $L --mode sparse --tau 0.4
done

# 4. compare and tabulate.
python3 - "$out" "${sizes[@]}" <<'PY' | tee "$out/summary.md"
import json, os, struct, sys
import numpy as np
out, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
res = os.path.join(out, "results")

def load(name):
    p = os.path.join(res, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None

def tensor(path):  # the one f32 tensor of a safetensors file
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        meta = next(v for k, v in header.items() if k != "__metadata__")
        f.seek(8 + n + meta["data_offsets"][0])
        return np.frombuffer(f.read(meta["data_offsets"][1] - meta["data_offsets"][0]), np.float32)

def get(j, *keys):
    for k in keys:
        if j is None or k not in j:
            return None
        j = j[k]
    return j

TOLERANCE = 2e-2  # max abs, see the script's header
failures = []
print("## correctness (64K, needle): N GPUs vs 1 GPU\n\n| mode | GPUs | max abs diff vs 1 GPU | density | density on 1 GPU | verdict |\n|---|---|---|---|---|---|")
for mode in ("dense", "sparse"):
    ref_path = os.path.join(res, f"o_{mode}_np1.safetensors")
    for n in sizes:
        p = os.path.join(res, f"o_{mode}_np{n}.safetensors")
        diff = float(np.abs(tensor(p) - tensor(ref_path)).max()) if os.path.exists(p) and os.path.exists(ref_path) else None
        density, density1 = get(load(f"check_{mode}_np{n}"), "density"), get(load(f"check_{mode}_np1"), "density")
        problems = []
        if diff is None or density is None or density1 is None:
            problems.append("no output or report (the job failed: see its log)")
        else:
            if not diff <= TOLERANCE:  # NaN fails too
                problems.append(f"output differs by {diff:.3g} > {TOLERANCE}")
            if abs(density - density1) > 1e-12:
                problems.append(f"density {density} != {density1} on 1 GPU")
        failures += [f"{mode} on {n} GPUs: {p}" for p in problems]
        print(f"| {mode} | {n} | {diff} | {density} | {density1} | {'ok' if not problems else 'FAIL'} |")

for kind in ("strong", "weak"):
    print(f"\n## {kind} scaling\n\n| mode | GPUs | L | total s | efficiency | exchange s | KV bytes sent | dense ring bytes | density | GPU memory / rank |\n|---|---|---|---|---|---|---|---|---|---|")
    for mode in ("dense", "sparse"):
        base = load(f"{kind}_{mode}_np1")
        for n in sizes:
            j = load(f"{kind}_{mode}_np{n}")
            t, t1 = get(j, "total_seconds"), get(base, "total_seconds")
            eff = (t1 / (n * t) if kind == "strong" else t1 / t) if t and t1 else None
            print(f"| {mode} | {n} | {get(j, 'seq_len')} | {t} | {eff} | {get(j, 'exchange_seconds')} | "
                  f"{get(j, 'kv_bytes_sent_total')} | {get(j, 'kv_bytes_dense_ring')} | {get(j, 'density')} | "
                  f"{get(j, 'device_memory_used_bytes')} |")

for f in failures:
    print(f"FAIL: {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
status=${PIPESTATUS[0]}
rm -f "$out"/results/o_*.safetensors  # large; the diffs are in summary.md
[ "$status" -eq 0 ] || log "FAILED: an N-GPU output or mask differs from the 1-GPU one (see summary.md)"
exit "$status"
