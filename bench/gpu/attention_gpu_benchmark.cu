// GPU attention benchmark: TFLOP/s on computed blocks of the CUDA block-sparse attention at
// density 1.0 / 0.5 / 0.25, causal and not, for L = 32K and 128K (H = 32, Hkv = 8, D = 128,
// bf16 in and out, blocks of 128); round-robin estimation time as a fraction of dense
// attention time; end to end (pool + estimate + sparse attention) against dense. Writes JSON.
//
// Estimation is timed two ways: the device work (key pooling + the estimator's stages, CUDA
// events through cuda::SetEstimatorProfile, per stage) and the host call (PoolKeys +
// EstimateMask wall time, which includes copying the CSR into a host BlockMask). --precision
// picks the estimator's logit precision (bf16, split or both); --estimation-only skips the
// attention points (the fraction of dense is then left out), for lengths where dense
// attention would take minutes (1M).
//
// Flops: 4 * L^2 * H * D for full attention, half for causal, times the measured density
// (selected blocks / visible blocks): the convention of shared/anchors/README.md, so the
// numbers sit beside the cuDNN / FlexAttention anchors. Timing: cudaEvents around each call,
// warm-up runs first, median of the timed runs.
//
// Masks: block (h, q, kv) of a causally visible set is kept iff KeepHash(h, q, kv) <
// density * 2^32, and the diagonal always. bench/gpu/torch_attention_anchors.py rebuilds the
// same KV block lists from the same hash, so FlexAttention runs the identical masks.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "bench/gpu/gpu_timing.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/estimation/round_robin_mask_estimator.h"

#ifndef PREFILL_GIT_COMMIT
#define PREFILL_GIT_COMMIT "unknown"
#endif

