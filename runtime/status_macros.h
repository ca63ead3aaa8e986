// Early returns on a failed absl::Status / absl::StatusOr inside functions returning one.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PREFILL_RETURN_IF_ERROR(expr)                       \
  do {                                                      \
    if (absl::Status prefill_s_ = (expr); !prefill_s_.ok()) \
      return prefill_s_;                                    \
  } while (0)

// lhs = *expr when expr (a StatusOr) is OK; otherwise returns its status.
#define PREFILL_ASSIGN_OR_RETURN(lhs, expr)                   \
  do {                                                        \
    auto prefill_or_ = (expr);                                \
    if (!prefill_or_.ok()) return prefill_or_.status();       \
    lhs = *std::move(prefill_or_);                            \
  } while (0)
