// Merge of two partial attention results by their log-sum-exp (see LseMergeParams).
#include "kernels/cpu/lse_merge.h"

#include <algorithm>
#include <cmath>

namespace prefill::cpu {
namespace {

// Weights of the two sides in double: the exp/log round once, at the fp32 store.
void MergeRow(float* o_acc, float* lse_acc, const float* o_part, float lse_part, int head_dim) {
  if (lse_part == -INFINITY) return;  // the part saw no key: acc unchanged
  if (*lse_acc == -INFINITY) {        // acc saw no key (its O is 0): take the part
    std::copy_n(o_part, head_dim, o_acc);
    *lse_acc = lse_part;
    return;
  }
  const double max = std::max<double>(*lse_acc, lse_part);
  const double w_acc = std::exp(*lse_acc - max), w_part = std::exp(lse_part - max);
  const double total = w_acc + w_part;
  const float f_acc = static_cast<float>(w_acc / total),
              f_part = static_cast<float>(w_part / total);
  for (int d = 0; d < head_dim; ++d) o_acc[d] = o_acc[d] * f_acc + o_part[d] * f_part;
  *lse_acc = static_cast<float>(max + std::log(total));
}

}  // namespace

absl::Status MergeByLse(const LseMergeParams& p) {
  if (p.rows < 0) return absl::InvalidArgumentError("MergeByLse: rows must be non-negative");
  if (p.head_dim <= 0) return absl::InvalidArgumentError("MergeByLse: head_dim must be positive");
  if (p.rows == 0) return absl::OkStatus();
  if (p.o_acc == nullptr) return absl::InvalidArgumentError("MergeByLse: o_acc is null");
  if (p.lse_acc == nullptr) return absl::InvalidArgumentError("MergeByLse: lse_acc is null");
  if (p.o_part == nullptr) return absl::InvalidArgumentError("MergeByLse: o_part is null");
  if (p.lse_part == nullptr) return absl::InvalidArgumentError("MergeByLse: lse_part is null");
  if (!p.RunsValid()) {
    return absl::InvalidArgumentError("MergeByLse: run must be >= 0 and acc_run_stride >= run");
  }
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t a = p.AccEntry(r);
    MergeRow(p.o_acc + a * p.head_dim, p.lse_acc + a, p.o_part + r * p.head_dim, p.lse_part[r],
             p.head_dim);
  }
  return absl::OkStatus();
}

}  // namespace prefill::cpu
