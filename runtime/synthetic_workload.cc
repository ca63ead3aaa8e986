// The generator behind the synthetic workloads; docs/workloads.md explains each structure,
// the literature it comes from and the mass it carries.
//
// Mechanism: logits are built feature by feature. A key carries a feature with amplitude
// d^(1/4) (a fixed dimension, or a random unit vector in dimensions [3, d) named by what it
// stands for: a position bucket, a video patch); a query that wants the feature carries it with
// amplitude logit * d^(1/4), so after the 1/sqrt(d) scale the pair's logit is `logit`. Random
// unit vectors in d-3 dimensions are nearly orthogonal: the cross-talk of unrelated features,
// about logit / sqrt(d-3) per pair, is the content noise every key gets, the background that
// makes sparse attention lose a little.
#include "runtime/synthetic_workload.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

constexpr double kTwoPi = 6.283185307179586;
constexpr int kQuestionBlock = 128;         // queries seeking the needle: one estimator block
constexpr int kSinkTokens = 4;              // StreamingLLM: the first four tokens
constexpr int64_t kFrameTokens = 512;       // video: tokens per frame (16 rows of 32 patches)
constexpr int kVideoPatchTokens = 8;        // video: tokens of one spatial patch within a frame
constexpr int kStripeTokens = 16;           // a vertical stripe: a short span every query likes
constexpr double kStripeRate = 1.0 / 2048;  // stripe starts per token
constexpr int kLookBack = 2;                // retrieval heads also see this many older windows
// Slash heads look back by a fixed offset: one per head, alternating between these.
constexpr int64_t kSlashOffsets[2] = {616, 2088};
constexpr double kHeavyRate = 1.0 / 512;  // heavy tokens per token and KV head
constexpr int kHeavySpan = 16;            // queries that seek the same heavy token together
constexpr double kHeavyAskRate = 0.25;    // spans that seek one

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Counter-based randomness: the same (seed, stream, a, b, c) always gives the same number.
// The hash of (seed, stream, a, b) is a prefix the loops over c (dimensions) compute once.
uint64_t HashPrefix(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b) {
  return SplitMix(SplitMix(SplitMix(seed ^ stream) ^ a) ^ b);
}

