#!/usr/bin/env bash
# Issue 20's table: rr against rr+heavy (and the oracle, the antidiagonal baseline) on every
# synthetic workload, 1 and 4 ranks, S = 8, then the comparison at matched density
# (heavy_table.py). Writes into OUT (default bench/results/quality/heavy/).
# Usage: bench/quality/run_heavy_quality.sh [BUILD_DIR] [OUT_DIR]   (about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-bench/results/quality/heavy}
bin=$build/bin/quality_eval
[ -x "$bin" ] || { echo "run_heavy_quality.sh: no $bin (cmake --build $build --target quality_eval)" >&2; exit 2; }
mkdir -p "$out"
cores=$(nproc)
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_NUM_THREADS=1
for ranks in 1 4; do
  threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
  mpirun --oversubscribe --allow-run-as-root -np "$ranks" "$bin" --workloads needle,stripes,sinks,video,heavy,random \
    --seq-len 8192 --heads 8 --kv-heads 2 --head-dim 64 --strides 8 --taus 0.7,0.8,0.9,0.95,0.99,0.993,0.996,0.998,0.999 \
    --oracle-curve 0.5,0.6,0.75,0.85,0.925,0.97,0.98,0.995,0.9995,0.9999 --threads "$threads" \
    --json "$out/quality_heavy_np$ranks.json" > "$out/run_np$ranks.log" 2>&1
done
/usr/bin/python3 bench/quality/heavy_table.py "$out/quality_heavy_np1.json" "$out/quality_heavy_np4.json" > "$out/table.md"
cat "$out/table.md"
