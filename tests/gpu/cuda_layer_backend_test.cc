// The CUDA LayerBackend (kernels/cuda/cuda_layer_backend.h) against fp64 host references
// written here, op by op, each with an error bound derived from what the device computes:
//   Linear   bf16 x bf16 products (exact in fp32) summed in fp32 by cuBLAS. Checked twice:
//            against fp64 sums of the bf16-rounded operands (only the fp32 summation error is
//            left, so a missing bias or a transposed operand cannot hide), and against fp64
//            sums of the fp32 operands (the bound on bf16 rounding itself).
//   RmsNorm  fp32 block sum of squares, one sqrt and one division: relative 1e-5.
//   SplitQkv q and k rotated with angles in double up to position 2,000,000, cos/sin rounded to
//            fp32 once: a few fp32 roundings of |a| + |b| (the test checks that an fp32-angle
//            rotation would fail it); v copied exactly.
//   SwiGlu   expf (2 ulp) and three rounded operations: relative 1e-6.
//   bf16     each op again with bf16 activations (what the model runs on CUDA): the same
//            bounds on the bf16 inputs plus one bf16 rounding of the result (2^-8 relative);
//            Linear also accumulating into fp32 (the residual add in the GEMM epilogue).
//   PrepareMatrix  bf16 round to nearest even, bit for bit.
// Every op runs on both its float4 path and its scalar path (odd sizes, offset pointers), and
// bad params give InvalidArgument.
#include "kernels/cuda/cuda_layer_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "kernels/layer_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace prefill {
namespace {

using gpu_test::DeviceBuffer;

constexpr double kF32Unit = 0x1p-24;  // fp32 unit roundoff
constexpr double kBf16Unit = 0x1p-8;  // bf16 unit roundoff (8-bit significand)

// bf16 bits of f, round to nearest even, for finite and infinite f. Written here rather than
// taken from kernels/dtype.h, so the device is checked against an independent statement.
uint16_t Bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t lower = u & 0xffffu;
  uint32_t upper = u >> 16;
  if (lower > 0x8000u || (lower == 0x8000u && (upper & 1u))) ++upper;  // carries into the exponent
  return static_cast<uint16_t>(upper);
}

float Bf16Value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

double RoundToBf16(float f) { return Bf16Value(Bf16Bits(f)); }

std::vector<float> Normal(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

class CudaLayerBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PREFILL_SKIP_WITHOUT_GPU();
    attention_ = gpu_test::MakeBackend();
    ASSERT_NE(attention_, nullptr);
    absl::StatusOr<std::unique_ptr<LayerBackend>> layer = CreateCudaLayerBackend(*attention_);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layer_ = *std::move(layer);
  }

  // y = x W^T (+ bias) on `layer` against the two fp64 references (see the file comment).
  void CheckLinear(LayerBackend& layer, int64_t rows, int64_t in, int64_t out, bool with_bias) {
    SCOPED_TRACE(testing::Message() << "rows " << rows << " in " << in << " out " << out
                                    << (with_bias ? " bias" : ""));
    const uint32_t seed = static_cast<uint32_t>(rows * 131 + in * 7 + out);
    // Llama-like scales: unit activations, weights of stddev 1/sqrt(in), unit biases.
    const std::vector<float> x = Normal(rows * in, 1.f, seed);
    const std::vector<float> w =
        Normal(out * in, 1.f / std::sqrt(static_cast<float>(in)), seed + 1);
    const std::vector<float> bias = Normal(out, 1.f, seed + 2);
    absl::StatusOr<WeightMatrix> matrix = layer.PrepareMatrix(w, out, in);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    DeviceBuffer d_x(*attention_, x), d_bias(*attention_, bias);
    DeviceBuffer d_y(*attention_, rows * out * sizeof(float));
    LinearParams p;
    p.x = d_x.as<float>();
    p.rows = rows;
    p.w = &*matrix;
    p.bias = with_bias ? d_bias.as<float>() : nullptr;
    p.y = d_y.as<float>();
    ASSERT_TRUE(layer.Linear(p).ok());
    const std::vector<float> y = d_y.Download<float>(*attention_);

    std::vector<double> x16(x.size()), w16(w.size());
    for (size_t i = 0; i < x.size(); ++i) x16[i] = RoundToBf16(x[i]);
    for (size_t i = 0; i < w.size(); ++i) w16[i] = RoundToBf16(w[i]);
    int bad_rounded = 0, bad_exact = 0;
    double worst_rounded = 0, worst_exact = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        double exact = 0, rounded = 0, magnitude = 0, magnitude16 = 0;
        for (int64_t k = 0; k < in; ++k) {
          const double xk = x[r * in + k], wk = w[o * in + k];
          exact += xk * wk;
          magnitude += std::abs(xk * wk);
          const double p16 = x16[r * in + k] * w16[o * in + k];
          rounded += p16;
          magnitude16 += std::abs(p16);
        }
        const double b = with_bias ? bias[o] : 0.0;
        const double got = y[r * out + o];
        // Products of bf16 values are exact in fp32; any order of in - 1 fp32 additions errs
        // by at most (in - 1) u sum |p|. Twice that allows for tensor cores that truncate
        // instead of rounding while accumulating; the bias add is one more rounding.
        const double tol_rounded =
            2.0 * in * kF32Unit * magnitude16 + 2 * kF32Unit * std::abs(rounded + b) + 1e-30;
        // Rounding x and w to bf16 moves each product by at most (2 u16 + u16^2) |x w| = 2^-7
        // (1 + 2^-9) |x w|; 1.5x covers that plus the fp32 summation above (<= 2^-12 relative
        // for in <= 2048) and the bias rounding, 1e-6 absolute for outputs near zero.
        const double tol_exact =
            1.5 * 0x1p-7 * magnitude + 2 * kF32Unit * std::abs(exact + b) + 1e-6;
        const double err_rounded = std::abs(got - (rounded + b));
        const double err_exact = std::abs(got - (exact + b));
        worst_rounded = std::max(worst_rounded, err_rounded / tol_rounded);
        worst_exact = std::max(worst_exact, err_exact / tol_exact);
        if (!(err_rounded <= tol_rounded) && bad_rounded++ < 5) {
          ADD_FAILURE() << "y[" << r << ", " << o << "] = " << got << ", bf16-operand reference "
                        << rounded + b << ", tolerance " << tol_rounded;
        }
        if (!(err_exact <= tol_exact) && bad_exact++ < 5) {
          ADD_FAILURE() << "y[" << r << ", " << o << "] = " << got << ", fp32-operand reference "
                        << exact + b << ", tolerance " << tol_exact;
        }
      }
    }
    EXPECT_EQ(bad_rounded, 0) << "worst error / tolerance " << worst_rounded;
    EXPECT_EQ(bad_exact, 0) << "worst error / tolerance " << worst_exact;
  }

  std::unique_ptr<AttentionBackend> attention_;  // declared first: outlives layer_
  std::unique_ptr<LayerBackend> layer_;
};

