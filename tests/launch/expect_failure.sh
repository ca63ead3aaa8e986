#!/usr/bin/env bash
# expect_failure.sh CODE PATTERN -- COMMAND...: passes when COMMAND exits with CODE and its
# output holds PATTERN (a grep -E pattern) on one line.
set -uo pipefail
code=$1 pattern=$2
shift 3
out=$(timeout 60 "$@" 2>&1)
rc=$?
echo "$out"
if [ "$rc" -ne "$code" ]; then echo "FAIL: exit code $rc, expected $code"; exit 1; fi
if ! grep -qE -- "$pattern" <<<"$out"; then echo "FAIL: output lacks /$pattern/"; exit 1; fi
echo "ok: exit $rc with /$pattern/"
