// Round-robin mask estimator: planted patterns, tau monotonicity, round-robin coverage,
// agreement with an independent numpy reference (rr_mask_reference.py), sharded (zigzag)
// determinism, the generic and AVX-512 kernels agreeing bitwise, and parameter validation.
#include "kernels/cpu/round_robin_mask_estimator.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/round_robin_block_mass.h"

namespace prefill::cpu {
namespace {

// A whole sequence: Q [seq_len, hq, head_dim], K [seq_len, hkv, head_dim], both fp32.
struct Problem {
  int seq_len = 1024;
  int hq = 4;
  int hkv = 2;
  int head_dim = 16;
  int block_size = 64;
  int stride = 8;
  std::vector<float> q, k, pooled, heavy;
  std::vector<int32_t> all_blocks;

  int num_blocks() const { return seq_len / block_size; }
  float& Q(int pos, int h, int e) { return q[(int64_t{pos} * hq + h) * head_dim + e]; }
  float& K(int pos, int g, int e) { return k[(int64_t{pos} * hkv + g) * head_dim + e]; }

  // Every element N(0, noise^2).
  void Fill(float noise, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, noise);
    q.resize(int64_t{seq_len} * hq * head_dim);
    k.resize(int64_t{seq_len} * hkv * head_dim);
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
  }

  // Structure for non-trivial masks: each KV block's keys share a random direction, and each
  // query leans towards the direction of one random block.
  void FillStructured(uint32_t seed) {
    Fill(1.f, seed);
    std::mt19937 rng(seed + 1);
    std::normal_distribution<float> normal(0.f, 1.5f);
    std::uniform_int_distribution<int> pick(0, num_blocks() - 1);
    std::vector<float> dir(int64_t{num_blocks()} * head_dim);
    for (float& x : dir) x = normal(rng);
    for (int t = 0; t < seq_len; ++t) {
      for (int g = 0; g < hkv; ++g) {
        for (int e = 0; e < head_dim; ++e) K(t, g, e) += dir[(t / block_size) * head_dim + e];
      }
      for (int h = 0; h < hq; ++h) {
        const int b = pick(rng);
        for (int e = 0; e < head_dim; ++e) Q(t, h, e) += dir[b * head_dim + e];
      }
    }
  }

