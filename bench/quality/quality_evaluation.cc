#include "bench/quality/quality_evaluation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "bench/quality/baselines/antidiagonal_mask_estimator.h"
#include "bench/quality/baselines/oracle_mask.h"
#include "bench/quality/baselines/static_window_mask.h"
#include "kernels/backend.h"
#include "kernels/cpu/block_sparse_attention.h"
#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/reference_attention.h"
#include "kernels/cpu/round_robin_mask_estimator.h"
#include "parallel/sequence_gather.h"
#include "parallel/sparse_cp_attention.h"

namespace prefill::quality {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// What every estimator of the sweep shares on this rank.
struct Context {
  Context(Communicator& comm, const CpLayout& layout, const WorkloadShard& shard,
          const SweepConfig& sweep)
      : comm(comm), layout(layout), shard(shard), sweep(sweep) {}
  Communicator& comm;
  const CpLayout& layout;
  const WorkloadShard& shard;
  const SweepConfig& sweep;
  int seq_len = 0, num_blocks = 0, local_len = 0;
  float scale = 0.f;
  std::vector<int32_t> q_pos, q_block_ids, k_pos;
  std::vector<float> k_all, v_all;  // [seq_len, kv_heads, head_dim], absolute order
  std::vector<double> ref_o;        // [local_len, heads, head_dim] fp64 dense
  cpu::TrueBlockMass mass;
  std::unique_ptr<AttentionBackend> backend;
};

// The causally visible (query, key) pairs of one head: dense attention does 4 d flops each.
double VisiblePairs(int64_t n, bool causal) {
  return causal ? 0.5 * static_cast<double>(n) * (n + 1) : static_cast<double>(n) * n;
}

// Attention of this rank's queries over the whole K, V (token-major, absolute order) with
// `mask` (absolute KV block ids): one call of the kernels' contract for every estimator.
AttentionParams FullKvParams(const Context& c, const BlockMask& mask) {
  const WorkloadShard& s = c.shard;
  AttentionParams p;
  p.dtype = DType::kF32;
  p.q = s.q.data();
  p.q_row_stride = int64_t{s.heads} * s.head_dim;
  p.q_head_stride = s.head_dim;
  p.q_pos = c.q_pos.data();
  p.k = c.k_all.data();
  p.v = c.v_all.data();
  p.kv_row_stride = int64_t{s.kv_heads} * s.head_dim;
  p.kv_head_stride = s.head_dim;
  p.k_pos = c.k_pos.data();
  p.lq = c.local_len;
  p.lk = c.seq_len;
  p.hq = s.heads;
  p.hkv = s.kv_heads;
  p.head_dim = s.head_dim;
  p.block_size = c.sweep.block;
  p.causal = c.sweep.causal;
  p.scale = c.scale;
  p.mask_row_offsets = mask.row_offsets.data();
  p.mask_kv_blocks = mask.kv_blocks.data();
  return p;
}

// Output of `mask` on this rank's queries (fp32 block-sparse flash attention).
absl::Status RunBlockSparse(const Context& c, const BlockMask& mask, std::vector<float>* o) {
  o->assign(static_cast<size_t>(c.local_len) * c.shard.heads * c.shard.head_dim, 0.f);
  std::vector<float> lse(static_cast<size_t>(c.local_len) * c.shard.heads);
  AttentionParams p = FullKvParams(c, mask);
  p.o = o->data();
  p.lse = lse.data();
  return cpu::BlockSparseAttention(p, c.sweep.threads);
}

// Density, output error, recall and needle recall of `mask` (this rank's rows) reduced over
// the group; `o` null: no output error.
absl::Status Score(Context& c, const BlockMask& mask, const std::vector<float>* o, double seconds,
                   EstimatorPoint* pt) {
  const WorkloadShard& s = c.shard;
  double sums[8] = {static_cast<double>(mask.selected_blocks()),
                    static_cast<double>(mask.visible_blocks)};
  double maxes[2] = {0, seconds};
  if (o != nullptr) {
    for (size_t i = 0; i < c.ref_o.size(); ++i) {
      const double err = (*o)[i] - c.ref_o[i];
      sums[2] += err * err;
      sums[3] += c.ref_o[i] * c.ref_o[i];
      maxes[0] = std::max(maxes[0], std::abs(err));
    }
  }
  absl::StatusOr<std::vector<double>> recall = cpu::RowRecall(c.mass, mask);
  if (!recall.ok()) return recall.status();
  for (double r : *recall) sums[4] += r;
  sums[5] = static_cast<double>(recall->size());
  if (s.needle) {
    const int32_t first = static_cast<int32_t>(s.needle->first / c.sweep.block);
    const int32_t last = static_cast<int32_t>(s.needle->last / c.sweep.block);
    for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
      if (mask.q_block_ids[qb] != s.needle->question_block) continue;
      for (int h = 0; h < mask.num_heads; ++h) {
        const std::span<const int32_t> row = mask.row(h, qb);
        bool all = true;
        for (int32_t b = first; b <= last; ++b)
          all = all && std::binary_search(row.begin(), row.end(), b);
        sums[6] += all ? 1 : 0;
        sums[7] += 1;
      }
    }
  }
  // Per head: squared error, squared reference, recall sum, rows.
  const int heads = s.heads;
  std::vector<double> per_head(int64_t{heads} * 4, 0.0);
  for (size_t i = 0; i < recall->size(); ++i) {
    per_head[(i % heads) * 4 + 2] += (*recall)[i];
    per_head[(i % heads) * 4 + 3] += 1;
  }
  if (o != nullptr) {
    for (size_t i = 0; i < c.ref_o.size(); ++i) {
      const size_t h = i / s.head_dim % heads;
      const double err = (*o)[i] - c.ref_o[i];
      per_head[h * 4] += err * err;
      per_head[h * 4 + 1] += c.ref_o[i] * c.ref_o[i];
    }
  }
  if (absl::Status st = c.comm.AllReduceSum(per_head.data(), per_head.size()); !st.ok()) return st;
  pt->head_rel_l2_err.clear();
  pt->head_recall_mean.clear();
  for (int h = 0; h < heads; ++h) {
    const double* v = per_head.data() + h * 4;
    pt->head_rel_l2_err.push_back(o != nullptr && v[1] > 0 ? std::sqrt(v[0] / v[1]) : -1);
    pt->head_recall_mean.push_back(v[3] > 0 ? v[2] / v[3] : 0);
  }
  if (absl::Status st = c.comm.AllReduceSum(sums, 8); !st.ok()) return st;
  if (absl::Status st = c.comm.AllReduceMax(maxes, 2); !st.ok()) return st;
  // Every rank holds as many rows as the others: one all-gather gives every recall.
  std::vector<double> all(recall->size() * c.comm.size());
  if (absl::Status st =
          c.comm.AllGather(recall->data(), recall->size() * sizeof(double), all.data());
      !st.ok()) {
    return st;
  }
  const size_t p1 = all.size() / 100;
  std::nth_element(all.begin(), all.begin() + p1, all.end());
  pt->density = sums[1] > 0 ? sums[0] / sums[1] : 0;
  if (o != nullptr) {
    pt->rel_l2_err = sums[3] > 0 ? std::sqrt(sums[2] / sums[3]) : 0;
    pt->max_abs_err = maxes[0];
  }
  pt->has_output = o != nullptr;
  pt->recall_mean = sums[5] > 0 ? sums[4] / sums[5] : 0;
  pt->recall_p1 = all.empty() ? 0 : all[p1];
  pt->needle_recall = sums[7] > 0 ? sums[6] / sums[7] : -1;
  pt->estimate_seconds = maxes[1];
  if (c.sweep.keep_masks) pt->mask = mask;
  if (c.sweep.verbose && c.comm.rank() == 0) {
    std::printf(
        "  %-14s S=%-2d tau=%-5.3g W=%-3d density %.3f  rel_l2 %.2e  recall %.4f (p1 %.4f)%s  est "
        "%.3fs\n",
        pt->estimator.c_str(), pt->stride, pt->tau, pt->window, pt->density, pt->rel_l2_err,
        pt->recall_mean, pt->recall_p1,
        pt->needle_recall >= 0 ? absl::StrCat("  needle ", pt->needle_recall).c_str() : "",
        pt->estimate_seconds);
    if (std::getenv("QUALITY_PER_HEAD") != nullptr) {
      for (int h = 0; h < heads; ++h) {
        std::printf("      head %d: rel_l2 %.2e recall %.4f\n", h, pt->head_rel_l2_err[h],
                    pt->head_recall_mean[h]);
      }
    }
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status Prepare(Context& c, WorkloadReport* report) {
  const WorkloadShard& s = c.shard;
  c.seq_len = static_cast<int>(c.layout.seq_len());
  c.num_blocks = static_cast<int>(c.layout.num_blocks());
  c.local_len = static_cast<int>(c.layout.local_len());
  c.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  c.q_pos = c.layout.Positions(c.comm.rank());
  c.q_block_ids = c.layout.QueryBlockIds(c.comm.rank());
  c.k_pos.resize(c.seq_len);
  for (int i = 0; i < c.seq_len; ++i) c.k_pos[i] = i;
  c.backend = MakeCpuBackend(c.sweep.threads);
  const size_t kv_row = static_cast<size_t>(s.kv_heads) * s.head_dim * sizeof(float);
  for (auto [local, all] : {std::pair{&s.k, &c.k_all}, std::pair{&s.v, &c.v_all}}) {
    absl::StatusOr<std::vector<std::byte>> bytes =
        AllGatherSequence(c.comm, c.layout, local->data(), kv_row);
    if (!bytes.ok()) return bytes.status();
    all->resize(bytes->size() / sizeof(float));
    std::memcpy(all->data(), bytes->data(), bytes->size());
  }

  const auto start = Clock::now();
  const BlockMask dense =
      DenseBlockMask(s.heads, c.q_block_ids, c.num_blocks, c.sweep.block, c.sweep.causal);
  const AttentionParams p = FullKvParams(c, dense);
  std::vector<double> lse;
  if (absl::Status st = cpu::ReferenceAttention(p, &c.ref_o, &lse, c.sweep.threads); !st.ok())
    return st;

  cpu::TrueMassParams tm;
  tm.q = s.q.data();
  tm.q_row_stride = int64_t{s.heads} * s.head_dim;
  tm.q_head_stride = s.head_dim;
  tm.q_block_ids = c.q_block_ids.data();
  tm.num_q_blocks = static_cast<int>(c.q_block_ids.size());
  tm.k = c.k_all.data();
  tm.k_row_stride = int64_t{s.kv_heads} * s.head_dim;
  tm.k_head_stride = s.head_dim;
  tm.seq_len = c.seq_len;
  tm.hq = s.heads;
  tm.hkv = s.kv_heads;
  tm.head_dim = s.head_dim;
  tm.block_size = c.sweep.block;
  tm.causal = c.sweep.causal;
  tm.scale = c.scale;
  absl::StatusOr<cpu::TrueBlockMass> mass = cpu::ComputeTrueBlockMass(tm, c.sweep.threads);
  if (!mass.ok()) return mass.status();
  c.mass = std::move(*mass);
  double seconds = Since(start);
  if (absl::Status st = c.comm.AllReduceMax(&seconds, 1); !st.ok()) return st;
  report->reference_seconds = seconds;
  return absl::OkStatus();
}

// Where each head's true mass lies (see HeadProfile), reduced over the group.
absl::Status Profile(Context& c, WorkloadReport* report) {
  const int heads = c.shard.heads, b = c.sweep.block;
  // Per head: sink mass, sink rows, diagonal mass, rows, selected at 90%, 99%, visible.
  std::vector<double> sums(int64_t{heads} * 7, 0.0);
  const cpu::TopTauRule r90{0.9f, c.sweep.causal, false, false},
      r99{0.99f, c.sweep.causal, false, false};
  const BlockMask m90 = cpu::OracleTopTauMask(c.mass, r90),
                  m99 = cpu::OracleTopTauMask(c.mass, r99);
  for (int h = 0; h < heads; ++h) {
    double* s = sums.data() + h * 7;
    for (int qb = 0; qb < c.mass.num_q_blocks; ++qb) {
      const int absolute = c.mass.q_block_ids[qb];
      const std::span<const double> row = c.mass.block_row(h, qb);
      if (absolute > 0) {
        s[0] += row[0] / b;
        s[1] += 1;
      }
      s[2] += row[absolute] / b;
      s[3] += 1;
      s[4] += static_cast<double>(m90.row(h, qb).size());
      s[5] += static_cast<double>(m99.row(h, qb).size());
      s[6] += static_cast<double>(VisibleBlocks(absolute, c.num_blocks, c.sweep.causal));
    }
  }
  if (absl::Status st = c.comm.AllReduceSum(sums.data(), sums.size()); !st.ok()) return st;
  for (int h = 0; h < heads; ++h) {
    const double* s = sums.data() + h * 7;
    HeadProfile hp;
    hp.head = h;
    hp.role = h < static_cast<int>(c.shard.head_roles.size()) ? c.shard.head_roles[h] : "-";
    hp.sink_share = s[1] > 0 ? s[0] / s[1] : 0;
    hp.diagonal_share = s[3] > 0 ? s[2] / s[3] : 0;
    hp.oracle_density_90 = s[6] > 0 ? s[4] / s[6] : 0;
    hp.oracle_density_99 = s[6] > 0 ? s[5] / s[6] : 0;
    report->heads_profile.push_back(hp);
  }
  return absl::OkStatus();
}

EstimatorPoint Point(const std::string& estimator, int stride, double tau, double flops) {
  EstimatorPoint pt;
  pt.estimator = estimator;
  pt.stride = stride;
  pt.tau = tau < 0 ? tau : std::round(tau * 1e6) / 1e6;  // 0.95f as 0.95
  pt.estimate_flops_fraction = flops;
  return pt;
}

// Round robin (or rr+heavy) through SparseCpAttention: the mask and output the distributed
// path produces.
absl::Status RoundRobinPoint(Context& c, int stride, float tau, MaskEstimator estimator,
                             EstimatorPoint* pt) {
  const WorkloadShard& s = c.shard;
  std::vector<float> o(static_cast<size_t>(c.local_len) * s.heads * s.head_dim);
  std::vector<float> lse(static_cast<size_t>(c.local_len) * s.heads);
  const CpAttentionShard shard{DType::kF32, s.q.data(), s.k.data(),     s.v.data(), s.heads,
                               s.kv_heads,  s.head_dim, c.sweep.causal, c.scale};
  SparseOptions options{stride, tau, c.sweep.keep_sink, c.sweep.keep_recent};
  options.estimator = estimator;
  absl::StatusOr<SparseCpResult> r =
      SparseCpAttention(c.comm, *c.backend, c.layout, shard, options, {o.data(), lse.data()});
  if (!r.ok()) return r.status();
  return Score(c, r->mask, &o, r->stats.estimate_seconds, pt);
}

absl::Status UnrotatedPoint(Context& c, int stride, float tau, EstimatorPoint* pt) {
  const WorkloadShard& s = c.shard;
  const auto start = Clock::now();
  std::vector<float> pooled(static_cast<size_t>(c.seq_len / stride) * s.kv_heads * s.head_dim);
  PoolKeysParams pool{DType::kF32, c.k_all.data(), int64_t{s.kv_heads} * s.head_dim,
                      c.seq_len,   s.kv_heads,     s.head_dim,
                      stride,      pooled.data()};
  if (absl::Status st = cpu::PoolKeys(pool); !st.ok()) return st;
  MaskEstimateParams p;
  p.q = s.q.data();
  p.q_row_stride = int64_t{s.heads} * s.head_dim;
  p.q_head_stride = s.head_dim;
  p.q_block_ids = c.q_block_ids.data();
  p.num_q_blocks = static_cast<int>(c.q_block_ids.size());
  p.pooled_k = pooled.data();
  p.seq_len = c.seq_len;
  p.hq = s.heads;
  p.hkv = s.kv_heads;
  p.head_dim = s.head_dim;
  p.block_size = c.sweep.block;
  p.stride = stride;
  p.tau = tau;
  p.causal = c.sweep.causal;
  p.keep_sink = c.sweep.keep_sink;
  p.keep_recent = c.sweep.keep_recent;
  p.rotate_offsets = false;
  p.scale = c.scale;
  absl::StatusOr<BlockMask> mask = cpu::EstimateRoundRobinMask(p, c.sweep.threads);
  if (!mask.ok()) return mask.status();
  const double seconds = Since(start);
  std::vector<float> o;
  if (absl::Status st = RunBlockSparse(c, *mask, &o); !st.ok()) return st;
  return Score(c, *mask, &o, seconds, pt);
}

// Block masses of the antidiagonal estimator for one stride (all taus cut from them).
absl::StatusOr<std::vector<double>> AntidiagonalMass(Context& c, int stride, double* seconds) {
  const WorkloadShard& s = c.shard;
  const auto start = Clock::now();
  cpu::AntidiagonalMaskParams p;
  p.q = s.q.data();
  p.q_row_stride = int64_t{s.heads} * s.head_dim;
  p.q_head_stride = s.head_dim;
  p.q_block_ids = c.q_block_ids.data();
  p.num_q_blocks = static_cast<int>(c.q_block_ids.size());
  p.k = c.k_all.data();
  p.k_row_stride = int64_t{s.kv_heads} * s.head_dim;
  p.k_head_stride = s.head_dim;
  p.seq_len = c.seq_len;
  p.hq = s.heads;
  p.hkv = s.kv_heads;
  p.head_dim = s.head_dim;
  p.block_size = c.sweep.block;
  p.stride = stride;
  p.causal = c.sweep.causal;
  p.keep_sink = c.sweep.keep_sink;
  p.keep_recent = c.sweep.keep_recent;
  p.scale = c.scale;
  absl::StatusOr<std::vector<double>> mass = cpu::AntidiagonalBlockMass(p, c.sweep.threads);
  *seconds = Since(start);
  return mass;
}

// A mask cut from block masses by the forced-first top-tau rule, scored with its output.
absl::Status SelectedPoint(Context& c, const std::vector<double>& mass, float tau, double seconds,
                           bool with_output, EstimatorPoint* pt) {
  const auto start = Clock::now();
  const BlockMask mask =
      cpu::SelectTopTauForcedFirst(mass, c.shard.heads, c.q_block_ids, c.num_blocks, c.sweep.block,
                                   {tau, c.sweep.causal, c.sweep.keep_sink, c.sweep.keep_recent});
  seconds += Since(start);
  if (!with_output) return Score(c, mask, nullptr, seconds, pt);
  std::vector<float> o;
  if (absl::Status st = RunBlockSparse(c, mask, &o); !st.ok()) return st;
  return Score(c, mask, &o, seconds, pt);
}

absl::Status StaticPoint(Context& c, int window, EstimatorPoint* pt) {
  cpu::StaticWindowParams p{c.shard.heads,  c.num_blocks,      c.sweep.block,      window,
                            c.sweep.causal, c.sweep.keep_sink, c.sweep.keep_recent};
  const BlockMask mask = cpu::StaticWindowMask(p, c.q_block_ids);
  std::vector<float> o;
  if (absl::Status st = RunBlockSparse(c, mask, &o); !st.ok()) return st;
  pt->window = window;
  return Score(c, mask, &o, 0.0, pt);
}

}  // namespace

absl::StatusOr<WorkloadReport> EvaluateWorkload(Communicator& comm, const CpLayout& layout,
                                                const WorkloadShard& shard,
                                                const SweepConfig& sweep) {
  if (layout.block_size() != sweep.block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EvaluateWorkload: layout block ", layout.block_size(), " != sweep block ", sweep.block));
  }
  Context c(comm, layout, shard, sweep);
  WorkloadReport report;
  report.name = shard.name;
  report.seq_len = layout.seq_len();
  report.heads = shard.heads;
  report.kv_heads = shard.kv_heads;
  report.head_dim = shard.head_dim;
  report.block = sweep.block;
  report.world_size = comm.size();
  if (absl::Status s = Prepare(c, &report); !s.ok()) return s;
  if (absl::Status s = Profile(c, &report); !s.ok()) return s;

  const double dense_pairs = VisiblePairs(c.seq_len, sweep.causal);
  std::set<int> windows;
  for (int stride : sweep.strides) {
    const double stride_pairs = VisiblePairs(c.seq_len / stride, sweep.causal);
    const double rr_flops = stride_pairs / (2 * dense_pairs);
    double anti_seconds = 0;
    absl::StatusOr<std::vector<double>> anti = AntidiagonalMass(c, stride, &anti_seconds);
    if (!anti.ok()) return anti.status();
    for (float tau : sweep.taus) {
      EstimatorPoint rr = Point("rr", stride, tau, rr_flops);
      if (absl::Status s = RoundRobinPoint(c, stride, tau, MaskEstimator::kRoundRobin, &rr);
          !s.ok())
        return s;
      // The static window that matches this point's density.
      windows.insert(cpu::WindowForDensity({shard.heads, c.num_blocks, sweep.block, 1, sweep.causal,
                                            sweep.keep_sink, sweep.keep_recent},
                                           rr.density));
      report.points.push_back(std::move(rr));
      EstimatorPoint unrotated = Point("rr_unrotated", stride, tau, rr_flops);
      if (absl::Status s = UnrotatedPoint(c, stride, tau, &unrotated); !s.ok()) return s;
      report.points.push_back(std::move(unrotated));
      // One heavy key per block on top: B / S more keys per B / S pooled ones.
      const double heavy_pairs =
          static_cast<double>(c.seq_len / stride) * (c.num_blocks + 1) / (sweep.causal ? 2 : 1);
      EstimatorPoint heavy =
          Point("rr+heavy", stride, tau, rr_flops + heavy_pairs / (2 * dense_pairs));
      if (absl::Status s = RoundRobinPoint(c, stride, tau, MaskEstimator::kRoundRobinHeavy, &heavy);
          !s.ok()) {
        return s;
      }
      report.points.push_back(std::move(heavy));
      EstimatorPoint xa = Point("antidiagonal", stride, tau, stride * rr_flops);
      if (absl::Status s = SelectedPoint(c, *anti, tau, anti_seconds, true, &xa); !s.ok()) return s;
      report.points.push_back(std::move(xa));
    }
  }
  for (int window : windows) {
    EstimatorPoint st = Point("static_window", 0, -1, 0.0);
    if (absl::Status s = StaticPoint(c, window, &st); !s.ok()) return s;
    report.points.push_back(std::move(st));
  }
  for (float tau : sweep.taus) {
    EstimatorPoint oracle = Point("oracle", 0, tau, 0.5);
    if (absl::Status s =
            SelectedPoint(c, c.mass.block, tau, report.reference_seconds, true, &oracle);
        !s.ok()) {
      return s;
    }
    report.points.push_back(std::move(oracle));
  }
  for (float tau : sweep.oracle_curve_taus) {
    if (std::find(sweep.taus.begin(), sweep.taus.end(), tau) != sweep.taus.end()) continue;
    EstimatorPoint oracle = Point("oracle", 0, tau, 0.5);
    if (absl::Status s =
            SelectedPoint(c, c.mass.block, tau, report.reference_seconds, false, &oracle);
        !s.ok()) {
      return s;
    }
    report.points.push_back(std::move(oracle));
  }
  return report;
}

nlohmann::json WorkloadReport::ToJson() const {
  nlohmann::json j = {{"name", name},
                      {"seq_len", seq_len},
                      {"heads", heads},
                      {"kv_heads", kv_heads},
                      {"head_dim", head_dim},
                      {"block", block},
                      {"world_size", world_size},
                      {"reference_seconds", reference_seconds}};
  nlohmann::json profile = nlohmann::json::array();
  for (const HeadProfile& h : heads_profile) {
    profile.push_back({{"head", h.head},
                       {"role", h.role},
                       {"sink_share", h.sink_share},
                       {"diagonal_share", h.diagonal_share},
                       {"oracle_density_90", h.oracle_density_90},
                       {"oracle_density_99", h.oracle_density_99}});
  }
  j["heads_profile"] = profile;
  nlohmann::json pts = nlohmann::json::array();
  for (const EstimatorPoint& p : points) {
    nlohmann::json e = {{"estimator", p.estimator},
                        {"stride", p.stride},
                        {"tau", p.tau},
                        {"window", p.window},
                        {"has_output", p.has_output},
                        {"density", p.density},
                        {"recall_mean", p.recall_mean},
                        {"recall_p1", p.recall_p1},
                        {"estimate_seconds", p.estimate_seconds},
                        {"estimate_flops_fraction", p.estimate_flops_fraction}};
    if (p.has_output) {
      e["rel_l2_err"] = p.rel_l2_err;
      e["max_abs_err"] = p.max_abs_err;
    }
    if (p.needle_recall >= 0) e["needle_recall"] = p.needle_recall;
    if (p.has_output) e["head_rel_l2_err"] = p.head_rel_l2_err;
    e["head_recall_mean"] = p.head_recall_mean;
    pts.push_back(e);
  }
  j["points"] = pts;
  return j;
}

}  // namespace prefill::quality
