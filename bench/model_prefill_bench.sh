#!/usr/bin/env bash
# Tokens/s of whole-model prefill on CPU ranks, dense vs sparse: a random Llama-family model
# (4 layers, hidden 1024, 16 heads, 4 KV heads, intermediate 2816) at each length.
# Usage: bench/model_prefill_bench.sh OUT.json [LENGTHS...] (default 16384 32768)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu/model_prefill.json}
shift || true
lengths=("${@:-16384 32768}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
results=()
for L in ${lengths[@]}; do
  /usr/bin/python3 tests/runtime/tiny_model.py make "$work/m$L" --arch llama --seq-len "$L" --hidden 1024 \
    --inter 2816 --layers 4 --heads 16 --kv-heads 4 --no-reference
  for mode in dense sparse; do
    mpirun --oversubscribe --allow-run-as-root -np "${RANKS:-4}" build/bin/prefill model --model "$work/m$L" \
      --tokens "$work/m$L/tokens.npy" --mode "$mode" --json "$work/$mode$L.json" | sed -n 2,3p
    results+=("$work/$mode$L.json")
  done
done
/usr/bin/python3 - "$out" "${results[@]}" <<'PY'
import datetime, json, subprocess, sys
runs = [json.load(open(p)) for p in sys.argv[2:]]
keep = ("seq_len", "mode", "world_size", "prefill_seconds", "tokens_per_second", "density", "phase_seconds", "layer_density")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
result = {"benchmark": "model_prefill", "date": datetime.date.today().isoformat(),
          "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
          "device": f"cpu: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
          "model": "random llama: 4 layers, hidden 1024, 16 heads, 4 KV heads, intermediate 2816, vocab 300",
          "command": "bench/model_prefill_bench.sh", "runs": [{k: r[k] for k in keep} for r in runs]}
json.dump(result, open(sys.argv[1], "w"), indent=2)
for r in runs:
    print(f"L={r['seq_len']:6d} {r['mode']:6s} {r['tokens_per_second']:8.0f} tokens/s  density {r['density']:.3f}  phases {json.dumps({k: round(v, 2) for k, v in r['phase_seconds'].items()})}")
PY