  // Pools K and returns parameters estimating every query block (rr+heavy with_heavy).
  MaskEstimateParams Params(bool with_heavy = false) {
    pooled.assign(int64_t{seq_len / stride} * hkv * head_dim, 0.f);
    heavy.assign(int64_t{num_blocks()} * hkv * head_dim, 0.f);
    PoolKeysParams pk;
    pk.k = k.data();
    pk.k_row_stride = int64_t{hkv} * head_dim;
    pk.lk = seq_len;
    pk.hkv = hkv;
    pk.head_dim = head_dim;
    pk.stride = stride;
    pk.pooled = pooled.data();
    if (with_heavy) {
      pk.block_size = block_size;
      pk.heavy = heavy.data();
    }
    EXPECT_TRUE(PoolKeys(pk).ok());
    all_blocks.resize(num_blocks());
    std::iota(all_blocks.begin(), all_blocks.end(), 0);

    MaskEstimateParams p;
    p.q = q.data();
    p.q_row_stride = int64_t{hq} * head_dim;
    p.q_head_stride = head_dim;
    p.q_block_ids = all_blocks.data();
    p.num_q_blocks = num_blocks();
    p.pooled_k = pooled.data();
    p.seq_len = seq_len;
    p.hq = hq;
    p.hkv = hkv;
    p.head_dim = head_dim;
    p.block_size = block_size;
    p.stride = stride;
    p.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
    if (with_heavy) p.heavy_k = heavy.data();
    return p;
  }
};

BlockMask Estimate(const MaskEstimateParams& p, int threads = 2) {
  absl::StatusOr<BlockMask> mask = EstimateRoundRobinMask(p, threads);
  EXPECT_TRUE(mask.ok()) << mask.status();
  return mask.ok() ? *std::move(mask) : BlockMask{};
}

std::vector<int32_t> Row(const BlockMask& m, int head, int q_block) {
  const std::span<const int32_t> r = m.row(head, q_block);
  return {r.begin(), r.end()};
}

bool Contains(const BlockMask& m, int head, int q_block, int32_t kv_block) {
  const std::vector<int32_t> r = Row(m, head, q_block);
  return std::find(r.begin(), r.end(), kv_block) != r.end();
}

// Turns a key or query into `length` along one axis (axes are orthogonal planted
// directions), its other components shrunk to a tenth so the planted one dominates.
void Plant(float* dst, int head_dim, int axis, float length) {
  for (int e = 0; e < head_dim; ++e) dst[e] = (e == axis) ? length : dst[e] * 0.1f;
}

// A planted logit of 20 * 20 / (sqrt(16) * 8) = 12.5 against a background near 0 puts more
// than 99% of a query's mass on the planted stride.
constexpr float kPlanted = 20.f;

TEST(RoundRobinMaskEstimator, NeedleKeyIsSelectedForTheQueriesThatLookForIt) {
  Problem pb;
  pb.Fill(0.3f, 1);
  constexpr int kNeedle = 200, kNeedleBlock = 200 / 64;
  for (int g = 0; g < pb.hkv; ++g) Plant(&pb.K(kNeedle, g, 0), pb.head_dim, 0, kPlanted);
  const std::set<int> seeking = {1, 8, 9, 10, 11, pb.num_blocks() - 1};
  for (int qb : seeking) {
    for (int t = qb * pb.block_size; t < (qb + 1) * pb.block_size; ++t) {
      for (int h = 0; h < pb.hq; ++h) Plant(&pb.Q(t, h, 0), pb.head_dim, 0, kPlanted);
    }
  }
  MaskEstimateParams p = pb.Params();
  p.tau = 0.9f;
  p.keep_sink = false;
  p.keep_recent = false;
  for (bool causal : {true, false}) {
    p.causal = causal;
    const BlockMask m = Estimate(p);
    for (int h = 0; h < pb.hq; ++h) {
      for (int qb : seeking) {
        if (qb < kNeedleBlock) continue;
        // The needle holds over 90% of the mass: it alone, plus the forced diagonal.
        EXPECT_EQ(Row(m, h, qb), (std::vector<int32_t>{kNeedleBlock, qb})) << h << " " << qb;
      }
      // Block 1 lies before the needle: it finds it only when it may look ahead.
      EXPECT_EQ(Contains(m, h, 1, kNeedleBlock), !causal) << h;
      EXPECT_EQ(Row(m, h, 1).back(), causal ? 1 : kNeedleBlock) << h;
    }
  }

  p.causal = true;
  p.keep_sink = true;
  p.keep_recent = true;
  const BlockMask m = Estimate(p);
  const int last = pb.num_blocks() - 1;
  for (int h = 0; h < pb.hq; ++h) {
    EXPECT_EQ(Row(m, h, 9), (std::vector<int32_t>{0, kNeedleBlock, 9})) << h;
    std::vector<int32_t> dense(pb.num_blocks());
    std::iota(dense.begin(), dense.end(), 0);
    EXPECT_EQ(Row(m, h, last), dense) << "keep_recent makes the last query block dense";
  }
}

TEST(RoundRobinMaskEstimator, VerticalStripeIsSelectedForEveryRowThatSeesIt) {
  Problem pb;
  pb.Fill(1.f, 2);
  constexpr int kStripe = 300, kStripeBlock = 300 / 64;
  for (int g = 0; g < pb.hkv; ++g) Plant(&pb.K(kStripe, g, 0), pb.head_dim, 3, kPlanted);
  // Every query leans on the stripe (logit about 6: most, not all, of its mass).
  for (int t = 0; t < pb.seq_len; ++t) {
    for (int h = 0; h < pb.hq; ++h) pb.Q(t, h, 3) += 10.f;
  }
  MaskEstimateParams p = pb.Params();
  p.tau = 0.5f;
  p.keep_sink = false;
  for (bool causal : {true, false}) {
    p.causal = causal;
    const BlockMask m = Estimate(p);
    EXPECT_LT(m.density(), 0.5);
    for (int h = 0; h < pb.hq; ++h) {
      for (int qb = 0; qb < pb.num_blocks(); ++qb) {
        EXPECT_EQ(Contains(m, h, qb, kStripeBlock), !causal || qb >= kStripeBlock)
            << h << " " << qb;
      }
    }
  }
}

TEST(RoundRobinMaskEstimator, SinkIsSelectedByItsMassAndForcedByKeepSink) {
  Problem pb;
  pb.Fill(1.f, 3);
  MaskEstimateParams p = pb.Params();
  p.tau = 0.3f;
  p.keep_sink = false;
  p.keep_recent = false;
  const BlockMask plain = Estimate(p);
  int rows_without_sink = 0;
  for (int h = 0; h < pb.hq; ++h) {
    for (int qb = 1; qb < pb.num_blocks(); ++qb) rows_without_sink += !Contains(plain, h, qb, 0);
  }
  EXPECT_GT(rows_without_sink, 0) << "random keys: the sink block is not special";

  p.keep_sink = true;
  const BlockMask forced = Estimate(p);
  for (int h = 0; h < pb.hq; ++h) {
    for (int qb = 0; qb < pb.num_blocks(); ++qb) EXPECT_TRUE(Contains(forced, h, qb, 0));
  }

  for (int g = 0; g < pb.hkv; ++g) Plant(&pb.K(0, g, 0), pb.head_dim, 5, kPlanted);
  for (int t = 0; t < pb.seq_len; ++t) {
    for (int h = 0; h < pb.hq; ++h) pb.Q(t, h, 5) += 10.f;
  }
  p = pb.Params();
  p.tau = 0.3f;
  p.keep_sink = false;
  const BlockMask by_mass = Estimate(p);
  for (int h = 0; h < pb.hq; ++h) {
    for (int qb = 0; qb < pb.num_blocks(); ++qb) EXPECT_TRUE(Contains(by_mass, h, qb, 0));
  }
}

TEST(RoundRobinMaskEstimator, DensityFallsWithTauAndRowsNest) {
  Problem pb;
  pb.FillStructured(4);
  MaskEstimateParams p = pb.Params();
  p.keep_sink = false;
  p.keep_recent = false;
  for (bool causal : {true, false}) {
    p.causal = causal;
    p.tau = 0.99f;
    BlockMask previous = Estimate(p);
    const double densest = previous.density();
    for (float tau : {0.95f, 0.9f, 0.8f, 0.5f}) {
      p.tau = tau;
      const BlockMask m = Estimate(p);
      EXPECT_LE(m.density(), previous.density()) << tau;
      for (int h = 0; h < pb.hq; ++h) {
        for (int qb = 0; qb < pb.num_blocks(); ++qb) {
          const std::vector<int32_t> now = Row(m, h, qb), before = Row(previous, h, qb);
          EXPECT_TRUE(std::includes(before.begin(), before.end(), now.begin(), now.end()))
              << "tau " << tau << " row " << h << " " << qb;
        }
      }
      previous = m;
    }
    EXPECT_LT(previous.density(), 0.5 * densest) << "the structured input has a sparse core";
  }
}

TEST(RoundRobinMaskEstimator, SampledQueryRowCyclesThroughEveryOffset) {
  constexpr int kBlock = 64, kStride = 8;
  for (int first = 0; first < 20; ++first) {
    std::set<int64_t> offsets;
    for (int h = first; h < first + kStride; ++h) {
      const int64_t row = round_robin::SampledQueryRow(h, 3, 5, kBlock, kStride);
      EXPECT_EQ(row / kStride, (3 * kBlock) / kStride + 5) << "stays in query stride 5 of block 3";
      offsets.insert(row % kStride);
    }
    EXPECT_EQ(offsets.size(), static_cast<size_t>(kStride)) << "heads " << first << "..";
  }
}

TEST(RoundRobinMaskEstimator, EachOffsetOfAStrideIsFoundByExactlyTheHeadThatSamplesIt) {
  // Eight query heads over one KV head: heads 0..7 sample offsets 0..7. Every query looks at
  // the sink except one, at offset o of some stride, which looks at a needle: only head o
  // can see that query, so only its row selects the needle block.
  constexpr int kNeedle = 200, kNeedleBlock = 200 / 64, kQBlock = 10, kQStride = 5;
  for (int offset = 0; offset < 8; ++offset) {
    Problem pb;
    pb.hq = 8;
    pb.hkv = 1;
    pb.Fill(0.3f, 5);
    Plant(&pb.K(0, 0, 0), pb.head_dim, 1, kPlanted);
    Plant(&pb.K(kNeedle, 0, 0), pb.head_dim, 2, kPlanted);
    for (int t = 0; t < pb.seq_len; ++t) {
      const bool needle_query = t == kQBlock * pb.block_size + kQStride * pb.stride + offset;
      const int axis = needle_query ? 2 : 1;
      for (int h = 0; h < pb.hq; ++h) Plant(&pb.Q(t, h, 0), pb.head_dim, axis, kPlanted);
    }
    MaskEstimateParams p = pb.Params();
    p.tau = 0.95f;  // one sampled query of eight holds 1/8 of the row's mass: above 1 - tau
    p.keep_sink = false;
    p.keep_recent = false;
    const BlockMask m = Estimate(p);
    for (int h = 0; h < pb.hq; ++h) {
      for (int qb = 0; qb < pb.num_blocks(); ++qb) {
        EXPECT_EQ(Contains(m, h, qb, kNeedleBlock),
                  (qb == kQBlock && h == offset) || qb == kNeedleBlock)
            << "offset " << offset << " head " << h << " q block " << qb;
      }
    }
  }
}

// --- agreement with the numpy reference ---

struct Reference {
  std::map<std::pair<int, int>, std::vector<float>> mass;
  std::map<std::pair<int, int>, std::vector<int32_t>> mask;
  double margin = 0;
};

void WriteF32(const std::string& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()),
            static_cast<std::streamsize>(v.size() * sizeof(float)));
}

