// The synthetic rows are a pure function of (seed, position, head, dim): the same position
// gives the same q, k, v whatever else is generated with it, in whatever order, on however
// many threads (the generator caches feature vectors per thread and splits positions over
// threads; neither may show in the values).
#include "runtime/synthetic_workload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace prefill {
namespace {

struct Case {
  WorkloadKind kind;
  int head_dim;
  bool diffuse;
};

class SyntheticWorkloadTest : public ::testing::TestWithParam<Case> {};

WorkloadSpec SpecOf(const Case& c) {
  WorkloadSpec spec;
  spec.kind = c.kind;
  spec.seq_len = 65536;
  spec.heads = 8;
  spec.kv_heads = 2;
  spec.head_dim = c.head_dim;
  spec.seed = 7;
  spec.concentration = 0.8;
  spec.diffuse_head = c.diffuse;
  return spec;
}

// Row i of `rows` (generated for `positions`) for the table `width` floats wide.
std::vector<float> Row(const std::vector<float>& rows, size_t i, size_t width) {
  return {rows.begin() + i * width, rows.begin() + (i + 1) * width};
}

TEST_P(SyntheticWorkloadTest, RowsDependOnlyOnPosition) {
  const WorkloadSpec spec = SpecOf(GetParam());
  // Contiguous runs (cache hits), a far jump, the needle's and the question's blocks.
  std::vector<int32_t> in_order(1500);
  std::iota(in_order.begin(), in_order.begin() + 1000, 0);
  std::iota(in_order.begin() + 1000, in_order.end(), 39000);
  const QkvRows serial = GenerateQkvRows(spec, in_order, 1);
  const QkvRows threaded = GenerateQkvRows(spec, in_order, 3);
  EXPECT_EQ(serial.q, threaded.q);
  EXPECT_EQ(serial.k, threaded.k);
  EXPECT_EQ(serial.v, threaded.v);

  // Every 7th position, backwards: other neighbours, other cache states.
  std::vector<int32_t> sparse;
  for (size_t i = in_order.size(); i-- > 0;) {
    if (i % 7 == 0) sparse.push_back(in_order[i]);
  }
  const QkvRows alone = GenerateQkvRows(spec, sparse, 2);
  const size_t q_width = static_cast<size_t>(spec.heads) * spec.head_dim;
  const size_t kv_width = static_cast<size_t>(spec.kv_heads) * spec.head_dim;
  for (size_t j = 0; j < sparse.size(); ++j) {
    const size_t i = std::find(in_order.begin(), in_order.end(), sparse[j]) - in_order.begin();
    ASSERT_EQ(Row(alone.q, j, q_width), Row(serial.q, i, q_width)) << "position " << sparse[j];
    ASSERT_EQ(Row(alone.k, j, kv_width), Row(serial.k, i, kv_width)) << "position " << sparse[j];
    ASSERT_EQ(Row(alone.v, j, kv_width), Row(serial.v, i, kv_width)) << "position " << sparse[j];
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, SyntheticWorkloadTest,
                         ::testing::Values(Case{WorkloadKind::kNeedle, 64, false},
                                           Case{WorkloadKind::kStripes, 64, true},
                                           Case{WorkloadKind::kVideo, 128, false},
                                           Case{WorkloadKind::kSinks, 128, true},
                                           Case{WorkloadKind::kHeavy, 64, false},
                                           Case{WorkloadKind::kRandom, 64, false}));

}  // namespace
}  // namespace prefill
