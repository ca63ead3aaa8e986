// EstimateMaskInBackend (ids left in device memory) against EstimateMask (the whole mask on
// the host), the reference here since cuda_mask_estimator_test validates it against fp64 block
// masses: the same shape, offsets and ids; the ids still intact after a later host-mask call
// (the contract: valid until the next EstimateMaskInBackend); attention reading the resident
// CSR in place gives the same bits as attention on the host mask uploaded. The CPU backend's
// resident mask is its host mask.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace prefill {
namespace {

using gpu_test::DeviceBuffer;

constexpr int kL = 4096, kHq = 8, kHkv = 2, kD = 128, kBlock = 128, kStride = 8;

uint16_t ToBf16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// bf16 rows with a little structure (a shared direction per 256-token span), so that
// rows select different blocks.
std::vector<uint16_t> Rows(int heads, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> out(static_cast<size_t>(kL) * heads * kD);
  for (int t = 0; t < kL; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int d = 0; d < kD; ++d) {
        const float structure = d == (t / 256 + h) % kD ? 3.f : 0.f;
        out[(static_cast<size_t>(t) * heads + h) * kD + d] = ToBf16Bits(normal(rng) + structure);
      }
    }
  }
  return out;
}

// Where the estimator's inputs are and their shape (backend memory).
struct EstimatorInputs {
  DType dtype;
  const void* q;  // [seq_len, hq, head_dim]
  const int32_t* q_block_ids;
  const float* pooled;  // [seq_len / kStride, hkv, head_dim]
  int seq_len, hq, hkv, head_dim;
};

MaskEstimateParams EstimateParams(const EstimatorInputs& in, bool causal, float tau) {
  MaskEstimateParams e;
  e.dtype = in.dtype;
  e.q = in.q;
  e.q_row_stride = int64_t{in.hq} * in.head_dim;
  e.q_head_stride = in.head_dim;
  e.q_block_ids = in.q_block_ids;
  e.num_q_blocks = in.seq_len / kBlock;
  e.pooled_k = in.pooled;
  e.seq_len = in.seq_len;
  e.hq = in.hq;
  e.hkv = in.hkv;
  e.head_dim = in.head_dim;
  e.block_size = kBlock;
  e.stride = kStride;
  e.tau = tau;
  e.causal = causal;
  e.scale = 1.f / std::sqrt(static_cast<float>(in.head_dim));
  return e;
}

struct Problem {
  DeviceBuffer q, k, v, pooled, q_ids, pos, o;
  MaskEstimateParams estimate;
  PoolKeysParams pool;
};

void Fill(AttentionBackend& backend, Problem& p, bool causal, float tau) {
  p.q = DeviceBuffer(backend, Rows(kHq, 1));
  p.k = DeviceBuffer(backend, Rows(kHkv, 2));
  p.v = DeviceBuffer(backend, Rows(kHkv, 3));
  p.pooled = DeviceBuffer(backend, static_cast<size_t>(kL / kStride) * kHkv * kD * sizeof(float));
  std::vector<int32_t> ids(kL / kBlock), positions(kL);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  for (int i = 0; i < kL; ++i) positions[i] = i;
  p.q_ids = DeviceBuffer(backend, ids);
  p.pos = DeviceBuffer(backend, positions);
  p.o = DeviceBuffer(backend, static_cast<size_t>(kL) * kHq * kD * sizeof(float));
  p.pool = {DType::kBF16, p.k.get(), int64_t{kHkv} * kD,  kL, kHkv,
            kD,           kStride,   p.pooled.as<float>()};
  p.estimate = EstimateParams(
      {DType::kBF16, p.q.get(), p.q_ids.as<int32_t>(), p.pooled.as<float>(), kL, kHq, kHkv, kD},
      causal, tau);
  ASSERT_TRUE(backend.PoolKeys(p.pool).ok());
}

std::vector<float> AttentionOutput(AttentionBackend& backend, Problem& p, const int32_t* offsets,
                                   const int32_t* ids) {
  AttentionParams a;
  a.dtype = DType::kBF16;
  a.q = p.q.get();
  a.q_row_stride = int64_t{kHq} * kD;
  a.q_head_stride = kD;
  a.k = p.k.get();
  a.v = p.v.get();
  a.kv_row_stride = int64_t{kHkv} * kD;
  a.kv_head_stride = kD;
  a.q_pos = a.k_pos = p.pos.as<int32_t>();
  a.lq = a.lk = kL;
  a.hq = kHq;
  a.hkv = kHkv;
  a.head_dim = kD;
  a.block_size = kBlock;
  a.causal = p.estimate.causal;
  a.scale = p.estimate.scale;
  a.mask_row_offsets = offsets;
  a.mask_kv_blocks = ids;
  a.out_dtype = DType::kF32;
  a.o = p.o.as<float>();
  DeviceBuffer lse(backend, static_cast<size_t>(kL) * kHq * sizeof(float));
  a.lse = lse.as<float>();
  EXPECT_TRUE(backend.Attention(a).ok());
  return p.o.Download<float>(backend);
}