// Every digit a float needs to round-trip.
std::string Exact(float x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", x);
  return text;
}

Reference RunNumpy(const Problem& pb, const MaskEstimateParams& p, bool heavy = false) {
  // Named per process: ctest runs the tests of this file as concurrent processes.
  const std::string dir = absl::StrCat(testing::TempDir(), "rr_", getpid(), "_");
  const std::string q_path = dir + "q.f32", k_path = dir + "k.f32", out_path = dir + "out.txt";
  WriteF32(q_path, pb.q);
  WriteF32(k_path, pb.k);
  const std::string cmd = absl::StrCat(
      PREFILL_PYTHON3, " ", PREFILL_SOURCE_DIR, "/tests/kernels/rr_mask_reference.py --q ", q_path,
      " --k ", k_path, " --out ", out_path, " --seq_len ", pb.seq_len, " --hq ", pb.hq, " --hkv ",
      pb.hkv, " --head_dim ", pb.head_dim, " --block ", pb.block_size, " --stride ", pb.stride,
      " --tau ", Exact(p.tau), " --scale ", Exact(p.scale), " --causal ", int{p.causal},
      " --keep_sink ", int{p.keep_sink}, " --keep_recent ", int{p.keep_recent}, " --heavy ",
      int{heavy});
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;

  Reference ref;
  std::ifstream in(out_path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string kind;
    fields >> kind;
    if (kind == "margin") {
      fields >> ref.margin;
      continue;
    }
    int h, qb;
    fields >> h >> qb;
    if (kind == "mass") {
      for (float x; fields >> x;) ref.mass[{h, qb}].push_back(x);
    } else {
      ref.mask[{h, qb}];
      for (int32_t b; fields >> b;) ref.mask[{h, qb}].push_back(b);
    }
  }
  return ref;
}

