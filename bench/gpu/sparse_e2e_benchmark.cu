// End-to-end sparse prefill on one GPU on structured inputs (issue 22 item 3): the synthetic
// workloads of runtime/synthetic_workload.h (needle, stripes, video; random as the dense
// point) at the given lengths, H=32, Hkv=8, D=128, bf16, blocks of 128, stride 8. Per point:
//   estimate  key pooling + round-robin estimation, timed two ways: the device work (CUDA
//             events: pooling + EstimatorProfile::device_ms) and the host call a user of the
//             engine pays (PoolKeys + EstimateMaskInBackend wall time: the ids stay on the
//             device, the row offsets come back); beside it, once, the EstimateMask call that
//             hands the whole mask to the host (estimate_host_mask_ms);
//   sparse    the CUDA attention on the estimated mask, read in place (CUDA events);
//   dense     the same kernel on the dense mask (once per L and causal mode).
// Densities: every (workload, concentration) runs at each --taus value, and at each
// --target-densities value by a bisection over log(1 - tau) (the density is monotone in tau),
// so that points land near the densities the targets are stated at.
// Each estimated mask is written as raw int32 CSR (row offsets [H * nb + 1], KV block ids)
// into --mask-dir; sparse_e2e_torch.py times cuDNN SDPA dense and FlexAttention on the same
// masks and merges everything into the final JSON.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "bench/gpu/gpu_timing.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/estimation/round_robin_mask_estimator.h"
#include "runtime/synthetic_workload.h"

#ifndef PREFILL_GIT_COMMIT
#define PREFILL_GIT_COMMIT "unknown"
#endif

