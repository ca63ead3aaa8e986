#include "kernels/cuda/device_memory_ledger.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>

namespace prefill::cuda {
namespace {

std::atomic<int64_t> g_held{0};
std::atomic<int64_t> g_held_peak{0};
std::atomic<int64_t> g_used_peak{0};

void RaiseTo(std::atomic<int64_t>& peak, int64_t value) {
  int64_t seen = peak.load();
  while (value > seen && !peak.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

void NoteDeviceAllocation(size_t bytes) {
  RaiseTo(g_held_peak, g_held.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes));
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    RaiseTo(g_used_peak, static_cast<int64_t>(total_bytes - free_bytes));
  }
}

void NoteDeviceRelease(size_t bytes) { g_held.fetch_sub(static_cast<int64_t>(bytes)); }

DeviceMemoryPeak GetDeviceMemoryPeak() {
  return {g_held.load(), g_held_peak.load(), g_used_peak.load()};
}

}  // namespace prefill::cuda
