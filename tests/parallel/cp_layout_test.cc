// Layouts: every absolute position lives on exactly one rank, at the place HomeOf says.
#include "parallel/cp_layout.h"

#include <vector>

#include "gtest/gtest.h"

namespace prefill {
namespace {

TEST(CpLayout, ZigzagHoldsChunksRAnd2NMinus1MinusR) {
  const CpLayout layout = *CpLayout::Create(LayoutKind::kZigzag, 16 * 64, 4, 64);
  const std::vector<Chunk> chunks = layout.Chunks(1);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].start, 1 * 128);
  EXPECT_EQ(chunks[1].start, 6 * 128);
  EXPECT_EQ(layout.QueryBlockIds(1), (std::vector<int32_t>{2, 3, 12, 13}));
}

TEST(CpLayout, EveryBlockHasOneHome) {
  for (LayoutKind kind : {LayoutKind::kContiguous, LayoutKind::kZigzag}) {
    for (int world : {1, 2, 3, 4}) {
      const CpLayout layout = *CpLayout::Create(kind, 2 * world * 4 * 32, world, 32);
      std::vector<int> seen(layout.num_blocks(), 0);
      for (int r = 0; r < world; ++r) {
        const std::vector<int32_t> ids = layout.QueryBlockIds(r);
        const std::vector<int32_t> pos = layout.Positions(r);
        for (size_t local = 0; local < ids.size(); ++local) {
          ++seen[ids[local]];
          EXPECT_EQ(pos[local * 32], ids[local] * 32);
          const BlockHome home = layout.HomeOf(ids[local]);
          EXPECT_EQ(home.rank, r);
          EXPECT_EQ(home.local_block, static_cast<int>(local));
        }
      }
      for (int count : seen) EXPECT_EQ(count, 1);
    }
  }
}

TEST(CpLayout, RejectsLengthsThatDoNotSplitIntoBlocks) {
  absl::StatusOr<CpLayout> bad = CpLayout::Create(LayoutKind::kZigzag, 1000, 4, 128);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message())
                .find("--seq-len 1000 must be a multiple of 2 x world_size x block"),
            std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace prefill