namespace prefill {
namespace {

// The mask hash, replicated in torch_attention_anchors.py (uint32 arithmetic).
uint32_t KeepHash(uint32_t h, uint32_t q, uint32_t kv, uint32_t seed) {
  uint32_t x = h * 1000003u + q * 7919u + kv * 104729u + seed;
  x ^= x >> 16;
  x *= 0x45d9f3bu;
  x ^= x >> 16;
  x *= 0x45d9f3bu;
  x ^= x >> 16;
  return x;
}

struct HostMask {
  std::vector<int32_t> offsets, blocks;
  int64_t visible = 0;
  double density() const { return visible ? static_cast<double>(blocks.size()) / visible : 0; }
};

HostMask MakeMask(int hq, int nb, bool causal, double density, uint32_t seed) {
  HostMask m;
  m.offsets.push_back(0);
  const uint64_t threshold = static_cast<uint64_t>(density * 4294967296.0);
  for (int h = 0; h < hq; ++h) {
    for (int q = 0; q < nb; ++q) {
      const int visible = causal ? q + 1 : nb;
      m.visible += visible;
      for (int kv = 0; kv < visible; ++kv) {
        if (kv == q || KeepHash(h, q, kv, seed) < threshold) m.blocks.push_back(kv);
      }
      m.offsets.push_back(static_cast<int32_t>(m.blocks.size()));
    }
  }
  return m;
}

// Deterministic pseudo-random bf16 in [-1, 1) (never zeros: zeros run faster than data).
__global__ void FillBf16(__nv_bfloat16* x, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h =
        static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16_rn(static_cast<float>(h >> 8) * (2.f / 16777216.f) - 1.f);
  }
}

__global__ void FillPositions(int32_t* p, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = i;
}

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) {
  using namespace prefill;
  CLI::App app{"CUDA block-sparse attention benchmark"};
  std::string out_path = "attention_gpu.json", path_name = "auto", commit = PREFILL_GIT_COMMIT;
  std::vector<int> lengths = {32768, 131072};
  std::vector<double> densities = {1.0, 0.5, 0.25};
  int hq = 32, hkv = 8, head_dim = 128, device = 0, runs = 5;
  float tau = 0.95f;
  bool skip_estimation = false, estimation_only = false;
  std::string precision_name = "both", mma_path_name = "auto";
  std::vector<int> causal_modes = {0, 1};
  std::vector<int> select_variants = {-1};
  app.add_option("--out", out_path, "JSON output path");
  app.add_option("--lengths", lengths, "sequence lengths");
  app.add_option("--densities", densities, "mask densities");
  app.add_option("--heads", hq);
  app.add_option("--kv-heads", hkv);
  app.add_option("--head-dim", head_dim);
  app.add_option("--device", device);
  app.add_option("--runs", runs, "timed runs per point (median)");
  app.add_option("--tau", tau, "estimator tau for the end-to-end point");
  app.add_option("--path", path_name, "attention kernel: auto, sm80, sm90");
  app.add_option("--git-commit", commit);
  app.add_flag("--skip-estimation", skip_estimation);
  app.add_flag("--estimation-only", estimation_only, "time estimation alone (no attention points)");
  app.add_option("--precision", precision_name, "estimator logit precision: bf16, split, both");
  app.add_option("--mma-path", mma_path_name,
                 "estimator MMA path: auto (wgmma on sm_90), mma_sync, both");
  app.add_option("--causal", causal_modes, "causal modes to run (0, 1)");
  app.add_option("--select-variants", select_variants,
                 "estimator selection radix plans (0, 1; -1 = default)");
  CLI11_PARSE(app, argc, argv);

  CudaBackendOptions options;
  options.device_id = device;
  options.attention_path = path_name == "sm80"   ? cuda::AttentionPath::kSm80
                           : path_name == "sm90" ? cuda::AttentionPath::kSm90
                                                 : cuda::AttentionPath::kAuto;
  auto created = CreateCudaBackend(options);
  BENCH_CHECK(created.status());
  std::unique_ptr<AttentionBackend> backend = *std::move(created);
  cudaStream_t stream = CudaBackendStream(*backend);
  cudaDeviceProp prop{};
  BENCH_CHECK(cudaGetDeviceProperties(&prop, device));

  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  nlohmann::json report = {
      {"device", prop.name},
      {"sm_count", prop.multiProcessorCount},
      {"date", bench::UtcNow()},
      {"git_commit", commit},
      {"command", command},
      {"attention_path", path_name},
      {"shape", {{"hq", hq}, {"hkv", hkv}, {"head_dim", head_dim}, {"block", 128}}},
      {"points", nlohmann::json::array()},
      {"estimation", nlohmann::json::array()}};
  std::printf("%-8s %-7s %-8s %-9s %-10s %-9s\n", "L", "causal", "density", "measured", "ms",
              "TFLOP/s");

  for (int L : lengths) {
    const int nb = L / 128;
    const int64_t q_elems = static_cast<int64_t>(L) * hq * head_dim;
    const int64_t kv_elems = static_cast<int64_t>(L) * hkv * head_dim;
    auto alloc = [&](size_t bytes) {
      auto b = backend->Allocate(bytes);
      BENCH_CHECK(b.status());
      return *std::move(b);
    };
    BackendBuffer q = alloc(q_elems * 2), k = alloc(kv_elems * 2), v = alloc(kv_elems * 2);
    BackendBuffer o = alloc(q_elems * 2), lse = alloc(static_cast<size_t>(L) * hq * 4);
    BackendBuffer pos = alloc(static_cast<size_t>(L) * 4);
    FillBf16<<<1024, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(q.get()), q_elems, 1u);
    FillBf16<<<1024, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(k.get()), kv_elems, 2u);
    FillBf16<<<1024, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(v.get()), kv_elems, 3u);
    FillPositions<<<256, 256, 0, stream>>>(static_cast<int32_t*>(pos.get()), L);
    BENCH_CHECK(cudaGetLastError());

    AttentionParams p;
    p.dtype = DType::kBF16;
    p.q = q.get();
    p.q_row_stride = static_cast<int64_t>(hq) * head_dim;  // [L, H, D]
    p.q_head_stride = head_dim;
    p.k = k.get();
    p.v = v.get();
    p.kv_row_stride = static_cast<int64_t>(hkv) * head_dim;  // [L, Hkv, D]: head g at g * D
    p.kv_head_stride = head_dim;
    p.q_pos = static_cast<const int32_t*>(pos.get());
    p.k_pos = static_cast<const int32_t*>(pos.get());
    p.lq = p.lk = L;
    p.hq = hq;
    p.hkv = hkv;
    p.head_dim = head_dim;
    p.block_size = 128;
    p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
    p.out_dtype = DType::kBF16;
    p.o = o.get();
    p.lse = static_cast<float*>(lse.get());
    const int warmup = 2;
    const int point_runs = L >= 131072 ? std::max(3, runs / 2) : runs;

    for (const int causal_mode : causal_modes) {
      const bool causal = causal_mode != 0;
      p.causal = causal;
      double dense_ms = 0;
      for (double density : estimation_only ? std::vector<double>{} : densities) {
        const HostMask mask = MakeMask(hq, nb, causal, density, 12345u);
        BackendBuffer offsets = alloc(mask.offsets.size() * 4),
                      blocks = alloc(std::max<size_t>(mask.blocks.size(), 1) * 4);
        BENCH_CHECK(
            backend->CopyToBackend(offsets.get(), mask.offsets.data(), mask.offsets.size() * 4));
        BENCH_CHECK(
            backend->CopyToBackend(blocks.get(), mask.blocks.data(), mask.blocks.size() * 4));
        p.mask_row_offsets = static_cast<const int32_t*>(offsets.get());
        p.mask_kv_blocks = static_cast<const int32_t*>(blocks.get());
        const double ms = bench::MedianMs([&] { BENCH_CHECK(backend->Attention(p)); }, warmup,
                                          point_runs, stream);
        const double flops = 4.0 * L * L * hq * head_dim * (causal ? 0.5 : 1.0) * mask.density();
        const double tflops = flops / (ms * 1e-3) / 1e12;
        if (density == 1.0) dense_ms = ms;
        std::printf("%-8d %-7s %-8.2f %-9.3f %-10.2f %-9.1f\n", L, causal ? "yes" : "no", density,
                    mask.density(), ms, tflops);
        std::fflush(stdout);
        report["points"].push_back({{"L", L},
                                    {"causal", causal},
                                    {"density", density},
                                    {"measured_density", mask.density()},
                                    {"ms", ms},
                                    {"tflops_on_computed_blocks", tflops}});
      }

      if (skip_estimation || (dense_ms == 0 && !estimation_only)) continue;
      // Estimation (pool + estimate, host mask included) vs dense; then the estimated mask.
      const int stride = 8;
      BackendBuffer pooled = alloc(static_cast<size_t>(L / stride) * hkv * head_dim * 4);
      BackendBuffer q_ids = alloc(static_cast<size_t>(nb) * 4);
      FillPositions<<<64, 256, 0, stream>>>(static_cast<int32_t*>(q_ids.get()), nb);
      PoolKeysParams pk;
      pk.dtype = DType::kBF16;
      pk.k = k.get();
      pk.k_row_stride = static_cast<int64_t>(hkv) * head_dim;
      pk.lk = L;
      pk.hkv = hkv;
      pk.head_dim = head_dim;
      pk.stride = stride;
      pk.pooled = static_cast<float*>(pooled.get());
      MaskEstimateParams ep;
      ep.dtype = DType::kBF16;
      ep.q = q.get();
      ep.q_row_stride = p.q_row_stride;
      ep.q_head_stride = p.q_head_stride;
      ep.q_block_ids = static_cast<const int32_t*>(q_ids.get());
      ep.num_q_blocks = nb;
      ep.pooled_k = pk.pooled;
      ep.seq_len = L;
      ep.hq = hq;
      ep.hkv = hkv;
      ep.head_dim = head_dim;
      ep.block_size = 128;
      ep.stride = stride;
      ep.tau = tau;
      ep.causal = causal;
      ep.scale = p.scale;
      const int est_runs = L >= (1 << 20) ? 1 : point_runs;
      const double pool_ms =
          bench::MedianMs([&] { BENCH_CHECK(backend->PoolKeys(pk)); }, 1, est_runs, stream);
      std::vector<cuda::EstimatorPrecision> precisions;
      if (precision_name != "split") precisions.push_back(cuda::EstimatorPrecision::kBf16);
      if (precision_name != "bf16") precisions.push_back(cuda::EstimatorPrecision::kSplit);
      std::vector<std::tuple<cuda::EstimatorPrecision, cuda::EstimatorMmaPath, int>> variants;
      for (const cuda::EstimatorPrecision precision : precisions) {
        for (const int sv : select_variants) {
          if (mma_path_name != "mma_sync")
            variants.emplace_back(precision, cuda::EstimatorMmaPath::kAuto, sv);
          if (mma_path_name != "auto")
            variants.emplace_back(precision, cuda::EstimatorMmaPath::kMmaSync, sv);
        }
      }
      const cuda::EstimatorTuning default_tuning = cuda::GetEstimatorTuning();
      BlockMask estimated;
      for (const auto& [precision, mma_path, select_variant] : variants) {
        cuda::EstimatorTuning tuning = default_tuning;
        if (select_variant >= 0) tuning.select_variant = select_variant;
        cuda::SetEstimatorTuning(tuning);
        const std::string pname =
            std::string(precision == cuda::EstimatorPrecision::kBf16 ? "bf16" : "split") +
            (mma_path == cuda::EstimatorMmaPath::kAuto ? "" : "/mma_sync") + "/select" +
            std::to_string(tuning.select_variant);
        cuda::SetEstimatorPrecision(precision);
        cuda::SetEstimatorMmaPath(mma_path);
        cuda::EstimatorProfile prof;
        std::vector<cuda::EstimatorProfile> profs;
        cuda::SetEstimatorProfile(&prof);
        bool warm = false;
        const double estimate_ms = bench::MedianHostMs(
            [&] {
              BENCH_CHECK(backend->PoolKeys(pk));
              auto m = backend->EstimateMask(ep);
              BENCH_CHECK(m.status());
              if (warm) profs.push_back(prof);
              warm = true;
              estimated = *std::move(m);
            },
            1, est_runs);
        cuda::SetEstimatorProfile(nullptr);
        auto median = [&](double cuda::EstimatorProfile::*field) {
          std::vector<double> v;
          for (const auto& e : profs) v.push_back(e.*field);
          std::sort(v.begin(), v.end());
          return v.empty() ? 0.0 : v[v.size() / 2];
        };
        const double device_ms = pool_ms + median(&cuda::EstimatorProfile::device_ms);
        const double scores_ms = median(&cuda::EstimatorProfile::scores_ms);
        const double flops = 2.0 * hq * (static_cast<double>(L) / stride) *
                             (static_cast<double>(L) / stride) * head_dim * (causal ? 0.5 : 1.0) *
                             (profs.empty() ? 1 : profs[0].terms);
        std::printf(
            "estimate L=%d causal=%d %s%s: device %.2f ms (pool %.2f, prepare %.2f, scores %.2f = "
            "%.0f TFLOP/s "
            "of MMA, select %.2f, csr %.2f; %d chunks)",
            L, causal, pname.c_str(), !profs.empty() && profs[0].wgmma ? " (wgmma)" : "", device_ms,
            pool_ms, median(&cuda::EstimatorProfile::prepare_ms), scores_ms,
            flops / (scores_ms * 1e-3) / 1e12, median(&cuda::EstimatorProfile::select_ms),
            median(&cuda::EstimatorProfile::csr_ms), profs.empty() ? 0 : profs[0].chunks);
        if (dense_ms > 0)
          std::printf(" = %.2f%% of dense %.2f ms", 100 * device_ms / dense_ms, dense_ms);
        std::printf("; host call %.2f ms", estimate_ms);
        if (dense_ms > 0) std::printf(" (%.2f%%)", 100 * estimate_ms / dense_ms);
        std::printf("; estimated density %.3f\n", estimated.density());
        std::fflush(stdout);
        nlohmann::json point = {
            {"L", L},
            {"causal", causal},
            {"stride", stride},
            {"tau", tau},
            {"precision", precision == cuda::EstimatorPrecision::kBf16 ? "bf16" : "split"},
            {"mma_path", !profs.empty() && profs[0].wgmma ? "wgmma" : "mma_sync"},
            {"select_variant", tuning.select_variant},
            {"mma_terms", profs.empty() ? 0 : profs[0].terms},
            {"chunks", profs.empty() ? 0 : profs[0].chunks},
            {"estimate_device_ms", device_ms},
            {"pool_ms", pool_ms},
            {"prepare_ms", median(&cuda::EstimatorProfile::prepare_ms)},
            {"scores_ms", scores_ms},
            {"select_ms", median(&cuda::EstimatorProfile::select_ms)},
            {"csr_ms", median(&cuda::EstimatorProfile::csr_ms)},
            {"estimate_host_ms", estimate_ms},
            {"estimated_density", estimated.density()},
            {"selected_blocks", estimated.selected_blocks()}};
        if (dense_ms > 0) {
          point["dense_ms"] = dense_ms;
          point["estimate_device_fraction_of_dense"] = device_ms / dense_ms;
          point["estimate_host_fraction_of_dense"] = estimate_ms / dense_ms;
        }
        report["estimation"].push_back(point);
      }
      cuda::SetEstimatorPrecision(std::get<0>(variants.front()));
      cuda::SetEstimatorMmaPath(std::get<1>(variants.front()));
      cuda::SetEstimatorTuning(default_tuning);
      if (estimation_only) continue;
      BackendBuffer offsets = alloc(estimated.row_offsets.size() * 4);
      BackendBuffer blocks = alloc(std::max<size_t>(estimated.kv_blocks.size(), 1) * 4);
      BENCH_CHECK(backend->CopyToBackend(offsets.get(), estimated.row_offsets.data(),
                                         estimated.row_offsets.size() * 4));
      BENCH_CHECK(backend->CopyToBackend(blocks.get(), estimated.kv_blocks.data(),
                                         estimated.kv_blocks.size() * 4));
      p.mask_row_offsets = static_cast<const int32_t*>(offsets.get());
      p.mask_kv_blocks = static_cast<const int32_t*>(blocks.get());
      const double sparse_ms =
          bench::MedianMs([&] { BENCH_CHECK(backend->Attention(p)); }, warmup, point_runs, stream);
      std::printf("estimated mask L=%d causal=%d: density %.3f, sparse %.2f ms vs dense %.2f ms\n",
                  L, causal, estimated.density(), sparse_ms, dense_ms);
      std::fflush(stdout);
      report["estimation"].back()["sparse_ms"] = sparse_ms;
      report["estimation"].back()["note"] =
          "random inputs: the estimated mask is near dense; the fraction is what counts";
    }
  }
  std::ofstream(out_path) << report.dump(1) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
