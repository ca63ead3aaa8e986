#!/usr/bin/env bash
# KV handoff bandwidth on loopback: a 128K-token KV cache of the tiny test model
# (tests/runtime/tiny_model.py: 2 layers, 2 KV heads, head_dim 64; bf16: 128 MiB over 4 ranks)
# streamed over UCX by `prefill model --kv-target` to a kv-receiver on 127.0.0.1, against the
# plain file write of the same cache (`--kv-out`, fsync + rename) in the same run.
#
#   bench/kv_handoff_bench.sh [BUILD_DIR] [OUT_JSON]     (env: KV_BENCH_REPEATS=2, KV_BENCH_TOKENS=131072)
#     BUILD_DIR  with bin/prefill and bin/kv-receiver (default: build)
#     OUT_JSON   default: bench/results/cpu/kv_handoff.json
#
# Every configuration runs one 4-rank prefill (sparse, tau 0.02: the prefill itself takes ~30 s
# on 2 cores) and times each sink on every rank, slowest rank: from Begin to Commit (UCX: UCX
# initialisation, connection, every layer sent, the receiver's acknowledgement) and from the
# first layer to Commit ("after connecting"). GB/s is the cache's bytes over those seconds.
# The receiver's own figure (first Begin to acknowledgement) is recorded beside them. Settings per configuration: see CONFIGS below.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
OUT_JSON=${2:-$ROOT/bench/results/cpu/kv_handoff.json}
TOKENS=${KV_BENCH_TOKENS:-131072}
RANKS=4
PY=/usr/bin/python3
MPIRUN=(mpirun --oversubscribe --allow-run-as-root -np "$RANKS")
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_NUM_THREADS=1 UCX_WARN_UNUSED_ENV_VARS=n

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d /tmp/kv_handoff_bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$PY" "$ROOT/tests/runtime/tiny_model.py" make "$WORK/model" --arch llama --seq-len 64 > /dev/null
"$PY" -c "import numpy as np; np.save('$WORK/tokens.npy', np.random.default_rng(0).integers(0, 300, size=$TOKENS).astype(np.int32))"

# name | environment for both sides | receiver mode
#   tcp_lo:                 loopback TCP only (what the tests use); the receiver checks CRCs
#   tcp_lo_receiver_writes: the same, the receiver also writes the --kv-out layout (fsync)
#   default_tls_shm_am:     UCX's own choice with shared memory allowed under peer error
#                           handling: active messages over sysv shm, rendezvous over TCP
CONFIGS=(
  "tcp_lo|UCX_TLS=tcp UCX_NET_DEVICES=lo|--verify-only"
  "tcp_lo_receiver_writes|UCX_TLS=tcp UCX_NET_DEVICES=lo|--out"
  "default_tls_shm_am|UCX_MM_ERROR_HANDLING=y|--verify-only"
)
REPEATS=${KV_BENCH_REPEATS:-2}

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
for round in $(seq "$REPEATS"); do
for config in "${CONFIGS[@]}"; do
  IFS='|' read -r name envs mode <<< "$config"
  echo "== $name ($envs, receiver $mode)"
  rm -rf "$WORK/files" "$WORK/received" "$WORK/port"
  receiver_args=(--listen 127.0.0.1:0 --port-file "$WORK/port" --exit-after 1)
  if [ "$mode" = "--out" ]; then receiver_args+=(--out "$WORK/received"); else receiver_args+=(--verify-only); fi
  env $envs "$BUILD/bin/kv-receiver" "${receiver_args[@]}" > "$WORK/receiver.log" 2>&1 &
  receiver=$!
  for _ in $(seq 200); do [ -s "$WORK/port" ] && break; sleep 0.05; done
  port=$(cat "$WORK/port")
  env $envs "${MPIRUN[@]}" "$BUILD/bin/prefill" model --model "$WORK/model" --tokens "$WORK/tokens.npy" \
    --mode sparse --tau 0.02 --threads 1 --kv-dtype bf16 --kv-out "$WORK/files/kv/bench" \
    --kv-target "127.0.0.1:$port" --kv-timeout 120 --json "$WORK/report.json" > "$WORK/prefill.log" 2>&1 ||
    { cat "$WORK/prefill.log" "$WORK/receiver.log"; exit 1; }
  wait "$receiver"
  cat "$WORK/receiver.log"
  "$PY" - "$name" "$envs" "$mode" "$WORK/report.json" "$WORK/receiver.log" >> "$RESULTS" <<'EOF'
