// Test fixtures for the CPU attention kernels: a random attention problem that owns its
// tensors (strided, padding filled with NaN so that a stray read poisons the result), a
// naive fp32 implementation (the same-precision yardstick for tolerances, STYLE habit 4), and
// error measures against the fp64 reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_params.h"
#include "kernels/dtype.h"

namespace prefill::attention_test {

// Values of one tensor as stored (`bits` for bf16/f16) and as fp32 (exactly the stored values).
struct StoredTensor {
  DType dtype = DType::kF32;
  std::vector<float> f32;
  std::vector<uint16_t> bits;

  StoredTensor(DType type, size_t n) : dtype(type), f32(n, NAN) {
    if (type != DType::kF32) {
      bits.resize(n);
      ConvertFromF32(type, f32.data(), bits.data(), static_cast<int64_t>(n));
    }
  }
  // Stores v rounded to the storage type.
  void Set(size_t i, float v) {
    if (dtype == DType::kF32) {
      f32[i] = v;
      return;
    }
    ConvertFromF32(dtype, &v, &bits[i], 1);
    ConvertToF32(dtype, &bits[i], &f32[i], 1);
  }
  const void* data() const {
    return dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : bits.data();
  }
};

struct ProblemSpec {
  int lq = 256;
  int lk = 256;
  int hq = 8;
  int hkv = 2;
  int head_dim = 64;
  int block_size = 64;
  DType dtype = DType::kF32;
  bool causal = false;
  double density = 1.0;    // probability of keeping each visible block of a row
  float logit_gain = 1.f;  // scale = logit_gain / sqrt(head_dim)
  // Key row j scaled by 1 + key_ramp * j / lk: row maxima that keep growing from tile to tile
  // (kernels that rescale O only when the max moves far must still rescale then).
  float key_ramp = 0.f;
  uint32_t seed = 1;
};

// Row stride padding (elements) of Q and K/V: non-contiguous layouts are the general case.
inline constexpr int kRowPadding = 16;

class AttentionProblem {
 public:
  explicit AttentionProblem(const ProblemSpec& spec)
      : spec_(spec),
        q_head_stride_(spec.head_dim + kRowPadding),
        kv_row_stride_(spec.head_dim + kRowPadding),
        kv_head_stride_(static_cast<int64_t>(spec.lk) * kv_row_stride_ + 3 * kRowPadding),
        q_(spec.dtype, static_cast<size_t>(spec.lq) * spec.hq * q_head_stride_),
        k_(spec.dtype, static_cast<size_t>(spec.hkv) * kv_head_stride_),
        v_(spec.dtype, static_cast<size_t>(spec.hkv) * kv_head_stride_),
        rng_(spec.seed) {
    std::normal_distribution<float> normal;
    for (int r = 0; r < spec.lq; ++r) {
      for (int h = 0; h < spec.hq; ++h) {
        for (int d = 0; d < spec.head_dim; ++d)
          q_.Set(r * spec.hq * q_head_stride_ + h * q_head_stride_ + d, normal(rng_));
      }
    }
    for (int g = 0; g < spec.hkv; ++g) {
      for (int r = 0; r < spec.lk; ++r) {
        for (int d = 0; d < spec.head_dim; ++d) {
          const size_t i = g * kv_head_stride_ + r * kv_row_stride_ + d;
          k_.Set(i, normal(rng_) * (1.f + spec.key_ramp * static_cast<float>(r) / spec.lk));
          v_.Set(i, normal(rng_));
        }
      }
    }
    // Queries at the end of the key sequence, as in a prefill chunk after earlier chunks.
    q_pos.resize(spec.lq);
    for (int i = 0; i < spec.lq; ++i) q_pos[i] = spec.lk - spec.lq + i;
    k_pos.resize(spec.lk);
    for (int j = 0; j < spec.lk; ++j) k_pos[j] = j;
    RandomizeMask(spec.density);
  }

