#!/usr/bin/env bash
# Cross-builds the CPU kernels and their tests for aarch64 in build-aarch64/ and runs the tests
# under qemu-aarch64 (user-mode emulation): the NEON flash attention against the fp64
# reference and the portable path, the round-robin estimator's generic kernel (NEON there)
# against numpy, key pooling and the LSE merge. Tests that call /usr/bin/python3 spawn the
# host's python natively, so the numpy checks run too.
# Installs what is missing (apt-get, Debian 12): the cross compiler, qemu-user, and the target's
# absl, GTest, OpenBLAS and libgomp as multiarch arm64 packages (beside the amd64 ones, which
# they leave alone). Idempotent: a second run installs nothing and rebuilds only changes.
# Usage: launch/test-aarch64.sh [--build-only]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
trap 'echo "test-aarch64: $((SECONDS - start)) s"' EXIT

run_tests=1
if [ "${1:-}" = "--build-only" ]; then
  run_tests=0
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "test-aarch64: adding the arm64 architecture"
  $sudo dpkg --add-architecture arm64
  update=1
fi
packages=(
  g++-aarch64-linux-gnu qemu-user
  libabsl-dev:arm64 libgtest-dev:arm64 libopenblas-dev:arm64 libgomp1:arm64
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-aarch64: installing ${missing[*]}"
  update=1
fi
if ((update)); then
  $sudo apt-get update -q
fi
if ((${#missing[@]})); then
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -f build-aarch64/build.ninja ]; then
  cmake -S . -B build-aarch64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DPREFILL_KERNELS_ONLY=ON \
    -DPREFILL_CUDA=OFF -DPREFILL_BENCH=OFF
fi
jobs=$(nproc)
cmake --build build-aarch64 -j "$jobs"
if ((run_tests)); then
  # CMAKE_CROSSCOMPILING_EMULATOR (the toolchain file) puts qemu-aarch64 before each test.
  ctest --test-dir build-aarch64 --output-on-failure -j "$jobs" --timeout 300
fi