struct LinearShape {
  int64_t rows, in, out;
};

// Multiples of 8 (the aligned cuBLAS path, float4 conversion) and not (odd leading
// dimensions, rows of x that are not 16-byte aligned).
constexpr LinearShape kLinearShapes[] = {
    {1, 64, 48}, {7, 1001, 130}, {300, 1024, 2048}, {33, 100, 37}, {5, 72, 1027}};

TEST_F(CudaLayerBackendTest, LinearMatchesFp64Reference) {
  for (const LinearShape& s : kLinearShapes) {
    for (bool with_bias : {false, true}) CheckLinear(*layer_, s.rows, s.in, s.out, with_bias);
  }
}

// Small scratch and upload chunks: Linear runs in chunks of 32 rows (the last one partial),
// PrepareMatrix uploads 248 values at a time.
TEST_F(CudaLayerBackendTest, LinearInChunksMatchesFp64Reference) {
  CudaLayerBackendOptions options;
  options.linear_scratch_bytes = 32 * 1024 * sizeof(uint16_t);
  options.upload_chunk_bytes = 1000;
  absl::StatusOr<std::unique_ptr<LayerBackend>> chunked =
      CreateCudaLayerBackend(*attention_, options);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  CheckLinear(**chunked, 300, 1024, 256, true);
  CheckLinear(**chunked, 45, 1001, 130, true);
}

TEST_F(CudaLayerBackendTest, LinearWithNoRowsIsANoOp) {
  const std::vector<float> w = Normal(16 * 8, 1.f, 3);
  absl::StatusOr<WeightMatrix> matrix = layer_->PrepareMatrix(w, 16, 8);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  LinearParams p;
  p.w = &*matrix;
  EXPECT_TRUE(layer_->Linear(p).ok());
}

