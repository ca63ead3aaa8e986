#!/usr/bin/env bash
# Checks that every C++/CUDA source is formatted by .clang-format (clang-format-14, installed
# by setup-debian.sh); prints the files that are not and how to fix them. ctest runs it (label
# format). Usage: launch/check-format.sh [SOURCE_DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
formatter=$(command -v clang-format-14 || true)
if [ -z "$formatter" ]; then
  echo "check-format: clang-format-14 is not installed (apt-get install clang-format-14, or run launch/setup-debian.sh)" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh' '*.inc')
else
  mapfile -t files < <(find . -path ./build\* -prune -o -type f \( -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.inc' \) -print)
fi
bad=()
for f in "${files[@]}"; do
  "$formatter" --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not formatted by .clang-format:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "fix: clang-format-14 -i --style=file <files>" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
