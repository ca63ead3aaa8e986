// CRC32C (Castagnoli): the checksum of the KV handoff's headers and payloads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace prefill::kvwire {

// CRC32C of `n` bytes, continuing from `crc` (0 to start). Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace prefill::kvwire