namespace prefill {
namespace {

using bench::MedianMs;
constexpr int kBlock = 128;
constexpr int kStride = 8;

__global__ void ToBf16(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

__global__ void FillIota(int32_t* p, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = i;
}

// The dense (causal: lower-triangular) block CSR of `hq` heads x `nb` query blocks, one CTA
// per row: row r = h * nb + q holds blocks [0, visible(q)).
__global__ void FillDenseCsr(int nb, bool causal, int32_t* offsets, int32_t* blocks) {
  const int64_t r = blockIdx.x;
  const int64_t h = r / nb, q = r % nb;
  const int64_t per_head = causal ? int64_t{nb} * (nb + 1) / 2 : int64_t{nb} * nb;
  const int64_t begin = h * per_head + (causal ? q * (q + 1) / 2 : q * nb);
  const int visible = causal ? static_cast<int>(q) + 1 : nb;
  for (int i = threadIdx.x; i < visible; i += blockDim.x) blocks[begin + i] = i;
  if (threadIdx.x == 0) {
    offsets[r] = static_cast<int32_t>(begin);
    if (r + 1 == gridDim.x) offsets[r + 1] = static_cast<int32_t>(begin + visible);
  }
}

struct Shape {
  int hq = 32, hkv = 8, head_dim = 128;
};

// Device tensors of one length: bf16 Q/K/V, outputs, positions, pooled keys.
struct Problem {
  int L = 0, nb = 0;
  Shape shape;
  BackendBuffer q{nullptr, nullptr}, k{nullptr, nullptr}, v{nullptr, nullptr};
  BackendBuffer o{nullptr, nullptr}, lse{nullptr, nullptr}, pos{nullptr, nullptr};
  BackendBuffer q_ids{nullptr, nullptr}, pooled{nullptr, nullptr};
};

BackendBuffer Alloc(AttentionBackend& backend, size_t bytes) {
  auto b = backend.Allocate(bytes);
  BENCH_CHECK(b.status());
  return *std::move(b);
}

Problem MakeProblem(AttentionBackend& backend, int L, const Shape& shape) {
  Problem p;
  p.L = L;
  p.nb = L / kBlock;
  p.shape = shape;
  const size_t q_elems = static_cast<size_t>(L) * shape.hq * shape.head_dim;
  const size_t kv_elems = static_cast<size_t>(L) * shape.hkv * shape.head_dim;
  p.q = Alloc(backend, q_elems * 2);
  p.k = Alloc(backend, kv_elems * 2);
  p.v = Alloc(backend, kv_elems * 2);
  p.o = Alloc(backend, q_elems * 2);
  p.lse = Alloc(backend, static_cast<size_t>(L) * shape.hq * 4);
  p.pos = Alloc(backend, static_cast<size_t>(L) * 4);
  p.q_ids = Alloc(backend, static_cast<size_t>(p.nb) * 4);
  p.pooled = Alloc(backend, static_cast<size_t>(L / kStride) * shape.hkv * shape.head_dim * 4);
  cudaStream_t stream = CudaBackendStream(backend);
  FillIota<<<256, 256, 0, stream>>>(static_cast<int32_t*>(p.pos.get()), L);
  FillIota<<<64, 256, 0, stream>>>(static_cast<int32_t*>(p.q_ids.get()), p.nb);
  BENCH_CHECK(cudaGetLastError());
  return p;
}

// Generates the workload's rows in chunks of positions (host fp32, all cores), converts them to
// bf16 on the device. Returns the host seconds spent.
double FillWorkload(AttentionBackend& backend, Problem& p, const WorkloadSpec& spec, int threads) {
  const auto t0 = std::chrono::steady_clock::now();
  cudaStream_t stream = CudaBackendStream(backend);
  const int chunk = std::min(p.L, 16384);
  const Shape& s = p.shape;
  BackendBuffer staging = Alloc(backend, static_cast<size_t>(chunk) * s.hq * s.head_dim * 4);
  std::vector<int32_t> positions;
  for (int begin = 0; begin < p.L; begin += chunk) {
    positions.resize(std::min(chunk, p.L - begin));
    std::iota(positions.begin(), positions.end(), begin);
    const QkvRows rows = GenerateQkvRows(spec, positions, threads);
    const struct {
      const std::vector<float>& host;
      void* dst;
      int heads;
    } parts[3] = {
        {rows.q, p.q.get(), s.hq}, {rows.k, p.k.get(), s.hkv}, {rows.v, p.v.get(), s.hkv}};
    for (const auto& part : parts) {
      BENCH_CHECK(backend.CopyToBackend(staging.get(), part.host.data(), part.host.size() * 4));
      auto* dst = static_cast<__nv_bfloat16*>(part.dst) + int64_t{begin} * part.heads * s.head_dim;
      ToBf16<<<1024, 256, 0, stream>>>(static_cast<const float*>(staging.get()), dst,
                                       static_cast<int64_t>(part.host.size()));
      BENCH_CHECK(cudaGetLastError());
    }
    BENCH_CHECK(backend.Synchronize());  // staging and `rows` are reused / freed next
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

AttentionParams AttentionOn(const Problem& p, bool causal, const int32_t* offsets,
                            const int32_t* blocks) {
  AttentionParams a;
  a.dtype = DType::kBF16;
  a.q = p.q.get();
  a.q_row_stride = int64_t{p.shape.hq} * p.shape.head_dim;  // [L, H, D]
  a.q_head_stride = p.shape.head_dim;
  a.k = p.k.get();
  a.v = p.v.get();
  a.kv_row_stride = int64_t{p.shape.hkv} * p.shape.head_dim;  // [L, Hkv, D]
  a.kv_head_stride = p.shape.head_dim;
  a.q_pos = static_cast<const int32_t*>(p.pos.get());
  a.k_pos = a.q_pos;
  a.lq = a.lk = p.L;
  a.hq = p.shape.hq;
  a.hkv = p.shape.hkv;
  a.head_dim = p.shape.head_dim;
  a.block_size = kBlock;
  a.causal = causal;
  a.scale = 1.f / std::sqrt(static_cast<float>(p.shape.head_dim));
  a.out_dtype = DType::kBF16;
  a.o = p.o.get();
  a.lse = static_cast<float*>(p.lse.get());
  a.mask_row_offsets = offsets;
  a.mask_kv_blocks = blocks;
  return a;
}

struct Timing {
  int warmup = 2, runs = 5;
};
Timing TimingFor(int L, int runs) {
  if (L >= 524288) return {1, 1};
  if (L >= 131072) return {1, std::max(1, std::min(runs, 3))};
  return {2, runs};
}

// Our kernel on the dense mask; 0 when skipped.
double DenseMs(AttentionBackend& backend, const Problem& p, bool causal, const Timing& t) {
  const int64_t rows = int64_t{p.shape.hq} * p.nb;
  const int64_t ids = p.shape.hq * (causal ? int64_t{p.nb} * (p.nb + 1) / 2 : int64_t{p.nb} * p.nb);
  if (ids > INT32_MAX) return 0;  // int32 CSR offsets: not representable (1M non-causal)
  BackendBuffer offsets = Alloc(backend, (rows + 1) * 4), blocks = Alloc(backend, ids * 4);
  cudaStream_t stream = CudaBackendStream(backend);
  FillDenseCsr<<<static_cast<unsigned>(rows), 256, 0, stream>>>(
      p.nb, causal, static_cast<int32_t*>(offsets.get()), static_cast<int32_t*>(blocks.get()));
  BENCH_CHECK(cudaGetLastError());
  const AttentionParams a = AttentionOn(p, causal, static_cast<const int32_t*>(offsets.get()),
                                        static_cast<const int32_t*>(blocks.get()));
  return MedianMs([&] { BENCH_CHECK(backend.Attention(a)); }, t.warmup, t.runs, stream);
}

struct EstimateCall {
  PoolKeysParams pool;
  MaskEstimateParams estimate;
};

EstimateCall EstimateCallFor(const Problem& p, bool causal, float tau) {
  EstimateCall c;
  PoolKeysParams& pk = c.pool;
  pk.dtype = DType::kBF16;
  pk.k = p.k.get();
  pk.k_row_stride = int64_t{p.shape.hkv} * p.shape.head_dim;
  pk.lk = p.L;
  pk.hkv = p.shape.hkv;
  pk.head_dim = p.shape.head_dim;
  pk.stride = kStride;
  pk.pooled = static_cast<float*>(p.pooled.get());
  MaskEstimateParams& ep = c.estimate;
  ep.dtype = DType::kBF16;
  ep.q = p.q.get();
  ep.q_row_stride = int64_t{p.shape.hq} * p.shape.head_dim;
  ep.q_head_stride = p.shape.head_dim;
  ep.q_block_ids = static_cast<const int32_t*>(p.q_ids.get());
  ep.num_q_blocks = p.nb;
  ep.pooled_k = pk.pooled;
  ep.seq_len = p.L;
  ep.hq = p.shape.hq;
  ep.hkv = p.shape.hkv;
  ep.head_dim = p.shape.head_dim;
  ep.block_size = kBlock;
  ep.stride = kStride;
  ep.tau = tau;
  ep.causal = causal;
  ep.scale = 1.f / std::sqrt(static_cast<float>(p.shape.head_dim));
  return c;
}

struct Estimate {
  BackendBlockMask mask;  // ids in device memory, for the attention that follows
  double host_ms = 0;     // PoolKeys + EstimateMaskInBackend until the ids are complete, wall
  double device_ms = 0;   // pooling + the estimator's stages, CUDA events
};

Estimate RunEstimate(AttentionBackend& backend, const Problem& p, bool causal, float tau,
                     const Timing& t) {
  const EstimateCall call = EstimateCallFor(p, causal, tau);
  Estimate e;
  const double pool_ms =
      MedianMs([&] { BENCH_CHECK(backend.PoolKeys(call.pool)); }, 0, 1, CudaBackendStream(backend));
  const int warmup = t.warmup > 0 ? 1 : 0;
  std::vector<double> device_ms;
  cuda::EstimatorProfile profile;
  cuda::SetEstimatorProfile(&profile);
  e.host_ms = bench::MedianHostMs(
      [&] {
        BENCH_CHECK(backend.PoolKeys(call.pool));
        absl::StatusOr<BackendBlockMask> m = backend.EstimateMaskInBackend(call.estimate);
        BENCH_CHECK(m.status());
        BENCH_CHECK(backend.Synchronize());  // until the ids are complete: ready to attend
        e.mask = *std::move(m);
        device_ms.push_back(profile.device_ms);
      },
      warmup, std::max(1, t.runs));
  cuda::SetEstimatorProfile(nullptr);
  device_ms.erase(device_ms.begin(), device_ms.begin() + warmup);
  std::sort(device_ms.begin(), device_ms.end());
  e.device_ms = pool_ms + device_ms[device_ms.size() / 2];
  return e;
}

// The call that hands the whole mask to the host (EstimateMask), one run after a warm-up: what
// the ids' round trip costs beside the device-resident mask.
double HostMaskMs(AttentionBackend& backend, const Problem& p, bool causal, float tau) {
  const EstimateCall call = EstimateCallFor(p, causal, tau);
  std::vector<BlockMask> masks;  // kept: freeing the previous mask is no part of the call
  return bench::MedianHostMs(
      [&] {
        BENCH_CHECK(backend.PoolKeys(call.pool));
        absl::StatusOr<BlockMask> m = backend.EstimateMask(call.estimate);
        BENCH_CHECK(m.status());
        masks.push_back(*std::move(m));
      },
      1, 1);
}

// Bisection for a target density over x = log(1 - tau), tau in [0.05, 1 - 1e-6]: structured
// workloads reach high densities only with tau very close to 1, where a bisection over tau
// itself has no resolution. The density falls as x grows. A dozen estimations.
float TauForDensity(AttentionBackend& backend, const Problem& p, bool causal, double target) {
  double dense_side = std::log(1e-6), sparse_side = std::log(0.95);
  for (int step = 0; step < 12; ++step) {
    const double mid = 0.5 * (dense_side + sparse_side);
    const Estimate e =
        RunEstimate(backend, p, causal, static_cast<float>(1 - std::exp(mid)), {0, 1});
    (e.mask.density() > target ? dense_side : sparse_side) = mid;
  }
  return static_cast<float>(1 - std::exp(0.5 * (dense_side + sparse_side)));
}

void WriteInts(const std::string& path, const std::vector<int32_t>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()),
          static_cast<std::streamsize>(v.size() * sizeof(int32_t)));
  if (!f) bench::Fail(__FILE__, __LINE__, "cannot write " + path);
}

struct Run {
  std::vector<std::string> workloads;
  std::vector<double> concentrations, taus, target_densities;
  std::vector<int> causal_modes;
  std::string mask_dir;
  int runs = 5, threads = 0, max_dense_len = 1 << 20;
  bool write_masks = true;
};

// One (workload, concentration, causal) on the problem's current Q/K/V: every tau point.
void RunPoints(AttentionBackend& backend, const Problem& p, const Run& run,
               const std::string& workload, double concentration, bool causal, double dense_ms,
               double generate_s, nlohmann::json& points) {
  const Timing t = TimingFor(p.L, run.runs);
  std::vector<std::pair<float, double>> taus;  // (tau, target density or -1)
  for (double tau : run.taus) taus.emplace_back(static_cast<float>(tau), -1.0);
  if (workload != "random") {
    for (double d : run.target_densities) {
      if (d > 0) taus.emplace_back(TauForDensity(backend, p, causal, d), d);
    }
  }
  cudaStream_t stream = CudaBackendStream(backend);
  for (const auto& [tau, target] : taus) {
    const Estimate e = RunEstimate(backend, p, causal, tau, t);
    const BackendBlockMask& m = e.mask;
    const AttentionParams a = AttentionOn(p, causal, m.row_offsets, m.kv_blocks);
    const double sparse_ms =
        MedianMs([&] { BENCH_CHECK(backend.Attention(a)); }, t.warmup, t.runs, stream);
    const double host_mask_ms = HostMaskMs(backend, p, causal, tau);
    char name[160];
    std::snprintf(name, sizeof name, "L%d_%s_%s_c%.3g_t%.7f", p.L, causal ? "causal" : "full",
                  workload.c_str(), concentration, tau);
    nlohmann::json point = {{"L", p.L},
                            {"causal", causal},
                            {"workload", workload},
                            {"concentration", concentration},
                            {"tau", tau},
                            {"estimated_density", m.density()},
                            {"selected_blocks", m.selected_blocks()},
                            {"visible_blocks", m.host.visible_blocks},
                            {"estimate_ms", e.host_ms},
                            {"estimate_host_ms", e.host_ms},
                            {"estimate_device_ms", e.device_ms},
                            {"estimate_host_mask_ms", host_mask_ms},
                            {"sparse_ms", sparse_ms},
                            {"generate_seconds", generate_s},
                            {"timed_runs", t.runs},
                            {"name", name}};
    if (target >= 0) point["target_density"] = target;
    if (dense_ms > 0) {
      point["dense_ms"] = dense_ms;
      point["speedup_vs_own_dense"] = dense_ms / (e.host_ms + sparse_ms);
      point["speedup_vs_own_dense_device"] = dense_ms / (e.device_ms + sparse_ms);
    } else {
      point["dense_ms"] = nullptr;
      point["dense_skipped"] = "our dense attention not run at this length (--max-dense-len)";
    }
    if (run.write_masks) {
      const std::string base = run.mask_dir + "/" + name;
      std::vector<int32_t> ids(m.selected_blocks());
      BENCH_CHECK(backend.CopyToHost(ids.data(), m.kv_blocks, ids.size() * sizeof(int32_t)));
      WriteInts(base + ".offsets.i32", m.host.row_offsets);
      WriteInts(base + ".blocks.i32", ids);
      point["mask"] = {{"offsets", base + ".offsets.i32"},
                       {"blocks", base + ".blocks.i32"},
                       {"heads", m.host.num_heads},
                       {"num_q_blocks", m.host.num_q_blocks},
                       {"num_kv_blocks", m.host.num_kv_blocks}};
    }
    std::printf("%-8d %-6s %-8s %-6.3g %-8.6f %-8.3f %-9.2f %-9.2f %-9.2f %-9.2f\n", p.L,
                causal ? "yes" : "no", workload.c_str(), concentration, tau, m.density(),
                e.device_ms, e.host_ms, sparse_ms, dense_ms);
    std::fflush(stdout);
    points.push_back(point);
  }
}

absl::StatusOr<WorkloadSpec> SpecFor(const std::string& workload, int L, const Shape& s,
                                     double concentration) {
  absl::StatusOr<WorkloadKind> kind = ParseWorkloadKind(workload);
  if (!kind.ok()) return kind.status();
  WorkloadSpec spec;
  spec.kind = *kind;
  spec.seq_len = L;
  spec.heads = s.hq;
  spec.kv_heads = s.hkv;
  spec.head_dim = s.head_dim;
  spec.concentration = concentration;
  spec.slash_heads = true;  // one GPU: slash heads cost no exchange; they are the realistic mix
  return spec;
}

// `save` writes the report so far: a run cut short (time limit, OOM) keeps its points.
void RunLength(AttentionBackend& backend, int L, const Shape& shape, const Run& run,
               nlohmann::json& report, const std::function<void()>& save) {
  Problem p = MakeProblem(backend, L, shape);
  const Timing t = TimingFor(L, run.runs);
  std::vector<double> dense_ms(2, 0.0);
  bool dense_done = false;
  // Once, on the first workload's data (zeros would run faster than data).
  auto time_dense = [&] {
    if (dense_done) return;
    dense_done = true;
    for (int causal : run.causal_modes) {
      if (L <= run.max_dense_len) dense_ms[causal] = DenseMs(backend, p, causal != 0, t);
      report["dense"].push_back({{"L", L},
                                 {"causal", causal != 0},
                                 {"dense_ms", dense_ms[causal]},
                                 {"timed_runs", t.runs}});
      std::printf("dense L=%d causal=%d: %.2f ms\n", L, causal, dense_ms[causal]);
      save();
    }
  };
  for (const std::string& workload : run.workloads) {
    const std::vector<double> concentrations =
        workload == "random" ? std::vector<double>{1.0} : run.concentrations;
    for (double c : concentrations) {
      absl::StatusOr<WorkloadSpec> spec = SpecFor(workload, L, shape, c);
      BENCH_CHECK(spec.status());
      const double generate_s = FillWorkload(backend, p, *spec, run.threads);
      time_dense();
      for (int causal : run.causal_modes) {
        RunPoints(backend, p, run, workload, c, causal != 0, dense_ms[causal], generate_s,
                  report["points"]);
        save();
      }
    }
  }
}

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) {
  using namespace prefill;
  CLI::App app{"End-to-end sparse prefill on structured inputs, one GPU"};
  std::string out_path = "sparse_e2e_cuda.json", commit = PREFILL_GIT_COMMIT;
  std::vector<int> lengths = {32768, 131072};
  Shape shape;
  Run run;
  run.workloads = {"needle", "stripes", "video", "random"};
  run.concentrations = {0.3, 0.5, 1.0};
  run.taus = {0.95};
  run.target_densities = {0.5, 0.25};
  run.causal_modes = {1};
  run.mask_dir = "/tmp/sparse_e2e_masks";
  int device = 0;
  bool no_masks = false;
  app.add_option("--out", out_path, "JSON output path");
  app.add_option("--lengths", lengths, "sequence lengths (multiples of 128)");
  app.add_option("--workloads", run.workloads,
                 "needle, stripes, video, sinks, random (random: one point, tau only)");
  app.add_option("--concentrations", run.concentrations,
                 "workload concentrations (docs/workloads.md)");
  app.add_option("--taus", run.taus, "fixed tau values per (workload, concentration)");
  app.add_option("--target-densities", run.target_densities,
                 "densities to reach by bisection over log(1 - tau) (0: none)");
  app.add_option("--causal", run.causal_modes, "causal modes (0, 1)");
  app.add_option("--mask-dir", run.mask_dir, "where the estimated masks go (raw int32 CSR)");
  app.add_flag("--no-masks", no_masks, "do not write the masks");
  app.add_option("--runs", run.runs, "timed runs per point at <= 32K (fewer at larger L)");
  app.add_option("--threads", run.threads, "host threads generating the workload (0: all)");
  app.add_option("--max-dense-len", run.max_dense_len,
                 "longest L at which our dense attention is timed");
  app.add_option("--heads", shape.hq);
  app.add_option("--kv-heads", shape.hkv);
  app.add_option("--head-dim", shape.head_dim);
  app.add_option("--device", device);
  app.add_option("--git-commit", commit);
  CLI11_PARSE(app, argc, argv);
  run.write_masks = !no_masks;
  for (int L : lengths) {
    if (L <= 0 || L % kBlock != 0) bench::Fail(__FILE__, __LINE__, "--lengths: multiples of 128");
  }

  CudaBackendOptions options;
  options.device_id = device;
  auto created = CreateCudaBackend(options);
  BENCH_CHECK(created.status());
  std::unique_ptr<AttentionBackend> backend = *std::move(created);
  cudaDeviceProp prop{};
  BENCH_CHECK(cudaGetDeviceProperties(&prop, device));
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  nlohmann::json report = {
      {"device", prop.name},
      {"date", bench::UtcNow()},
      {"git_commit", commit},
      {"command", command},
      {"shape",
       {{"hq", shape.hq},
        {"hkv", shape.hkv},
        {"head_dim", shape.head_dim},
        {"block", kBlock},
        {"stride", kStride},
        {"dtype", "bf16"}}},
      {"estimate_ms_is",
       "estimate_host_ms: the PoolKeys + EstimateMaskInBackend call (wall; the ids stay in device "
       "memory for the attention, the row offsets come to the host); estimate_device_ms: pooling + "
       "estimator stages on the device; estimate_host_mask_ms: PoolKeys + EstimateMask, the whole "
       "CSR copied into a host BlockMask"},
      {"dense", nlohmann::json::array()},
      {"points", nlohmann::json::array()}};
  std::printf("%-8s %-6s %-8s %-6s %-8s %-8s %-9s %-9s %-9s %-9s\n", "L", "causal", "workload",
              "conc", "tau", "density", "est_dev", "est_host", "sparse", "dense");
  const auto save = [&] { std::ofstream(out_path) << report.dump(1) << "\n"; };
  for (int L : lengths) RunLength(*backend, L, shape, run, report, save);
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
