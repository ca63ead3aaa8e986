#!/usr/bin/env bash
# expect_nothing_written.sh DIR CODE PATTERN -- COMMAND...: COMMAND must fail with CODE and
# PATTERN, and leave DIR absent (a failed prefill writes no KV cache).
set -uo pipefail
dir=$1
shift
rm -rf "$dir"
"$(dirname "$0")/../launch/expect_failure.sh" "$@" || exit 1
if [ -e "$dir" ]; then echo "FAIL: $dir was written"; exit 1; fi
echo "ok: nothing written to $dir"