// Exact bf16 rounding of every value: ties to even (up and down), carries into the exponent,
// overflow to infinity, subnormals, signed zeros, infinities, and values across magnitudes.
// n = 3 * 1001 is not a multiple of 4 (the conversion's scalar tail).
TEST_F(CudaLayerBackendTest, PrepareMatrixRoundsToNearestEven) {
  const int64_t rows = 3, cols = 1001;
  std::vector<float> values = Normal(rows * cols, 1.f, 11);
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> exponent(-30.f, 30.f);
  for (size_t i = 0; i < values.size(); i += 3) values[i] *= std::exp2(exponent(rng));
  const float special[] = {1.f + 0x1p-8f,      // tie, even neighbour below: 1
                           1.f + 3 * 0x1p-8f,  // tie, even neighbour above: 1 + 2^-6
                           -(1.f + 0x1p-8f),
                           1.f + 0x1p-8f + 0x1p-20f,
                           0x1.ff8p0f,  // rounds up across the exponent: 2
                           FLT_MAX,     // beyond bf16's largest: infinity
                           -FLT_MAX,
                           0x1.fefffep127f,
                           std::numeric_limits<float>::denorm_min(),
                           0x1.8p-130f,
                           0x1.0001p-128f,
                           FLT_MIN,
                           0.f,
                           -0.f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  for (size_t i = 0; i < std::size(special); ++i) values[i * 37] = special[i];

  for (size_t chunk_bytes : {size_t{32} << 20, size_t{1000}, size_t{4}}) {
    SCOPED_TRACE(chunk_bytes);
    CudaLayerBackendOptions options;
    options.upload_chunk_bytes = chunk_bytes;
    absl::StatusOr<std::unique_ptr<LayerBackend>> layer =
        CreateCudaLayerBackend(*attention_, options);
    ASSERT_TRUE(layer.ok()) << layer.status();
    absl::StatusOr<WeightMatrix> matrix = (*layer)->PrepareMatrix(values, rows, cols);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    EXPECT_EQ(matrix->rows, rows);
    EXPECT_EQ(matrix->cols, cols);
    EXPECT_EQ(matrix->owned.get(), matrix->data);
    std::vector<uint16_t> bits(values.size());
    ASSERT_TRUE(
        attention_->CopyToHost(bits.data(), matrix->data, bits.size() * sizeof(uint16_t)).ok());
    int bad = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      if (bits[i] != Bf16Bits(values[i]) && bad++ < 10) {
        ADD_FAILURE() << "value " << i << " = " << values[i] << " (" << std::hexfloat << values[i]
                      << std::defaultfloat << "): device bf16 0x" << std::hex << bits[i]
                      << ", expected 0x" << Bf16Bits(values[i]) << std::dec;
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

// y = x / sqrt(mean(x^2) + eps) * weight. Rows span six decades of scale, so eps matters in
// some (mean(x^2) from 1e-6 to 1e4 against eps = 1e-5) and a misplaced eps shows; one row is
// zero. Device error: the fp32 sum of squares errs by at most (features / 256 + 8) u relative
// (each thread's sequential partial, then a tree of 256), halved by the sqrt, plus the
// division and two products: under 2e-6 relative for 4096 features. 1e-5 leaves margin.
TEST_F(CudaLayerBackendTest, RmsNormMatchesFp64Reference) {
  const int64_t rows = 37;
  const float eps = 1e-5f;
  for (int64_t features : {int64_t{4096}, int64_t{1001}}) {
    for (bool in_place : {false, true}) {
      for (int offset : {0, 1}) {  // 1: pointers off 16-byte alignment, the scalar path
        SCOPED_TRACE(testing::Message() << "features " << features << (in_place ? " in place" : "")
                                        << " offset " << offset);
        std::vector<float> x = Normal(rows * features, 1.f, static_cast<uint32_t>(features));
        for (int64_t r = 0; r < rows; ++r) {
          const float scale = r == 5 ? 0.f : std::pow(10.f, static_cast<float>(r % 6) - 3.f);
          for (int64_t i = 0; i < features; ++i) x[r * features + i] *= scale;
        }
        std::vector<float> weight = Normal(features, 0.2f, 5);
        for (float& v : weight) v += 1.f;
        std::vector<float> padded_x(offset), padded_w(offset);
        padded_x.insert(padded_x.end(), x.begin(), x.end());
        padded_w.insert(padded_w.end(), weight.begin(), weight.end());
        DeviceBuffer d_x(*attention_, padded_x), d_w(*attention_, padded_w);
        DeviceBuffer d_y(*attention_, padded_x.size() * sizeof(float));
        RmsNormParams p;
        p.x = d_x.as<float>() + offset;
        p.weight = d_w.as<float>() + offset;
        p.rows = rows;
        p.features = features;
        p.eps = eps;
        p.y = in_place ? d_x.as<float>() + offset : d_y.as<float>() + offset;
        ASSERT_TRUE(layer_->RmsNorm(p).ok());
        const std::vector<float> y_all = (in_place ? d_x : d_y).Download<float>(*attention_);
        int bad = 0;
        for (int64_t r = 0; r < rows; ++r) {
          double sum = 0;
          for (int64_t i = 0; i < features; ++i)
            sum += double{x[r * features + i]} * x[r * features + i];
          const double inv = 1.0 / std::sqrt(sum / static_cast<double>(features) + double{eps});
          for (int64_t i = 0; i < features; ++i) {
            const double want = double{x[r * features + i]} * inv * weight[i];
            const double got = y_all[offset + r * features + i];
            if (!(std::abs(got - want) <= 1e-5 * std::abs(want)) && bad++ < 5) {
              ADD_FAILURE() << "y[" << r << ", " << i << "] = " << got << ", want " << want;
            }
          }
        }
        EXPECT_EQ(bad, 0);
      }
    }
  }
}

// Counts values outside want +- tol, reporting the first few (defined below).
int CountOutside(std::span<const double> got, std::span<const double> want,
                 std::span<const double> tol, const char* what);

// What SplitQkv must write for one fused row layout: want[i] and, per value, the scale of its
// rounding bound (|a| + |b| of its rotation; 0 for v, copied exactly). Outputs are q, then k,
// then v, each [rows, heads, head_dim], end to end.
struct SplitQkvExpectation {
  std::vector<double> want, scale;
};
SplitQkvExpectation SplitQkvReference(const std::vector<double>& qkv, int64_t rows, int heads,
                                      int kv_heads, int head_dim,
                                      const std::vector<int32_t>& positions,
                                      const std::vector<double>& inv_freq) {
  const int half = head_dim / 2, all = heads + 2 * kv_heads;
  SplitQkvExpectation e;
  e.want.resize(qkv.size());
  e.scale.resize(qkv.size());
  for (int hh = 0; hh < all; ++hh) {
    // Output block of head hh and its index there.
    const int block = hh < heads ? 0 : hh < heads + kv_heads ? 1 : 2;
    const int h = block == 0 ? hh : block == 1 ? hh - heads : hh - heads - kv_heads;
    const int block_heads = block == 0 ? heads : kv_heads;
    const int64_t base =
        block == 0 ? 0 : rows * heads * head_dim + (block - 1) * rows * kv_heads * head_dim;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t in = (r * all + hh) * int64_t{head_dim};
      const int64_t out = base + (r * block_heads + h) * int64_t{head_dim};
      for (int i = 0; i < half; ++i) {
        const double a = qkv[in + i], b = qkv[in + i + half];
        if (block == 2) {
          e.want[out + i] = a;
          e.want[out + i + half] = b;
          continue;
        }
        const double angle = static_cast<double>(positions[r]) * inv_freq[i];
        e.want[out + i] = a * std::cos(angle) - b * std::sin(angle);
        e.want[out + i + half] = b * std::cos(angle) + a * std::sin(angle);
        e.scale[out + i] = e.scale[out + i + half] = std::abs(a) + std::abs(b);
      }
    }
  }
  return e;
}

// Llama-3-like frequencies (theta 500000) at positions up to 2,000,000. The device takes the
// same double angle, position * inv_freq[i], and rounds its cos/sin to fp32 (relative u
// each); a * cos - b * sin then adds a rounding per product and one for the difference:
// |err| <= 3 u (|a| + |b|). The test allows 8 u (|a| + |b|), and checks that a rotation with
// fp32 angles (ulp 0.125 rad at 2e6) would miss it by orders of magnitude.
TEST_F(CudaLayerBackendTest, SplitQkvMatchesFp64ReferenceAtLongPositions) {
  const int64_t rows = 67;
  struct Shape {
    int heads, kv_heads, head_dim, offset;
  };
  // 128 and 64: the float4 path; 6 (half 3): the scalar path; offset 1: unaligned qkv.
  for (const Shape s :
       {Shape{8, 2, 128, 0}, Shape{3, 0, 64, 0}, Shape{5, 1, 6, 0}, Shape{4, 4, 128, 1}}) {
    SCOPED_TRACE(testing::Message() << "heads " << s.heads << " kv_heads " << s.kv_heads
                                    << " head_dim " << s.head_dim << " offset " << s.offset);
    const int half = s.head_dim / 2;
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(500000.0, -2.0 * i / s.head_dim);
    std::mt19937 rng(static_cast<uint32_t>(s.head_dim));
    std::uniform_int_distribution<int32_t> position_dist(0, 2'000'000);
    std::vector<int32_t> positions(rows);
    for (int32_t& pos : positions) pos = position_dist(rng);
    positions[0] = 0;
    positions[1] = 1;
    positions[2] = 2'000'000;
    positions[3] = 1'999'999;
    positions[4] = 1'048'576;
    const int64_t q_elems = rows * s.heads * s.head_dim, kv_elems = rows * s.kv_heads * s.head_dim;
    const std::vector<float> x = Normal(q_elems + 2 * kv_elems, 1.f, 17);
    std::vector<float> padded(s.offset);
    padded.insert(padded.end(), x.begin(), x.end());
    DeviceBuffer d_x(*attention_, padded), d_pos(*attention_, positions),
        d_freq(*attention_, inv_freq);
    DeviceBuffer d_out(*attention_, std::vector<float>(x.size(), std::nanf("")));
    QkvSplitParams p;
    p.qkv = d_x.as<float>() + s.offset;
    p.rows = rows;
    p.heads = s.heads;
    p.kv_heads = s.kv_heads;
    p.head_dim = s.head_dim;
    p.positions = d_pos.as<int32_t>();
    p.inv_freq = d_freq.as<double>();
    p.q = d_out.as<float>();
    p.k = d_out.as<float>() + q_elems;
    p.v = d_out.as<float>() + q_elems + kv_elems;
    ASSERT_TRUE(layer_->SplitQkv(p).ok());
    const std::vector<float> y = d_out.Download<float>(*attention_);
    const SplitQkvExpectation e =
        SplitQkvReference(std::vector<double>(x.begin(), x.end()), rows, s.heads, s.kv_heads,
                          s.head_dim, positions, inv_freq);
    std::vector<double> got(y.begin(), y.end()), tol(y.size());
    for (size_t i = 0; i < tol.size(); ++i) tol[i] = 8 * kF32Unit * e.scale[i];
    EXPECT_EQ(CountOutside(got, e.want, tol, "q|k|v"), 0);

    double fp32_angle_worst = 0;  // worst error / tolerance of a rotation with fp32 angles
    for (int64_t r = 0; r < rows; ++r) {
      for (int i = 0; i < half; ++i) {
        const int64_t lo = r * s.heads * s.head_dim + i;  // q head 0
        const float angle32 = static_cast<float>(positions[r]) * static_cast<float>(inv_freq[i]);
        const double lo32 = x[lo] * std::cos(angle32) - x[lo + half] * std::sin(angle32);
        fp32_angle_worst =
            std::max(fp32_angle_worst, std::abs(lo32 - e.want[lo]) / (tol[lo] + 1e-300));
      }
    }
    EXPECT_GT(fp32_angle_worst, 100.0) << "the tolerance would not catch fp32 angles";
  }
}

// gate <- gate / (1 + exp(-gate)) * up. Device error: expf (2 ulp, 2^-22 relative), then
// 1 + e, the division and the product (u each; the error of e reaches the result damped by
// e / (1 + e) <= 1): under 4.2e-7 relative, checked at 1e-6. Edge values +-80 stay clear of
// exp overflow (the result is then exactly +-0 or gate * up on both sides).
TEST_F(CudaLayerBackendTest, SwiGluMatchesFp64Reference) {
  const int64_t n = 1'000'003;
  std::vector<float> gate = Normal(n, 3.f, 21);
  const std::vector<float> up = Normal(n, 1.f, 22);
  const float edges[] = {0.f, -0.f, 80.f, -80.f, 20.f, -20.f, 1e-30f, -1e-30f};
  for (size_t i = 0; i < std::size(edges); ++i) gate[i * 1001] = edges[i];
  for (int offset : {0, 1}) {
    SCOPED_TRACE(offset);
    std::vector<float> padded_gate(offset), padded_up(offset);
    padded_gate.insert(padded_gate.end(), gate.begin(), gate.end());
    padded_up.insert(padded_up.end(), up.begin(), up.end());
    DeviceBuffer d_gate(*attention_, padded_gate), d_up(*attention_, padded_up);
    SwiGluParams p;
    p.gate = d_gate.as<float>() + offset;
    p.up = d_up.as<float>() + offset;
    p.n = n;
    ASSERT_TRUE(layer_->SwiGlu(p).ok());
    const std::vector<float> got = d_gate.Download<float>(*attention_);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i];
      const double want = g / (1.0 + std::exp(-g)) * up[i];
      if (!(std::abs(got[offset + i] - want) <= 1e-6 * std::abs(want)) && bad++ < 5) {
        ADD_FAILURE() << "i " << i << ": silu(" << gate[i] << ") * " << up[i] << " = "
                      << got[offset + i] << ", want " << want;
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = Bf16Bits(v[i]);
  return bits;
}

std::vector<double> FromBf16(const std::vector<uint16_t>& bits) {
  std::vector<double> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) v[i] = Bf16Value(bits[i]);
  return v;
}

// Counts values outside want +- tol, reporting the first few.
int CountOutside(std::span<const double> got, std::span<const double> want,
                 std::span<const double> tol, const char* what) {
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= tol[i]) && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", want " << want[i]
                    << ", tolerance " << tol[i];
    }
  }
  return bad;
}

