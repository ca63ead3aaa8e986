// The libFuzzer entry point every fuzz target defines. Built with clang and -fsanitize=fuzzer
// (PREFILL_FUZZ=ON) it is a fuzzer; otherwise fuzz_replay_main.cc runs the committed corpus
// and regressions through it as an ordinary test.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
