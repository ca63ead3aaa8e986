// HostArena: buffers come from the reserved region while they fit, the region is reused once
// its buffers are released, and the fault-in threads never change what a buffer holds.
#include "kernels/host_arena.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace prefill {
namespace {

bool Inside(const void* p, const void* base, size_t bytes) {
  const auto* c = static_cast<const char*>(p);
  return c >= static_cast<const char*>(base) && c < static_cast<const char*>(base) + bytes;
}

// The arena is one per process: one test walks through its life in order.
TEST(HostArena, ReservesReusesAndGrows) {
  HostArena& arena = HostArena::Process();
  constexpr size_t kMiB = size_t{1} << 20;

  // Written while the fault-in threads still run over the region: the contents must survive.
  arena.Reserve(64 * kMiB);
  ASSERT_GE(arena.capacity(), 64 * kMiB);
  absl::StatusOr<BackendBuffer> a = arena.Allocate(30 * kMiB);
  absl::StatusOr<BackendBuffer> b = arena.Allocate(30 * kMiB);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(arena.live_buffers(), 2);
  EXPECT_EQ(static_cast<char*>(b->get()) - static_cast<char*>(a->get()),
            static_cast<ptrdiff_t>(30 * kMiB));
  std::vector<uint32_t> pattern(30 * kMiB / sizeof(uint32_t));
  std::iota(pattern.begin(), pattern.end(), 7u);
  std::memcpy(a->get(), pattern.data(), 30 * kMiB);
  std::memcpy(b->get(), pattern.data(), 30 * kMiB);
  arena.Reserve(64 * kMiB);  // fits: nothing changes
  EXPECT_EQ(std::memcmp(a->get(), pattern.data(), 30 * kMiB), 0);
  EXPECT_EQ(std::memcmp(b->get(), pattern.data(), 30 * kMiB), 0);

  // More than is left of the region: from the heap, outside it.
  absl::StatusOr<BackendBuffer> heap = arena.Allocate(16 * kMiB);
  ASSERT_TRUE(heap.ok());
  EXPECT_FALSE(Inside(heap->get(), a->get(), arena.capacity()));
  EXPECT_EQ(arena.live_buffers(), 2);

  // A larger Reserve while buffers of the region are alive keeps the region (they point into it).
  const void* first = a->get();
  arena.Reserve(256 * kMiB);
  EXPECT_LT(arena.capacity(), 256 * kMiB);
  EXPECT_EQ(std::memcmp(a->get(), pattern.data(), 30 * kMiB), 0);

  // Released: the next request starts over at the region's beginning (its pages resident).
  a->reset();
  b->reset();
  heap->reset();
  EXPECT_EQ(arena.live_buffers(), 0);
  absl::StatusOr<BackendBuffer> again = arena.Allocate(10 * kMiB);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), first);
  again->reset();

  // Nothing alive: a larger Reserve maps a new region.
  arena.Reserve(256 * kMiB);
  EXPECT_GE(arena.capacity(), 256 * kMiB);
  absl::StatusOr<BackendBuffer> big = arena.Allocate(200 * kMiB);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(arena.live_buffers(), 1);
  std::memset(big->get(), 0x5a, 200 * kMiB);
  EXPECT_EQ(static_cast<unsigned char*>(big->get())[200 * kMiB - 1], 0x5a);
}

// Pin page-locks the region's front once (the backend's callback), rounded up to whole huge
// pages, all of it when that reaches the slack; Pinned answers for ranges inside the locked
// part, and the region's end calls the unpin callback.
TEST(HostArena, PinsOncePerRegionAndUnpinsWhenReplaced) {
  HostArena& arena = HostArena::Process();
  constexpr size_t kMiB = size_t{1} << 20;
  arena.Reserve(300 * kMiB);  // larger than any region before: a fresh one (nothing alive)
  ASSERT_EQ(arena.capacity(), 302 * kMiB);  // 2 MiB of slack
  std::vector<size_t> pinned_sizes;
  std::atomic<int> unpins{0};  // the region may end on a fault-in thread, the last to hold it
  void* pinned_at = nullptr;
  auto pin = [&](void* p, size_t n) {
    pinned_sizes.push_back(n);
    pinned_at = p;
    return true;
  };
  auto unpin = [&](void* p) {
    EXPECT_EQ(p, pinned_at);
    ++unpins;
  };
  EXPECT_EQ(arena.Pin(100 * kMiB + 12345, pin, unpin), 102 * kMiB);  // up to whole 2 MiB pages
  EXPECT_EQ(arena.Pin(200 * kMiB, pin, unpin), 102 * kMiB);          // once per region
  EXPECT_EQ(pinned_sizes, std::vector<size_t>{102 * kMiB});
  absl::StatusOr<BackendBuffer> a = arena.Allocate(60 * kMiB);
  absl::StatusOr<BackendBuffer> b = arena.Allocate(60 * kMiB);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(arena.Pinned(a->get(), 60 * kMiB));
  EXPECT_FALSE(arena.Pinned(b->get(), 60 * kMiB));  // straddles the locked front's end
  EXPECT_TRUE(arena.Pinned(b->get(), 42 * kMiB));
  int local = 0;
  EXPECT_FALSE(arena.Pinned(&local, sizeof(local)));
  a->reset();
  b->reset();

  // Replaced once nothing is alive: the old region is unpinned before it goes. A request that
  // fills the new one gets all of it locked, slack included (Allocate rounds buffers up).
  arena.Reserve(400 * kMiB);
  for (int i = 0; i < 1000 && unpins.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(unpins.load(), 1);
  EXPECT_EQ(arena.Pin(400 * kMiB, pin, unpin), 402 * kMiB);
  absl::StatusOr<BackendBuffer> c = arena.Allocate(400 * kMiB - 1);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(arena.Pinned(c->get(), 400 * kMiB - 1));
}

}  // namespace
}  // namespace prefill