double SelectedFraction(const std::vector<float>& mass, const std::vector<int32_t>& blocks) {
  double selected = 0, total = 0;
  for (float x : mass) total += x;
  for (int32_t b : blocks) selected += mass[b];
  return total > 0 ? selected / total : 0;
}

struct Geometry {
  int seq_len, block_size, stride, head_dim;
  float tau;
  uint32_t seed;  // inputs whose every decision sits >= 1e-4 of the row's mass from flipping
};

Problem StructuredProblem(const Geometry& geo) {
  Problem pb;
  pb.seq_len = geo.seq_len;
  pb.block_size = geo.block_size;
  pb.stride = geo.stride;
  pb.head_dim = geo.head_dim;
  pb.FillStructured(geo.seed);
  return pb;
}

TEST(RoundRobinMaskEstimator, MatchesNumpyReferenceExactly) {
  const Geometry geometries[] = {
      // 8 strides per block: two full groups of 4 sampled queries.
      {512, 64, 8, 16, 0.9f, 109},
      // 6 strides per block (a group of 2), 60 strides (a partial tile).
      {480, 48, 8, 16, 0.8f, 148},
      // One stride per block.
      {128, 8, 8, 16, 0.9f, 154},
      // 16 strides per block, 256 strides (4 tiles), head_dim 20.
      {1024, 64, 4, 20, 0.7f, 145},
  };
  for (const Geometry& geo : geometries) {
    for (int flags = 0; flags < 8; ++flags) {
      Problem pb = StructuredProblem(geo);
      MaskEstimateParams p = pb.Params();
      p.tau = geo.tau;
      p.causal = flags & 1;
      p.keep_sink = flags & 2;
      p.keep_recent = flags & 4;
      const std::string where = absl::StrCat("L=", geo.seq_len, " B=", geo.block_size,
                                             " S=", geo.stride, " flags=", flags);
      const Reference ref = RunNumpy(pb, p);
      // The reference reports how far the closest decision is from flipping, relative to the
      // row's mass; fp32 rounding moves masses by about 1e-6 of it, so 1e-5 leaves room.
      ASSERT_GT(ref.margin, 1e-5) << where << ": pick another seed, this input is fragile";

      const BlockMask m = Estimate(p);
      const round_robin::PackedKeys keys =
          round_robin::PackKeys(p.pooled_k, p.seq_len / p.stride, p.hkv, p.head_dim);
      const int strides_per_block = geo.block_size / geo.stride;
      std::vector<float> mass(pb.num_blocks());
      for (int h = 0; h < pb.hq; ++h) {
        for (int qb = 0; qb < pb.num_blocks(); ++qb) {
          ASSERT_EQ(Row(m, h, qb), ref.mask.at({h, qb})) << where << " row " << h << " " << qb;
          round_robin::RowBlockMass(p, keys, nullptr, h, qb,
                                    round_robin::BlockMassKernelFor(cpu::BestCpuIsa()), mass);
          const std::vector<float>& want = ref.mass.at({h, qb});
          // Masses sum to the number of sampled queries; fp32 logits of magnitude up to ~20
          // and a polynomial exp stay well within 1e-5 of that sum.
          for (int b = 0; b < pb.num_blocks(); ++b) {
            EXPECT_NEAR(mass[b], want[b], 1e-5 * strides_per_block) << where << " block " << b;
          }
          EXPECT_NEAR(SelectedFraction(mass, Row(m, h, qb)),
                      SelectedFraction(want, ref.mask.at({h, qb})), 1e-5)
              << where;
        }
      }
    }
  }
}

