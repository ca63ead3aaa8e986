#!/usr/bin/env bash
# End to end with a real Prometheus (Debian's 2.42): metrics_demo_server serves
# PrefillMetrics on a free port; write_file_sd.sh writes its target; Prometheus scrapes it
# every second through file_sd; the test waits (bounded) until the HTTP API returns the
# demo's prompt token count with the ranks' own labels and up == 1, then stops both.
# Needs: prometheus, curl (Debian packages prometheus and curl), python3.
# Usage: prometheus_scrape_test.sh METRICS_DEMO_SERVER WRITE_FILE_SD_SH
set -euo pipefail
demo="$1" write_sd="$2"
deadline_s=20  # the discovery manager hands targets over every 5 s; data comes at ~5-7 s
for tool in prometheus curl /usr/bin/python3; do
  command -v "$tool" >/dev/null || {
    echo "FAIL: $tool not found: apt-get install -y --no-install-recommends prometheus curl python3" >&2
    exit 1
  }
done

work="$(mktemp -d)"
demo_pid="" prom_pid=""
cleanup() {
  for pid in $prom_pid $demo_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $prom_pid $demo_pid; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  [ -f "$work/prometheus.log" ] && { echo "--- prometheus log (tail)" >&2; tail -20 "$work/prometheus.log" >&2; }
  exit 1
}
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# 1. The demo process, on a port the kernel picks.
"$demo" --port 0 --port-file "$work/demo.port" --seconds 120 >"$work/demo.log" 2>&1 &
demo_pid=$!
for _ in $(seq 50); do [ -s "$work/demo.port" ] && break; sleep 0.1; done
[ -s "$work/demo.port" ] || fail "metrics_demo_server did not start: $(cat "$work/demo.log")"
demo_port="$(cat "$work/demo.port")"

# 2. Its file_sd target, and a config scraping every second.
mkdir "$work/sd"
"$write_sd" --base-port "$demo_port" --out "$work/sd/prefill.json" --hosts 127.0.0.1 --ranks-per-host 1 \
  --job-id e2e >/dev/null
cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prefill
    honor_labels: true
    file_sd_configs:
      - files: ['$work/sd/*.json']
        refresh_interval: 1s
YML

# 3. Prometheus on a free port (retried if another process takes it first).
started=0
for attempt in 1 2 3; do
  prom_port="$(free_port)"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && { started=1; break; }
    kill -0 "$prom_pid" 2>/dev/null || break
    sleep 0.1
  done
  ((started)) && break
  kill "$prom_pid" 2>/dev/null || true
  wait "$prom_pid" 2>/dev/null || true
  prom_pid=""
done
((started)) || fail "prometheus did not become ready"

# 4. Poll the query API until the scraped values are there.
query() {  # prints "value labels-json" of the first result, or nothing
  curl -s -G "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    /usr/bin/python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
except Exception:
    sys.exit(0)
if r:
    print(r[0]["value"][1], json.dumps(r[0]["metric"], sort_keys=True))'
}
start=$SECONDS
tokens="" up=""
while ((SECONDS - start < deadline_s)); do
  tokens="$(query prefill_prompt_tokens_total)"
  up="$(query 'up{job="prefill"}')"
  [[ "$tokens" == 13312\ * && "$up" == 1\ * ]] && break
  kill -0 "$demo_pid" 2>/dev/null || fail "metrics_demo_server exited"
  sleep 0.5
done
[[ "$tokens" == 13312\ * ]] || fail "prefill_prompt_tokens_total is '$tokens' after ${deadline_s}s, expected 13312"
[[ "$up" == 1\ * ]] || fail "up is '$up', expected 1"
echo "prefill_prompt_tokens_total = $tokens   (after $((SECONDS - start)) s)"
echo "up = $up"

# The ranks' own labels survive (honor_labels): no exported_* copies.
for label in '"rank": "0"' '"local_rank": "0"' '"model_name": "demo-model"' '"job": "prefill"'; do
  [[ "$tokens" == *"$label"* ]] || fail "label $label missing: $tokens"
done
[[ "$tokens" != *exported_* ]] || fail "labels were renamed: $tokens"
failed="$(query 'prefill_requests_total{status="invalid_argument"}')"
[[ "$failed" == 1\ * ]] || fail "prefill_requests_total{status=\"invalid_argument\"} is '$failed'"
p50="$(query 'histogram_quantile(0.5, sum by (le) (prefill_request_prefill_time_seconds_bucket))')"
[ -n "$p50" ] || fail "no histogram_quantile over the prefill time buckets"
echo "histogram_quantile(0.5, prefill time) = ${p50%% *} s"
echo "PASS"