double UniformAt(uint64_t prefix, uint64_t c) {
  const uint64_t h = SplitMix(prefix ^ c);
  return (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double GaussianAt(uint64_t prefix, uint64_t c) {
  const double u1 = UniformAt(prefix, 2 * c), u2 = UniformAt(prefix, 2 * c + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

double Uniform(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b, uint64_t c) {
  return UniformAt(HashPrefix(seed, stream, a, b), c);
}

enum Stream : uint64_t {
  kQNoise = 1,
  kKNoise,
  kVNoise,
  kLocalBucket,
  kVideoBucket,
  kStripe,
  kVideoFrame,
  kHeavyToken,
  kHeavyAsk
};

// Dimensions of each head: [0] sink, [1] needle, [2] stripe; the rest carry the random unit
// vectors.
constexpr int kFeatureDim0 = 3;

// Logits (after the 1/sqrt(d) scale) of each structure at its peak, for concentration 1.
struct Strengths {
  double sink = 0, local = 0, slash = 0, stripe = 0, needle = 0, video_spatial = 0,
         video_temporal = 0, heavy = 0, noise = 0;
};

Strengths StrengthsFor(WorkloadKind kind) {
  Strengths s;
  if (kind == WorkloadKind::kRandom) {
    s.noise = 1.0;
    return s;
  }
  s.sink = 16.0;
  s.local = 14.0;
  s.slash = 15.0;
  s.noise = 0.1;
  if (kind == WorkloadKind::kNeedle) s.needle = 19.0;
  if (kind == WorkloadKind::kStripes) s.stripe = 15.0;
  if (kind == WorkloadKind::kHeavy) s.heavy = 17.0;
  if (kind == WorkloadKind::kVideo) {
    s.video_spatial = 8.0;
    s.video_temporal = 10.0;
  }
  return s;
}

// How much of each structure a head of a role uses (multipliers of the strengths).
struct RoleWeights {
  double sink, local, look_back, slash, stripe, video_spatial, video_temporal, overall;
};

RoleWeights WeightsOf(HeadRole role) {
  switch (role) {
    case HeadRole::kLocal:
      return {1.0, 1.0, 0.0, 0.0, 0.7, 1.0, 0.0, 1.0};
    case HeadRole::kSlash:
      return {0.9, 0.9, 0.0, 1.0, 0.5, 0.0, 1.0, 1.0};
    case HeadRole::kRetrieval:
      return {0.9, 0.8, 0.6, 0.0, 1.0, 0.6, 0.7, 1.0};
    case HeadRole::kDiffuse:
      return {1.0, 1.0, 0.5, 0.0, 0.7, 1.0, 1.0, 0.15};
  }
  return {};
}

// Local window width of KV head g, in tokens: heads differ, as they do in models.
int64_t WindowOf(int kv_head) { return int64_t{32} << (kv_head % 3); }

bool IsStripeKey(uint64_t seed, int64_t pos) {
  const int64_t span_start = pos / kStripeTokens * kStripeTokens;
  return pos >= kSinkTokens &&
         Uniform(seed, kStripe, span_start, 0, 0) < kStripeRate * kStripeTokens;
}

// The random unit vectors of the features, remembered per (stream, kv head, id). A feature
// is shared by every token of its bucket and every query head of its KV head, so without this
// generation spends most of its time recomputing the same Gaussians; with it, about the noise
// alone (1M tokens x 32 heads: minutes instead of a quarter of an hour per core). A cached
// vector is the very numbers a fresh one would be, so the rows do not change.
class UnitVectorCache {
 public:
  explicit UnitVectorCache(int head_dim)
      : dim_(head_dim), slots_(kSlots), values_(kSlots * head_dim) {}

  // The Gaussian draws of dimensions [kFeatureDim0, d) (stored from index 0) and their
  // squared norm, computed by `fill` on a miss.
  template <typename Fill>
  const double* Get(uint64_t stream, int kv_head, int64_t id, double* norm, Fill&& fill) {
    const uint64_t key = SplitMix(stream * 0x100000001b3ull ^ static_cast<uint64_t>(kv_head) << 40 ^
                                  static_cast<uint64_t>(id));
    const size_t slot = key % kSlots;
    Slot& e = slots_[slot];
    double* v = &values_[slot * dim_];
    if (!e.used || e.stream != stream || e.kv_head != kv_head || e.id != id) {
      e = {true, stream, kv_head, id, fill(v)};
    }
    *norm = e.norm;
    return v;
  }

 private:
  static constexpr size_t kSlots = 4096;  // buckets in flight across 8 KV heads and 4 streams
  struct Slot {
    bool used = false;
    uint64_t stream = 0;
    int kv_head = 0;
    int64_t id = 0;
    double norm = 0;
  };
  int dim_;
  std::vector<Slot> slots_;
  std::vector<double> values_;
};

bool IsHeavyToken(uint64_t seed, int64_t pos, int kv_head) {
  return pos >= kSinkTokens && Uniform(seed, kHeavyToken, pos, kv_head, 0) < kHeavyRate;
}

struct Generator {
  const WorkloadSpec& spec;
  Strengths s;
  NeedlePlacement needle;
  UnitVectorCache* cache;                          // this thread's
  const std::vector<std::vector<int64_t>>* heavy;  // [kv head] heavy positions (heavy workload)

  // The heavy token the query span of `pos` seeks in query head `head`, or -1: with
  // probability kHeavyAskRate, one of the heavy tokens before the span, uniformly.
  int64_t HeavyTarget(int64_t pos, int head, int g) const {
    const int64_t span = pos / kHeavySpan;
    if (Uniform(spec.seed, kHeavyAsk, span, head, 0) >= kHeavyAskRate) return -1;
    const std::vector<int64_t>& list = (*heavy)[g];
    const auto before =
        std::lower_bound(list.begin(), list.end(), span * kHeavySpan) - list.begin();
    if (before == 0) return -1;
    return list[static_cast<size_t>(Uniform(spec.seed, kHeavyAsk, span, head, 1) *
                                    static_cast<double>(before))];
  }

  // A feature's key amplitude is fixed by its base logit (keys are shared by the query heads
  // of a KV head), split evenly with the query's at the base: sqrt(base * sqrt(d)) each, which
  // keeps the products with the other side's noise small. A query reaches `logit` with
  // logit * sqrt(d) / KeyAmp(base).
  double KeyAmp(double base) const { return std::sqrt(base * std::sqrt(double(spec.head_dim))); }
  double QueryAmp(double logit, double base) const {
    return logit * std::sqrt(double(spec.head_dim)) / KeyAmp(base);
  }

  // out[3..d) += amplitude * (a random unit vector named by (stream, kv head, id)).
  void AddUnitVector(float* out, Stream stream, int kv_head, int64_t id, double amplitude) const {
    const int d = spec.head_dim;
    double norm = 0;
    const double* v = cache->Get(stream, kv_head, id, &norm, [&](double* fresh) {
      const uint64_t prefix = HashPrefix(spec.seed, stream, kv_head, static_cast<uint64_t>(id));
      double sum = 0;
      for (int e = kFeatureDim0; e < d; ++e) {
        fresh[e - kFeatureDim0] = GaussianAt(prefix, e);
        sum += fresh[e - kFeatureDim0] * fresh[e - kFeatureDim0];
      }
      return sum;
    });
    const double scale = amplitude / std::sqrt(norm);
    for (int e = kFeatureDim0; e < d; ++e)
      out[e] += static_cast<float>(v[e - kFeatureDim0] * scale);
  }

  // The two bucket grids of width w, offset by half a window: tokens within a window of each
  // other share one or two buckets, each worth half the logit. A key carries its own
  // position's buckets; a query that looks at position `target` carries target's.
  void AddWindow(float* out, int kv_head, int64_t target, double amplitude) const {
    const int64_t w = WindowOf(kv_head);
    AddUnitVector(out, kLocalBucket, kv_head, 2 * (target / w), amplitude);
    AddUnitVector(out, kLocalBucket, kv_head, 2 * ((target + w / 2) / w) + 1, amplitude);
  }

  void Noise(float* out, int64_t pos, int id, Stream stream) const {
    const double sd = std::sqrt(s.noise);
    const uint64_t prefix = HashPrefix(spec.seed, stream, pos, id);
    for (int e = 0; e < spec.head_dim; ++e) out[e] = static_cast<float>(sd * GaussianAt(prefix, e));
  }

  void Key(float* out, int64_t pos, int g) const {
    Noise(out, pos, g, kKNoise);
    if (s.local > 0) AddWindow(out, g, pos, KeyAmp(s.local / 2));
    if (s.video_temporal > 0) {
      AddUnitVector(out, kVideoBucket, g, pos % kFrameTokens / kVideoPatchTokens,
                    KeyAmp(s.video_temporal));
    }
    if (s.video_spatial > 0)
      AddUnitVector(out, kVideoFrame, g, pos / kFrameTokens, KeyAmp(s.video_spatial));
    if (s.sink > 0 && pos < kSinkTokens) out[0] += static_cast<float>(KeyAmp(s.sink));
    if (s.stripe > 0 && IsStripeKey(spec.seed, pos)) out[2] += static_cast<float>(KeyAmp(s.stripe));
    if (s.heavy > 0 && IsHeavyToken(spec.seed, pos, g))
      AddUnitVector(out, kHeavyToken, g, pos, KeyAmp(s.heavy));
    if (s.needle > 0 && pos >= needle.needle_position &&
        pos < needle.needle_position + kNeedleTokens) {
      out[1] += static_cast<float>(KeyAmp(s.needle));
    }
  }

  void Query(float* out, int64_t pos, int head, int g) const {
    Noise(out, pos, head, kQNoise);
    const RoleWeights w = WeightsOf(RoleOfHead(spec, head));
    // The structured part scales with concentration and the role's overall weight.
    const double c = spec.concentration * w.overall;
    if (s.local > 0) {
      const double half = s.local / 2;
      AddWindow(out, g, pos, QueryAmp(half * w.local * c, half));
      // Older windows with decaying weight: a broader, distance-decaying local view.
      const int64_t win = WindowOf(g);
      for (int back = 1; back <= kLookBack && w.look_back > 0; ++back) {
        if (pos - back * win < 0) break;
        AddWindow(out, g, pos - back * win,
                  QueryAmp(half * w.look_back * (1.0 - 0.3 * back) * c, half));
      }
      const int64_t offset = kSlashOffsets[head / 4 % 2];
      if (s.slash > 0 && w.slash > 0 && pos - offset >= 0) {
        AddWindow(out, g, pos - offset, QueryAmp(s.slash / 2 * w.slash * c, half));
      }
    }
    if (s.video_temporal > 0 && w.video_temporal > 0) {
      AddUnitVector(out, kVideoBucket, g, pos % kFrameTokens / kVideoPatchTokens,
                    QueryAmp(s.video_temporal * w.video_temporal * c, s.video_temporal));
    }
    if (s.video_spatial > 0 && w.video_spatial > 0) {
      AddUnitVector(out, kVideoFrame, g, pos / kFrameTokens,
                    QueryAmp(s.video_spatial * w.video_spatial * c, s.video_spatial));
    }
    if (s.sink > 0) out[0] += static_cast<float>(QueryAmp(s.sink * w.sink * c, s.sink));
    if (s.stripe > 0) out[2] += static_cast<float>(QueryAmp(s.stripe * w.stripe * c, s.stripe));
    // Every head role seeks heavy tokens: they are what the text refers back to.
    if (s.heavy > 0) {
      const int64_t target = HeavyTarget(pos, head, g);
      if (target >= 0)
        AddUnitVector(out, kHeavyToken, g, target, QueryAmp(s.heavy * spec.concentration, s.heavy));
    }
    const bool asks = pos >= needle.question_begin && pos < needle.question_begin + kQuestionBlock;
    // Every head seeks the needle at full strength: the question is what the text is about.
    if (s.needle > 0 && asks) {
      out[1] += static_cast<float>(QueryAmp(s.needle * spec.concentration, s.needle));
    }
  }
};

}  // namespace

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& name) {
  for (WorkloadKind k : {WorkloadKind::kRandom, WorkloadKind::kNeedle, WorkloadKind::kStripes,
                         WorkloadKind::kSinks, WorkloadKind::kVideo, WorkloadKind::kHeavy}) {
    if (name == WorkloadKindName(k)) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--workload '", name,
                   "' is not a workload (valid: random, needle, stripes, sinks, video, heavy)"));
}

const char* WorkloadKindName(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::kRandom:
      return "random";
    case WorkloadKind::kNeedle:
      return "needle";
    case WorkloadKind::kStripes:
      return "stripes";
    case WorkloadKind::kSinks:
      return "sinks";
    case WorkloadKind::kVideo:
      return "video";
    case WorkloadKind::kHeavy:
      return "heavy";
  }
  return "?";
}

