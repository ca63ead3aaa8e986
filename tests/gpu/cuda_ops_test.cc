// The CUDA backend's small ops against the CPU backend: LSE merge, key pooling (bitwise:
// same fp32 sums in the same order), GatherRows, Allocate (zero-filled), the copies, and the
// attention kernels' work schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/lse_merge.h"
#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/device_memory_ledger.h"
#include "kernels/host_arena.h"
#include "tests/gpu/gpu_test_util.h"

namespace prefill {
namespace {

using gpu_test::DeviceBuffer;

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    PREFILL_SKIP_WITHOUT_GPU();
    backend_ = gpu_test::MakeBackend();
    ASSERT_NE(backend_, nullptr);
  }
  std::unique_ptr<AttentionBackend> backend_;
};

TEST_F(CudaOps, AllocateIsZeroFilledAndCopiesRoundTrip) {
  DeviceBuffer buffer(*backend_, 1 << 20);
  const std::vector<uint8_t> zeros = buffer.Download<uint8_t>(*backend_);
  for (uint8_t b : zeros) ASSERT_EQ(b, 0);
  std::vector<int32_t> data(1000);
  for (int i = 0; i < 1000; ++i) data[i] = i * 7 - 3;
  DeviceBuffer copy(*backend_, data);
  EXPECT_EQ(copy.Download<int32_t>(*backend_), data);
  EXPECT_EQ(backend_->name(), "cuda");
  EXPECT_NE(CudaBackendStream(*backend_), nullptr);
  EXPECT_EQ(CudaBackendDevice(*backend_), 0);
}

// The ledger holds exactly the bytes of live buffers (a reference count kept here), its peak
// covers them, and the device's used memory sampled then is at least that much.
TEST_F(CudaOps, MemoryLedgerCountsLiveBuffers) {
  const cuda::DeviceMemoryPeak before = cuda::GetDeviceMemoryPeak();
  const size_t sizes[3] = {size_t{3} << 20, 12345, size_t{64} << 20};
  int64_t live = 0;
  {
    std::vector<DeviceBuffer> buffers;
    buffers.reserve(3);
    for (size_t bytes : sizes) {
      buffers.emplace_back(*backend_, bytes);
      live += static_cast<int64_t>(bytes);
      EXPECT_EQ(cuda::GetDeviceMemoryPeak().held_bytes, before.held_bytes + live);
    }
    const cuda::DeviceMemoryPeak during = cuda::GetDeviceMemoryPeak();
    EXPECT_GE(during.held_peak_bytes, before.held_bytes + live);
    EXPECT_GE(during.device_used_peak_bytes, during.held_bytes);
  }
  const cuda::DeviceMemoryPeak after = cuda::GetDeviceMemoryPeak();
  EXPECT_EQ(after.held_bytes, before.held_bytes);
  EXPECT_GE(after.held_peak_bytes, before.held_bytes + live);
}

