// Host arrays (masks, positions) handed to kernels must live in the backend's memory.
#pragma once

#include <span>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace prefill {

template <typename T>
absl::StatusOr<BackendBuffer> UploadToBackend(AttentionBackend& backend, std::span<const T> host) {
  absl::StatusOr<BackendBuffer> buffer = backend.Allocate(host.size_bytes());
  if (!buffer.ok()) return buffer.status();
  if (!host.empty()) {
    absl::Status s = backend.CopyToBackend(buffer->get(), host.data(), host.size_bytes());
    if (!s.ok()) return s;
  }
  return buffer;
}

}  // namespace prefill
