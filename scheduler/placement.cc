#include "scheduler/placement.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

int PowerOfTwoAtLeast(int64_t n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

int PowerOfTwoAtMost(int64_t n) {
  int p = 1;
  while (int64_t{p} * 2 <= n) p *= 2;
  return p;
}

}  // namespace

int GroupSize(int64_t tokens, const PlacementPolicy& policy) {
  const int world = PowerOfTwoAtMost(policy.world_size);
  const int64_t for_memory = (tokens + policy.max_tokens_per_rank - 1) / policy.max_tokens_per_rank;
  if (for_memory > world) return 0;
  const int useful = PowerOfTwoAtMost(std::max<int64_t>(1, tokens / policy.min_tokens_per_rank));
  return std::clamp(std::max(useful, PowerOfTwoAtLeast(for_memory)), 1, world);
}

Placement PlanPlacement(const std::vector<PlacementInput>& requests,
                        const PlacementPolicy& policy) {
  Placement plan;
  std::vector<int> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (requests[a].priority != requests[b].priority)
      return requests[a].priority > requests[b].priority;
    return requests[a].tokens > requests[b].tokens;
  });
  std::vector<std::pair<int, int>> pending;  // (request, ranks), in scheduling order
  for (int r : order) {
    const int ranks = GroupSize(requests[r].tokens, policy);
    if (ranks == 0) {
      const int64_t needed =
          (requests[r].tokens + policy.max_tokens_per_rank - 1) / policy.max_tokens_per_rank;
      plan.refused.emplace_back(
          r, absl::StrCat(requests[r].tokens, " tokens need ", needed,
                          " ranks at --max-tokens-per-rank ", policy.max_tokens_per_rank,
                          "; the job has ", policy.world_size));
    } else {
      pending.emplace_back(r, ranks);
    }
  }
  while (!pending.empty()) {
    Wave wave;
    int free = policy.world_size;
    std::vector<std::pair<int, int>> later;
    for (const auto& [r, ranks] : pending) {
      if (ranks <= free) {
        // Groups are placed in decreasing size, so power-of-two groups stay aligned.
        wave.assignments.push_back({r, policy.world_size - free, ranks});
        free -= ranks;
      } else {
        later.emplace_back(r, ranks);
      }
    }
    plan.waves.push_back(std::move(wave));
    pending = std::move(later);
  }
  return plan;
}

}  // namespace prefill
