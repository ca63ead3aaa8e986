// How much of full attention a block mask recovers, per estimator, on one workload, over the
// ranks of a context-parallel group: what `quality_eval` runs for each workload and what the
// 4-vs-1-rank test compares.
//
// Every rank holds its rows of Q, K, V in a CpLayout. The round-robin estimator runs through
// the real distributed path (SparseCpAttention: pooled-key all-gather, local estimate, sparse
// KV exchange, LSE merge); the baselines (unrotated round robin, antidiagonal, oracle, static
// window) estimate this rank's query blocks against the gathered K and run block-sparse
// attention on them. Each rank scores its rows against fp64 dense attention and the true
// softmax masses; sums, maxima and the per-row recalls are reduced over the group.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "kernels/mask_estimation_params.h"
#include "nlohmann/json.hpp"
#include "parallel/communicator.h"
#include "parallel/cp_layout.h"

namespace prefill::quality {

// This rank's rows, fp32, in the layout's local order.
struct WorkloadShard {
  std::string name;         // "needle", or the file's path
  std::vector<float> q;     // [local_len, heads, head_dim]
  std::vector<float> k, v;  // [local_len, kv_heads, head_dim]
  int heads = 0, kv_heads = 0, head_dim = 0;
  std::vector<std::string> head_roles;  // per query head (synthetic workloads); empty: unknown
  // Where a needle is planted: its token span and the query block that seeks it.
  struct Needle {
    int64_t first = 0, last = 0;  // tokens [first, last]
    int32_t question_block = 0;
  };
  std::optional<Needle> needle;
};

struct SweepConfig {
  std::vector<int> strides = {4, 8, 16};
  std::vector<float> taus = {0.8f, 0.9f, 0.95f, 0.99f};
  // The oracle also runs at these taus (density and recall only): its full frontier.
  std::vector<float> oracle_curve_taus;
  int block = kDefaultBlockSize;
  bool causal = true;
  bool keep_sink = true;
  bool keep_recent = true;
  int threads = 1;
  bool keep_masks = false;  // return each estimator's mask rows (tests)
  bool verbose = false;     // rank 0 prints a line per point
};

// One estimator at one setting, reduced over the group.
struct EstimatorPoint {
  std::string estimator;   // rr, rr_unrotated, antidiagonal, oracle, static_window
  int stride = 0;          // 0 where it does not apply
  double tau = -1;         // -1 where it does not apply (static window)
  int window = 0;          // static window: blocks ending at the diagonal
  bool has_output = true;  // false: density and recall only (the oracle's frontier)
  double density = 0;      // selected / causally visible blocks
  double rel_l2_err = -1, max_abs_err = -1;  // output vs fp64 dense
  double recall_mean = 0, recall_p1 = 0;     // true softmax mass of a row inside its blocks
  double needle_recall = -1;           // (head, question block) rows holding every needle block
  double estimate_seconds = 0;         // slowest rank
  double estimate_flops_fraction = 0;  // estimation flops / dense attention flops (4 d per pair)
  std::vector<double> head_rel_l2_err, head_recall_mean;  // per query head
  BlockMask mask;  // this rank's rows, with SweepConfig::keep_masks
};

// Where the true mass of each query head lies, averaged over its rows (all ranks).
struct HeadProfile {
  int head = 0;
  std::string role;
  double sink_share = 0;                                // KV block 0 (rows of block 0 excluded)
  double diagonal_share = 0;                            // the row's own block
  double oracle_density_90 = 0, oracle_density_99 = 0;  // blocks for 90% / 99% (no forcing)
};

struct WorkloadReport {
  std::string name;
  int64_t seq_len = 0;
  int heads = 0, kv_heads = 0, head_dim = 0, block = 0, world_size = 0;
  double reference_seconds = 0;  // fp64 dense + true masses, slowest rank
  std::vector<HeadProfile> heads_profile;
  std::vector<EstimatorPoint> points;

  nlohmann::json ToJson() const;
};

// Collective: every rank of `comm` calls it with its shard of the same workload.
absl::StatusOr<WorkloadReport> EvaluateWorkload(Communicator& comm, const CpLayout& layout,
                                                const WorkloadShard& shard,
                                                const SweepConfig& sweep);

}  // namespace prefill::quality
