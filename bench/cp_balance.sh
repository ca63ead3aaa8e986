#!/usr/bin/env bash
# Sparse work balancing (issue 17): per (ranks, L, workload), `prefill attention` sparse with
# --balance auto, sparse with --balance off and the dense ring, in the same run; writes one
# JSON with the imbalance ratios (selected and computed blocks, attention time: max / mean
# over ranks), end-to-end seconds (median of REPEAT runs), KV bytes and balance bytes, and
# the issue's targets checked per case.
# Usage: bench/cp_balance.sh OUT.json [extra `prefill attention` flags]
# Knobs: RANKS ("4 8"), LENGTHS ("32768 65536"), WORKLOADS ("needle stripes video"),
# REPEAT (3), THREADS (1 per rank), VARIANTS ("auto off dense": dense may be left out), PREFILL
# (build/bin/prefill), MPIRUN (mpirun), PYTHON (/usr/bin/python3).
# Timing note: ranks oversubscribed on fewer cores share them, so seconds are noisy and a
# rank's idle wait is another rank's compute; the computed-block imbalance is the primary
# figure there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu/cp_balance.json}
shift || true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_NUM_THREADS=1
repeat=${REPEAT:-3}
for ranks in ${RANKS:-4 8}; do
  for len in ${LENGTHS:-32768 65536}; do
    for workload in ${WORKLOADS:-needle stripes video}; do
      for variant in ${VARIANTS:-auto off dense}; do
        mode=sparse
        flags=(--balance "$variant")
        if [ "$variant" = dense ]; then mode=dense; flags=(); fi
        for i in $(seq 1 "$repeat"); do
          ${MPIRUN:-mpirun} --oversubscribe --allow-run-as-root -np "$ranks" "${PREFILL:-build/bin/prefill}" attention \
            --workload "$workload" --seq-len "$len" --heads 8 --kv-heads 2 --head-dim 64 --causal \
            --layout zigzag --threads "${THREADS:-1}" --mode "$mode" "${flags[@]}" "$@" \
            --json "$tmp/${ranks}_${len}_${workload}_${variant}_$i.json" > /dev/null
        done
      done
    done
  done
done
mkdir -p "$(dirname "$out")"
"${PYTHON:-/usr/bin/python3}" - "$tmp" "$out" "$repeat" "$*" <<'PY'
import datetime, glob, json, os, statistics, subprocess, sys
tmp, out, repeat, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = {}
for path in sorted(glob.glob(os.path.join(tmp, "*.json"))):
    ranks, length, workload, variant, _ = os.path.basename(path)[:-5].split("_")
    runs.setdefault((int(ranks), int(length), workload), {}).setdefault(variant, []).append(json.load(open(path)))

def summary(reports):
    r = reports[0]  # counts and bytes are alike over repeats; seconds take the median
    return {
        "total_seconds": statistics.median(x["total_seconds"] for x in reports),
        "attention_seconds": statistics.median(x["attention_seconds"] for x in reports),
        "total_seconds_runs": [x["total_seconds"] for x in reports],
        "selected_blocks_imbalance": r["selected_blocks_imbalance"],
        "computed_blocks_imbalance": r.get("computed_blocks_imbalance", 1.0),
        "attention_seconds_imbalance": statistics.median(x["attention_seconds_imbalance"] for x in reports),
        "kv_bytes_sent_total": r["kv_bytes_sent_total"],
        "balance_bytes_sent_total": r.get("balance_bytes_sent_total", 0),
        "bytes_sent_total": r.get("bytes_sent_total", r["kv_bytes_sent_total"]),
        "balance_moves": r.get("balance_moves", 0),
        "density": r["density"],
        "ranks_selected_blocks": [x["selected_blocks"] for x in r["ranks"]],
        "ranks_computed_blocks": [x.get("computed_blocks", x["selected_blocks"]) for x in r["ranks"]],
    }

cases = []
for (ranks, length, workload), v in sorted(runs.items()):
    auto, off = summary(v["auto"]), summary(v["off"])
    dense = summary(v["dense"]) if "dense" in v else None
    case = {"ranks": ranks, "seq_len": length, "workload": workload, "balanced": auto, "unbalanced": off, "dense_ring": dense,
            "speedup_vs_unbalanced": off["total_seconds"] / auto["total_seconds"],
            "speedup_vs_dense_ring": dense["total_seconds"] / auto["total_seconds"] if dense else None,
            "kv_bytes_vs_unbalanced": auto["kv_bytes_sent_total"] / max(off["kv_bytes_sent_total"], 1),
            "bytes_vs_unbalanced": auto["bytes_sent_total"] / max(off["bytes_sent_total"], 1)}
    case["targets"] = {"computed_blocks_imbalance<=1.15": auto["computed_blocks_imbalance"] <= 1.15,
                       "kv_bytes<=1.1x_unbalanced": case["kv_bytes_vs_unbalanced"] <= 1.1}
    if workload == "needle" and ranks == 4:
        case["targets"]["speedup_vs_unbalanced>=1.3"] = case["speedup_vs_unbalanced"] >= 1.3
    cases.append(case)
    print(f"{ranks} ranks L={length} {workload:8s} imbalance selected {auto['selected_blocks_imbalance']:.2f} -> computed "
          f"{auto['computed_blocks_imbalance']:.2f}; s: balanced {auto['total_seconds']:.3f}, unbalanced {off['total_seconds']:.3f} "
          f"({case['speedup_vs_unbalanced']:.2f}x), dense ring {dense['total_seconds'] if dense else float('nan'):.3f}; KV MiB {auto['kv_bytes_sent_total']/2**20:.1f} "
          f"vs {off['kv_bytes_sent_total']/2**20:.1f} (+{auto['balance_bytes_sent_total']/2**20:.1f} Q/partials)")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {"benchmark": "cp_balance", "date": datetime.date.today().isoformat(), "commit": commit,
          "device": f"cpu: {cpu}, {os.cpu_count()} cores",  # not nproc: it obeys OMP_NUM_THREADS
          "command": " ".join(f"{k}={os.environ[k]}" for k in ("RANKS", "LENGTHS", "WORKLOADS", "REPEAT", "THREADS", "VARIANTS") if k in os.environ)
                     + " bench/cp_balance.sh " + out + (" " + extra if extra else ""),
          "repeat": repeat,
          "note": "seconds are medians over `repeat` runs; with more ranks than cores they are noisy and the "
                  "computed-block imbalance is the primary figure",
          "cases": cases}
json.dump(result, open(out, "w"), indent=2)
print(f"-> {out}")
PY
