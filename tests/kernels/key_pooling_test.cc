// Key pooling: the per-stride fp32 sum of keys, against a naive loop over every storage type,
// with padded key rows, and parameter validation.
#include "kernels/cpu/key_pooling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace prefill::cpu {
namespace {

struct Keys {
  int lk = 96, hkv = 3, head_dim = 20, stride = 8;
  int64_t row_stride = 3 * 20 + 4;  // padded rows: pooling must skip the padding
  std::vector<float> values;        // [lk, row_stride] fp32, exactly representable in `dtype`
  std::vector<uint16_t> half;       // the same values stored as bf16 or f16

  Keys(DType dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 3.f);
    values.resize(lk * row_stride);
    for (float& x : values) x = normal(rng);
    if (dtype != DType::kF32) {
      half.resize(values.size());
      ConvertFromF32(dtype, values.data(), half.data(), static_cast<int64_t>(values.size()));
      ConvertToF32(dtype, half.data(), values.data(), static_cast<int64_t>(values.size()));
    }
  }

  PoolKeysParams Params(DType dtype, float* pooled) const {
    PoolKeysParams p;
    p.dtype = dtype;
    p.k = dtype == DType::kF32 ? static_cast<const void*>(values.data()) : half.data();
    p.k_row_stride = row_stride;
    p.lk = lk;
    p.hkv = hkv;
    p.head_dim = head_dim;
    p.stride = stride;
    p.pooled = pooled;
    return p;
  }

  // The contract spelled out: pooled[j, g, e] = sum over t of K[j*S + t, g, e], fp32, t ascending.
  std::vector<float> Naive() const {
    std::vector<float> pooled(lk / stride * hkv * head_dim);
    for (int j = 0; j < lk / stride; ++j) {
      for (int g = 0; g < hkv; ++g) {
        for (int e = 0; e < head_dim; ++e) {
          float sum = 0.f;
          const float* key = &values[j * stride * row_stride + g * head_dim + e];
          for (int t = 0; t < stride; ++t) sum += key[t * row_stride];
          pooled[(j * hkv + g) * head_dim + e] = sum;
        }
      }
    }
    return pooled;
  }
};

TEST(KeyPooling, EqualsTheNaiveSumBitwiseForEveryStorageType) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const Keys keys(dtype, 1);
    const std::vector<float> want = keys.Naive();
    std::vector<float> got(want.size(), NAN);
    ASSERT_TRUE(PoolKeys(keys.Params(dtype, got.data())).ok());
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)))
        << DTypeName(dtype);
  }
}

TEST(KeyPooling, StrideOneCopiesTheKeys) {
  Keys keys(DType::kBF16, 2);
  keys.stride = 1;
  std::vector<float> got(keys.lk * keys.hkv * keys.head_dim);
  ASSERT_TRUE(PoolKeys(keys.Params(DType::kBF16, got.data())).ok());
  for (int t = 0; t < keys.lk; ++t) {
    for (int e = 0; e < keys.hkv * keys.head_dim; ++e) {
      ASSERT_EQ(got[t * keys.hkv * keys.head_dim + e], keys.values[t * keys.row_stride + e]);
    }
  }
}

TEST(KeyPooling, RejectsBadParametersNamingTheField) {
  const Keys keys(DType::kF32, 3);
  std::vector<float> pooled(keys.lk * keys.hkv * keys.head_dim);
  const PoolKeysParams good = keys.Params(DType::kF32, pooled.data());
  const struct {
    const char* field;
    void (*mutate)(PoolKeysParams&);
  } cases[] = {
      {"k must", [](PoolKeysParams& p) { p.k = nullptr; }},
      {"pooled", [](PoolKeysParams& p) { p.pooled = nullptr; }},
      {"hkv", [](PoolKeysParams& p) { p.hkv = 0; }},
      {"head_dim", [](PoolKeysParams& p) { p.head_dim = 0; }},
      {"stride", [](PoolKeysParams& p) { p.stride = 0; }},
      {"lk", [](PoolKeysParams& p) { p.lk = 90; }},
      {"k_row_stride", [](PoolKeysParams& p) { p.k_row_stride = 59; }},
  };
  for (const auto& c : cases) {
    PoolKeysParams p = good;
    c.mutate(p);
    const absl::Status status = PoolKeys(p);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(std::string(status.message()).find(c.field), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace prefill::cpu