// bf16 x in; y in bf16 (rounded once by the GEMM, once after the bias), and y fp32 accumulated onto
// its previous values (beta = 1: the previous value enters the sum, one more fp32 rounding).
TEST_F(CudaLayerBackendTest, LinearWithBf16ActivationsAndAccumulate) {
  for (const LinearShape& s : kLinearShapes) {
    SCOPED_TRACE(testing::Message() << "rows " << s.rows << " in " << s.in << " out " << s.out);
    const std::vector<uint16_t> x = ToBf16(Normal(s.rows * s.in, 1.f, 51));
    const std::vector<float> w =
        Normal(s.out * s.in, 1.f / std::sqrt(static_cast<float>(s.in)), 52);
    const std::vector<float> bias = Normal(s.out, 1.f, 53);
    const std::vector<float> acc = Normal(s.rows * s.out, 4.f, 54);
    absl::StatusOr<WeightMatrix> matrix = layer_->PrepareMatrix(w, s.out, s.in);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    DeviceBuffer d_x(*attention_, x), d_bias(*attention_, bias), d_acc(*attention_, acc);
    DeviceBuffer d_y(*attention_, s.rows * s.out * sizeof(uint16_t));
    LinearParams p{d_x.get(),          DType::kBF16, s.rows,      &*matrix,
                   d_bias.as<float>(), d_y.get(),    DType::kBF16};
    ASSERT_TRUE(layer_->Linear(p).ok());
    p.y = d_acc.get();
    p.y_dtype = DType::kF32;
    p.accumulate = true;
    ASSERT_TRUE(layer_->Linear(p).ok());
    const std::vector<double> y16 = FromBf16(d_y.Download<uint16_t>(*attention_));
    const std::vector<float> y32 = d_acc.Download<float>(*attention_);

    const std::vector<double> xv = FromBf16(x);
    std::vector<double> got32(y32.begin(), y32.end()), want16, tol16, want32, tol32;
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t o = 0; o < s.out; ++o) {
        double sum = bias[o], magnitude = std::abs(bias[o]);
        for (int64_t k = 0; k < s.in; ++k) {
          const double product = xv[r * s.in + k] * RoundToBf16(w[o * s.in + k]);
          sum += product;
          magnitude += std::abs(product);
        }
        const double fp32_sum = 2.0 * (s.in + 2) * kF32Unit * magnitude;  // as in CheckLinear
        want16.push_back(sum);
        // The bias is added after the GEMM has rounded its output to bf16: two roundings.
        const double dot = sum - bias[o];
        tol16.push_back(fp32_sum * (1 + kBf16Unit) +
                        kBf16Unit * (std::abs(dot) + (1 + kBf16Unit) * std::abs(sum)) + 1e-30);
        const double a = acc[r * s.out + o];
        want32.push_back(a + sum);
        tol32.push_back(fp32_sum + 2 * kF32Unit * (std::abs(a) + std::abs(a + sum)) + 1e-30);
      }
    }
    EXPECT_EQ(CountOutside(y16, want16, tol16, "bf16 y"), 0);
    EXPECT_EQ(CountOutside(got32, want32, tol32, "accumulated y"), 0);
  }
}

