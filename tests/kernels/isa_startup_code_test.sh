#!/bin/sh
# The files compiled for one ISA (*_avx512.cc, *_avx2.cc) must not run that ISA's
# instructions at program start: their static initialisers run on every CPU, before the
# run-time dispatch (kernels/cpu/cpu_isa.h) can choose. A namespace-scope vector constant
# once did, and every binary died with SIGILL on a CPU without AVX-512 (CI machines with it
# never noticed). This reads the initialisers' machine code in BINARY and fails on any ymm
# or zmm register.
#   isa_startup_code_test.sh BINARY
set -u
binary=$1
symbols=$(nm "$binary" | grep -oE '_GLOBAL__sub_I_[A-Za-z0-9_]*_(avx512|avx2)\.cc' | sort -u)
if [ -z "$symbols" ]; then
  echo "no static initialiser of an ISA file in $binary: nothing runs at start"
  exit 0
fi
fail=0
for s in $symbols; do
  n=$(objdump -d --no-show-raw-insn --disassemble="$s" "$binary" | grep -cE '%[yz]mm')
  echo "$s: $n vector register operands"
  [ "$n" -eq 0 ] || fail=1
done
exit $fail
