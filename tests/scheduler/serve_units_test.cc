// The pure parts of `prefill serve`: request parsing against the files root, the request
// table's order and states, the rank pool's aligned groups.
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "scheduler/rank_pool.h"
#include "scheduler/request_table.h"
#include "scheduler/serve_request.h"

namespace prefill {
namespace {

class ServeRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() / ("serve_units_" + std::to_string(::getpid()));
    std::filesystem::create_directories(root_ / "in");
    std::ofstream(root_ / "in" / "a.npy") << "x";
    limits_ = {root_, 8};
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  absl::StatusOr<ServeRequest> Parse(const std::string& body) {
    return ParseServeRequest(body, limits_);
  }
  std::filesystem::path root_;
  ServeRequestLimits limits_;
};

TEST_F(ServeRequestTest, ResolvesFilesUnderTheRoot) {
  absl::StatusOr<ServeRequest> r = Parse(
      R"({"id": "a-1", "tokens_file": "in/./a.npy", "kv_out": "kv/a", "mode": "dense", "tau": 0.5, "priority": 2})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens_path, (root_ / "in" / "a.npy").string());
  EXPECT_EQ(r->kv_out, (root_ / "kv" / "a").string());
  EXPECT_EQ(r->mode, AttentionMode::kDense);
  EXPECT_FLOAT_EQ(*r->tau, 0.5f);
  EXPECT_EQ(r->priority, 2);
  const ServeRequest back = ServeRequest::FromJson(r->ToJson());
  EXPECT_EQ(back.tokens_path, r->tokens_path);
  EXPECT_EQ(back.kv_out, r->kv_out);
  EXPECT_EQ(back.tau, r->tau);
}

TEST_F(ServeRequestTest, RefusesWhatLeavesTheRootOrIsMalformed) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"id": "a", "tokens_file": "../in/a.npy"})", "leaves"},
      {R"({"id": "a", "tokens_file": "in/../../x"})", "leaves"},
      {R"({"id": "a", "tokens_file": "/etc/passwd"})", "relative"},
      {R"({"id": "a", "tokens": [1], "kv_out": "."})", "leaves"},
      {R"({"id": "a", "tokens_file": "in/none.npy"})", "does not exist"},
      {R"({"id": "a", "tokens": [1, 2, 3, 4, 5, 6, 7, 8, 9]})", "at most 8"},
      {R"({"id": "a", "tokens": [1, -2]})", "'tokens'[1]"},
      {R"({"id": "a", "tokens": []})", "non-empty"},
      {R"({"id": "a"})", "exactly one"},
      {R"({"id": "a", "tokens": [1], "kv_target": "h:0"})", "host:port"},
      {R"({"id": "a", "tokens": [1], "kv_target": 7})", "host:port"},
      {R"({"tokens": [1]})", "'id'"},
      {R"([1, 2])", "not a JSON object"},
      {R"({"id": "a", "tokens": [1], "Tokens": 2})", "unknown field 'Tokens'"},
  };
  for (const auto& [body, why] : cases) {
    absl::StatusOr<ServeRequest> r = Parse(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_NE(std::string(r.status().message()).find(why), std::string::npos)
        << body << ": " << r.status();
  }
}

ServeRequest Named(const std::string& id, int priority = 0) {
  ServeRequest r;
  r.id = id;
  r.priority = priority;
  r.tokens = {1};
  return r;
}

TEST(RequestTable, PriorityThenArrivalAndStates) {
  RequestTable table(3);
  ASSERT_TRUE(table.Submit(Named("low"), 10, 1).ok());
  ASSERT_TRUE(table.Submit(Named("high", 5), 20, 2).ok());
  ASSERT_TRUE(table.Submit(Named("low2"), 30, 4).ok());
  EXPECT_EQ(table.Submit(Named("more"), 1, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table.Submit(Named("low"), 1, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table.NextRanks(), 2);
  EXPECT_EQ(table.StartNext(0).request.id, "high");
  EXPECT_EQ(table.StartNext(2).request.id, "low");
  EXPECT_EQ(table.Cancel("high").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(table.Cancel("low2").ok());
  EXPECT_FALSE(table.NextRanks().has_value());
  const RequestTable::Finished f = table.Finish("high", {{"status", "ok"}}, true);
  EXPECT_EQ(f.first_rank, 0);
  EXPECT_EQ(f.ranks, 2);
  EXPECT_EQ((*table.Describe("high"))["state"], "done");
  EXPECT_EQ((*table.Describe("low2"))["state"], "cancelled");
  EXPECT_EQ((*table.Describe("low"))["state"], "running");
  EXPECT_FALSE(table.Describe("nope").has_value());
  EXPECT_EQ(table.running(), 1);
  ASSERT_TRUE(table.Submit(Named("q"), 1, 1).ok());
  table.StopAdmission("stopping");
  EXPECT_EQ((*table.Describe("q"))["state"], "cancelled");
  EXPECT_EQ(table.Submit(Named("r"), 1, 1).code(), absl::StatusCode::kUnavailable);
}

TEST(RequestTable, ForgetsTheOldestFinished) {
  RequestTable table(10, /*keep_finished=*/2);
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(table.Submit(Named(id), 1, 1).ok());
    ASSERT_TRUE(table.Cancel(id).ok());
  }
  EXPECT_FALSE(table.Describe("a").has_value());
  EXPECT_TRUE(table.Describe("c").has_value());
}

TEST(RankPool, AlignedPowerOfTwoGroups) {
  RankPool pool(6);
  EXPECT_EQ(pool.Take(2), 0);
  EXPECT_EQ(pool.Take(4), std::nullopt);  // [0, 4) holds a busy rank; [4, 8) is past the world
  EXPECT_EQ(pool.Take(1), 2);
  EXPECT_EQ(pool.Take(2), 4);
  EXPECT_EQ(pool.Take(1), 3);
  EXPECT_EQ(pool.free_ranks(), 0);
  pool.Release(0, 2);
  pool.Release(2, 1);
  pool.Release(3, 1);
  EXPECT_EQ(pool.Take(4), 0);
  EXPECT_EQ(pool.Take(8), std::nullopt);
}

}  // namespace
}  // namespace prefill
