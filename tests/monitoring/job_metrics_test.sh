#!/usr/bin/env bash
# A real `prefill run` on 2 ranks serves /metrics on base port + local rank: both ranks'
# request counters and phase times are there, and the exposition passes promtool.
# Usage: job_metrics_test.sh PREFILL PYTHON TINY_MODEL_PY MPIRUN...
set -euo pipefail
prefill=$1 py=$2 tiny=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" "$tiny" make "$work/model" --arch llama --seq-len 300
printf '{"id": "a", "tokens": "model/tokens.npy"}\n{"id": "b", "tokens": "model/tokens.npy", "mode": "dense"}\n' > "$work/jobs.jsonl"
# Two consecutive ports that are free now (a random pick could land on a port another test
# or an ephemeral connection holds, and the job would serve nothing).
port=$("$py" -c '
import random, socket
for _ in range(200):
    p = random.randrange(20000, 30000)
    try:
        for q in (p, p + 1):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass
')
"$@" -np 2 "$prefill" run --manifest "$work/jobs.jsonl" --model "$work/model" --out "$work/out" --block 64 \
  --min-tokens-per-rank 128 --metrics-port "$port" --metrics-linger 20 --progress off > "$work/log" 2>&1 &
job=$!
ok=0
for _ in $(seq 1 600); do  # up to 60 s: a loaded CI machine runs the two requests slowly
  if curl -sf "http://127.0.0.1:$((port + 1))/metrics" > "$work/m1" 2>/dev/null &&
     grep -q 'prefill_requests_total{.*rank="1",status="ok"} 2' "$work/m1"; then ok=1; break; fi
  kill -0 "$job" 2>/dev/null || break  # the job ended before it served: its log says why
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/metrics" > "$work/m0" || echo "FAIL: rank 0's /metrics did not answer"
kill "$job" 2>/dev/null || true  # no need to wait out the linger
wait "$job" || true
cat "$work/log"
[ "$ok" = 1 ] || { echo "FAIL: rank 1 never reported 2 ok requests"; cat "$work/m1" 2>/dev/null | head; exit 1; }
grep -q 'prefill_phase_seconds_total{.*phase="gemm",rank="0"}' "$work/m0" || { echo "FAIL: no phase times on rank 0"; exit 1; }
grep -q 'prefill_attention_density_count{.*rank="0"} 1' "$work/m0" || { echo "FAIL: density not observed once (one sparse request)"; exit 1; }
promtool check metrics < "$work/m0"
echo "ok: both ranks serve the job's metrics on ports $port and $((port + 1))"
