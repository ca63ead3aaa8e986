#!/usr/bin/env bash
# The 4-rank context-parallel job, dense ring vs sparse, same size, same run; writes one
# JSON with both reports and the speedup.
# Usage: bench/cp_dense_vs_sparse.sh OUT.json [extra `prefill attention` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu/cp_dense_vs_sparse.json}
shift || true
ranks=${RANKS:-4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(--workload needle --seq-len "${SEQ_LEN:-32768}" --heads 8 --kv-heads 2 --head-dim 64 --causal --layout zigzag "$@")
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
for mode in dense sparse; do
  mpirun --oversubscribe --allow-run-as-root -np "$ranks" build/bin/prefill attention "${args[@]}" \
    --mode "$mode" --json "$tmp/$mode.json"
done
mkdir -p "$(dirname "$out")"
/usr/bin/python3 - "$tmp/dense.json" "$tmp/sparse.json" "$out" "$*" <<'PY'
import datetime, json, platform, subprocess, sys
dense, sparse = (json.load(open(p)) for p in sys.argv[1:3])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {
    "benchmark": "cp_dense_vs_sparse", "date": datetime.date.today().isoformat(), "commit": commit,
    "device": f"cpu: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
    "command": "bench/cp_dense_vs_sparse.sh " + sys.argv[4],
    "dense": dense, "sparse": sparse,
    "speedup_total": dense["total_seconds"] / sparse["total_seconds"],
    "density": sparse["density"],
    "kv_bytes_ratio": sparse["kv_bytes_sent_total"] / sparse["kv_bytes_dense_ring"],
}
json.dump(result, open(sys.argv[3], "w"), indent=2)
print(f"dense {dense['total_seconds']:.3f} s, sparse {sparse['total_seconds']:.3f} s "
      f"(density {sparse['density']:.3f}): {result['speedup_total']:.2f}x; "
      f"KV bytes {100 * result['kv_bytes_ratio']:.1f}% of the ring's -> {sys.argv[3]}")
PY