// RMSNorm of the fp32 residual written as bf16: the fp32 bound (1e-5) plus one bf16 rounding.
TEST_F(CudaLayerBackendTest, RmsNormWritesBf16) {
  for (int64_t features : {int64_t{4096}, int64_t{1001}}) {
    SCOPED_TRACE(features);
    const int64_t rows = 9;
    const std::vector<float> x = Normal(rows * features, 3.f, 61);
    std::vector<float> weight = Normal(features, 0.2f, 62);
    for (float& v : weight) v += 1.f;
    DeviceBuffer d_x(*attention_, x), d_w(*attention_, weight);
    DeviceBuffer d_y(*attention_, rows * features * sizeof(uint16_t));
    RmsNormParams p{d_x.as<float>(), d_w.as<float>(), rows,        features,
                    1e-5f,           d_y.get(),       DType::kBF16};
    ASSERT_TRUE(layer_->RmsNorm(p).ok());
    const std::vector<double> got = FromBf16(d_y.Download<uint16_t>(*attention_));
    std::vector<double> want, tol;
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t i = 0; i < features; ++i)
        sum += double{x[r * features + i]} * x[r * features + i];
      const double inv = 1.0 / std::sqrt(sum / static_cast<double>(features) + 1e-5);
      for (int64_t i = 0; i < features; ++i) {
        want.push_back(double{x[r * features + i]} * inv * weight[i]);
        tol.push_back((1e-5 + kBf16Unit) * std::abs(want.back()));
      }
    }
    EXPECT_EQ(CountOutside(got, want, tol, "y"), 0);
  }
}

