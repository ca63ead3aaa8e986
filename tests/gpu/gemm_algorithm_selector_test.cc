// GemmAlgorithmSelector (kernels/cuda/gemm_algorithm_selector.h): every cuBLASLt candidate it
// may pick computes the same product as cublasGemmEx's default, against an fp64 sum of the
// bf16 operands (bf16 products are exact in fp32; any order of `in` fp32 additions errs by at
// most in * u * sum |p|, doubled for tensor cores that truncate while accumulating); the
// selection never writes the caller's y; accumulate (beta = 1) adds onto y.
#include "kernels/cuda/gemm_algorithm_selector.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tests/gpu/gpu_test_util.h"

namespace prefill::cuda {
namespace {

constexpr double kF32Unit = 0x1p-24;

uint16_t ToBf16Bits(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

double FromBf16Bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<uint16_t> RandomBf16(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = ToBf16Bits(normal(rng));
  return v;
}

class GemmAlgorithmSelectorTest : public ::testing::Test {
 protected:
  // Sizes: enough rows for the selection (kMinSelectedRows), a padded x (stride > in, as the
  // down projection reads the SwiGLU output out of the wider gate/up buffer).
  static constexpr int kRows = GemmAlgorithmSelector::kMinSelectedRows + 8, kIn = 192, kOut = 264,
                       kStride = 200;

  void SetUp() override {
    PREFILL_SKIP_WITHOUT_GPU();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    ASSERT_EQ(cublasCreate(&handle_), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSetStream(handle_, stream_), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cudaMalloc(&workspace_, kWorkspace), cudaSuccess);
    ASSERT_EQ(cublasSetWorkspace(handle_, workspace_, kWorkspace), CUBLAS_STATUS_SUCCESS);
    selector_ = std::make_unique<GemmAlgorithmSelector>(handle_, stream_, workspace_, kWorkspace);
    ASSERT_TRUE(selector_->Init().ok());
    x_ = RandomBf16(size_t{kRows} * kStride, 1.f, 1);
    w_ = RandomBf16(size_t{kOut} * kIn, 1.f / std::sqrt(float{kIn}), 2);
    ASSERT_EQ(cudaMalloc(&d_x_, x_.size() * 2), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_w_, w_.size() * 2), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_y_, size_t{kRows} * kOut * 4), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_x_, x_.data(), x_.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_w_, w_.data(), w_.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    want_.assign(size_t{kRows} * kOut, 0.0);
    tol_.assign(want_.size(), 0.0);
    for (int r = 0; r < kRows; ++r) {
      for (int o = 0; o < kOut; ++o) {
        double sum = 0, magnitude = 0;
        for (int k = 0; k < kIn; ++k) {
          const double p = FromBf16Bits(x_[static_cast<size_t>(r) * kStride + k]) *
                           FromBf16Bits(w_[o * kIn + k]);
          sum += p;
          magnitude += std::abs(p);
        }
        want_[static_cast<size_t>(r) * kOut + o] = sum;
        tol_[static_cast<size_t>(r) * kOut + o] = 2.0 * kIn * kF32Unit * magnitude + 1e-30;
      }
    }
  }
  void TearDown() override {
    selector_.reset();
    for (void* p : {d_x_, d_w_, d_y_, workspace_}) {
      if (p) cudaFree(p);
    }
    if (handle_) cublasDestroy(handle_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  GemmProblem Problem(bool accumulate) const {
    return GemmProblem{.out = kOut,
                       .in = kIn,
                       .rows = kRows,
                       .x_stride = kStride,
                       .y_type = CUDA_R_32F,
                       .accumulate = accumulate,
                       .w = d_w_,
                       .x = d_x_,
                       .y = d_y_};
  }
  void FillY(float value) {
    std::vector<float> y(size_t{kRows} * kOut, value);
    ASSERT_EQ(cudaMemcpy(d_y_, y.data(), y.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<float> DownloadY() {
    std::vector<float> y(size_t{kRows} * kOut);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(y.data(), d_y_, y.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    return y;
  }
  // Elements of y farther than the tolerance from want + offset.
  int CountBad(const std::vector<float>& y, double offset) {
    int bad = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const double tol = tol_[i] + 2 * kF32Unit * (std::abs(offset) + std::abs(want_[i] + offset));
      if (!(std::abs(y[i] - (want_[i] + offset)) <= tol) && bad++ < 3) {
        ADD_FAILURE() << "y[" << i << "] = " << y[i] << ", want " << want_[i] + offset;
      }
    }
    return bad;
  }

  static constexpr size_t kWorkspace = size_t{32} << 20;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::unique_ptr<GemmAlgorithmSelector> selector_;
  std::vector<uint16_t> x_, w_;
  void *d_x_ = nullptr, *d_w_ = nullptr, *d_y_ = nullptr;
  std::vector<double> want_, tol_;
};

TEST_F(GemmAlgorithmSelectorTest, EveryCandidateComputesTheProduct) {
  cublasLtMatmulHeuristicResult_t results[GemmAlgorithmSelector::kCandidates];
  absl::StatusOr<int> found =
      selector_->Heuristics(Problem(false), results, GemmAlgorithmSelector::kCandidates);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_GT(*found, 0) << "cuBLASLt offers no algorithm for a plain bf16 GEMM";
  for (int i = 0; i < *found; ++i) {
    SCOPED_TRACE(i);
    GemmChoice choice;
    choice.use_lt = true;
    choice.algo = results[i].algo;
    FillY(NAN);
    ASSERT_TRUE(selector_->RunWith(Problem(false), choice).ok());
    EXPECT_EQ(CountBad(DownloadY(), 0.0), 0);
  }
}

TEST_F(GemmAlgorithmSelectorTest, SelectionLeavesYAloneAndRunAccumulates) {
  FillY(3.f);
  absl::StatusOr<GemmChoice> choice = selector_->Select(Problem(true));
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->trial_rows, kRows);
  EXPECT_GT(choice->default_ms, 0.f);
  EXPECT_LE(choice->chosen_ms, choice->default_ms);
  for (float v : DownloadY()) ASSERT_EQ(v, 3.f) << "a trial wrote the caller's y";
  ASSERT_TRUE(selector_->Run(Problem(true)).ok());  // selects (again) and runs
  EXPECT_EQ(CountBad(DownloadY(), 3.0), 0);
  ASSERT_TRUE(selector_->Run(Problem(true)).ok());  // the stored choice
  EXPECT_EQ(CountBad(DownloadY(), 6.0), 0);
}

// Fewer rows than kMinSelectedRows take cuBLAS' default (no selection): still the product.
TEST_F(GemmAlgorithmSelectorTest, ShortCallsComputeTheProduct) {
  GemmProblem p = Problem(false);
  p.rows = 37;
  FillY(NAN);
  ASSERT_TRUE(selector_->Run(p).ok());
  const std::vector<float> y = DownloadY();
  int bad = 0;
  for (int i = 0; i < 37 * kOut; ++i) {
    if (!(std::abs(y[i] - want_[i]) <= tol_[i] + 2 * kF32Unit * std::abs(want_[i]))) ++bad;
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace prefill::cuda
