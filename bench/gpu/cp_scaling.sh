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
#   cp_scaling.sh PREFILL OUT [small|one-gpu]
# `small` shrinks every length 16x (a dry run of the script, e.g. on one GPU). `one-gpu` is
# issue 19's check on a one-GPU machine: 1, 2 and 4 ranks share the GPU (--comm host-staged),
# correctness only (4K tokens, both layouts), no scaling. mpirun comes from PATH or, on a bare
# device image, from the bundle (OPAL_PREFIX/bin/orterun).
# DEVICE=cpu dry-runs the script itself on CPU ranks; PYTHON: an interpreter with numpy.
# NCCL_NVLS_ENABLE=0: NVLink SHARP multicast is off on the lent machines (device/KINDS.md).
set -uo pipefail
prefill=$1 out=$2 scale=${3:-full}
mkdir -p "$out/results"
export NCCL_NVLS_ENABLE=0
gpus=$(nvidia-smi -L 2>/dev/null | grep -c GPU)
mpirun=$(command -v mpirun || echo "${OPAL_PREFIX:-}/bin/orterun")
div=1; [ "$scale" != full ] && div=16
common=(--device "${DEVICE:-cuda}" --heads 32 --kv-heads 8 --head-dim 128 --dtype bf16 --block 128)
layouts="zigzag"
if [ "$scale" = one-gpu ]; then
  common+=(--comm host-staged)
  layouts="zigzag contiguous"
fi
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
[ "$scale" = one-gpu ] && sizes=(1 2 4)
log "$gpus GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); sizes ${sizes[*]}"

# 1. correctness at 64K: every size against one GPU.
L=$((65536 / div))
for layout in $layouts; do
  for n in "${sizes[@]}"; do
    run check_dense_${layout}_np$n "$n" --workload needle --seq-len $L --layout $layout --mode dense \
      --out "$out/results/o_dense_${layout}_np$n.safetensors"
    run check_sparse_${layout}_np$n "$n" --workload needle --seq-len $L --layout $layout --mode sparse --tau 0.95 \
      --out "$out/results/o_sparse_${layout}_np$n.safetensors"
  done
done

# 2.-3. on GPUs of their own only (one-gpu: ranks share one, nothing to scale).
[ "$scale" = one-gpu ] && skip_scaling=1 || skip_scaling=0
# 2. strong scaling at the largest L one GPU holds (Q, K, V, O and the exchange buffers of
#    256K tokens at H=32, D=128 bf16 take ~10 GiB; dense 256K causal is ~1 s of attention).
L=$((262144 / div))
for n in "${sizes[@]}"; do
  [ $skip_scaling = 1 ] && break
  run strong_dense_np$n "$n" --workload random --seq-len $L --layout zigzag --mode dense
  run strong_sparse_np$n "$n" --workload random --seq-len $L --layout zigzag --mode sparse --tau 0.4
done

# 3. weak scaling: 128K tokens per GPU.
for n in "${sizes[@]}"; do
  [ $skip_scaling = 1 ] && break
  L=$((131072 * n / div))
  run weak_dense_np$n "$n" --workload random --seq-len $L --layout zigzag --mode dense
  run weak_sparse_np$n "$n" --workload random --seq-len $L --layout zigzag --mode sparse --tau 0.4
done

# 4. compare and tabulate.
LAYOUTS="$layouts" SKIP_SCALING=$skip_scaling "${PYTHON:-python3}" - "$out" "${sizes[@]}" <<'PY' | tee "$out/summary.md"
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
print("## correctness (needle): N ranks vs 1 rank\n\n| mode | layout | ranks | max abs diff vs 1 rank | density | density on 1 rank | transport | exchange s | exposed s | verdict |\n|---|---|---|---|---|---|---|---|---|---|")
for mode, layout in [(m, l) for m in ("dense", "sparse") for l in os.environ["LAYOUTS"].split()]:
    case = f"{mode}_{layout}"
    ref_path = os.path.join(res, f"o_{case}_np1.safetensors")
    for n in sizes:
        p = os.path.join(res, f"o_{case}_np{n}.safetensors")
        diff = float(np.abs(tensor(p) - tensor(ref_path)).max()) if os.path.exists(p) and os.path.exists(ref_path) else None
        report = load(f"check_{case}_np{n}")
        density, density1 = get(report, "density"), get(load(f"check_{case}_np1"), "density")
        problems = []
        if diff is None or density is None or density1 is None:
            problems.append("no output or report (the job failed: see its log)")
        else:
            if not diff <= TOLERANCE:  # NaN fails too
                problems.append(f"output differs by {diff:.3g} > {TOLERANCE}")
            if abs(density - density1) > 1e-12:
                problems.append(f"density {density} != {density1} on 1 GPU")
        failures += [f"{mode} ({layout}) on {n} ranks: {p}" for p in problems]
        print(f"| {mode} | {layout} | {n} | {diff} | {density} | {density1} | {get(report, 'transport')} | "
              f"{get(report, 'exchange_seconds')} | {get(report, 'exchange_exposed_seconds')} | "
              f"{'ok' if not problems else 'FAIL'} |")

for kind in ("strong", "weak") if os.environ["SKIP_SCALING"] == "0" else ():
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
[ "$status" -eq 0 ] || log "FAILED: an N-rank output or mask differs from the 1-rank one (see summary.md)"
exit "$status"
