#include "kernels/host_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL
#endif

namespace prefill {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kFaultChunk = size_t{8} << 20;  // unit of work of the fault-in threads
constexpr size_t kAlign = 4096;                  // of every buffer: whole pages, DMA-friendly

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Faults [p, p + bytes) in, writable, without changing its contents: a download may already be
// writing there. MADV_POPULATE_WRITE does it without touching the data; where the kernel lacks
// it, an atomic add of 0 per page faults the page and stores back what it read, atomically.
void FaultIn(char* p, size_t bytes) {
  if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0) return;
  for (size_t off = 0; off < bytes; off += 4096) __atomic_fetch_add(p + off, 0, __ATOMIC_RELAXED);
}

}  // namespace

struct HostArena::Region {
  char* base = nullptr;
  size_t size = 0;
  std::atomic<size_t> next_chunk{0};
  size_t pinned = 0;                 // bytes from base page-locked by Pin
  std::function<void(void*)> unpin;  // set with pinned
  ~Region() {
    if (pinned && unpin) unpin(base);
    if (base) munmap(base, size);
  }
};

namespace {

// Which region each live arena buffer came from (a BackendBuffer's deleter is a plain function).
struct LiveArenaBuffers {
  std::mutex mu;
  std::unordered_map<void*, std::shared_ptr<HostArena::Region>> region_of;
};
LiveArenaBuffers& Live() {
  static auto* live = new LiveArenaBuffers;  // outlives every buffer
  return *live;
}

// Threads that fault `region` in, chunk by chunk from the front (the order layers fill it in).
// Each holds the region, so it outlives them.
void StartFaultIn(const std::shared_ptr<HostArena::Region>& region) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const int threads = static_cast<int>(std::clamp(hw / 4, 1u, 8u));
  const size_t chunks = (region->size + kFaultChunk - 1) / kFaultChunk;
  for (int t = 0; t < threads; ++t) {
    std::thread([region, chunks] {
      for (size_t i; (i = region->next_chunk.fetch_add(1)) < chunks;) {
        const size_t begin = i * kFaultChunk;
        FaultIn(region->base + begin, std::min(kFaultChunk, region->size - begin));
      }
    }).detach();
  }
}

}  // namespace

HostArena& HostArena::Process() {
  static auto* arena = new HostArena;  // outlives every buffer and fault-in thread
  return *arena;
}

void HostArena::Reserve(size_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  // A huge page of slack: each buffer is rounded up to whole pages (512 buffers fit in it).
  const size_t size = RoundUp(bytes, kHugePage) + kHugePage;
  if (region_ && region_->size >= size) return;
  if (region_ && live_buffers_locked() > 0) return;
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return;            // Allocate falls back to the heap
  (void)madvise(base, size, MADV_HUGEPAGE);  // advice only: without THP the pages are 4 KiB
  auto region = std::make_shared<Region>();
  region->base = static_cast<char*>(base);
  region->size = size;
  region_ = region;
  used_ = 0;
  StartFaultIn(region);
}

absl::StatusOr<BackendBuffer> HostArena::Allocate(size_t bytes) {
  const size_t rounded = RoundUp(std::max<size_t>(bytes, 1), kAlign);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (region_ && live_buffers_locked() == 0) used_ = 0;
    if (region_ && used_ + rounded <= region_->size) {
      void* ptr = region_->base + used_;
      used_ += rounded;
      std::lock_guard<std::mutex> live_lock(Live().mu);
      Live().region_of[ptr] = region_;
      return BackendBuffer(ptr, &HostArena::Release);
    }
  }
  void* ptr = std::aligned_alloc(kHugePage, RoundUp(rounded, kHugePage));
  if (!ptr)
    return absl::ResourceExhaustedError(
        absl::StrCat("AllocateHost: ", bytes, " bytes of host memory"));
  (void)madvise(ptr, RoundUp(rounded, kHugePage), MADV_HUGEPAGE);
  return BackendBuffer(ptr, [](void* p) { std::free(p); });
}

void HostArena::Release(void* ptr) {
  std::shared_ptr<Region> region;  // dropped after the lock: may unmap a replaced region
  std::lock_guard<std::mutex> lock(Live().mu);
  auto it = Live().region_of.find(ptr);
  if (it == Live().region_of.end()) return;
  region = std::move(it->second);
  Live().region_of.erase(it);
}

size_t HostArena::Pin(size_t max_bytes, const std::function<bool(void*, size_t)>& pin,
                      std::function<void(void*)> unpin) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!region_ || region_->pinned) return region_ ? region_->pinned : 0;
  // Whole huge pages; the region's slack too when max_bytes reaches it (buffers are rounded up).
  const size_t rounded = RoundUp(max_bytes, kHugePage);
  const size_t bytes = rounded + kHugePage >= region_->size ? region_->size : rounded;
  if (bytes == 0 || !pin(region_->base, bytes)) return 0;
  region_->pinned = bytes;
  region_->unpin = std::move(unpin);
  return bytes;
}

bool HostArena::Pinned(const void* p, size_t bytes) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!region_ || !region_->pinned) return false;
  const char* c = static_cast<const char*>(p);
  return c >= region_->base && c + bytes <= region_->base + region_->pinned;
}

size_t HostArena::capacity() const {
  std::lock_guard<std::mutex> lock(mu_);
  return region_ ? region_->size : 0;
}

int HostArena::live_buffers_locked() const {
  if (!region_) return 0;
  std::lock_guard<std::mutex> lock(Live().mu);
  return static_cast<int>(
      std::count_if(Live().region_of.begin(), Live().region_of.end(),
                    [this](const auto& entry) { return entry.second == region_; }));
}

int HostArena::live_buffers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_buffers_locked();
}

}  // namespace prefill
