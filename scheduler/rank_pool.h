// RankPool: which ranks of a `prefill serve` job are free, handed out as context-parallel
// groups the way the batch placement shapes them: a power-of-two count of ranks starting at
// a multiple of that count (placement.h's GroupSize), so groups tile the world like a buddy
// allocator and a freed group is whole again for the next request at once.
#pragma once

#include <optional>
#include <vector>

namespace prefill {

class RankPool {
 public:
  explicit RankPool(int world_size) : busy_(world_size, false) {}

  // The first free aligned block of `ranks` ranks (a power of two), marked busy; nullopt
  // when none is free now.
  std::optional<int> Take(int ranks);
  void Release(int first_rank, int ranks);
  int free_ranks() const;
  int world_size() const { return static_cast<int>(busy_.size()); }

 private:
  std::vector<bool> busy_;
};

}  // namespace prefill
