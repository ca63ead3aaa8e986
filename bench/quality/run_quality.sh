#!/usr/bin/env bash
# The committed quality sweep: quality_eval on 1 and 4 ranks over every synthetic workload
# (and any --qkv files given), two harder variants of the generator on 1 rank, then the table
# and plots. Writes into OUT (default bench/results/quality/):
#   quality_np1.json, quality_np4.json          the main sweep, 1 and 4 ranks
#   quality_diffuse_np1.json                    variant: a diffuse head per four
#   quality_c07_np1.json                        variant: concentration 0.7 (S=8)
#   table.md, summary.json, quality_*.png       from plot_quality.py
#   run.log                                     everything printed
# Usage: bench/quality/run_quality.sh [BUILD_DIR] [OUT_DIR] [-- extra quality_eval flags]
# e.g.   bench/quality/run_quality.sh build bench/results/quality -- --qkv /data/layer7.safetensors
# Takes about 10 minutes on 2 cores (L=8192, H=8, Hkv=2, D=64).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-bench/results/quality}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
extra=("$@")

bin=$build/bin/quality_eval
[ -x "$bin" ] || bin=$build/bench/quality/quality_eval
[ -x "$bin" ] || { echo "run_quality.sh: no quality_eval under $build (cmake --build $build --target quality_eval)" >&2; exit 2; }
mkdir -p "$out"
cores=$(nproc)  # before OMP_NUM_THREADS is set: nproc honours it
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_NUM_THREADS=1
mpirun=(mpirun --oversubscribe --allow-run-as-root)
curve=0.5,0.6,0.7,0.75,0.85,0.925,0.97,0.98,0.995,0.9995,0.9999  # the oracle's frontier, besides the taus
common=(--seq-len 8192 --heads 8 --kv-heads 2 --head-dim 64 --taus 0.8,0.9,0.95,0.99,0.999 --oracle-curve "$curve")

log="$out/run.log"
: > "$log"
run() {  # name ranks flags...
  local name=$1 ranks=$2
  shift 2
  local threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
  echo "== $name: ${mpirun[*]} -np $ranks $bin $* --threads $threads" | tee -a "$log"
  local start=$SECONDS
  "${mpirun[@]}" -np "$ranks" "$bin" "$@" --threads "$threads" --json "$out/$name.json" >> "$log" 2>&1
  echo "   $name: $(( SECONDS - start )) s" | tee -a "$log"
}

run quality_np1 1 "${common[@]}" "${extra[@]}"
run quality_np4 4 "${common[@]}" "${extra[@]}"
run quality_diffuse_np1 1 "${common[@]}" --diffuse-head
run quality_c07_np1 1 "${common[@]}" --concentration 0.7 --strides 8

/usr/bin/python3 bench/quality/plot_quality.py "$out" "$out/quality_np1.json" --compare "$out/quality_np4.json" \
  --variant "diffuse head=$out/quality_diffuse_np1.json" --variant "concentration 0.7=$out/quality_c07_np1.json" \
  2>&1 | tee -a "$log"
echo "run_quality.sh: wrote $out/table.md and $out/quality_*.png" | tee -a "$log"
