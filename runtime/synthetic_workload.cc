#include "runtime/synthetic_workload.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

constexpr double kTwoPi = 6.283185307179586;
constexpr int kQuestionBlock = 128;  // queries seeking the needle: one estimator block
constexpr int64_t kFrameTokens = 512;  // video: tokens per frame
constexpr int kSinkTokens = 4;

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Counter-based randomness: the same (seed, stream, a, b, c) always gives the same number.
double Uniform(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b, uint64_t c) {
  const uint64_t h = SplitMix(SplitMix(SplitMix(SplitMix(seed ^ stream) ^ a) ^ b) ^ c);
  return (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double Gaussian(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b, uint64_t c) {
  const double u1 = Uniform(seed, stream, a, b, 2 * c), u2 = Uniform(seed, stream, a, b, 2 * c + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

enum Stream : uint64_t { kQNoise = 1, kKNoise, kVNoise, kLocalBucket, kVideoBucket, kStripe };

constexpr int kNeedleTokens = 32;  // a needle is a sentence, not one token
constexpr int kStripeTokens = 16;  // a vertical stripe: a short span every query attends to
constexpr double kStripeRate = 1.0 / 2048;  // stripe starts per token
constexpr int kVideoPatchTokens = 8;  // video: tokens of one spatial patch within a frame

// Dimensions of each head: [0] sink, [1] needle, [2] stripe; the rest carry random unit
// vectors that name a token's local bucket and (video) its spatial patch. Random vectors in
// d-3 dimensions are nearly orthogonal (cross-talk ~ 1/sqrt(d-3)), so far-away tokens add
// little mass: attention stays concentrated as the workload intends.
constexpr int kFeatureDim0 = 3;

// Logit targets (after the 1/sqrt(d) scale) at the peak of each feature.
struct Strengths {
  double local, sink, needle, stripe, video, noise;
};

Strengths StrengthsFor(WorkloadKind kind) {
  if (kind == WorkloadKind::kRandom) return {0, 0, 0, 0, 0, 1.0};
  Strengths s{18.0, 21.0, 0, 0, 0, 0.3};
  if (kind == WorkloadKind::kNeedle) s.needle = 26.0;
  if (kind == WorkloadKind::kStripes) s.stripe = 17.0;
  if (kind == WorkloadKind::kVideo) s.video = 16.0;
  return s;
}

// Local window width of KV head g, in tokens: heads differ, as they do in models.
int64_t WindowOf(int kv_head) { return int64_t{16} << (kv_head % 4); }

bool IsStripeKey(uint64_t seed, int64_t pos) {
  const int64_t span_start = pos / kStripeTokens * kStripeTokens;
  return pos >= kSinkTokens && Uniform(seed, kStripe, span_start, 0, 0) < kStripeRate * kStripeTokens;
}

struct Row {
  const WorkloadSpec& spec;
  const Strengths& s;
  NeedlePlacement needle;
  double amp(double logit) const { return std::sqrt(logit * std::sqrt(static_cast<double>(spec.head_dim))); }

  // out[3..d) += amplitude * (a random unit vector named by (stream, head, id)).
  void AddUnitVector(float* out, Stream stream, int head, int64_t id, double amplitude) const {
    const int d = spec.head_dim;
    double v[512];
    double norm = 0;
    for (int e = kFeatureDim0; e < d; ++e) {
      v[e] = Gaussian(spec.seed, stream, head, static_cast<uint64_t>(id), e);
      norm += v[e] * v[e];
    }
    const double scale = amplitude / std::sqrt(norm);
    for (int e = kFeatureDim0; e < d; ++e) out[e] += static_cast<float>(v[e] * scale);
  }

  void Fill(float* out, int64_t pos, int kv_head, int noise_id, bool is_query) const {
    const int d = spec.head_dim;
    const Stream noise = is_query ? kQNoise : kKNoise;
    for (int e = 0; e < d; ++e) out[e] = static_cast<float>(std::sqrt(s.noise) * Gaussian(spec.seed, noise, pos, noise_id, e));
    if (s.local > 0) {
      // Two bucket grids offset by half a window: tokens within a window share one or two.
      const int64_t w = WindowOf(kv_head);
      AddUnitVector(out, kLocalBucket, kv_head, 2 * (pos / w), amp(s.local / 2));
      AddUnitVector(out, kLocalBucket, kv_head, 2 * ((pos + w / 2) / w) + 1, amp(s.local / 2));
    }
    if (s.video > 0) {
      AddUnitVector(out, kVideoBucket, kv_head, pos % kFrameTokens / kVideoPatchTokens, amp(s.video));
    }
    if (s.sink > 0 && (is_query || pos < kSinkTokens)) out[0] += static_cast<float>(amp(s.sink));
    if (s.stripe > 0 && (is_query || IsStripeKey(spec.seed, pos))) out[2] += static_cast<float>(amp(s.stripe));
    const bool asks = pos >= needle.question_begin && pos < needle.question_begin + kQuestionBlock;
    const bool is_needle = pos >= needle.needle_position && pos < needle.needle_position + kNeedleTokens;
    if (s.needle > 0 && (is_query ? asks : is_needle)) out[1] += static_cast<float>(amp(s.needle));
  }
};

}  // namespace

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name) {
  for (WorkloadKind k : {WorkloadKind::kRandom, WorkloadKind::kNeedle, WorkloadKind::kStripes,
                         WorkloadKind::kSinks, WorkloadKind::kVideo}) {
    if (name == WorkloadKindName(k)) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--workload '", name, "' is not a workload (valid: random, needle, stripes, sinks, video)"));
}

const char* WorkloadKindName(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::kRandom: return "random";
    case WorkloadKind::kNeedle: return "needle";
    case WorkloadKind::kStripes: return "stripes";
    case WorkloadKind::kSinks: return "sinks";
    case WorkloadKind::kVideo: return "video";
  }
  return "?";
}

NeedlePlacement PlaceNeedle(int64_t seq_len, int block_size) {
  const int64_t needle = seq_len / 5 + 17;
  int64_t question = (seq_len * 3 / 5) / block_size * block_size;
  if (question <= needle) question = seq_len - kQuestionBlock;
  return {needle, question};
}

QkvRows GenerateQkvRows(const WorkloadSpec& spec, std::span<const int32_t> positions) {
  const Strengths strengths = StrengthsFor(spec.kind);
  const Row row{spec, strengths, PlaceNeedle(spec.seq_len, kQuestionBlock)};
  const int d = spec.head_dim;
  const int group = spec.heads / spec.kv_heads;
  QkvRows out;
  const size_t n = positions.size();
  out.q.resize(n * spec.heads * d);
  out.k.resize(n * spec.kv_heads * d);
  out.v.resize(n * spec.kv_heads * d);
  for (size_t i = 0; i < n; ++i) {
    const int64_t pos = positions[i];
    for (int h = 0; h < spec.heads; ++h) row.Fill(&out.q[(i * spec.heads + h) * d], pos, h / group, h, true);
    for (int g = 0; g < spec.kv_heads; ++g) {
      row.Fill(&out.k[(i * spec.kv_heads + g) * d], pos, g, g, false);
      for (int e = 0; e < d; ++e) {
        out.v[(i * spec.kv_heads + g) * d + e] = static_cast<float>(Gaussian(spec.seed, kVNoise, pos, g, e));
      }
    }
  }
  return out;
}

}  // namespace prefill
