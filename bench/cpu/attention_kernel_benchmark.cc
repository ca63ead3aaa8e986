// Throughput of the CPU block-sparse attention kernel, beside the measured fp32 FMA peak of
// this machine, so that one JSON (--benchmark_out=x.json --benchmark_out_format=json)
// carries both.
//
// BM_BlockSparseAttention: L = 8192 queries and keys, 8 query heads over 2 KV heads, blocks
// of 128, random masks keeping each visible block with probability density_pct / 100 (the
// diagonal block always). Flops count 4 * B * B * D per computed (head, q block, kv block),
// masked halves of diagonal blocks included, nothing else (no exp, no rescale).
// BM_FmaPeak: a register-only loop of independent FMAs, one thread and all threads, as wide
// as the kernel's ISA (PREFILL_CPU_ISA forces one: portable|avx2|avx512|neon; the portable
// path is measured against the widest FMA the CPU has). The ISA is the label of every result
// and `cpu_isa` in the JSON context.
#include <benchmark/benchmark.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/cpu/benchmark_cpu_isa.h"
#include "kernels/attention_params.h"
#include "kernels/cpu/block_sparse_attention.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/dtype.h"

namespace prefill {
namespace {

// ---- fp32 FMA peak -------------------------------------------------------------------------

// Twelve independent accumulator chains hide the FMA latency (4 cycles) at two issues per
// cycle; a = a * x + y with |x| < 1 stays finite forever.
constexpr int kChains = 12;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) float FmaLoopAvx512(int64_t steps) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(0.001f);
  for (int64_t s = 0; s < steps; ++s) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  }
  float lanes[16];
  for (int c = 1; c < kChains; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
  _mm512_storeu_ps(lanes, acc[0]);
  return lanes[0];
}

__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t steps) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.001f);
  for (int64_t s = 0; s < steps; ++s) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
  }
  float lanes[8];
  for (int c = 1; c < kChains; ++c) acc[0] = _mm256_add_ps(acc[0], acc[c]);
  _mm256_storeu_ps(lanes, acc[0]);
  return lanes[0];
}
#elif defined(__aarch64__)
float FmaLoopNeon(int64_t steps) {
  float32x4_t acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = vdupq_n_f32(static_cast<float>(c));
  const float32x4_t x = vdupq_n_f32(0.999f), y = vdupq_n_f32(0.001f);
  for (int64_t s = 0; s < steps; ++s) {
    for (int c = 0; c < kChains; ++c) acc[c] = vfmaq_f32(y, acc[c], x);
  }
  for (int c = 1; c < kChains; ++c) acc[0] = vaddq_f32(acc[0], acc[c]);
  return vgetq_lane_f32(acc[0], 0);
}
#endif

struct FmaKernel {
  float (*loop)(int64_t steps);
  int lanes;
  const char* name;
};

// The FMA as wide as the ISA the attention kernel runs (the widest the CPU has for portable).
FmaKernel FmaFor(cpu::CpuIsa isa) {
  if (isa == cpu::CpuIsa::kPortable) isa = cpu::BestCpuIsa();
#if defined(__x86_64__)
  if (isa == cpu::CpuIsa::kAvx512) return {FmaLoopAvx512, 16, "avx512"};
  if (isa == cpu::CpuIsa::kAvx2) return {FmaLoopAvx2, 8, "avx2"};
#elif defined(__aarch64__)
  if (isa == cpu::CpuIsa::kNeon) return {FmaLoopNeon, 4, "neon"};
#endif
  std::fprintf(stderr, "attention_kernel_benchmark: no FMA loop for this CPU\n");
  std::exit(1);
}

FmaKernel WidestFma() { return FmaFor(bench::BenchmarkIsa()); }

// Seconds for `threads` threads to each run `steps` steps of the FMA loop.
double TimeFmaLoop(const FmaKernel& fma, int threads, int64_t steps) {
  std::vector<float> sinks(threads);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] { sinks[t] = fma.loop(steps); });
  }
  for (std::thread& th : pool) th.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  benchmark::DoNotOptimize(sinks.data());
  return seconds;
}

double FmaGflops(const FmaKernel& fma, int threads, int64_t steps, double seconds) {
  return 2.0 * kChains * fma.lanes * steps * threads / seconds * 1e-9;
}

int HardwareThreads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// All-thread peak, the best of a few short runs: the denominator of pct_of_peak. Measured
// around every attention run rather than once, because other work on the machine comes and
// goes; a disturbed measurement then shows in both numbers.
double MeasuredPeakGflops() {
  const FmaKernel fma = WidestFma();
  const int threads = HardwareThreads();
  constexpr int64_t kSteps = 5'000'000;
  double best = 0;
  for (int run = 0; run < 4; ++run) {
    best = std::max(best, FmaGflops(fma, threads, kSteps, TimeFmaLoop(fma, threads, kSteps)));
  }
  return best;
}

void BM_FmaPeak(benchmark::State& state) {
  const FmaKernel fma = WidestFma();
  const int threads = state.range(0) > 0 ? static_cast<int>(state.range(0)) : HardwareThreads();
  constexpr int64_t kSteps = 20'000'000;
  double seconds = 0;
  for (auto _ : state) {
    const double s = TimeFmaLoop(fma, threads, kSteps);
    state.SetIterationTime(s);
    seconds += s;
  }
  state.counters["threads"] = threads;
  state.counters["GFLOP/s"] = FmaGflops(fma, threads, kSteps * state.iterations(), seconds);
  state.SetLabel(fma.name);
}
BENCHMARK(BM_FmaPeak)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(0)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- attention -----------------------------------------------------------------------------

