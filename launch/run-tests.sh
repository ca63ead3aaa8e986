#!/usr/bin/env bash
# Builds (through setup-debian.sh, so a fresh clone works) and runs every test with ctest:
# kernel tests against fp64/numpy references, MPI tests under mpirun with 1, 2 and 4 ranks,
# CLI error tests; GPU tests (label gpu) skip with a message when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/setup-debian.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
