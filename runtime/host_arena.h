// HostArena: one anonymous mapping that holds a request's KV cache on the host while the
// layers produce it, asking the kernel for transparent huge pages and faulting the whole range
// in with one call. Fresh 4 KiB pages faulted one at a time by a copy cost ~100 ms per
// 128 MiB on the H100 machine (a layer's fp32 K and V at 32K tokens): five times the layer's
// GPU work. Where the kernel has neither (no THP, Linux < 5.14) it degrades to a plain
// mapping, faulted lazily as before.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

#include "absl/status/statusor.h"

namespace prefill {

class HostArena {
 public:
  // `floats` zero-initialised floats. ResourceExhausted when the mapping fails.
  static absl::StatusOr<std::shared_ptr<HostArena>> Create(size_t floats);
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;
  ~HostArena();

  // floats [offset, offset + count) of the arena.
  std::span<float> Slice(size_t offset, size_t count) const { return {data_ + offset, count}; }

 private:
  HostArena(float* data, size_t bytes) : data_(data), bytes_(bytes) {}
  float* data_;
  size_t bytes_;
};

}  // namespace prefill