  // A fresh random mask: each block of a row that causal masking leaves (partly) visible is
  // kept with probability `density`; the last visible one always, so no row is empty.
  void RandomizeMask(double density) {
    std::bernoulli_distribution keep(density);
    const int q_blocks = num_q_blocks(), kv_blocks = num_kv_blocks(), b = spec_.block_size;
    row_offsets.assign(1, 0);
    kv_blocks_ids.clear();
    for (int h = 0; h < spec_.hq; ++h) {
      const int g = h / (spec_.hq / spec_.hkv);
      for (int qb = 0; qb < q_blocks; ++qb) {
        const int32_t q_last =
            *std::max_element(q_pos.begin() + qb * b, q_pos.begin() + (qb + 1) * b);
        std::vector<int32_t> visible;
        for (int kb = 0; kb < kv_blocks; ++kb) {
          const int32_t* kp = k_pos.data() + g * k_pos_head_stride + kb * b;
          if (!spec_.causal || *std::min_element(kp, kp + b) <= q_last) visible.push_back(kb);
        }
        for (size_t n = 0; n < visible.size(); ++n) {
          if (n + 1 == visible.size() || keep(rng_)) kv_blocks_ids.push_back(visible[n]);
        }
        row_offsets.push_back(static_cast<int32_t>(kv_blocks_ids.size()));
      }
    }
  }

  AttentionParams Params() {
    AttentionParams p;
    p.dtype = spec_.dtype;
    p.q = q_.data();
    p.q_row_stride = static_cast<int64_t>(spec_.hq) * q_head_stride_;
    p.q_head_stride = q_head_stride_;
    p.q_pos = q_pos.data();
    p.k = k_.data();
    p.v = v_.data();
    p.kv_row_stride = kv_row_stride_;
    p.kv_head_stride = kv_head_stride_;
    p.k_pos = k_pos.data();
    p.k_pos_head_stride = k_pos_head_stride;
    p.lq = spec_.lq;
    p.lk = spec_.lk;
    p.hq = spec_.hq;
    p.hkv = spec_.hkv;
    p.head_dim = spec_.head_dim;
    p.block_size = spec_.block_size;
    p.causal = spec_.causal;
    p.scale = spec_.logit_gain / std::sqrt(static_cast<float>(spec_.head_dim));
    p.mask_row_offsets = row_offsets.data();
    p.mask_kv_blocks = kv_blocks_ids.data();
    o.assign(static_cast<size_t>(spec_.lq) * spec_.hq * spec_.head_dim, NAN);
    lse.assign(static_cast<size_t>(spec_.lq) * spec_.hq, NAN);
    p.o = o.data();
    p.lse = lse.data();
    return p;
  }

  // Overwrites element `e` of key row `row` of KV head `kv_head`.
  void SetKey(int kv_head, int row, int e, float value) {
    k_.Set(kv_head * kv_head_stride_ + row * kv_row_stride_ + e, value);
  }

  const ProblemSpec& spec() const { return spec_; }
  int num_q_blocks() const { return spec_.lq / spec_.block_size; }
  int num_kv_blocks() const { return spec_.lk / spec_.block_size; }
  // Largest |V| entry: O is a convex combination of V rows, so errors are relative to it.
  float max_abs_value() const {
    float m = 0.f;
    for (float x : v_.f32) {
      if (!std::isnan(x)) m = std::max(m, std::fabs(x));
    }
    return m;
  }

  std::vector<int32_t> q_pos, k_pos;
  int64_t k_pos_head_stride = 0;
  std::vector<int32_t> row_offsets, kv_blocks_ids;
  std::vector<float> o, lse;  // outputs, NaN until a kernel writes them