// The split of a bf16 fused projection with its fp32 bias (Qwen2): the bias added in fp32
// (one rounding, within the rotation's 8 u bound of the biased values), the fp32 rotation's
// bound, plus the rounding of the result to bf16 (v: that rounding alone).
TEST_F(CudaLayerBackendTest, SplitQkvInBf16) {
  const int64_t rows = 33;
  for (const int head_dim : {128, 6}) {  // the vector path and the scalar path
    SCOPED_TRACE(head_dim);
    const int heads = 4, kv_heads = 2, half = head_dim / 2;
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(500000.0, -2.0 * i / head_dim);
    std::vector<int32_t> positions(rows);
    for (int64_t r = 0; r < rows; ++r) positions[r] = static_cast<int32_t>(r * 60'607);
    const int64_t q_elems = rows * heads * head_dim, kv_elems = rows * kv_heads * head_dim;
    const std::vector<uint16_t> x = ToBf16(Normal(q_elems + 2 * kv_elems, 1.f, 71));
    const int64_t row_in = int64_t{heads + 2 * kv_heads} * head_dim;
    const std::vector<float> bias = Normal(row_in, 3.f, 73);
    DeviceBuffer d_x(*attention_, x), d_pos(*attention_, positions), d_freq(*attention_, inv_freq);
    DeviceBuffer d_bias(*attention_, bias);
    DeviceBuffer d_out(*attention_, std::vector<uint16_t>(x.size(), 0x7fc0));  // NaN
    auto* out = static_cast<uint16_t*>(d_out.get());
    QkvSplitParams p{d_x.get(),
                     DType::kBF16,
                     rows,
                     heads,
                     kv_heads,
                     head_dim,
                     d_pos.as<int32_t>(),
                     d_freq.as<double>(),
                     out,
                     out + q_elems,
                     out + q_elems + kv_elems,
                     d_bias.as<float>()};
    ASSERT_TRUE(layer_->SplitQkv(p).ok());
    const std::vector<double> got = FromBf16(d_out.Download<uint16_t>(*attention_));
    std::vector<double> biased = FromBf16(x);
    for (size_t i = 0; i < biased.size(); ++i) biased[i] += bias[i % row_in];
    const SplitQkvExpectation e =
        SplitQkvReference(biased, rows, heads, kv_heads, head_dim, positions, inv_freq);
    std::vector<double> tol(got.size());
    for (size_t i = 0; i < tol.size(); ++i) {
      tol[i] = 8 * kF32Unit * (e.scale[i] + std::abs(e.want[i])) + kBf16Unit * std::abs(e.want[i]);
    }
    EXPECT_EQ(CountOutside(got, e.want, tol, "q|k|v"), 0);
  }
}

// The fused gate/up layout: rows of [gate | up], silu(gate) * up written over gate, up untouched.
TEST_F(CudaLayerBackendTest, SwiGluOnFusedRowsInBf16) {
  const int64_t rows = 37;
  for (const int64_t n : {int64_t{256}, int64_t{101}}) {  // the vector path and the scalar path
    SCOPED_TRACE(n);
    const std::vector<uint16_t> fused = ToBf16(Normal(rows * 2 * n, 2.f, 83));
    DeviceBuffer d_fused(*attention_, fused);
    auto* base = static_cast<uint16_t*>(d_fused.get());
    ASSERT_TRUE(layer_->SwiGlu({base, base + n, DType::kBF16, n, rows, 2 * n}).ok());
    const std::vector<double> got = FromBf16(d_fused.Download<uint16_t>(*attention_)),
                              x = FromBf16(fused);
    std::vector<double> want(x), tol(x.size(), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        const double g = x[r * 2 * n + i], u = x[r * 2 * n + n + i];
        want[r * 2 * n + i] = g / (1.0 + std::exp(-g)) * u;
        tol[r * 2 * n + i] = (1e-6 + kBf16Unit) * std::abs(want[r * 2 * n + i]);
      }
    }
    EXPECT_EQ(CountOutside(got, want, tol, "gate_up"), 0);
  }
}