constexpr int kSeqLen = 8192, kHeads = 8, kKvHeads = 2, kBlock = 128;

struct AttentionInputs {
  std::vector<uint16_t> q16, k16, v16;  // bf16 storage
  std::vector<float> q32, k32, v32;     // fp32 storage (the same values)
  std::vector<int32_t> pos;
  std::vector<int32_t> row_offsets, kv_blocks;
};

void FillRandom(DType dtype, size_t n, std::mt19937& rng, std::vector<float>* f32,
                std::vector<uint16_t>* bits) {
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  f32->resize(n);
  for (float& x : *f32) x = uniform(rng);
  if (dtype == DType::kBF16) {
    bits->resize(n);
    ConvertFromF32(dtype, f32->data(), bits->data(), static_cast<int64_t>(n));
  }
}

// Each visible block kept with probability `density`, the diagonal block always.
void RandomMask(double density, bool causal, std::mt19937& rng, AttentionInputs* in) {
  const int blocks = kSeqLen / kBlock;
  std::bernoulli_distribution keep(density);
  in->row_offsets.assign(1, 0);
  in->kv_blocks.clear();
  for (int h = 0; h < kHeads; ++h) {
    for (int qb = 0; qb < blocks; ++qb) {
      for (int kb = 0; kb < (causal ? qb + 1 : blocks); ++kb) {
        if (kb == qb || keep(rng)) in->kv_blocks.push_back(kb);
      }
      in->row_offsets.push_back(static_cast<int32_t>(in->kv_blocks.size()));
    }
  }
}

AttentionParams MakeParams(const AttentionInputs& in, DType dtype, int head_dim, bool causal,
                           std::vector<float>* o, std::vector<float>* lse) {
  const bool bf16 = dtype == DType::kBF16;
  AttentionParams p;
  p.dtype = dtype;
  p.q = bf16 ? static_cast<const void*>(in.q16.data()) : in.q32.data();
  p.k = bf16 ? static_cast<const void*>(in.k16.data()) : in.k32.data();
  p.v = bf16 ? static_cast<const void*>(in.v16.data()) : in.v32.data();
  p.q_row_stride = static_cast<int64_t>(kHeads) * head_dim;
  p.q_head_stride = head_dim;
  p.kv_row_stride = head_dim;
  p.kv_head_stride = static_cast<int64_t>(kSeqLen) * head_dim;
  p.q_pos = p.k_pos = in.pos.data();
  p.lq = p.lk = kSeqLen;
  p.hq = kHeads;
  p.hkv = kKvHeads;
  p.head_dim = head_dim;
  p.block_size = kBlock;
  p.causal = causal;
  p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  p.mask_row_offsets = in.row_offsets.data();
  p.mask_kv_blocks = in.kv_blocks.data();
  o->resize(static_cast<size_t>(kSeqLen) * kHeads * head_dim);
  lse->resize(static_cast<size_t>(kSeqLen) * kHeads);
  p.o = o->data();
  p.lse = lse->data();
  return p;
}

// Args: density in percent, head_dim, bf16 storage (0/1), causal (0/1).
void BM_BlockSparseAttention(benchmark::State& state) {
  const double density = state.range(0) / 100.0;
  const int head_dim = static_cast<int>(state.range(1));
  const DType dtype = state.range(2) ? DType::kBF16 : DType::kF32;
  const bool causal = state.range(3) != 0;
  std::mt19937 rng(7);
  AttentionInputs in;
  FillRandom(dtype, static_cast<size_t>(kSeqLen) * kHeads * head_dim, rng, &in.q32, &in.q16);
  FillRandom(dtype, static_cast<size_t>(kSeqLen) * kKvHeads * head_dim, rng, &in.k32, &in.k16);
  FillRandom(dtype, static_cast<size_t>(kSeqLen) * kKvHeads * head_dim, rng, &in.v32, &in.v16);
  in.pos.resize(kSeqLen);
  for (int i = 0; i < kSeqLen; ++i) in.pos[i] = i;
  RandomMask(density, causal, rng, &in);
  std::vector<float> o, lse;
  const AttentionParams p = MakeParams(in, dtype, head_dim, causal, &o, &lse);
  double peak = MeasuredPeakGflops();

  double seconds = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const absl::Status status = cpu::BlockSparseAttention(p, /*threads=*/0);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      return;
    }
    state.SetIterationTime(s);
    seconds += s;
  }
  peak = std::max(peak, MeasuredPeakGflops());
  const double computed_blocks = static_cast<double>(in.kv_blocks.size());
  const double flops = 4.0 * kBlock * kBlock * head_dim * computed_blocks;
  const double gflops = flops * state.iterations() / seconds * 1e-9;
  const double blocks = kSeqLen / kBlock;
  const double visible = kHeads * (causal ? blocks * (blocks + 1) / 2 : blocks * blocks);
  state.counters["GFLOP/s"] = gflops;
  state.counters["peak_GFLOP/s"] = peak;
  state.counters["pct_of_peak"] = 100.0 * gflops / peak;
  state.counters["computed_blocks"] = computed_blocks;
  state.counters["density"] = computed_blocks / visible;
  state.SetLabel(bench::BenchmarkIsaName());
}
BENCHMARK(BM_BlockSparseAttention)
    ->ArgNames({"density_pct", "head_dim", "bf16", "causal"})
    ->ArgsProduct({{100, 50, 25, 5, 1}, {64, 128}, {0, 1}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) { return prefill::bench::RunBenchmarksNamingIsa(argc, argv); }
