#!/usr/bin/env bash
# `promtool check metrics` on the PrefillMetrics exposition (written by metrics_demo_server
# --print), and `promtool check rules` on every query of the Grafana dashboard, so a PromQL
# syntax error in a panel fails CI. promtool comes with Debian's prometheus package.
# Usage: promtool_check.sh METRICS_DEMO_SERVER DASHBOARD_JSON WORKDIR
set -euo pipefail
demo="$1" dashboard="$2" work="$3"
if ! command -v promtool >/dev/null; then
  echo "FAIL: promtool not found. Install Debian's prometheus package:" >&2
  echo "      apt-get install -y --no-install-recommends prometheus   (launch/setup-debian.sh does)" >&2
  exit 1
fi
mkdir -p "$work"
"$demo" --print >"$work/prefill_metrics.prom"
echo "promtool check metrics < $work/prefill_metrics.prom"
promtool check metrics <"$work/prefill_metrics.prom"

# Grafana variables become values PromQL accepts; each panel query becomes a recording rule.
/usr/bin/python3 - "$dashboard" "$work/dashboard_rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lines = ["groups:", "  - name: prefill_dashboard", "    rules:"]
n = 0
for p in d["panels"]:
    for t in p.get("targets", []):
        e = t["expr"].replace("$__rate_interval", "1m").replace("$job_id", ".*").replace("$model_name", ".*")
        n += 1
        lines.append(f"      - record: dashboard:query{n}")
        lines.append("        expr: " + json.dumps(e))
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print(f"{n} dashboard queries")
PY
promtool check rules "$work/dashboard_rules.yml"