// fp32 merge: the formula is the same on both; allow a few ulps for expf/log1pf differences.
// run 4 of stride 10: the part merges into entries 0-3, 10-13, ... of acc (the rest untouched).
TEST_F(CudaOps, LseMergeMatchesCpu) {
  for (auto [head_dim, run] : {std::pair{64, 0}, {128, 0}, {36, 0}, {64, 4}, {36, 4}}) {
    SCOPED_TRACE(testing::Message() << "head_dim " << head_dim << " run " << run);
    const int rows = 1000;
    std::mt19937 rng(head_dim);
    std::normal_distribution<float> normal;
    std::vector<float> o_acc(rows * head_dim), o_part(rows * head_dim), lse_acc(rows),
        lse_part(rows);
    for (auto& x : o_acc) x = normal(rng);
    for (auto& x : o_part) x = normal(rng);
    for (int r = 0; r < rows; ++r) {
      lse_acc[r] = 3.f * normal(rng);
      lse_part[r] = 3.f * normal(rng);
      if (r % 17 == 0) lse_part[r] = -INFINITY;  // a part that saw no key
      if (r % 31 == 0) lse_acc[r] = -INFINITY;
      if (r % 97 == 0) lse_acc[r] = lse_part[r] = -INFINITY;  // neither
    }
    for (int r = 0; r < rows; ++r) {
      for (int d = 0; d < head_dim; ++d) {
        if (lse_acc[r] == -INFINITY) o_acc[r * head_dim + d] = 0.f;
        if (lse_part[r] == -INFINITY) o_part[r * head_dim + d] = 0.f;
      }
    }
    DeviceBuffer d_o_acc(*backend_, o_acc), d_o_part(*backend_, o_part),
        d_lse_acc(*backend_, lse_acc), d_lse_part(*backend_, lse_part);
    LseMergeParams p;
    p.rows = run ? rows / 10 * run : rows;
    p.run = run;
    p.acc_run_stride = 10;
    p.head_dim = head_dim;
    p.o_acc = d_o_acc.as<float>();
    p.lse_acc = d_lse_acc.as<float>();
    p.o_part = d_o_part.as<float>();
    p.lse_part = d_lse_part.as<float>();
    ASSERT_TRUE(backend_->MergeByLse(p).ok());
    const std::vector<float> gpu_o = d_o_acc.Download<float>(*backend_);
    const std::vector<float> gpu_lse = d_lse_acc.Download<float>(*backend_);

    LseMergeParams h = p;
    h.o_acc = o_acc.data();
    h.lse_acc = lse_acc.data();
    h.o_part = o_part.data();
    h.lse_part = lse_part.data();
    ASSERT_TRUE(cpu::MergeByLse(h).ok());
    for (int r = 0; r < rows; ++r) {
      if (lse_acc[r] == -INFINITY) {
        EXPECT_EQ(gpu_lse[r], -INFINITY) << r;
      } else {
        EXPECT_NEAR(gpu_lse[r], lse_acc[r], 1e-5f * (1.f + std::fabs(lse_acc[r]))) << r;
      }
      for (int d = 0; d < head_dim; ++d) {
        const float cpu_v = o_acc[r * head_dim + d];
        EXPECT_NEAR(gpu_o[r * head_dim + d], cpu_v, 1e-5f * (1.f + std::fabs(cpu_v)))
            << r << "," << d;
      }
    }
  }
}

TEST_F(CudaOps, PoolKeysMatchesCpuBitwise) {
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const int lk = 1024, hkv = 2, head_dim = 128, stride = 8;
    const int64_t row_stride = hkv * head_dim + 8;  // padded rows
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> k32(lk * row_stride);
    for (auto& x : k32) x = normal(rng);
    std::vector<uint8_t> k(k32.size() * DTypeSize(dtype));
    ConvertFromF32(dtype, k32.data(), k.data(), static_cast<int64_t>(k32.size()));
    DeviceBuffer d_k(*backend_, k);
    const size_t pooled_n = static_cast<size_t>(lk / stride) * hkv * head_dim;
    DeviceBuffer d_pooled(*backend_, pooled_n * sizeof(float));
    PoolKeysParams p;
    p.dtype = dtype;
    p.k = d_k.get();
    p.k_row_stride = row_stride;
    p.lk = lk;
    p.hkv = hkv;
    p.head_dim = head_dim;
    p.stride = stride;
    p.pooled = d_pooled.as<float>();
    ASSERT_TRUE(backend_->PoolKeys(p).ok());
    const std::vector<float> gpu = d_pooled.Download<float>(*backend_);
    std::vector<float> cpu(pooled_n);
    p.k = k.data();
    p.pooled = cpu.data();
    ASSERT_TRUE(cpu::PoolKeys(p).ok());
    EXPECT_EQ(std::memcmp(gpu.data(), cpu.data(), pooled_n * sizeof(float)), 0);
  }
}

