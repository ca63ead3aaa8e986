#!/usr/bin/env bash
# The CPU kernels once per ISA variant this CPU runs, and the tables of bench/README.md:
#   bench/cpu/isa_tables.sh [OUT_DIR] [BUILD_DIR]
# writes OUT_DIR/attention_kernel_<isa>.json and OUT_DIR/mask_estimation_<isa>.json (Google
# Benchmark JSON; `cpu_isa` in the context), then prints one markdown table per ISA (GFLOP/s
# and % of that ISA's measured FMA peak on computed blocks) and the estimator's time per ISA.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench/results/cpu}
bin=${2:-build}/bin
mkdir -p "$out"
isas=()
for isa in avx512 avx2 neon portable; do
  if PREFILL_CPU_ISA=$isa "$bin/mask_estimation_benchmark" --benchmark_filter=none >/dev/null 2>&1; then
    isas+=("$isa")
  fi
done
echo "isa_tables: variants this CPU runs: ${isas[*]}" >&2
for isa in "${isas[@]}"; do
  PREFILL_CPU_ISA=$isa "$bin/attention_kernel_benchmark" --benchmark_min_time=${MIN_TIME:-0.2} \
    --benchmark_out="$out/attention_kernel_$isa.json" --benchmark_out_format=json >/dev/null
  PREFILL_CPU_ISA=$isa "$bin/mask_estimation_benchmark" --benchmark_min_time=${MIN_TIME:-0.2} \
    --benchmark_out="$out/mask_estimation_$isa.json" --benchmark_out_format=json >/dev/null
done
/usr/bin/python3 - "$out" "${isas[@]}" <<'PY'
import json, re, sys
out, isas = sys.argv[1], sys.argv[2:]
def load(name):
    return json.load(open(f"{out}/{name}.json"))
def args(name):
    return dict(re.findall(r"(\w+):(\d+)", name))
for isa in isas:
    j = load(f"attention_kernel_{isa}")
    peak = [b for b in j["benchmarks"] if b["name"].startswith("BM_FmaPeak/threads:0")]
    print(f"\n**{isa}** (attention_kernel_{isa}.json; FMA peak {peak[0]['GFLOP/s']:.0f} GFLOP/s on all threads)\n")
    print("| density | D | dtype | non-causal GFLOP/s (% peak) | causal GFLOP/s (% peak) |")
    print("|---|---|---|---|---|")
    rows = {}
    for b in j["benchmarks"]:
        if not b["name"].startswith("BM_BlockSparseAttention"): continue
        a = args(b["name"])
        key = (int(a["bf16"]), int(a["head_dim"]), -int(a["density_pct"]))
        rows.setdefault(key, {})[int(a["causal"])] = f"{b['GFLOP/s']:.0f} ({b['pct_of_peak']:.0f}%)"
    for (bf16, d, dens), c in sorted(rows.items()):
        print(f"| {-dens/100:g} | {d} | {'bf16' if bf16 else 'f32'} | {c.get(0,'')} | {c.get(1,'')} |")
print("\n**Round-robin estimation** (mask_estimation_<isa>.json; L=32768, H=8, Hkv=2, B=128, S=8; ms)\n")
print("| D | causal | " + " | ".join(isas) + " |")
print("|---|---|" + "---|" * len(isas))
est = {isa: {tuple(args(b["name"]).values()): b for b in load(f"mask_estimation_{isa}")["benchmarks"]} for isa in isas}
for key in est[isas[0]]:
    cells = [f"{est[i][key]['real_time']:.0f} ({est[i][key]['GFLOP/s']:.0f} GFLOP/s)" for i in isas]
    print(f"| {key[0]} | {'yes' if key[1] == '1' else 'no'} | " + " | ".join(cells) + " |")
PY