import json, re, sys
name, envs, mode, report, log = sys.argv[1:]
r = json.load(open(report))
sinks = {h["sink"]: h for h in r["kv_handoff"]}
m = re.search(r"acknowledged: .*?([0-9.]+) MiB in ([0-9.]+) s", open(log).read())
print(json.dumps({"config": name, "env": envs, "receiver": "writes files" if mode == "--out" else "verifies checksums",
                  "tokens": r["seq_len"], "ranks": r["world_size"], "bytes": sinks["ucx"]["bytes"],
                  "file_write": {k: sinks["file"][k] for k in ("seconds", "gb_per_second")},
                  "ucx_handoff": {k: sinks["ucx"][k] for k in ("seconds", "gb_per_second", "transfer_seconds",
                                                               "transfer_gb_per_second")},
                  "receiver_seconds": float(m.group(2)),
                  "receiver_gb_per_second": float(m.group(1)) * 2**20 / float(m.group(2)) / 1e9}))
EOF
  tail -1 "$RESULTS"
done
done

mkdir -p "$(dirname "$OUT_JSON")"
"$PY" - "$RESULTS" "$OUT_JSON" "$0 $*" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import datetime, json, os, platform, socket, subprocess, sys
results = [json.loads(l) for l in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
ucx = subprocess.run(["pkg-config", "--modversion", "ucx"], capture_output=True, text=True).stdout.strip()
doc = {"benchmark": "kv_handoff", "what": "128K-token KV cache of the tiny model (2 layers, 2 KV heads, head_dim 64, bf16), "
       "4 prefill ranks -> one kv-receiver on 127.0.0.1 over UCX, vs the --kv-out file write (fsync + rename) of the same run",
       "machine": {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                   "ucx": ucx},
       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "command": sys.argv[3].strip(),
       "note": "the 4 prefill ranks, the receiver and any other jobs share the machine's cores: "
               "see loadavg (1, 5, 15 min) before and after",
       "loadavg_before": sys.argv[4], "loadavg_after": sys.argv[5],
       "results": results}
by = {}
for r in results:
    by.setdefault(r["config"], []).append(r)
span = lambda xs: [round(min(xs), 3), round(max(xs), 3)]
doc["range"] = {c: {"ucx_gb_per_second": span([r["ucx_handoff"]["gb_per_second"] for r in rs]),
                    "ucx_transfer_gb_per_second": span([r["ucx_handoff"]["transfer_gb_per_second"] for r in rs]),
                    "receiver_gb_per_second": span([r["receiver_gb_per_second"] for r in rs]),
                    "file_write_gb_per_second": span([r["file_write"]["gb_per_second"] for r in rs]), "runs": len(rs)}
                for c, rs in by.items()}
json.dump(doc, open(sys.argv[2], "w"), indent=2)
print(f"wrote {sys.argv[2]}; [min, max] GB/s per configuration: {json.dumps(doc['range'])}")
for r in results:
    u = r["ucx_handoff"]
    print(f"  {r['config']:<24} UCX {u['gb_per_second']:.2f} GB/s ({u['seconds']:.3f} s; after connecting "
          f"{u['transfer_gb_per_second']:.2f} GB/s, {u['transfer_seconds']:.3f} s; receiver {r['receiver_gb_per_second']:.2f} GB/s), "
          f"file write {r['file_write']['gb_per_second']:.2f} GB/s "
          f"({r['file_write']['seconds']:.3f} s), {r['bytes'] / 2**20:.0f} MiB")
EOF