TEST_F(CudaOps, GatherRowsAlignedAndUnaligned) {
  std::vector<uint8_t> src(1 << 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 131 + 7);
  DeviceBuffer d_src(*backend_, src);
  for (int64_t bytes_each : {int64_t{4096}, int64_t{100}}) {
    SCOPED_TRACE(bytes_each);
    std::vector<int64_t> offsets;
    for (int64_t off :
         {int64_t{8192}, int64_t{0}, int64_t{4096 * 3}, int64_t{4096 * 3}, int64_t{50000}}) {
      offsets.push_back(bytes_each == 100 ? off + 3 : off);
    }
    DeviceBuffer d_dst(*backend_, offsets.size() * bytes_each);
    GatherRowsParams p;
    p.src = d_src.get();
    p.dst = d_dst.get();
    p.src_offsets = offsets.data();
    p.count = static_cast<int64_t>(offsets.size());
    p.bytes_each = bytes_each;
    ASSERT_TRUE(backend_->GatherRows(p).ok());
    const std::vector<uint8_t> got = d_dst.Download<uint8_t>(*backend_);
    for (size_t i = 0; i < offsets.size(); ++i) {
      ASSERT_EQ(std::memcmp(got.data() + i * bytes_each, src.data() + offsets[i], bytes_each), 0)
          << i;
    }
  }
}

// Downloads land exactly, as bf16 bytes and widened to f32, though the source is overwritten
// right after StartDownload and two downloads are in flight at once (n: more than two 8 MiB
// staging slots of bf16, the last one partial). `pinned`: the host buffers come from the
// HostArena page-locked by PrepareHost, where each download is one DMA.
void CheckDownloadsLandExactly(AttentionBackend& backend, bool pinned) {
  const int64_t n = 9'000'001;
  std::vector<uint16_t> bits(n);
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::sin(0.001f * static_cast<float>(i)) * static_cast<float>(1 + i % 977);
    uint32_t u;
    std::memcpy(&u, &v, sizeof(u));
    bits[i] = static_cast<uint16_t>(u >> 16);  // a bf16 value exactly
  }
  DeviceBuffer src(backend, bits);
  const size_t bytes = n * (sizeof(uint16_t) + sizeof(float));
  if (pinned) {
    ASSERT_GE(backend.PrepareHost(bytes), bytes);
  }
  absl::StatusOr<BackendBuffer> as_bf16 = backend.AllocateHost(n * sizeof(uint16_t));
  absl::StatusOr<BackendBuffer> as_f32 = backend.AllocateHost(n * sizeof(float));
  ASSERT_TRUE(as_bf16.ok() && as_f32.ok());
  EXPECT_EQ(HostArena::Process().Pinned(as_bf16->get(), n * sizeof(uint16_t)), pinned);
  EXPECT_EQ(HostArena::Process().Pinned(as_f32->get(), n * sizeof(float)), pinned);
  ASSERT_TRUE(
      backend.StartDownload({src.get(), n, DType::kBF16, as_bf16->get(), DType::kBF16}).ok());
  ASSERT_TRUE(backend.StartDownload({src.get(), n, DType::kF32, as_f32->get(), DType::kBF16}).ok());
  const std::vector<uint16_t> zeros(n, 0);
  src.Upload(backend, zeros.data(), n * sizeof(uint16_t));  // queued after both conversions
  ASSERT_TRUE(backend.FinishDownloads().ok());
  EXPECT_EQ(std::memcmp(as_bf16->get(), bits.data(), n * sizeof(uint16_t)), 0);
  const auto* widened = static_cast<const uint32_t*>(as_f32->get());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(widened[i], uint32_t{bits[i]} << 16) << i;
  EXPECT_EQ(src.Download<uint16_t>(backend), zeros);
}

// Through the staging slots (no arena region yet: the buffers come from the heap).
TEST_F(CudaOps, DownloadsLandExactlyWhileTheSourceIsReused) {
  CheckDownloadsLandExactly(*backend_, false);
}

// Straight into page-locked arena memory, one DMA each.
TEST_F(CudaOps, DownloadsIntoThePageLockedArenaLandExactly) {
  CheckDownloadsLandExactly(*backend_, true);
}

