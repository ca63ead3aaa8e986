// AttentionBackend: the table of operations the context-parallel engine runs, one
// implementation per device (kernels/cpu always, kernels/cuda when built with PREFILL_CUDA).
// Each op takes one params struct; pointers live in the backend's memory.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention_params.h"
#include "kernels/block_mask.h"
#include "kernels/mask_estimation_params.h"

namespace prefill {

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string_view name() const = 0;

  virtual absl::Status Attention(const AttentionParams& p) = 0;
  virtual absl::Status MergeByLse(const LseMergeParams& p) = 0;
  virtual absl::Status PoolKeys(const PoolKeysParams& p) = 0;
  // The mask comes back on the host: the exchange plan is built from it.
  virtual absl::StatusOr<BlockMask> EstimateMask(const MaskEstimateParams& p) = 0;
};

// threads <= 0: all hardware threads.
std::unique_ptr<AttentionBackend> MakeCpuBackend(int threads);

}  // namespace prefill
