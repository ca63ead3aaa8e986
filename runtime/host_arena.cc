#include "runtime/host_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace prefill {

absl::StatusOr<std::shared_ptr<HostArena>> HostArena::Create(size_t floats) {
  const size_t bytes = std::max<size_t>(floats * sizeof(float), 1);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", bytes, " bytes of host memory for the KV cache: ", std::strerror(errno)));
  }
  // Both are hints: an unsupported one leaves the mapping as it is.
  (void)::madvise(p, bytes, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
  (void)::madvise(p, bytes, MADV_POPULATE_WRITE);
#endif
  return std::shared_ptr<HostArena>(new HostArena(static_cast<float*>(p), bytes));
}

HostArena::~HostArena() { ::munmap(data_, bytes_); }

}  // namespace prefill
