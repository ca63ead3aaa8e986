// Whole-sequence views of sharded rows, for checks and outputs (host memory): every rank
// contributes its local rows and receives all rows in absolute token order.
#pragma once

#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/cp_layout.h"

namespace prefill {

// local: [local_len rows of row_bytes] in this rank's local order.
absl::StatusOr<std::vector<std::byte>> AllGatherSequence(Communicator& comm, const CpLayout& layout,
                                                         const void* local, size_t row_bytes);

}  // namespace prefill
