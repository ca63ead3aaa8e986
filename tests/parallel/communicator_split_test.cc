// Communicator::Split on MpiCommunicator under mpirun (4 ranks; any count >= 2 works): the
// new communicators' ranks and sizes follow (color, key, rank), collectives stay inside each
// group, a kNoColor rank gets nullptr, and the parent is unchanged afterwards. Every rank
// checks against the groups it computes from the world ranks alone.
#include <mpi.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"

namespace prefill {
namespace {

class CommunicatorSplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto world = MpiCommunicator::Create(MPI_COMM_WORLD);
    ASSERT_TRUE(world.ok()) << world.status();
    world_ = std::move(*world);
    if (world_->size() < 2) GTEST_SKIP() << "needs at least 2 ranks";
  }

  // The parent still reduces over every rank: sum of (rank + 1) is n (n + 1) / 2.
  void ExpectParentWorks() {
    const int n = world_->size();
    double sum = world_->rank() + 1.0;
    ASSERT_TRUE(world_->AllReduceSum(&sum, 1).ok());
    EXPECT_EQ(sum, n * (n + 1) / 2.0);
    EXPECT_TRUE(world_->Barrier().ok());
  }

  std::unique_ptr<MpiCommunicator> world_;
};

// World ranks of `color` under split(rank % 2, -rank): descending world rank.
std::vector<int> ParityGroupReversed(int world_size, int color) {
  std::vector<int> members;
  for (int r = world_size - 1; r >= 0; --r) {
    if (r % 2 == color) members.push_back(r);
  }
  return members;
}

TEST_F(CommunicatorSplitTest, ByParityInReverseOrder) {
  const int me = world_->rank(), n = world_->size();
  const int color = me % 2;
  auto split = world_->Split(color, -me);
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_NE(*split, nullptr);
  Communicator& group = **split;
  const std::vector<int> members = ParityGroupReversed(n, color);  // new rank -> world rank
  ASSERT_EQ(group.size(), static_cast<int>(members.size()));
  ASSERT_GE(group.rank(), 0);
  ASSERT_LT(group.rank(), group.size());
  EXPECT_EQ(members[group.rank()], me) << "key = -rank must reverse the order";

  // Reductions stay inside the group: sums of world ranks and of ones.
  std::vector<double> sums = {static_cast<double>(me), 1.0};
  ASSERT_TRUE(group.AllReduceSum(sums.data(), sums.size()).ok());
  double expected = 0;
  for (int r : members) expected += r;
  EXPECT_EQ(sums[0], expected);
  EXPECT_EQ(sums[1], static_cast<double>(members.size()));

  // AllGather lands slot i = new rank i, i.e. world ranks in descending order.
  std::vector<int> gathered(group.size(), -1);
  ASSERT_TRUE(group.AllGather(&me, sizeof me, gathered.data()).ok());
  EXPECT_EQ(gathered, members);

  // Point-to-point addresses new ranks: a ring inside the group.
  const int g = group.size(), next = (group.rank() + 1) % g, prev = (group.rank() + g - 1) % g;
  int received = -1;
  auto recv = group.Recv(&received, sizeof received, prev, 7);
  auto send = group.Send(&me, sizeof me, next, 7);
  ASSERT_TRUE(recv.ok() && send.ok());
  ASSERT_TRUE((*send)->Wait().ok());
  ASSERT_TRUE((*recv)->Wait().ok());
  EXPECT_EQ(received, members[prev]);

  ExpectParentWorks();  // while the group is alive
  split->reset();
  ExpectParentWorks();  // and after it is gone
}

TEST_F(CommunicatorSplitTest, OneGroupKeepsWorldOrder) {
  const int me = world_->rank(), n = world_->size();
  auto split = world_->Split(0, 0);  // equal keys: ties by rank
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_NE(*split, nullptr);
  EXPECT_EQ((*split)->size(), n);
  EXPECT_EQ((*split)->rank(), me);
  double sum = me + 1.0;
  ASSERT_TRUE((*split)->AllReduceSum(&sum, 1).ok());
  EXPECT_EQ(sum, n * (n + 1) / 2.0);
  std::vector<int> gathered(n, -1);
  ASSERT_TRUE((*split)->AllGather(&me, sizeof me, gathered.data()).ok());
  for (int r = 0; r < n; ++r) EXPECT_EQ(gathered[r], r);
  ExpectParentWorks();
}

TEST_F(CommunicatorSplitTest, NoColorRankGetsNullptr) {
  const int me = world_->rank(), n = world_->size();
  const int left_out = n - 1;
  auto split = world_->Split(me == left_out ? Communicator::kNoColor : 0, me);
  ASSERT_TRUE(split.ok()) << split.status();
  if (me == left_out) {
    EXPECT_EQ(*split, nullptr);
  } else {
    ASSERT_NE(*split, nullptr);
    EXPECT_EQ((*split)->size(), n - 1);
    EXPECT_EQ((*split)->rank(), me);
    double max = me;
    ASSERT_TRUE((*split)->AllReduceMax(&max, 1).ok());
    EXPECT_EQ(max, n - 2.0);  // the left-out rank's value never arrives
  }
  ExpectParentWorks();
}

TEST_F(CommunicatorSplitTest, NegativeColorIsRejectedWithoutStrandingOthers) {
  const int me = world_->rank(), n = world_->size();
  auto split = world_->Split(me == 0 ? -5 : 1, me);
  if (me == 0) {
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument) << split.status();
  } else {
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_NE(*split, nullptr);
    EXPECT_EQ((*split)->size(), n - 1);
    EXPECT_EQ((*split)->rank(), me - 1);
  }
  ExpectParentWorks();
}

TEST_F(CommunicatorSplitTest, SplitOfASplit) {
  const int me = world_->rank();
  auto halves = world_->Split(me % 2, me);
  ASSERT_TRUE(halves.ok() && *halves != nullptr) << halves.status();
  // Every member alone: size 1, rank 0, reductions are the identity.
  auto alone = (*halves)->Split((*halves)->rank(), 0);
  ASSERT_TRUE(alone.ok() && *alone != nullptr) << alone.status();
  EXPECT_EQ((*alone)->size(), 1);
  EXPECT_EQ((*alone)->rank(), 0);
  double v = me;
  ASSERT_TRUE((*alone)->AllReduceSum(&v, 1).ok());
  EXPECT_EQ(v, me);
  halves->reset();  // the grandchild outlives its parent
  ASSERT_TRUE((*alone)->Barrier().ok());
  ExpectParentWorks();
}

}  // namespace
}  // namespace prefill
