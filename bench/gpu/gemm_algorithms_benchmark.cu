// The GEMMs of a Llama-3.1-8B layer (bf16, fp32 accumulation; o and down accumulate into the
// fp32 residual, down reads the SwiGLU half of the gate/up buffer) at prompt lengths of 32K and
// 128K rows, three ways: cublasGemmEx's default heuristic, the algorithm GemmAlgorithmSelector
// picks on its kSelectRows trial rows (what Linear runs where `selection_applies`), and the
// best candidate timed on all the rows (what a perfect proxy would pick).
// Inputs are random (uniform bf16 in [-1, 1)): zeros draw less power and run at a higher clock.
// Variants alternate in rounds (A B C, A B C, ...) and each reports the median of its rounds,
// so a clock that drifts under a power cap moves all three alike. Writes JSON.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/gpu/gpu_timing.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/gemm_algorithm_selector.h"

#ifndef PREFILL_GIT_COMMIT
#define PREFILL_GIT_COMMIT "unknown"
#endif

namespace prefill {
namespace {

__global__ void FillUniformBf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u + seed;
    x ^= x >> 15;
    x *= 0x2c1b3c6du;
    x ^= x >> 12;
    p[i] = __float2bfloat16(static_cast<float>(x >> 8) * 0x1p-23f - 1.f);
  }
}

struct Shape {
  const char* name;
  int out, in, x_stride;
  bool residual;  // fp32 y with beta = 1
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::Status CheckCublas(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus()
                                    : cuda::CublasErrorStatus(s, "cublas", __FILE__, __LINE__);
}

int Main(int argc, char** argv) {
  CLI::App app{"GEMM algorithm selection on the Llama-3.1-8B layer shapes (JSON)"};
  std::vector<int> lengths{32768, 131072};
  int rounds = 5, runs = 3;
  std::string json_path = "gemm_algorithms.json";
  app.add_option("--lengths", lengths, "rows (prompt tokens) per GEMM");
  app.add_option("--rounds", rounds, "alternating rounds per variant (median reported)");
  app.add_option("--runs", runs, "timed calls per round (median)");
  app.add_option("--json", json_path, "output file");
  CLI11_PARSE(app, argc, argv);

  const Shape shapes[] = {{"qkv", 6144, 4096, 4096, false},
                          {"o", 4096, 4096, 4096, true},
                          {"gate_up", 28672, 4096, 4096, false},
                          {"down", 4096, 14336, 28672, true}};
  const int max_rows = *std::max_element(lengths.begin(), lengths.end());
  cudaStream_t stream;
  BENCH_CHECK(cudaStreamCreate(&stream));
  cublasHandle_t handle;
  BENCH_CHECK(CheckCublas(cublasCreate(&handle)));
  BENCH_CHECK(CheckCublas(cublasSetStream(handle, stream)));
  const size_t workspace_bytes = size_t{32} << 20;  // as CudaLayerBackend
  void* workspace;
  BENCH_CHECK(cudaMalloc(&workspace, workspace_bytes));
  BENCH_CHECK(CheckCublas(cublasSetWorkspace(handle, workspace, workspace_bytes)));
  cuda::GemmAlgorithmSelector selector(handle, stream, workspace, workspace_bytes);
  BENCH_CHECK(selector.Init());

  const int64_t x_values = int64_t{max_rows} * 28672, w_values = int64_t{28672} * 14336;
  __nv_bfloat16 *x, *w;
  void* y;
  BENCH_CHECK(cudaMalloc(&x, x_values * 2));
  BENCH_CHECK(cudaMalloc(&w, w_values * 2));
  BENCH_CHECK(cudaMalloc(&y, int64_t{max_rows} * 28672 * 4));
  FillUniformBf16<<<1024, 256, 0, stream>>>(x, x_values, 1);
  FillUniformBf16<<<1024, 256, 0, stream>>>(w, w_values, 2);
  BENCH_CHECK(cudaMemsetAsync(y, 0, int64_t{max_rows} * 28672 * 4, stream));
  BENCH_CHECK(cudaStreamSynchronize(stream));

  cudaDeviceProp prop{};
  BENCH_CHECK(cudaGetDeviceProperties(&prop, 0));
  nlohmann::json points = nlohmann::json::array();
  for (int rows : lengths) {
    for (const Shape& s : shapes) {
      const cuda::GemmProblem p{.out = s.out,
                                .in = s.in,
                                .rows = rows,
                                .x_stride = s.x_stride,
                                .y_type = s.residual ? CUDA_R_32F : CUDA_R_16BF,
                                .accumulate = s.residual,
                                .w = w,
                                .x = x,
                                .y = y};
      absl::StatusOr<cuda::GemmChoice> selected = selector.Select(p);
      absl::StatusOr<cuda::GemmChoice> best = selector.Select(p, rows);
      BENCH_CHECK(selected.status());
      BENCH_CHECK(best.status());
      const cuda::GemmChoice none;
      const cuda::GemmChoice* variants[3] = {&none, &*selected, &*best};
      std::vector<double> ms[3];
      for (int r = 0; r < rounds; ++r) {
        for (int v = 0; v < 3; ++v) {
          ms[v].push_back(bench::MedianMs([&] { BENCH_CHECK(selector.RunWith(p, *variants[v])); },
                                          1, runs, stream));
        }
      }
      const double flop = 2.0 * rows * s.out * s.in;
      auto tflops = [&](double t) { return flop / t / 1e9; };
      const double t_default = Median(ms[0]), t_selected = Median(ms[1]), t_best = Median(ms[2]);
      std::printf(
          "%-8s rows %6d: default %.3f ms (%.0f TFLOP/s), selected %.3f (%.0f, %+.1f%%), "
          "best at these rows %.3f (%.0f, %+.1f%%)\n",
          s.name, rows, t_default, tflops(t_default), t_selected, tflops(t_selected),
          100 * (t_default / t_selected - 1), t_best, tflops(t_best),
          100 * (t_default / t_best - 1));
      std::fflush(stdout);
      points.push_back(
          {{"gemm", s.name},
           {"rows", rows},
           {"out", s.out},
           {"in", s.in},
           {"default_ms", t_default},
           {"selected_ms", t_selected},
           {"best_at_rows_ms", t_best},
           {"default_tflops", tflops(t_default)},
           {"selected_tflops", tflops(t_selected)},
           {"best_at_rows_tflops", tflops(t_best)},
           {"selected_uses_lt", selected->use_lt},
           {"selection_default_ms", selected->default_ms},
           {"selection_chosen_ms", selected->chosen_ms},
           // Whether Linear uses the selection at this many rows (else the default).
           {"selection_applies", rows >= cuda::GemmAlgorithmSelector::kMinSelectedRows &&
                                     rows <= cuda::GemmAlgorithmSelector::kMaxSelectedRows},
           {"selection_trial_rows", selected->trial_rows},
           {"candidates", selected->candidates},
           {"speedup_selected_vs_default", t_default / t_selected}});
    }
  }
  const nlohmann::json out = {{"benchmark", "gemm_algorithms"},
                              {"device", prop.name},
                              {"commit", PREFILL_GIT_COMMIT},
                              {"date", bench::UtcNow()},
                              {"rounds", rounds},
                              {"runs", runs},
                              {"points", points}};
  std::ofstream(json_path) << out.dump(1) << "\n";
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) { return prefill::Main(argc, argv); }