// rr+heavy against the numpy reference: the heavy key each block contributes (the same
// selection in fp64), the masses with the heavy channel, the masks exactly.
TEST(RoundRobinMaskEstimator, HeavyVariantMatchesNumpyReference) {
  const Geometry geometries[] = {{512, 64, 8, 16, 0.9f, 109}, {1024, 64, 4, 20, 0.7f, 145}};
  int compared = 0;
  for (const Geometry& geo : geometries) {
    for (int flags = 0; flags < 8; ++flags) {
      Problem pb = StructuredProblem(geo);
      // One isolated heavy key per fourth block, away from stride boundaries.
      for (int b = 1; b < pb.num_blocks(); b += 4)
        Plant(&pb.K(b * geo.block_size + 5, 0, 0), pb.head_dim, 3, kPlanted);
      MaskEstimateParams p = pb.Params(/*with_heavy=*/true);
      p.tau = geo.tau;
      p.causal = flags & 1;
      p.keep_sink = flags & 2;
      p.keep_recent = flags & 4;
      const std::string where =
          absl::StrCat("L=", geo.seq_len, " S=", geo.stride, " flags=", flags);
      const Reference ref = RunNumpy(pb, p, /*heavy=*/true);
      if (ref.margin <= 1e-5) continue;  // a decision within rounding of flipping
      ++compared;
      const BlockMask m = Estimate(p);
      const round_robin::PackedKeys keys =
          round_robin::PackKeys(p.pooled_k, p.seq_len / p.stride, p.hkv, p.head_dim);
      const round_robin::PackedKeys heavy =
          round_robin::PackKeys(p.heavy_k, pb.num_blocks(), p.hkv, p.head_dim);
      std::vector<float> mass(pb.num_blocks());
      for (int h = 0; h < pb.hq; ++h) {
        for (int qb = 0; qb < pb.num_blocks(); ++qb) {
          ASSERT_EQ(Row(m, h, qb), ref.mask.at({h, qb})) << where << " row " << h << " " << qb;
          round_robin::RowBlockMass(p, keys, &heavy, h, qb,
                                    round_robin::BlockMassKernelFor(cpu::BestCpuIsa()), mass);
          const std::vector<float>& want = ref.mass.at({h, qb});
          for (int b = 0; b < pb.num_blocks(); ++b) {
            EXPECT_NEAR(mass[b], want[b], 1e-5 * geo.block_size / geo.stride)
                << where << " block " << b;
          }
        }
      }
    }
  }
  EXPECT_GE(compared, 12) << "of 16 cases: too many fragile inputs";
}