void ExpectSameShape(const BlockMask& resident, const BlockMask& host) {
  EXPECT_TRUE(resident.kv_blocks.empty());
  EXPECT_EQ(resident.num_heads, host.num_heads);
  EXPECT_EQ(resident.num_q_blocks, host.num_q_blocks);
  EXPECT_EQ(resident.num_kv_blocks, host.num_kv_blocks);
  EXPECT_EQ(resident.block_size, host.block_size);
  EXPECT_EQ(resident.q_block_ids, host.q_block_ids);
  EXPECT_EQ(resident.row_offsets, host.row_offsets);
  EXPECT_EQ(resident.visible_blocks, host.visible_blocks);
}

TEST(CudaResidentMask, SameMaskAsTheHostMaskAndSameAttention) {
  PREFILL_SKIP_WITHOUT_GPU();
  std::unique_ptr<AttentionBackend> backend = gpu_test::MakeBackend();
  ASSERT_NE(backend, nullptr);
  for (bool causal : {true, false}) {
    for (float tau : {0.5f, 0.95f}) {
      SCOPED_TRACE(testing::Message() << "causal " << causal << " tau " << tau);
      Problem p;
      Fill(*backend, p, causal, tau);
      absl::StatusOr<BackendBlockMask> resident = backend->EstimateMaskInBackend(p.estimate);
      ASSERT_TRUE(resident.ok()) << resident.status();
      absl::StatusOr<BlockMask> host =
          backend->EstimateMask(p.estimate);  // after: must not disturb it
      ASSERT_TRUE(host.ok()) << host.status();
      ExpectSameShape(resident->host, *host);
      EXPECT_EQ(resident->selected_blocks(), host->selected_blocks());
      EXPECT_DOUBLE_EQ(resident->density(), host->density());
      EXPECT_GT(host->density(), 0.0);
      EXPECT_LT(host->density(), 1.0);  // a mask with something left out

      std::vector<int32_t> ids(resident->selected_blocks()), offsets(host->row_offsets.size());
      ASSERT_TRUE(backend->CopyToHost(ids.data(), resident->kv_blocks, ids.size() * 4).ok());
      ASSERT_TRUE(
          backend->CopyToHost(offsets.data(), resident->row_offsets, offsets.size() * 4).ok());
      EXPECT_EQ(ids, host->kv_blocks);
      EXPECT_EQ(offsets, host->row_offsets);

      DeviceBuffer host_offsets(*backend, host->row_offsets), host_ids(*backend, host->kv_blocks);
      const std::vector<float> in_place =
          AttentionOutput(*backend, p, resident->row_offsets, resident->kv_blocks);
      const std::vector<float> uploaded =
          AttentionOutput(*backend, p, host_offsets.as<int32_t>(), host_ids.as<int32_t>());
      EXPECT_EQ(in_place, uploaded);
    }
  }
}

TEST(CpuResidentMask, IsTheHostMask) {
  std::unique_ptr<AttentionBackend> backend = MakeCpuBackend(2);
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  const int L = 1024, hq = 4, hkv = 2, d = 64;
  std::vector<float> q(static_cast<size_t>(L) * hq * d), k(static_cast<size_t>(L) * hkv * d);
  for (float& x : q) x = normal(rng);
  for (float& x : k) x = normal(rng);
  std::vector<float> pooled(static_cast<size_t>(L / kStride) * hkv * d);
  ASSERT_TRUE(
      backend
          ->PoolKeys({DType::kF32, k.data(), int64_t{hkv} * d, L, hkv, d, kStride, pooled.data()})
          .ok());
  std::vector<int32_t> q_ids(L / kBlock);
  for (size_t i = 0; i < q_ids.size(); ++i) q_ids[i] = static_cast<int32_t>(i);
  const MaskEstimateParams e = EstimateParams(
      {DType::kF32, q.data(), q_ids.data(), pooled.data(), L, hq, hkv, d}, true, 0.6f);
  absl::StatusOr<BlockMask> host = backend->EstimateMask(e);
  absl::StatusOr<BackendBlockMask> resident = backend->EstimateMaskInBackend(e);
  ASSERT_TRUE(host.ok() && resident.ok());
  ExpectSameShape(resident->host, *host);
  const std::vector<int32_t> ids(resident->kv_blocks,
                                 resident->kv_blocks + resident->selected_blocks());
  EXPECT_EQ(ids, host->kv_blocks);
  EXPECT_EQ(
      std::vector<int32_t>(resident->row_offsets, resident->row_offsets + host->row_offsets.size()),
      host->row_offsets);
}

}  // namespace
}  // namespace prefill
