// GemmAlgorithmSelector: the bf16 GEMMs of Linear through the fastest of cuBLAS' candidates for
// their shape, measured on this device. cublasGemmEx's default heuristic is not the fastest
// for every shape of a Llama layer: on an H100 at 32K rows, an algorithm timed on 16K rows ran
// the o projection 13% faster, gate/up and down 8%, qkv 3%
// (bench/results/gpu/gemm/). Each new shape (out, in, x stride, y type, accumulate) is timed
// once, on kSelectRows of its rows, in interleaved rounds, into a scratch output (the caller's
// y is never touched by a trial); an algorithm must beat the default by kMinGain to replace it.
// The choice is used for calls of kMinSelectedRows to kMaxSelectedRows rows, where it was
// measured to hold: at 128K rows the picks of gate/up and down ran 2-15% slower than the
// default (cuBLAS plans those sizes well itself), and short calls (a short prompt, the one-row
// logits) keep cuBLAS' plan for their size.
// PREFILL_GEMM_SELECT=off keeps cublasGemmEx's default everywhere (a diagnostic).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prefill::cuda {

// Row-major y [rows, out] (+)= x [rows, in] W [out, in]^T, with x and W bf16 and fp32
// accumulation. Column-major, as cuBLAS sees it: y^T = (W as [in, out])^T x^T.
struct GemmProblem {
  int out = 0, in = 0, rows = 0;
  int x_stride = 0;  // values between x's rows (>= in)
  cudaDataType_t y_type = CUDA_R_32F;
  bool accumulate = false;  // beta = 1
  const void* w = nullptr;
  const void* x = nullptr;
  void* y = nullptr;
};

// What the selection measured for one shape (milliseconds per GEMM on the trial rows).
struct GemmChoice {
  bool use_lt = false;  // false: cublasGemmEx's default
  cublasLtMatmulAlgo_t algo{};
  int candidates = 0;  // cuBLASLt heuristics tried
  int trial_rows = 0;
  float default_ms = 0.f, chosen_ms = 0.f;
};

class GemmAlgorithmSelector {
 public:
  static constexpr int kSelectRows = 16384;
  static constexpr int kMinSelectedRows = kSelectRows / 2;
  static constexpr int kMaxSelectedRows = kSelectRows * 2;
  static constexpr int kCandidates = 6;
  static constexpr int kRounds = 3, kRunsPerRound = 2;
  static constexpr float kMinGain = 0.02f;

  // `handle` (bound to `stream`, workspace set) and the workspace stay the caller's.
  GemmAlgorithmSelector(cublasHandle_t handle, cudaStream_t stream, void* workspace,
                        size_t workspace_bytes);
  ~GemmAlgorithmSelector();
  GemmAlgorithmSelector(const GemmAlgorithmSelector&) = delete;
  GemmAlgorithmSelector& operator=(const GemmAlgorithmSelector&) = delete;

  absl::Status Init();
  // Queues p on the stream, selecting its shape's algorithm first when the shape is new (which
  // synchronises the stream: warm-up and the first call of a shape pay it, not later ones).
  absl::Status Run(const GemmProblem& p);
  // Times cuBLAS' default and cuBLASLt's candidates for p's shape on min(p.rows, trial_rows)
  // rows; p.y is not written.
  absl::StatusOr<GemmChoice> Select(const GemmProblem& p, int trial_rows = kSelectRows);
  // Queues p with a given choice (cublasGemmEx's default when !choice.use_lt).
  absl::Status RunWith(const GemmProblem& p, const GemmChoice& choice);
  // cuBLASLt's candidates for p's shape, best first by its own ranking.
  absl::StatusOr<int> Heuristics(const GemmProblem& p, cublasLtMatmulHeuristicResult_t* results,
                                 int max_results);
  // Times `runs` calls of RunWith(p, choice) after one untimed call, in ms per call.
  absl::StatusOr<float> Time(const GemmProblem& p, const GemmChoice& choice, int runs);

 private:
  using ShapeKey = std::tuple<int, int, int, int, bool>;
  absl::Status RunDefault(const GemmProblem& p);
  absl::Status RunLt(const GemmProblem& p, const cublasLtMatmulAlgo_t& algo);
  // cuBLASLt accepts algo for p (sizes, alignment) within our workspace.
  bool Supported(const GemmProblem& p, const cublasLtMatmulAlgo_t& algo);

  cublasHandle_t handle_;
  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  bool enabled_ = true;
  cublasLtHandle_t lt_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;  // bf16 x bf16, fp32 compute, W transposed
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  std::map<ShapeKey, GemmChoice> choices_;
};

}  // namespace prefill::cuda