// One key, inside a stride, that the queries of one later block seek (logit 14), while they
// also attend to their own block (logit 10 a key). Pooled with its seven neighbours the heavy
// key's logit is 14 / 8 and plain round robin keeps only the diagonal at tau 0.9; rr+heavy
// scores it unpooled (14 - ln 8 against the stride logits of 10: about 45% of the mass) and
// keeps its block, as full attention would (e^14 against ~64 keys of e^10).
TEST(RoundRobinMaskEstimator, HeavyVariantFindsTheIsolatedKeyPoolingDilutes) {
  Problem pb;
  pb.Fill(0.3f, 17);
  const int key_pos = 3 * pb.block_size + 21, asking = 12;
  const float heavy = std::sqrt(14.f * 4), local = std::sqrt(10.f * 4);  // logit = x^2 / sqrt(16)
  pb.K(key_pos, 0, 2) = heavy;
  for (int t = asking * pb.block_size; t < (asking + 1) * pb.block_size; ++t) {
    pb.K(t, 0, 5) = local;
    for (int h = 0; h < pb.hq / pb.hkv; ++h) {  // the query heads of KV head 0
      pb.Q(t, h, 2) = heavy;
      pb.Q(t, h, 5) = local;
    }
  }
  for (bool with_heavy : {false, true}) {
    MaskEstimateParams p = pb.Params(with_heavy);
    p.tau = 0.9f;
    if (with_heavy) {  // the pooling picked the planted key for its block
      for (int e = 0; e < pb.head_dim; ++e)
        EXPECT_EQ(pb.heavy[(3 * pb.hkv + 0) * pb.head_dim + e], pb.K(key_pos, 0, e));
    }
    const BlockMask m = Estimate(p);
    for (int h = 0; h < pb.hq / pb.hkv; ++h) {
      EXPECT_EQ(Contains(m, h, asking, 3), with_heavy)
          << "head " << h << (with_heavy ? " rr+heavy" : " rr");
    }
  }
}

// --- determinism ---

