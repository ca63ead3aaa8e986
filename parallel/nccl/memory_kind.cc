#include "parallel/nccl/memory_kind.h"

#include <cuda_runtime_api.h>

namespace prefill {

bool IsHostMemory(const void* p) {
  cudaPointerAttributes attr{};
  if (p == nullptr || cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return p != nullptr;
  }
  return attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged;
}

}  // namespace prefill
