// Manifest validation lists every bad line with its number, and parses the good ones.
#include "scheduler/manifest.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace prefill {
namespace {

TEST(ManifestLine, ParsesEveryField) {
  absl::StatusOr<BatchRequest> r = ParseManifestLine(
      R"({"id": "a-1", "tokens": "x.npy", "mode": "dense", "tau": 0.9, "priority": 2})", 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, "a-1");
  EXPECT_EQ(r->tokens_path, "x.npy");
  EXPECT_EQ(*r->mode, AttentionMode::kDense);
  EXPECT_FLOAT_EQ(*r->tau, 0.9f);
  EXPECT_EQ(r->priority, 2);
  EXPECT_EQ(r->line, 4);
}

TEST(ManifestLine, RejectsWithAReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"{\"id\": ", "not valid JSON"},
      {"[1]", "not a JSON object"},
      {R"({"tokens": "x"})", "missing string field 'id'"},
      {R"({"id": "a/b", "tokens": "x"})", "id 'a/b' must be"},
      {R"({"id": "a", "tokens": "x", "embeddings": "y"})", "exactly one of"},
      {R"({"id": "a"})", "exactly one of"},
      {R"({"id": "a", "tokens": "x", "tau": 1.5})", "'tau' must be a number in (0, 1]"},
      {R"({"id": "a", "tokens": "x", "mode": "fast"})", "'mode' must be"},
      {R"({"id": "a", "tokens": "x", "colour": 1})", "unknown field 'colour'"},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<BatchRequest> r = ParseManifestLine(text, 1);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(std::string(r.status().message()).find(want), std::string::npos)
        << text << " -> " << r.status();
  }
}

TEST(Manifest, ListsEveryBadLineAndKeepsTheGoodOnes) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "manifest_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.npy") << "x";
  std::ofstream(dir / "m.jsonl") << R"({"id": "a", "tokens": "a.npy"})"
                                    "\n"
                                 << "\n"
                                 << R"({"id": "a", "tokens": "a.npy"})"
                                    "\n"
                                 << R"({"id": "b", "tokens": "missing.npy"})"
                                    "\n"
                                 << "oops\n"
                                 << R"({"id": "c", "tokens": "a.npy", "priority": 1})"
                                    "\n";
  absl::StatusOr<Manifest> m = LoadManifest((dir / "m.jsonl").string());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->requests.size(), 2u);
  EXPECT_EQ(m->requests[1].id, "c");
  ASSERT_EQ(m->problems.size(), 3u);
  EXPECT_EQ(m->problems[0].line, 3);
  EXPECT_EQ(m->problems[0].message, "duplicate id 'a' (first on line 1)");
  EXPECT_EQ(m->problems[1].line, 4);
  EXPECT_EQ(m->problems[2].line, 5);
  EXPECT_EQ(DescribeProblems(m->problems).substr(0, 12), "\n  line 3: d");
}

}  // namespace
}  // namespace prefill
