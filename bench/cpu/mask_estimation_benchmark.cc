// Throughput of CPU round-robin mask estimation (EstimateRoundRobinMask: packing, the block
// mass kernel, top-tau), per ISA variant: PREFILL_CPU_ISA=portable|avx2|avx512|neon forces
// one; the ISA is each result's label and `cpu_isa` in the JSON context.
//
// BM_RoundRobinMaskEstimate: L = 32768 keys on one rank (every query block), 8 query heads
// over 2 KV heads, blocks of 128, stride 8, random queries and pooled keys. Flops count the
// sampled dot products only, 2 * D per (sampled query, visible key stride); the kernel does
// them as separate multiplies and adds (no FMA, for bitwise agreement across ISAs).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench/cpu/benchmark_cpu_isa.h"
#include "kernels/cpu/round_robin_mask_estimator.h"
#include "kernels/mask_estimation_params.h"

namespace prefill {
namespace {

constexpr int kSeqLen = 32768, kHeads = 8, kKvHeads = 2, kBlock = 128, kStride = 8;

// Sampled dot products of one estimate: block q's B / S sampled queries each see the strides
// up to their own (causal) or all of them.
double EstimateFlops(int head_dim, bool causal) {
  const int strides = kSeqLen / kStride;
  double visible = 0;  // one sampled query per query stride i
  for (int i = 0; i < strides; ++i) visible += causal ? i + 1 : strides;
  return 2.0 * head_dim * visible * kHeads;
}

// Args: head_dim, causal (0/1).
void BM_RoundRobinMaskEstimate(benchmark::State& state) {
  const int head_dim = static_cast<int>(state.range(0));
  const bool causal = state.range(1) != 0;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<float> q(static_cast<size_t>(kSeqLen) * kHeads * head_dim);
  std::vector<float> pooled(static_cast<size_t>(kSeqLen / kStride) * kKvHeads * head_dim);
  for (float& x : q) x = normal(rng);
  for (float& x : pooled) x = kStride * normal(rng);
  std::vector<int32_t> ids(kSeqLen / kBlock);
  for (size_t b = 0; b < ids.size(); ++b) ids[b] = static_cast<int32_t>(b);

  MaskEstimateParams p;
  p.q = q.data();
  p.q_row_stride = int64_t{kHeads} * head_dim;
  p.q_head_stride = head_dim;
  p.q_block_ids = ids.data();
  p.num_q_blocks = static_cast<int>(ids.size());
  p.pooled_k = pooled.data();
  p.seq_len = kSeqLen;
  p.hq = kHeads;
  p.hkv = kKvHeads;
  p.head_dim = head_dim;
  p.block_size = kBlock;
  p.stride = kStride;
  p.causal = causal;
  p.keep_recent = false;  // the last block's estimate is the costliest: keep it in the count
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));

  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const absl::StatusOr<BlockMask> mask = cpu::EstimateRoundRobinMask(p, /*threads=*/0);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!mask.ok()) {
      state.SkipWithError(std::string(mask.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(mask->kv_blocks.data());
    state.SetIterationTime(s);
    seconds += s;
  }
  state.counters["GFLOP/s"] = EstimateFlops(head_dim, causal) * state.iterations() / seconds * 1e-9;
  state.SetLabel(bench::BenchmarkIsaName());
}
BENCHMARK(BM_RoundRobinMaskEstimate)
    ->ArgNames({"head_dim", "causal"})
    ->ArgsProduct({{64, 128}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) { return prefill::bench::RunBenchmarksNamingIsa(argc, argv); }
