#!/usr/bin/env bash
# Sets up a Debian 12 machine for prefill and builds it in build/: installs the packages
# (apt-get, only what is missing), configures with CMake (CUDA backend on when nvcc is
# found) and builds. Idempotent: a second run installs nothing and rebuilds only changes.
# Usage: launch/setup-debian.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config
  openmpi-bin libopenmpi-dev libucx-dev libpmix-dev
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcivetweb-dev civetweb nlohmann-json3-dev libcli11-dev libopenblas-dev
  python3-numpy python3-matplotlib
  clang-14 libclang-rt-14-dev libomp-14-dev clang-format-14
  prometheus curl
  slurm-wlm munge
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cuda_args=()
if [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" "$@"
elif (($#)); then
  cmake -S . -B build "$@"
fi
jobs=$(nproc)
cmake --build build -j "$jobs"
echo "setup: built build/bin/prefill"
