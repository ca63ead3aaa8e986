// Atomic file output: readers (and reruns) see the old file or the whole new one, never half.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace prefill {

// Writes `text` to `path` through a temporary file in the same folder, fsync, then rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace prefill
