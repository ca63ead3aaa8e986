// SparseBalancePlan: which sparse attention work moves between context-parallel ranks so that
// no rank waits for the slowest ("owner computes").
//
// The unit of work is a segment: the entries (query head h of KV head g, local query block qb,
// KV block b) of rank r's mask whose block b lives on rank o != r. Run at o instead of r, a
// segment moves no K/V at all: r sends o the Q rows of qb for g's query heads and the mask rows,
// o attends over its own blocks and returns the partial (o, lse), which r merges by log-sum-exp.
// Cost = entries (one entry = one block x block tile of the kernel).
//
// The planner is pure and deterministic: every rank runs it on the same all-gathered counts
// and gets the same plan (Hash() lets tests and logs compare), so every rank takes the same
// branches in the collectives that follow.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "parallel/cp_layout.h"

namespace prefill {

// off: every rank computes its own mask; auto: plan moves when the ranks are uneven.
enum class BalanceMode { kOff, kAuto };

absl::StatusOr<BalanceMode> ParseBalanceMode(const std::string& name);
const char* BalanceModeName(BalanceMode mode);

// One rank's mask entries counted by (KV head, local query block, owner rank of the KV block).
// The entry of owner == the rank itself is work no move can take away.
struct SegmentCosts {
  int hkv = 0;
  int q_blocks = 0;
  int world_size = 0;
  std::vector<int32_t> counts;  // [hkv][q_blocks][world_size]

  int32_t at(int kv_head, int q_block, int owner) const {
    return counts[(static_cast<size_t>(kv_head) * q_blocks + q_block) * world_size + owner];
  }
  int64_t total() const;
};

// Counts `mask` (absolute KV block ids, this rank's query blocks) by segment.
SegmentCosts CountSegments(const BlockMask& mask, const CpLayout& layout, int hkv);

// Segment (from, kv_head, q_block, to) computed by `to` instead of `from`.
struct BalanceMove {
  int32_t from = 0;  // rank whose mask holds the entries (and the query rows)
  int32_t kv_head = 0;
  int32_t q_block = 0;  // local query block of `from`
  int32_t to = 0;       // rank holding the KV blocks; computes the entries
  int32_t cost = 0;     // entries
  bool operator==(const BalanceMove&) const = default;
};

struct BalancePlanOptions {
  // Stop once the most loaded rank is within this factor of the mean.
  double target_imbalance = 1.02;
  // Segments of fewer entries stay where they are: their Q rows and partial result would
  // cost more bytes than the work they shift (the query group's size is a good value).
  int min_cost = 1;
};

struct SparseBalancePlan {
  std::vector<BalanceMove> moves;  // sorted by (from, to, kv_head, q_block)
  std::vector<int64_t> selected;   // [rank] mask entries, before balancing
  std::vector<int64_t> computed;   // [rank] entries computed after balancing (own + guests')

  // Moves of rank `rank` to `peer` (from == rank, to == peer), in plan order.
  std::vector<BalanceMove> MovesBetween(int from, int to) const;
  // FNV-1a over the moves: equal on every rank of a job.
  uint64_t Hash() const;
};

// Max over mean of `loads` (1: even; 1 when all are 0).
double Imbalance(std::span<const int64_t> loads);

// Greedy: repeatedly the most loaded rank r (ties: lowest rank) hands one not yet moved
// segment to its owner o: the largest with load[o] + c <= load[r] - c, else the one minimising
// max(load[r] - c, load[o] + c) when that is below load[r]; stops when r has no such segment
// or the imbalance reaches the target. ranks[r] is rank r's costs; all of one shape.
absl::StatusOr<SparseBalancePlan> PlanSparseBalance(std::span<const SegmentCosts> ranks,
                                                    const BalancePlanOptions& options);

}  // namespace prefill
