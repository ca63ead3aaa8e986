#include "parallel/sequence_gather.h"

#include <cstring>

#include "kernels/status_macros.h"

namespace prefill {

absl::StatusOr<std::vector<std::byte>> AllGatherSequence(Communicator& comm, const CpLayout& layout,
                                                         const void* local, size_t row_bytes) {
  const size_t local_bytes = layout.local_len() * row_bytes;
  std::vector<std::byte> by_rank(local_bytes * comm.size());
  PREFILL_RETURN_IF_ERROR(comm.AllGather(local, local_bytes, by_rank.data()));
  std::vector<std::byte> ordered(by_rank.size());
  for (int r = 0; r < comm.size(); ++r) {
    size_t offset = r * local_bytes;
    for (const Chunk& c : layout.Chunks(r)) {
      std::memcpy(ordered.data() + c.start * row_bytes, by_rank.data() + offset,
                  c.length * row_bytes);
      offset += c.length * row_bytes;
    }
  }
  return ordered;
}

}  // namespace prefill
