// Fuzzes one manifest line.
#include <string>

#include "scheduler/manifest.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)prefill::ParseManifestLine(std::string(reinterpret_cast<const char*>(data), size), 1);
  return 0;
}