TEST(RoundRobinMaskEstimator, ZigzagShardsReproduceTheSingleRankRowsBitwise) {
  Problem pb;
  pb.seq_len = 2048;
  pb.head_dim = 32;
  pb.FillStructured(6);
  MaskEstimateParams full = pb.Params();
  full.tau = 0.9f;
  for (bool causal : {true, false}) {
    full.causal = causal;
    const BlockMask whole = Estimate(full, 1);
    const round_robin::PackedKeys keys =
        round_robin::PackKeys(full.pooled_k, full.seq_len / full.stride, full.hkv, full.head_dim);
    const round_robin::BlockMassKernel kernel = round_robin::BlockMassKernelFor(cpu::BestCpuIsa());
    for (int ranks : {2, 4}) {
      const int chunk_blocks = pb.num_blocks() / (2 * ranks);
      for (int rank = 0; rank < ranks; ++rank) {
        // Zigzag: rank r owns chunks r and 2N-1-r; its queries are those rows, packed.
        std::vector<int32_t> ids;
        for (int chunk : {rank, 2 * ranks - 1 - rank}) {
          for (int b = 0; b < chunk_blocks; ++b) ids.push_back(chunk * chunk_blocks + b);
        }
        const int64_t row_elems = int64_t{pb.hq} * pb.head_dim;
        std::vector<float> local_q;
        for (int32_t b : ids) {
          const float* src = pb.q.data() + int64_t{b} * pb.block_size * row_elems;
          local_q.insert(local_q.end(), src, src + pb.block_size * row_elems);
        }
        MaskEstimateParams local = full;
        local.q = local_q.data();
        local.q_block_ids = ids.data();
        local.num_q_blocks = static_cast<int>(ids.size());
        const BlockMask part = Estimate(local, 2);
        EXPECT_EQ(part.q_block_ids, ids);
        std::vector<float> mine(pb.num_blocks()), single(pb.num_blocks());
        for (int h = 0; h < pb.hq; ++h) {
          for (int i = 0; i < local.num_q_blocks; ++i) {
            EXPECT_EQ(Row(part, h, i), Row(whole, h, ids[i])) << ranks << " " << rank;
            round_robin::RowBlockMass(local, keys, nullptr, h, i, kernel, mine);
            round_robin::RowBlockMass(full, keys, nullptr, h, ids[i], kernel, single);
            EXPECT_EQ(0, std::memcmp(mine.data(), single.data(), mine.size() * sizeof(float)));
          }
        }
      }
    }
  }
}

// Every compilation this CPU runs against the generic one, bitwise; and the estimator's mask
// under each forced PREFILL_CPU_ISA equals the default one.
TEST(RoundRobinMaskEstimator, EveryIsaKernelAgreesBitwiseWithTheGenericOne) {
  Problem pb;
  pb.seq_len = 960;
  pb.block_size = 48;
  pb.head_dim = 20;
  pb.FillStructured(7);
  MaskEstimateParams p = pb.Params();
  for (bool causal : {true, false}) {
    p.causal = causal;
    const round_robin::PackedKeys keys =
        round_robin::PackKeys(p.pooled_k, p.seq_len / p.stride, p.hkv, p.head_dim);
    const BlockMask best = Estimate(p);
    for (cpu::CpuIsa isa : cpu::RunnableCpuIsas()) {
      SCOPED_TRACE(cpu::CpuIsaName(isa));
      std::vector<float> generic(pb.num_blocks()), variant(pb.num_blocks());
      for (int h = 0; h < pb.hq; ++h) {
        for (int qb = 0; qb < pb.num_blocks(); ++qb) {
          round_robin::RowBlockMass(p, keys, nullptr, h, qb,
                                    &round_robin::AccumulateBlockMassGeneric, generic);
          round_robin::RowBlockMass(p, keys, nullptr, h, qb, round_robin::BlockMassKernelFor(isa),
                                    variant);
          EXPECT_EQ(0, std::memcmp(generic.data(), variant.data(), generic.size() * sizeof(float)))
              << h << " " << qb;
        }
      }
      setenv("PREFILL_CPU_ISA", std::string(cpu::CpuIsaName(isa)).c_str(), 1);
      const BlockMask forced = Estimate(p);
      unsetenv("PREFILL_CPU_ISA");
      EXPECT_EQ(forced.row_offsets, best.row_offsets);
      EXPECT_EQ(forced.kv_blocks, best.kv_blocks);
    }
  }
}

TEST(RoundRobinMaskEstimator, HalfPrecisionQueriesEstimateLikeTheirFp32Values) {
  Problem pb;
  pb.FillStructured(8);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> stored(pb.q.size());
    ConvertFromF32(dtype, pb.q.data(), stored.data(), static_cast<int64_t>(pb.q.size()));
    Problem rounded = pb;
    ConvertToF32(dtype, stored.data(), rounded.q.data(), static_cast<int64_t>(stored.size()));
    MaskEstimateParams want = rounded.Params();
    MaskEstimateParams got = pb.Params();
    got.dtype = dtype;
    got.q = stored.data();
    EXPECT_EQ(Estimate(got), Estimate(want)) << DTypeName(dtype);
  }
}

