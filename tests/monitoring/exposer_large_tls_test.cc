// The exposer in a process whose libraries hold a lot of static TLS (OpenBLAS 60 KiB, cuBLAS
// 100 KiB in the CUDA build): glibc carves TLS out of each thread's stack, and civetweb asks
// for 100 KiB stacks. Without monitoring/civetweb_thread_stack.h the exposer cannot start
// here ("Cannot create threads"), or its workers overflow into their thread control block.
// Its own binary: the TLS below must not weigh on the other monitoring tests.
#include <gtest/gtest.h>
#include <pthread.h>

#include <memory>

#include "monitoring/civetweb_thread_stack.h"
#include "monitoring/exposer.h"
#include "monitoring/registry.h"
#include "tests/monitoring/http_get.h"

namespace prefill::monitoring {
namespace {

using testing::HttpRequest;

// 192 KiB of static TLS, touched so that it is not discarded.
thread_local volatile char heavy_tls[192 * 1024];

TEST(CivetwebThreadStack, SmallRequestsAreRaisedToTheFloor) {
  heavy_tls[0] = 1;
  ASSERT_TRUE(ThreadStackFloorActive());
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  size_t size = 0;
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 102400), 0);  // civetweb's request
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &size), 0);
  EXPECT_EQ(size, kMinThreadStackBytes);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 4 * kMinThreadStackBytes), 0);  // larger: unchanged
  ASSERT_EQ(pthread_attr_getstacksize(&attr, &size), 0);
  EXPECT_EQ(size, 4 * kMinThreadStackBytes);
  pthread_attr_destroy(&attr);
}

TEST(CivetwebThreadStack, ExposerServesUnderHeavyTls) {
  auto registry = std::make_shared<Registry>();
  auto family = BuildCounter().Name("scrapes_total").Help("Scrapes.").Register(*registry);
  ASSERT_TRUE(family.ok());
  (*family)->Add({}).Increment(3);
  absl::StatusOr<std::unique_ptr<Exposer>> exposer = Exposer::Create("127.0.0.1:0", 4);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  (*exposer)->RegisterCollectable(registry);
  for (int i = 0; i < 50; ++i) {  // concurrent workers each format a response on their stack
    const auto r = HttpRequest((*exposer)->port(), "GET", "/metrics");
    ASSERT_EQ(r.status, 200) << r.headers;
    EXPECT_NE(r.body.find("scrapes_total 3"), std::string::npos) << r.body;
  }
  exposer->reset();  // joins the workers: a corrupted one would crash here
}

}  // namespace
}  // namespace prefill::monitoring