HeadRole RoleOfHead(const WorkloadSpec& spec, int head) {
  switch (head % 4) {
    case 0:
      return HeadRole::kLocal;
    case 1:
      return spec.slash_heads ? HeadRole::kSlash : HeadRole::kLocal;
    case 2:
      return HeadRole::kRetrieval;
    default:
      return spec.diffuse_head ? HeadRole::kDiffuse : HeadRole::kLocal;
  }
}

const char* HeadRoleName(HeadRole role) {
  switch (role) {
    case HeadRole::kLocal:
      return "local";
    case HeadRole::kSlash:
      return "slash";
    case HeadRole::kRetrieval:
      return "retrieval";
    case HeadRole::kDiffuse:
      return "diffuse";
  }
  return "?";
}

NeedlePlacement PlaceNeedle(int64_t seq_len, int block_size) {
  // 17 tokens into the block holding seq_len / 5: inside one block of >= 64 tokens.
  const int64_t needle = seq_len / 5 / block_size * block_size + 17;
  int64_t question = (seq_len * 3 / 5) / block_size * block_size;
  if (question <= needle) question = seq_len - kQuestionBlock;
  return {needle, question};
}

std::vector<int64_t> HeavyTokenPositions(const WorkloadSpec& spec, int kv_head) {
  std::vector<int64_t> out;
  if (spec.kind != WorkloadKind::kHeavy) return out;
  for (int64_t pos = 0; pos < spec.seq_len; ++pos) {
    if (IsHeavyToken(spec.seed, pos, kv_head)) out.push_back(pos);
  }
  return out;
}

