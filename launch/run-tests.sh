#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run):
#  1. builds (through setup-debian.sh, so a fresh clone works) and runs every test with ctest:
#     kernels against fp64/numpy references, MPI tests under mpirun with 1, 2 and 4 ranks,
#     the CLI, the model, batch jobs, reliability, monitoring, Slurm; GPU tests (label gpu)
#     skip with a message when no GPU is present;
#  2. builds again with clang, AddressSanitizer + UndefinedBehaviorSanitizer and libFuzzer,
#     runs the unit tests under the sanitizers and each fuzzer for a bounded time;
#  3. cross-builds the CPU kernels for aarch64 and runs their tests under qemu (the NEON path
#     against fp64 and the portable one; launch/test-aarch64.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./launch/setup-debian.sh
jobs=$(nproc)
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 600

echo "run-tests: sanitizer and fuzz build (build-sanitize/)"
if [ ! -f build-sanitize/build.ninja ]; then
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
    -DCMAKE_CXX_COMPILER=clang++-14 -DPREFILL_CUDA=OFF -DPREFILL_BENCH=OFF -DPREFILL_FUZZ=ON \
    -DPREFILL_FUZZ_SECONDS="${PREFILL_FUZZ_SECONDS:-30}"
fi
cmake --build build-sanitize -j "$jobs"
# Unit tests only: MPI jobs under ASan mostly report OpenMPI's own allocations.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$jobs" -L "kernels|scheduler|parallel|monitoring|kvhandoff|fuzz" \
  -LE "mpi|slurm|e2e" --timeout 900

echo "run-tests: aarch64 cross build, kernel tests under qemu (build-aarch64/)"
./launch/test-aarch64.sh
