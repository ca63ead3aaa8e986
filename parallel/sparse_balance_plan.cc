#include "parallel/sparse_balance_plan.h"

#include <algorithm>
#include <numeric>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace prefill {
namespace {

// A segment not yet moved, as the greedy walks it: by descending cost, then (g, qb, owner).
struct Candidate {
  int32_t cost, kv_head, q_block, owner;
  bool moved = false;
};

bool HeavierFirst(const Candidate& a, const Candidate& b) {
  return std::tie(b.cost, a.kv_head, a.q_block, a.owner) <
         std::tie(a.cost, b.kv_head, b.q_block, b.owner);
}

std::vector<Candidate> CandidatesOf(const SegmentCosts& costs, int rank, int min_cost) {
  std::vector<Candidate> out;
  for (int g = 0; g < costs.hkv; ++g) {
    for (int qb = 0; qb < costs.q_blocks; ++qb) {
      for (int o = 0; o < costs.world_size; ++o) {
        const int32_t c = costs.at(g, qb, o);
        if (o != rank && c > 0 && c >= min_cost) out.push_back({c, g, qb, o});
      }
    }
  }
  std::sort(out.begin(), out.end(), HeavierFirst);
  return out;
}

// The segment of `from` to move next, or nullptr when none lowers its load without making
// the owner the new maximum.
Candidate* PickMove(std::vector<Candidate>& candidates, const std::vector<int64_t>& load,
                    int from) {
  Candidate* fallback = nullptr;
  int64_t fallback_peak = load[from];
  for (Candidate& c : candidates) {
    if (c.moved) continue;
    const int64_t after_from = load[from] - c.cost, after_owner = load[c.owner] + c.cost;
    if (after_owner <= after_from) return &c;
    const int64_t peak = std::max(after_from, after_owner);
    if (peak < fallback_peak) {
      fallback_peak = peak;
      fallback = &c;
    }
  }
  return fallback;
}

absl::Status CheckShapes(std::span<const SegmentCosts> ranks) {
  const int n = static_cast<int>(ranks.size());
  for (int r = 0; r < n; ++r) {
    const SegmentCosts& c = ranks[r];
    const size_t expected = static_cast<size_t>(c.hkv) * c.q_blocks * c.world_size;
    if (c.world_size != n || c.hkv != ranks[0].hkv || c.q_blocks != ranks[0].q_blocks ||
        c.counts.size() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PlanSparseBalance: rank ", r, " has costs of shape [", c.hkv, "][", c.q_blocks, "][",
          c.world_size, "] (", c.counts.size(), " counts); expected [", ranks[0].hkv, "][",
          ranks[0].q_blocks, "][", n, "]"));
    }
    if (std::any_of(c.counts.begin(), c.counts.end(), [](int32_t v) { return v < 0; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("PlanSparseBalance: rank ", r, " has a negative count"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BalanceMode> ParseBalanceMode(const std::string& name) {
  if (name == "off") return BalanceMode::kOff;
  if (name == "auto") return BalanceMode::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("--balance '", name, "' is not a mode (valid: off, auto)"));
}

const char* BalanceModeName(BalanceMode mode) {
  return mode == BalanceMode::kAuto ? "auto" : "off";
}

int64_t SegmentCosts::total() const {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

SegmentCosts CountSegments(const BlockMask& mask, const CpLayout& layout, int hkv) {
  SegmentCosts costs{hkv, mask.num_q_blocks, layout.world_size(), {}};
  costs.counts.assign(static_cast<size_t>(hkv) * mask.num_q_blocks * layout.world_size(), 0);
  const int group = mask.num_heads / hkv;
  for (int h = 0; h < mask.num_heads; ++h) {
    for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
      for (int32_t block : mask.row(h, qb)) {
        const int owner = layout.HomeOf(block).rank;
        ++costs.counts[(static_cast<size_t>(h / group) * mask.num_q_blocks + qb) *
                           layout.world_size() +
                       owner];
      }
    }
  }
  return costs;
}

std::vector<BalanceMove> SparseBalancePlan::MovesBetween(int from, int to) const {
  std::vector<BalanceMove> out;
  for (const BalanceMove& m : moves) {
    if (m.from == from && m.to == to) out.push_back(m);
  }
  return out;
}

uint64_t SparseBalancePlan::Hash() const {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](int32_t v) {
    for (int i = 0; i < 4; ++i) {
      h ^= static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * i));
      h *= 1099511628211ull;
    }
  };
  for (const BalanceMove& m : moves) {
    for (int32_t v : {m.from, m.kv_head, m.q_block, m.to, m.cost}) mix(v);
  }
  return h;
}

double Imbalance(std::span<const int64_t> loads) {
  const double sum = std::accumulate(loads.begin(), loads.end(), 0.0);
  if (loads.empty() || sum <= 0) return 1.0;
  return static_cast<double>(*std::max_element(loads.begin(), loads.end())) * loads.size() / sum;
}

absl::StatusOr<SparseBalancePlan> PlanSparseBalance(std::span<const SegmentCosts> ranks,
                                                    const BalancePlanOptions& options) {
  PREFILL_RETURN_IF_ERROR(CheckShapes(ranks));
  const int n = static_cast<int>(ranks.size());
  SparseBalancePlan plan;
  std::vector<std::vector<Candidate>> candidates(n);
  for (int r = 0; r < n; ++r) {
    plan.selected.push_back(ranks[r].total());
    candidates[r] = CandidatesOf(ranks[r], r, options.min_cost);
  }
  std::vector<int64_t>& load = plan.computed;
  load = plan.selected;
  // Each step moves one segment, never twice: the loop ends within the number of segments.
  while (Imbalance(load) > options.target_imbalance) {
    const int from = static_cast<int>(std::max_element(load.begin(), load.end()) - load.begin());
    Candidate* pick = PickMove(candidates[from], load, from);
    if (pick == nullptr) break;
    pick->moved = true;
    load[from] -= pick->cost;
    load[pick->owner] += pick->cost;
    plan.moves.push_back({from, pick->kv_head, pick->q_block, pick->owner, pick->cost});
  }
  std::sort(plan.moves.begin(), plan.moves.end(), [](const BalanceMove& a, const BalanceMove& b) {
    return std::tie(a.from, a.to, a.kv_head, a.q_block) <
           std::tie(b.from, b.to, b.kv_head, b.q_block);
  });
  return plan;
}

}  // namespace prefill
