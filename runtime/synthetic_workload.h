// Synthetic Q/K/V whose attention is concentrated the way real models' is, so that the
// sparse path has structure to find and the tests have answers to expect:
//   random  : i.i.d. Gaussian q, k (diffuse attention, little to skip);
//   sinks   : the first keys draw much of every row's mass, plus a local window;
//   needle  : sinks + local + one planted key that a block of "question" queries seeks;
//   stripes : sinks + local + scattered key positions every query likes (vertical lines);
//   video   : sinks + local + a per-frame pattern: a token attends to the same spatial
//             position in earlier frames (slash lines every frame).
// Values are a pure function of (seed, position, head, dim), so each rank generates its own
// rows and every layout sees the same sequence.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prefill {

enum class WorkloadKind { kRandom, kNeedle, kStripes, kSinks, kVideo };

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name);
const char* WorkloadKindName(WorkloadKind kind);

struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::kNeedle;
  int64_t seq_len = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  uint64_t seed = 0;
};

// Where the needle workload plants its needle and who asks for it.
struct NeedlePlacement {
  int64_t needle_position;  // the key
  int64_t question_begin;   // first of block_size queries that seek it
};
NeedlePlacement PlaceNeedle(int64_t seq_len, int block_size);

// fp32 rows for the given absolute positions: q [n, heads, d], k and v [n, kv_heads, d].
struct QkvRows {
  std::vector<float> q, k, v;
};
QkvRows GenerateQkvRows(const WorkloadSpec& spec, std::span<const int32_t> positions);

}  // namespace prefill
