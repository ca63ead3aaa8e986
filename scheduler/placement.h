// Placement of batch requests on context-parallel groups of ranks (scheduler/README.md
// explains the policy). A pure function of the request lengths and the world: tested
// without MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace prefill {

struct PlacementPolicy {
  int world_size = 1;
  // Below this many tokens per rank, context parallelism costs more than it saves (public
  // measurements put it near 8K): a group gets the most ranks that keep each >= this.
  int64_t min_tokens_per_rank = 8192;
  // Memory budget: a group gets at least ceil(L / max) ranks; beyond the world, refused.
  int64_t max_tokens_per_rank = 131072;
};

struct PlacementInput {
  int64_t tokens = 0;
  int priority = 0;
};

// One request on ranks [first_rank, first_rank + ranks).
struct Assignment {
  int request = 0;  // index into the inputs
  int first_rank = 0;
  int ranks = 0;
};

// Requests that run at the same time on disjoint groups; waves run one after another.
struct Wave {
  std::vector<Assignment> assignments;
};

struct Placement {
  std::vector<Wave> waves;
  std::vector<std::pair<int, std::string>> refused;  // (request, why)
};

// Ranks for one request: a power of two (groups tile the world without fragments).
// Returns 0 when even the whole world cannot hold it within the memory budget.
int GroupSize(int64_t tokens, const PlacementPolicy& policy);

// Highest priority first, then longest first (long requests set the makespan), then
// manifest order; each wave is filled greedily, smaller requests filling the gaps.
Placement PlanPlacement(const std::vector<PlacementInput>& requests, const PlacementPolicy& policy);

}  // namespace prefill