// The tickets a KV streamer waits on: one per download, in order, and a wait from another
// thread returns once that download (and the ones before it) has landed.
TEST_F(CudaOps, DownloadTicketsLandInOrderForAnotherThread) {
  const int64_t n = 3'000'001;
  std::vector<uint16_t> bits(n);
  for (int64_t i = 0; i < n; ++i)
    bits[i] = static_cast<uint16_t>(0x3f80 + i % 113);  // bf16 in [1, 2)
  DeviceBuffer src(*backend_, bits);
  absl::StatusOr<BackendBuffer> first = backend_->AllocateHost(n * sizeof(uint16_t));
  absl::StatusOr<BackendBuffer> second = backend_->AllocateHost(n * sizeof(uint16_t));
  ASSERT_TRUE(first.ok() && second.ok());
  const int64_t before = backend_->DownloadsStarted();
  ASSERT_TRUE(
      backend_->StartDownload({src.get(), n, DType::kBF16, first->get(), DType::kBF16}).ok());
  const int64_t ticket1 = backend_->DownloadsStarted();
  ASSERT_TRUE(
      backend_->StartDownload({src.get(), n, DType::kBF16, second->get(), DType::kBF16}).ok());
  const int64_t ticket2 = backend_->DownloadsStarted();
  EXPECT_EQ(ticket1, before + 1);
  EXPECT_EQ(ticket2, before + 2);
  bool landed = false;
  std::thread waiter([&] {
    landed = backend_->WaitForDownloads(ticket2).ok() &&
             std::memcmp(first->get(), bits.data(), n * sizeof(uint16_t)) == 0 &&
             std::memcmp(second->get(), bits.data(), n * sizeof(uint16_t)) == 0;
  });
  waiter.join();
  EXPECT_TRUE(landed);
  EXPECT_TRUE(backend_->FinishDownloads().ok());
}

// The schedule is a permutation of the rows, longest bucket first, and inside a bucket the
// locality order (KV head, query block, query head of the group); the same in every run.
TEST_F(CudaOps, WorkScheduleIsLongestFirstAndGroupsKvHeads) {
  const int hq = 12, group = 4, num_q_blocks = 300, max_len = 300;
  const int num_items = hq * num_q_blocks;  // several 1024-row chunks
  std::mt19937 rng(5);
  std::vector<int32_t> offsets(num_items + 1, 0);
  for (int i = 0; i < num_items; ++i)
    offsets[i + 1] = offsets[i] + static_cast<int32_t>(rng() % (max_len + 1));
  DeviceBuffer d_offsets(*backend_, offsets);
  DeviceBuffer d_schedule(*backend_, num_items * sizeof(int32_t));
  auto build = [&] {
    EXPECT_EQ(cuda::LaunchBuildWorkSchedule(d_offsets.as<int32_t>(), num_items, num_q_blocks, group,
                                            max_len, d_schedule.as<int32_t>(),
                                            CudaBackendStream(*backend_)),
              cudaSuccess);
    return d_schedule.Download<int32_t>(*backend_);
  };
  const std::vector<int32_t> schedule = build();
  EXPECT_EQ(build(), schedule);
  const int width = (max_len + cuda::kWorkScheduleMaxBuckets) / cuda::kWorkScheduleMaxBuckets;
  auto locality = [&](int row) {
    const int head = row / num_q_blocks, q_block = row % num_q_blocks;
    return ((head / group) * num_q_blocks + q_block) * group + head % group;
  };
  auto bucket = [&](int row) { return (offsets[row + 1] - offsets[row]) / width; };
  std::vector<int> seen(num_items, 0);
  for (int i = 0; i < num_items; ++i) {
    ASSERT_GE(schedule[i], 0);
    ASSERT_LT(schedule[i], num_items);
    ++seen[schedule[i]];
    if (i == 0) continue;
    const int prev = schedule[i - 1], cur = schedule[i];
    ASSERT_GE(bucket(prev), bucket(cur)) << i;
    if (bucket(prev) == bucket(cur)) {
      ASSERT_LT(locality(prev), locality(cur)) << i;
    }
  }
  for (int r = 0; r < num_items; ++r) ASSERT_EQ(seen[r], 1) << r;
}

}  // namespace
}  // namespace prefill
