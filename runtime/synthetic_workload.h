// Synthetic Q/K/V whose attention has the structure the literature reports for real models
// (docs/workloads.md gives the sources and the numbers), so the sparse path has something to
// find and the tests and the quality benchmark have answers to expect:
//   random  : i.i.d. Gaussian q, k: diffuse attention, nothing to skip (the adversarial case);
//   sinks   : attention sinks on the first tokens, a multi-scale local window that decays with
//             distance, slash lines at fixed offsets in some heads (the "A-shape" and
//             "vertical-slash" heads of StreamingLLM and MInference);
//   needle  : sinks + one planted 32-token key span that a block of "question" queries seeks;
//   stripes : sinks + vertical stripes: short key spans every query of a head attends to;
//   video   : sinks + frames of 512 tokens (16 rows x 32): spatial heads attend within their
//             frame, temporal heads to the same patch of earlier frames (slash lines every
//             frame), as in video transformers' attention maps;
//   heavy   : sinks + isolated heavy tokens: single keys at random positions (not aligned to
//             strides or blocks, about one per 512 tokens per KV head) that spans of 16
//             queries seek strongly, each span one earlier heavy token with probability 1/4
//             (retrieval keys, in-text sinks, scene cuts): the case that mean pooling dilutes.
// Heads differ, as they do in models: per query head a role (local, slash, retrieval, local;
// optionally the fourth diffuse) sets how much of each structure it uses.
// `concentration` multiplies every structured logit: 1 is the calibrated default, < 1 spreads
// the mass (harder to sparsify), > 1 sharpens it.
// Values are a pure function of (seed, position, head, dim), so each rank generates its own
// rows and every layout sees the same sequence.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prefill {

enum class WorkloadKind { kRandom, kNeedle, kStripes, kSinks, kVideo, kHeavy };

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name);
const char* WorkloadKindName(WorkloadKind kind);

struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::kNeedle;
  int64_t seq_len = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  uint64_t seed = 0;
  double concentration = 1.0;  // multiplies every structured logit (> 0)
  bool diffuse_head = false;   // query heads with h % 4 == 3 attend broadly (else: local)
  // Slash heads (every 4th head, from head 1) look back by a fixed offset. In a context-
  // parallel job they pull blocks from the neighbouring ranks' chunks; `prefill attention`
  // turns them off unless --slash-heads, the quality sweep keeps them on.
  bool slash_heads = true;
};

// Where the needle workload plants its needle and who asks for it. The needle lies inside
// one block of `block_size` (>= 64) tokens; the question is one whole block.
struct NeedlePlacement {
  int64_t needle_position;  // the key span's first token
  int64_t question_begin;   // first of block_size queries that seek it
};
NeedlePlacement PlaceNeedle(int64_t seq_len, int block_size);

// The heavy workload's heavy key positions of KV head g, ascending.
std::vector<int64_t> HeavyTokenPositions(const WorkloadSpec& spec, int kv_head);
inline constexpr int kNeedleTokens = 32;  // a needle is a sentence, not one token

// The role of query head h: what structures it weighs (see docs/workloads.md).
enum class HeadRole { kLocal, kSlash, kRetrieval, kDiffuse };
HeadRole RoleOfHead(const WorkloadSpec& spec, int head);
const char* HeadRoleName(HeadRole role);

// fp32 rows for the given absolute positions: q [n, heads, d], k and v [n, kv_heads, d].
// `threads` <= 0: all hardware threads; the rows do not depend on it.
struct QkvRows {
  std::vector<float> q, k, v;
};
QkvRows GenerateQkvRows(const WorkloadSpec& spec, std::span<const int32_t> positions,
                        int threads = 0);

}  // namespace prefill