// Rows of a bf16 table gathered as fp32, exactly; ids out of range give zeros.
TEST_F(CudaLayerBackendTest, EmbedGathersBf16Rows) {
  for (const int64_t hidden : {int64_t{256}, int64_t{6}}) {  // the vector path and the scalar path
    SCOPED_TRACE(hidden);
    const int64_t vocab = 50;
    const std::vector<float> table = Normal(vocab * hidden, 1.f, 91);
    absl::StatusOr<WeightMatrix> w = layer_->PrepareMatrix(table, vocab, hidden);
    ASSERT_TRUE(w.ok()) << w.status();
    const std::vector<int32_t> ids = {3, 0, 49, -1, 50, 7, 3};
    DeviceBuffer d_ids(*attention_, ids),
        d_y(*attention_, std::vector<float>(ids.size() * hidden, std::nanf("")));
    ASSERT_TRUE(
        layer_->Embed({d_ids.as<int32_t>(), static_cast<int64_t>(ids.size()), &*w, d_y.as<float>()})
            .ok());
    const std::vector<float> y = d_y.Download<float>(*attention_);
    for (size_t r = 0; r < ids.size(); ++r) {
      for (int64_t c = 0; c < hidden; ++c) {
        const bool valid = ids[r] >= 0 && ids[r] < vocab;
        const float want =
            valid ? static_cast<float>(Bf16Value(Bf16Bits(table[ids[r] * hidden + c]))) : 0.f;
        ASSERT_EQ(y[r * hidden + c], want) << "row " << r << " (id " << ids[r] << ") col " << c;
      }
    }
  }
}