 private:
  ProblemSpec spec_;
  int64_t q_head_stride_, kv_row_stride_, kv_head_stride_;
  StoredTensor q_, k_, v_;
  std::mt19937 rng_;
};

// Plain fp32 attention: per row, dot products summed in order, exact softmax (max, then
// std::exp and sum), P V summed in order. The error it makes against fp64 is what fp32
// arithmetic on this input costs; the kernel is held to a small multiple of it.
inline void NaiveF32Attention(const AttentionParams& p, std::vector<float>* o,
                              std::vector<float>* lse) {
  const int b = p.block_size, d = p.head_dim, group = p.hq / p.hkv;
  const size_t elem = DTypeSize(p.dtype);
  auto rows = [&](const void* base, int64_t first, int64_t stride, int n) {
    std::vector<float> out(static_cast<size_t>(n) * d);
    for (int r = 0; r < n; ++r) {
      ConvertToF32(p.dtype, static_cast<const char*>(base) + (first + r * stride) * elem,
                   out.data() + static_cast<size_t>(r) * d, d);
    }
    return out;
  };
  o->assign(static_cast<size_t>(p.lq) * p.hq * d, 0.f);
  lse->assign(static_cast<size_t>(p.lq) * p.hq, -INFINITY);
  for (int h = 0; h < p.hq; ++h) {
    const int g = h / group;
    const std::vector<float> q = rows(p.q, h * p.q_head_stride, p.q_row_stride, p.lq);
    const std::vector<float> k = rows(p.k, g * p.kv_head_stride, p.kv_row_stride, p.lk);
    const std::vector<float> v = rows(p.v, g * p.kv_head_stride, p.kv_row_stride, p.lk);
    for (int i = 0; i < p.lq; ++i) {
      const int mask_row = h * (p.lq / b) + i / b;
      std::vector<float> scores;
      std::vector<int64_t> keys;
      for (int32_t e = p.mask_row_offsets[mask_row]; e < p.mask_row_offsets[mask_row + 1]; ++e) {
        for (int j = p.mask_kv_blocks[e] * b; j < (p.mask_kv_blocks[e] + 1) * b; ++j) {
          if (p.causal && p.k_pos[g * p.k_pos_head_stride + j] > p.q_pos[i]) continue;
          float s = 0.f;
          for (int c = 0; c < d; ++c) s += q[i * d + c] * k[j * d + c];
          scores.push_back(s * p.scale);
          keys.push_back(j);
        }
      }
      if (scores.empty()) continue;
      const float max = *std::max_element(scores.begin(), scores.end());
      float sum = 0.f;
      for (float& s : scores) sum += (s = std::exp(s - max));
      float* out = o->data() + (static_cast<size_t>(i) * p.hq + h) * d;
      for (size_t n = 0; n < keys.size(); ++n) {
        for (int c = 0; c < d; ++c) out[c] += scores[n] * v[keys[n] * d + c];
      }
      for (int c = 0; c < d; ++c) out[c] /= sum;
      (*lse)[static_cast<size_t>(i) * p.hq + h] = max + std::log(sum);
    }
  }
}

// Largest errors of an fp32 result against the fp64 reference, over rows with a visible key;
// `empty_rows_exact` says whether every row without one has LSE -inf and O exactly 0.
struct AttentionErrors {
  double o = 0;    // max |O - O_ref|
  double lse = 0;  // max |LSE - LSE_ref|
  bool empty_rows_exact = true;
  int64_t empty_rows = 0;
};

inline AttentionErrors MeasureErrors(const std::vector<float>& o, const std::vector<float>& lse,
                                     const std::vector<double>& ref_o,
                                     const std::vector<double>& ref_lse, int head_dim) {
  AttentionErrors e;
  for (size_t r = 0; r < ref_lse.size(); ++r) {
    const bool empty = ref_lse[r] == -std::numeric_limits<double>::infinity();
    if (empty) {
      ++e.empty_rows;
      e.empty_rows_exact &= lse[r] == -INFINITY;
    } else {
      e.lse = std::max(e.lse, std::fabs(lse[r] - ref_lse[r]));
      if (std::isnan(lse[r])) e.lse = INFINITY;
    }
    for (int d = 0; d < head_dim; ++d) {
      const size_t i = r * head_dim + d;
      if (empty) {
        e.empty_rows_exact &= o[i] == 0.f;
      } else {
        e.o = std::max(e.o, std::fabs(o[i] - ref_o[i]));
        if (std::isnan(o[i])) e.o = INFINITY;
      }
    }
  }
  return e;
}

// Sets PREFILL_CPU_ISA for the lifetime of the object ("" unsets it).
class ScopedCpuIsa {
 public:
  explicit ScopedCpuIsa(const std::string& isa) {
    if (const char* old = std::getenv("PREFILL_CPU_ISA")) saved_ = old;
    Apply(isa);
  }
  ~ScopedCpuIsa() { Apply(saved_.value_or("")); }
  ScopedCpuIsa(const ScopedCpuIsa&) = delete;
  ScopedCpuIsa& operator=(const ScopedCpuIsa&) = delete;

 private:
  static void Apply(const std::string& isa) {
    if (isa.empty()) {
      unsetenv("PREFILL_CPU_ISA");
    } else {
      setenv("PREFILL_CPU_ISA", isa.c_str(), 1);
    }
  }
  std::optional<std::string> saved_;
};

}  // namespace prefill::attention_test
