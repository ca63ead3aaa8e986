// Early returns on a failed absl::Status / absl::StatusOr inside functions returning one. In
// the bottom layer (kernels/), so every layer above writes the early return one way.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Variadic: an expression with top-level commas (template arguments) stays one argument.
#define PREFILL_RETURN_IF_ERROR(...)                                                  \
  do {                                                                                \
    if (absl::Status prefill_s_ = (__VA_ARGS__); !prefill_s_.ok()) return prefill_s_; \
  } while (0)

// lhs = *expr when expr (a StatusOr) is OK; otherwise returns its status.
#define PREFILL_ASSIGN_OR_RETURN(lhs, expr)             \
  do {                                                  \
    auto prefill_or_ = (expr);                          \
    if (!prefill_or_.ok()) return prefill_or_.status(); \
    lhs = *std::move(prefill_or_);                      \
  } while (0)