QkvRows GenerateQkvRows(const WorkloadSpec& spec, std::span<const int32_t> positions, int threads) {
  const NeedlePlacement needle = PlaceNeedle(spec.seq_len, kQuestionBlock);
  const Strengths strengths = StrengthsFor(spec.kind);
  std::vector<std::vector<int64_t>> heavy(spec.kv_heads);
  for (int g = 0; g < spec.kv_heads; ++g) heavy[g] = HeavyTokenPositions(spec, g);
  const int d = spec.head_dim;
  const int group = spec.heads / spec.kv_heads;
  QkvRows out;
  const size_t n = positions.size();
  out.q.resize(n * spec.heads * d);
  out.k.resize(n * spec.kv_heads * d);
  out.v.resize(n * spec.kv_heads * d);
  // Rows are independent: contiguous ranges of positions per thread (neighbours share buckets,
  // so each thread's cache stays warm).
  auto rows = [&](size_t begin, size_t end) {
    UnitVectorCache cache(d);
    const Generator gen{spec, strengths, needle, &cache, &heavy};
    for (size_t i = begin; i < end; ++i) {
      const int64_t pos = positions[i];
      for (int h = 0; h < spec.heads; ++h)
        gen.Query(&out.q[(i * spec.heads + h) * d], pos, h, h / group);
      for (int g = 0; g < spec.kv_heads; ++g) {
        gen.Key(&out.k[(i * spec.kv_heads + g) * d], pos, g);
        const uint64_t prefix = HashPrefix(spec.seed, kVNoise, pos, g);
        for (int e = 0; e < d; ++e)
          out.v[(i * spec.kv_heads + g) * d + e] = static_cast<float>(GaussianAt(prefix, e));
      }
    }
  };
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t parts = std::clamp<size_t>(n / 256, 1, static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < parts; ++t) pool.emplace_back(rows, n * t / parts, n * (t + 1) / parts);
  rows(0, n / parts);
  for (std::thread& t : pool) t.join();
  return out;
}

}  // namespace prefill
