// One endpoint per rank: port = base + local rank from the launcher's environment; base 0
// turns it off.
#include "monitoring/metrics_endpoint.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "monitoring/registry.h"
#include "tests/monitoring/http_get.h"

namespace prefill::monitoring {
namespace {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(MetricsEndpointTest, LocalRankCascade) {
  ScopedEnv ompi("OMPI_COMM_WORLD_LOCAL_RANK", nullptr);
  ScopedEnv slurm("SLURM_LOCALID", nullptr);
  ScopedEnv mpich("MPI_LOCALRANKID", nullptr);
  EXPECT_EQ(*LocalRankFromEnvironment(), 0);
  {
    ScopedEnv m("MPI_LOCALRANKID", "5");
    EXPECT_EQ(*LocalRankFromEnvironment(), 5);
    ScopedEnv s("SLURM_LOCALID", "2");
    EXPECT_EQ(*LocalRankFromEnvironment(), 2);
    ScopedEnv o("OMPI_COMM_WORLD_LOCAL_RANK", "3");  // mpirun inside sbatch: OMPI wins
    EXPECT_EQ(*LocalRankFromEnvironment(), 3);
  }
  ScopedEnv bad("SLURM_LOCALID", "two");
  absl::StatusOr<int> r = LocalRankFromEnvironment();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("SLURM_LOCALID='two'"), std::string::npos);
}

TEST(MetricsEndpointTest, PortForRank) {
  EXPECT_EQ(*MetricsPortForRank(0, 3), 0);  // off
  EXPECT_EQ(*MetricsPortForRank(9400, 0), 9400);
  EXPECT_EQ(*MetricsPortForRank(9400, 7), 9407);
  EXPECT_EQ(MetricsPortForRank(-1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsPortForRank(70000, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsPortForRank(65535, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsPortForRank(9400, -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsEndpointTest, BasePortZeroIsOff) {
  auto registry = std::make_shared<Registry>();
  absl::StatusOr<MetricsEndpoint> endpoint =
      MetricsEndpoint::Start(MetricsEndpointOptions{}, registry);
  ASSERT_TRUE(endpoint.ok());
  EXPECT_FALSE(endpoint->enabled());
  EXPECT_EQ(endpoint->port(), 0);
  EXPECT_EQ(endpoint->url(), "");
}

TEST(MetricsEndpointTest, ServesOnBasePlusLocalRank) {
  auto registry = std::make_shared<Registry>();
  auto family = BuildGauge().Name("up_gauge").Help("g").Register(*registry);
  ASSERT_TRUE(family.ok());
  (*family)->Add({}).Set(1);
  int free_port = 0;
  const int fd = testing::ListenOnFreePort(&free_port);
  ASSERT_GE(fd, 0);
  close(fd);
  ASSERT_GE(free_port, 3);
  ScopedEnv ompi("OMPI_COMM_WORLD_LOCAL_RANK", "3");
  MetricsEndpointOptions options;
  options.base_port = free_port - 3;
  absl::StatusOr<MetricsEndpoint> endpoint = MetricsEndpoint::Start(options, registry);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  EXPECT_TRUE(endpoint->enabled());
  EXPECT_EQ(endpoint->port(), free_port);
  EXPECT_EQ(endpoint->url(), "http://127.0.0.1:" + std::to_string(free_port) + "/metrics");
  EXPECT_EQ(testing::HttpRequest(free_port, "GET", "/metrics").body,
            "# HELP up_gauge g\n# TYPE up_gauge gauge\nup_gauge 1\n");

  // A second rank computing the same port (a wrong local rank) gets a clear error.
  options.base_port = free_port;
  options.local_rank = 0;
  absl::StatusOr<MetricsEndpoint> clash = MetricsEndpoint::Start(options, registry);
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(clash.status().message()).find("already in use"), std::string::npos);
}

}  // namespace
}  // namespace prefill::monitoring
