// The exposer over real HTTP on 127.0.0.1: GET /metrics serves the registries' text with
// the 0.0.4 content type; other paths and methods are refused; a taken port is a clear
// error; the destructor closes the port.
#include "monitoring/exposer.h"

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "monitoring/metrics_endpoint.h"
#include "monitoring/registry.h"
#include "monitoring/text_format.h"
#include "tests/monitoring/http_get.h"

namespace prefill::monitoring {
namespace {

using testing::HttpRequest;

std::shared_ptr<Registry> RegistryWithACounter(const std::string& name, double value) {
  auto registry = std::make_shared<Registry>();
  auto family = BuildCounter().Name(name).Help("A counter.").Register(*registry);
  EXPECT_TRUE(family.ok());
  (*family)->Add({{"rank", "0"}}).Increment(value);
  return registry;
}

TEST(ExposerTest, ServesMetricsOnAPortTheKernelChose) {
  auto registry = RegistryWithACounter("demo_total", 42);
  absl::StatusOr<std::unique_ptr<Exposer>> exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  (*exposer)->RegisterCollectable(registry);
  ASSERT_GT((*exposer)->port(), 0);
  EXPECT_EQ((*exposer)->url(),
            "http://127.0.0.1:" + std::to_string((*exposer)->port()) + "/metrics");

  const auto r = HttpRequest((*exposer)->port(), "GET", "/metrics");
  EXPECT_EQ(r.status, 200) << r.headers;
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body,
            "# HELP demo_total A counter.\n# TYPE demo_total counter\ndemo_total{rank=\"0\"} 42\n");
  EXPECT_EQ(r.Header("Content-Length"), std::to_string(r.body.size()));
}

TEST(ExposerTest, RefusesOtherPathsAndMethods) {
  auto registry = RegistryWithACounter("demo_total", 1);
  auto exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  (*exposer)->RegisterCollectable(registry);
  const int port = (*exposer)->port();
  EXPECT_EQ(HttpRequest(port, "GET", "/").status, 404);
  EXPECT_EQ(HttpRequest(port, "GET", "/metricsx").status, 404);
  EXPECT_EQ(HttpRequest(port, "GET", "/metrics/x").status, 404);
  EXPECT_EQ(HttpRequest(port, "GET", "/etc/passwd").status, 404);
  EXPECT_EQ(HttpRequest(port, "POST", "/metrics").status, 405);
  const auto head = HttpRequest(port, "HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(HttpRequest(port, "GET", "/metrics?x=1").status, 200);
}

TEST(ExposerTest, TakenPortIsAClearError) {
  int port = 0;
  const int holder = testing::ListenOnFreePort(&port);
  ASSERT_GE(holder, 0);
  absl::StatusOr<std::unique_ptr<Exposer>> exposer =
      Exposer::Create("127.0.0.1:" + std::to_string(port));
  close(holder);
  ASSERT_FALSE(exposer.ok());
  EXPECT_EQ(exposer.status().code(), absl::StatusCode::kUnavailable);
  const std::string message(exposer.status().message());
  EXPECT_NE(message.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << message;
  EXPECT_NE(message.find("already in use"), std::string::npos) << message;
}

TEST(ExposerTest, MalformedAddressesAreInvalidArgument) {
  for (const char* bad : {"9400", ":9400", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
                          "::1:9400", "[::1:9400", "127.0.0.1:-1"}) {
    auto exposer = Exposer::Create(bad);
    ASSERT_FALSE(exposer.ok()) << bad;
    EXPECT_EQ(exposer.status().code(), absl::StatusCode::kInvalidArgument)
        << bad << ": " << exposer.status();
  }
}

TEST(ExposerTest, AddressNotOfThisHostIsAnError) {
  auto exposer = Exposer::Create("192.0.2.1:0");  // TEST-NET-1: never local
  ASSERT_FALSE(exposer.ok());
  EXPECT_EQ(exposer.status().code(), absl::StatusCode::kInvalidArgument) << exposer.status();
}

TEST(ExposerTest, DestructorClosesThePortPromptly) {
  int port = 0;
  auto exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok());
  port = (*exposer)->port();
  EXPECT_EQ(HttpRequest(port, "GET", "/metrics").status, 200);
  const auto start = std::chrono::steady_clock::now();
  exposer->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start,
            std::chrono::milliseconds(500));                  // not civetweb's 2 s poll
  EXPECT_EQ(HttpRequest(port, "GET", "/metrics").status, 0);  // connection refused
  // And the port can be bound again at once.
  auto again = Exposer::Create("127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST(ExposerTest, BindsEveryInterface) {
  auto registry = RegistryWithACounter("demo_total", 7);
  auto exposer = Exposer::Create("0.0.0.0:0");
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  (*exposer)->RegisterCollectable(registry);
  EXPECT_EQ(HttpRequest((*exposer)->port(), "GET", "/metrics").status, 200);
  const auto start = std::chrono::steady_clock::now();
  exposer->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
}

TEST(ExposerTest, CollectablesAreHeldWeaklyAndMergedByName) {
  auto exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok());
  auto a = RegistryWithACounter("b_total", 1);
  auto b = RegistryWithACounter("a_total", 2);
  auto c = std::make_shared<Registry>();  // b_total again, another label set
  auto family = BuildCounter().Name("b_total").Help("A counter.").Register(*c);
  ASSERT_TRUE(family.ok());
  (*family)->Add({{"rank", "1"}}).Increment(3);
  (*exposer)->RegisterCollectable(a);
  (*exposer)->RegisterCollectable(b);
  (*exposer)->RegisterCollectable(c);
  EXPECT_EQ(HttpRequest((*exposer)->port(), "GET", "/metrics").body,
            "# HELP a_total A counter.\n# TYPE a_total counter\na_total{rank=\"0\"} 2\n"
            "# HELP b_total A counter.\n# TYPE b_total counter\nb_total{rank=\"0\"} "
            "1\nb_total{rank=\"1\"} 3\n");
  b.reset();
  (*exposer)->RemoveCollectable(c);
  EXPECT_EQ(HttpRequest((*exposer)->port(), "GET", "/metrics").body,
            "# HELP b_total A counter.\n# TYPE b_total counter\nb_total{rank=\"0\"} 1\n");
}

TEST(ExposerTest, ConcurrentScrapesWhileCounting) {
  auto registry = std::make_shared<Registry>();
  auto family = BuildCounter().Name("n_total").Help("n").Register(*registry);
  ASSERT_TRUE(family.ok());
  Counter& n = (*family)->Add({});
  auto exposer = Exposer::Create("127.0.0.1:0");
  ASSERT_TRUE(exposer.ok());
  (*exposer)->RegisterCollectable(registry);
  std::thread writer([&] {
    for (int i = 0; i < 200000; ++i) n.Increment();
  });
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([&] {
      for (int i = 0; i < 20; ++i)
        EXPECT_EQ(HttpRequest((*exposer)->port(), "GET", "/metrics").status, 200);
    });
  }
  writer.join();
  for (auto& s : scrapers) s.join();
  EXPECT_EQ(HttpRequest((*exposer)->port(), "GET", "/metrics").body,
            "# HELP n_total n\n# TYPE n_total counter\nn_total 200000\n");
}

}  // namespace
}  // namespace prefill::monitoring