// --- validation ---

TEST(RoundRobinMaskEstimator, RejectsBadParametersNamingTheField) {
  Problem pb;
  pb.seq_len = 256;
  pb.Fill(1.f, 9);
  const MaskEstimateParams good = pb.Params();
  ASSERT_TRUE(EstimateRoundRobinMask(good, 1).ok());
  const int32_t out_of_range[] = {0, 4};
  const std::pair<const char*, std::function<void(MaskEstimateParams&)>> cases[] = {
      {"hq", [](MaskEstimateParams& p) { p.hq = 0; }},
      {"hkv", [](MaskEstimateParams& p) { p.hkv = 3; }},
      {"head_dim", [](MaskEstimateParams& p) { p.head_dim = 0; }},
      {"block_size", [](MaskEstimateParams& p) { p.block_size = 0; }},
      {"stride", [](MaskEstimateParams& p) { p.stride = 7; }},
      {"stride", [](MaskEstimateParams& p) { p.stride = 0; }},
      {"seq_len", [](MaskEstimateParams& p) { p.seq_len = 250; }},
      {"seq_len", [](MaskEstimateParams& p) { p.seq_len = 0; }},
      {"tau", [](MaskEstimateParams& p) { p.tau = 0.f; }},
      {"tau", [](MaskEstimateParams& p) { p.tau = 1.5f; }},
      {"tau", [](MaskEstimateParams& p) { p.tau = std::numeric_limits<float>::quiet_NaN(); }},
      {"scale", [](MaskEstimateParams& p) { p.scale = 0.f; }},
      {"pooled_k", [](MaskEstimateParams& p) { p.pooled_k = nullptr; }},
      {"q must", [](MaskEstimateParams& p) { p.q = nullptr; }},
      {"q_block_ids must", [](MaskEstimateParams& p) { p.q_block_ids = nullptr; }},
      {"q_block_ids[1]",
       [&](MaskEstimateParams& p) {
         p.q_block_ids = out_of_range;
         p.num_q_blocks = 2;
       }},
      {"num_q_blocks", [](MaskEstimateParams& p) { p.num_q_blocks = -1; }},
      {"q_row_stride", [](MaskEstimateParams& p) { p.q_row_stride = 0; }},
      {"q_head_stride", [](MaskEstimateParams& p) { p.q_head_stride = -1; }},
  };
  for (const auto& [field, mutate] : cases) {
    MaskEstimateParams p = good;
    mutate(p);
    const absl::StatusOr<BlockMask> mask = EstimateRoundRobinMask(p, 1);
    ASSERT_FALSE(mask.ok()) << field;
    EXPECT_EQ(mask.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(std::string(mask.status().message()).find(field), std::string::npos) << mask.status();
  }
}

TEST(RoundRobinMaskEstimator, NoQueryBlocksGiveAnEmptyMask) {
  Problem pb;
  pb.Fill(1.f, 10);
  MaskEstimateParams p = pb.Params();
  p.num_q_blocks = 0;
  const BlockMask m = Estimate(p);
  EXPECT_EQ(m.num_rows(), 0);
  EXPECT_EQ(m.row_offsets, std::vector<int32_t>{0});
  EXPECT_EQ(m.visible_blocks, 0);
}

TEST(RoundRobinMaskEstimator, VisibleBlocksIsTheDenseCount) {
  Problem pb;
  pb.FillStructured(11);
  MaskEstimateParams p = pb.Params();
  for (bool causal : {true, false}) {
    p.causal = causal;
    const BlockMask m = Estimate(p);
    const BlockMask dense =
        DenseBlockMask(pb.hq, pb.all_blocks, pb.num_blocks(), pb.block_size, causal);
    EXPECT_EQ(m.visible_blocks, dense.visible_blocks);
    EXPECT_EQ(m.num_kv_blocks, pb.num_blocks());
    EXPECT_EQ(m.block_size, pb.block_size);
    EXPECT_EQ(m.q_block_ids, pb.all_blocks);
  }
}

}  // namespace
}  // namespace prefill::cpu
