#include "scheduler/rank_pool.h"

#include <algorithm>

namespace prefill {

std::optional<int> RankPool::Take(int ranks) {
  const int n = world_size();
  if (ranks < 1 || ranks > n) return std::nullopt;
  for (int first = 0; first + ranks <= n; first += ranks) {
    const auto begin = busy_.begin() + first;
    if (std::none_of(begin, begin + ranks, [](bool b) { return b; })) {
      std::fill(begin, begin + ranks, true);
      return first;
    }
  }
  return std::nullopt;
}

void RankPool::Release(int first_rank, int ranks) {
  std::fill(busy_.begin() + first_rank, busy_.begin() + first_rank + ranks, false);
}

int RankPool::free_ranks() const {
  return static_cast<int>(std::count(busy_.begin(), busy_.end(), false));
}

}  // namespace prefill
