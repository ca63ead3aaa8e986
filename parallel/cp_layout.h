// CpLayout: which absolute token positions each rank of a context-parallel group holds.
//   contiguous: rank r holds [r*L/N, (r+1)*L/N).
//   zigzag:     the sequence is cut into 2N chunks; rank r holds chunks r and 2N-1-r, so
//               under a causal mask every rank has the same amount of work.
// A rank's local rows are its chunks concatenated in that order. Chunks are whole blocks,
// so every local query block is one absolute block and pooled-key strides never straddle
// ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prefill {

enum class LayoutKind { kContiguous, kZigzag };

absl::StatusOr<LayoutKind> ParseLayoutKind(const std::string& name);
const char* LayoutKindName(LayoutKind kind);

struct Chunk {
  int64_t start;   // absolute position of its first token
  int64_t length;  // tokens
};

// Where an absolute block lives.
struct BlockHome {
  int rank;
  int local_block;  // block index within that rank's local rows
};

class CpLayout {
 public:
  // InvalidArgument when seq_len does not split into whole blocks per chunk.
  static absl::StatusOr<CpLayout> Create(LayoutKind kind, int64_t seq_len, int world_size,
                                         int block_size);

  LayoutKind kind() const { return kind_; }
  int64_t seq_len() const { return seq_len_; }
  int world_size() const { return world_size_; }
  int block_size() const { return block_size_; }
  int64_t local_len() const { return seq_len_ / world_size_; }
  int64_t num_blocks() const { return seq_len_ / block_size_; }

  std::vector<Chunk> Chunks(int rank) const;           // in local order
  std::vector<int32_t> Positions(int rank) const;      // [local_len] absolute positions
  std::vector<int32_t> QueryBlockIds(int rank) const;  // [local_len / B] absolute blocks
  BlockHome HomeOf(int64_t absolute_block) const;

 private:
  CpLayout(LayoutKind kind, int64_t seq_len, int world_size, int block_size)
      : kind_(kind), seq_len_(seq_len), world_size_(world_size), block_size_(block_size) {}
  int64_t chunk_len() const;
  LayoutKind kind_;
  int64_t seq_len_;
  int world_size_;
  int block_size_;
};

}  // namespace prefill
