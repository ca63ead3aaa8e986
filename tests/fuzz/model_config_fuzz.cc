// Fuzzes config.json parsing: wrong types, missing fields, absurd values give statuses.
#include <string>

#include "runtime/model_config.h"
#include "runtime/rope.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<prefill::ModelConfig> c = prefill::ParseModelConfig(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (c.ok()) (void)prefill::RopeInverseFrequencies(*c);  // an accepted config must be usable
  return 0;
}
