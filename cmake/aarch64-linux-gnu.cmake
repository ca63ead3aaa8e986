# Cross-compiling for aarch64 Linux on a Debian (amd64) host: Debian's g++-aarch64-linux-gnu,
# and the target's libraries (absl, GTest, OpenBLAS) from multiarch arm64 -dev packages under
# /usr/lib/aarch64-linux-gnu (launch/test-aarch64.sh installs both). Binaries run under
# qemu-aarch64, which CMake also uses to list the GoogleTest cases (gtest_discover_tests).
# Usage: cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#          -DPREFILL_KERNELS_ONLY=ON -DPREFILL_CUDA=OFF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Multiarch: the target's libraries live in the host's own /usr, under the triplet; the
# cross compiler's sysroot (/usr/aarch64-linux-gnu) holds libc and the GCC runtime.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# The libraries' arm64 loader and libc come from libc6:arm64 in /lib/aarch64-linux-gnu, so
# qemu needs no -L prefix.
find_program(PREFILL_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(PREFILL_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PREFILL_QEMU_AARCH64})
else()
  message(WARNING "qemu-aarch64 not found (Debian: qemu-user): tests can be neither listed nor run")
endif()
