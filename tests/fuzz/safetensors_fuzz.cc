// Fuzzes the safetensors header parser and row reads: any bytes must give a status, never a
// crash or an out-of-bounds read (ASan watches).
#include <vector>

#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                               reinterpret_cast<const std::byte*>(data) + size);
  absl::StatusOr<std::unique_ptr<prefill::SafetensorsFile>> file =
      prefill::SafetensorsFile::FromBytes("fuzz", std::move(bytes));
  if (!file.ok()) return 0;
  for (const auto& [name, entry] : (*file)->entries()) {
    if (entry.shape.empty()) continue;
    const int64_t rows = std::min<int64_t>(entry.shape[0], 2);
    (void)(*file)->ReadRows(name, 0, rows);
    (void)(*file)->ReadRows(name, rows, rows + 1);  // past the end when rows == shape[0]
  }
  return 0;
}