// SwiGLU on bf16 gate/up, odd n (the scalar tail): the fp32 bound plus one bf16 rounding.
TEST_F(CudaLayerBackendTest, SwiGluInBf16) {
  const int64_t n = 100'003;
  const std::vector<uint16_t> gate = ToBf16(Normal(n, 3.f, 81)), up = ToBf16(Normal(n, 1.f, 82));
  DeviceBuffer d_gate(*attention_, gate), d_up(*attention_, up);
  ASSERT_TRUE(layer_->SwiGlu({d_gate.get(), d_up.get(), DType::kBF16, n}).ok());
  const std::vector<double> got = FromBf16(d_gate.Download<uint16_t>(*attention_));
  const std::vector<double> g = FromBf16(gate), u = FromBf16(up);
  std::vector<double> want(n), tol(n);
  for (int64_t i = 0; i < n; ++i) {
    want[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    tol[i] = (1e-6 + kBf16Unit) * std::abs(want[i]);
  }
  EXPECT_EQ(CountOutside(got, want, tol, "gate"), 0);
}

TEST_F(CudaLayerBackendTest, BadParamsAreInvalidArgument) {
  DeviceBuffer a(*attention_, 4096 * sizeof(float)), b(*attention_, 4096 * sizeof(float));
  float* fa = a.as<float>();
  float* fb = b.as<float>();
  const std::vector<float> w = Normal(16 * 8, 1.f, 41);
  absl::StatusOr<WeightMatrix> matrix = layer_->PrepareMatrix(w, 16, 8);  // out 16, in 8
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  auto expect_invalid = [](const absl::Status& s, const char* what) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
  };

  expect_invalid(layer_->PrepareMatrix(w, 16, 9).status(), "PrepareMatrix size mismatch");
  expect_invalid(layer_->PrepareMatrix(w, 0, 8).status(), "PrepareMatrix zero rows");
  expect_invalid(layer_->PrepareMatrix(std::span<const float>(), 0, 0).status(),
                 "PrepareMatrix empty");

  LinearParams lin;
  lin.x = fa;
  lin.rows = 4;
  lin.w = &*matrix;
  lin.y = fb;
  EXPECT_TRUE(layer_->Linear(lin).ok());
  LinearParams bad = lin;
  bad.w = nullptr;
  expect_invalid(layer_->Linear(bad), "Linear null w");
  bad = lin;
  bad.y = fa;
  expect_invalid(layer_->Linear(bad), "Linear y == x");
  bad.y = fa + 8;  // inside x's 4 * 8 values
  expect_invalid(layer_->Linear(bad), "Linear y overlapping x");
  bad = lin;
  bad.x = nullptr;
  expect_invalid(layer_->Linear(bad), "Linear null x");
  bad = lin;
  bad.rows = -1;
  expect_invalid(layer_->Linear(bad), "Linear negative rows");
  bad = lin;
  bad.bias = fb + 4;
  expect_invalid(layer_->Linear(bad), "Linear bias inside y");
  // A matrix in host memory (as the CPU backend prepares them) is refused, not dereferenced.
  WeightMatrix host_matrix;
  host_matrix.data = w.data();
  host_matrix.rows = 16;
  host_matrix.cols = 8;
  bad = lin;
  bad.w = &host_matrix;
  expect_invalid(layer_->Linear(bad), "Linear host matrix");

  RmsNormParams norm;
  norm.x = fa;
  norm.weight = fb;
  norm.rows = 4;
  norm.features = 64;
  norm.eps = 1e-5f;
  norm.y = fa;
  EXPECT_TRUE(layer_->RmsNorm(norm).ok());
  RmsNormParams bad_norm = norm;
  bad_norm.features = 0;
  expect_invalid(layer_->RmsNorm(bad_norm), "RmsNorm features 0");
  bad_norm = norm;
  bad_norm.weight = nullptr;
  expect_invalid(layer_->RmsNorm(bad_norm), "RmsNorm null weight");
  bad_norm = norm;
  bad_norm.y = fa + 1;
  expect_invalid(layer_->RmsNorm(bad_norm), "RmsNorm y shifted over x");
  bad_norm = norm;
  bad_norm.eps = -1.f;
  expect_invalid(layer_->RmsNorm(bad_norm), "RmsNorm negative eps");

  DeviceBuffer positions(*attention_, std::vector<int32_t>{0, 1, 2, 3});
  DeviceBuffer inv_freq(*attention_, std::vector<double>(32, 1.0));
  QkvSplitParams split;
  split.qkv = fa;
  split.rows = 4;
  split.heads = 2;
  split.kv_heads = 1;
  split.head_dim = 64;
  split.positions = positions.as<int32_t>();
  split.inv_freq = inv_freq.as<double>();
  split.q = fb;
  split.k = fb + 4 * 2 * 64;
  split.v = fb + 4 * 3 * 64;
  EXPECT_TRUE(layer_->SplitQkv(split).ok());
  QkvSplitParams bad_split = split;
  bad_split.head_dim = 63;
  expect_invalid(layer_->SplitQkv(bad_split), "SplitQkv odd head_dim");
  bad_split = split;
  bad_split.heads = 0;
  expect_invalid(layer_->SplitQkv(bad_split), "SplitQkv heads 0");
  bad_split = split;
  bad_split.positions = nullptr;
  expect_invalid(layer_->SplitQkv(bad_split), "SplitQkv null positions");
  bad_split = split;
  bad_split.q = fa + 64;
  expect_invalid(layer_->SplitQkv(bad_split), "SplitQkv q over qkv");

  SwiGluParams swiglu;
  swiglu.gate = fa;
  swiglu.up = fb;
  swiglu.n = 100;
  EXPECT_TRUE(layer_->SwiGlu(swiglu).ok());
  SwiGluParams bad_swiglu = swiglu;
  bad_swiglu.up = nullptr;
  expect_invalid(layer_->SwiGlu(bad_swiglu), "SwiGlu null up");
  bad_swiglu = swiglu;
  bad_swiglu.n = -1;
  expect_invalid(layer_->SwiGlu(bad_swiglu), "SwiGlu negative n");

  bad_swiglu = swiglu;
  bad_swiglu.rows = 4;
  bad_swiglu.row_stride = 50;
  expect_invalid(layer_->SwiGlu(bad_swiglu), "SwiGlu row_stride < n");
  bad_swiglu = swiglu;
  bad_swiglu.dtype = DType::kF16;
  expect_invalid(layer_->SwiGlu(bad_swiglu), "SwiGlu f16");
  EXPECT_TRUE(attention_->Synchronize().ok());
}

TEST(CudaLayerBackendCreate, NeedsACudaAttentionBackend) {
  PREFILL_SKIP_WITHOUT_GPU();
  std::unique_ptr<AttentionBackend> cpu = MakeCpuBackend(1);
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(CreateCudaLayerBackend(*cpu).status().code(), absl::StatusCode::kFailedPrecondition);
  // The attention backend owns the stream: it is declared first, so it is destroyed last.
  std::unique_ptr<AttentionBackend> gpu = gpu_test::MakeBackend();
  ASSERT_NE(gpu, nullptr);
  absl::StatusOr<std::unique_ptr<LayerBackend>> layer = CreateCudaLayerBackend(*gpu);
  ASSERT_TRUE(layer.ok()) << layer.status();
  EXPECT_EQ((*layer)->name(), "cuda");
}

}  // namespace
}  // namespace prefill
