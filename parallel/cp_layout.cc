#include "parallel/cp_layout.h"

#include "absl/strings/str_cat.h"

namespace prefill {

absl::StatusOr<LayoutKind> ParseLayoutKind(const std::string& name) {
  if (name == "contiguous") return LayoutKind::kContiguous;
  if (name == "zigzag") return LayoutKind::kZigzag;
  return absl::InvalidArgumentError(
      absl::StrCat("--layout '", name, "' is not a layout (valid: contiguous, zigzag)"));
}

const char* LayoutKindName(LayoutKind kind) {
  return kind == LayoutKind::kZigzag ? "zigzag" : "contiguous";
}

absl::StatusOr<CpLayout> CpLayout::Create(LayoutKind kind, int64_t seq_len, int world_size,
                                          int block_size) {
  if (world_size < 1 || block_size < 1 || seq_len < 1) {
    return absl::InvalidArgumentError("--seq-len, --block and the world size must be positive");
  }
  const int64_t chunks = kind == LayoutKind::kZigzag ? 2 * world_size : world_size;
  if (seq_len % (chunks * block_size) != 0) {
    const bool zigzag = kind == LayoutKind::kZigzag;
    return absl::InvalidArgumentError(absl::StrCat(
        "--seq-len ", seq_len, " must be a multiple of ", zigzag ? "2 x " : "",
        "world_size x block = ", zigzag ? "2 x " : "", world_size, " x ", block_size, " = ",
        chunks * block_size, " for the ", LayoutKindName(kind), " layout (e.g. ",
        (seq_len / (chunks * block_size) + 1) * chunks * block_size, ")"));
  }
  return CpLayout(kind, seq_len, world_size, block_size);
}

int64_t CpLayout::chunk_len() const {
  return kind_ == LayoutKind::kZigzag ? seq_len_ / (2 * world_size_) : seq_len_ / world_size_;
}

std::vector<Chunk> CpLayout::Chunks(int rank) const {
  const int64_t c = chunk_len();
  if (kind_ == LayoutKind::kContiguous) return {{rank * c, c}};
  return {{rank * c, c}, {(2 * world_size_ - 1 - rank) * c, c}};
}

std::vector<int32_t> CpLayout::Positions(int rank) const {
  std::vector<int32_t> positions;
  positions.reserve(local_len());
  for (const Chunk& chunk : Chunks(rank)) {
    for (int64_t t = 0; t < chunk.length; ++t) {
      positions.push_back(static_cast<int32_t>(chunk.start + t));
    }
  }
  return positions;
}

std::vector<int32_t> CpLayout::QueryBlockIds(int rank) const {
  std::vector<int32_t> ids;
  for (const Chunk& chunk : Chunks(rank)) {
    for (int64_t t = 0; t < chunk.length; t += block_size_) {
      ids.push_back(static_cast<int32_t>((chunk.start + t) / block_size_));
    }
  }
  return ids;
}

BlockHome CpLayout::HomeOf(int64_t absolute_block) const {
  const int64_t blocks_per_chunk = chunk_len() / block_size_;
  const int64_t chunk = absolute_block / blocks_per_chunk;
  const int offset = static_cast<int>(absolute_block % blocks_per_chunk);
  if (kind_ == LayoutKind::kContiguous || chunk < world_size_) {
    return {static_cast<int>(chunk), offset};
  }
  // Chunk 2N-1-r is rank r's second chunk.
  return {static_cast<int>(2 * world_size_ - 1 - chunk),
          static_cast<int>(blocks_per_chunk) + offset};
}

}  // namespace prefill
