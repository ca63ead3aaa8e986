// Registry: owns metric families by name and collects them for a scrape. Built with
// prometheus-cpp's shape:
//
//   auto registry = std::make_shared<Registry>();
//   absl::StatusOr<Family<Counter>*> requests = BuildCounter()
//       .Name("prefill_requests_total").Help("Requests by outcome.")
//       .Labels({{"rank", "0"}}).Register(*registry);
//   if (!requests.ok()) return requests.status();
//   Counter& ok = (*requests)->Add({{"status", "ok"}});   // keep the reference
//   ok.Increment();                                       // lock-free
//
// Register validates the name (and the constant labels, HELP text and buckets) and returns
// InvalidArgument rather than crashing; counters must end in `_total`. Registering a name
// again with the same type, HELP, constant labels and buckets returns the existing family;
// any other reuse of a name (or a name that would collide with a histogram's `_bucket`,
// `_sum`, `_count` series) is AlreadyExists.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/status_macros.h"
#include "monitoring/collectable.h"
#include "monitoring/family.h"

namespace prefill::monitoring {

class Registry final : public Collectable {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Runs every hook, then snapshots every family; families sorted by name.
  std::vector<FamilySnapshot> Collect() const override;

  // `hook` runs at the start of every Collect, before values are read: for values read on
  // demand, like the process's resident memory. Hooks may run concurrently with each other
  // when two scrapes overlap, so they should only Set gauges. They must not call Collect.
  void AddCollectHook(std::function<void()> hook);

  // What the builders call.
  template <MetricKind T>
  absl::StatusOr<Family<T>*> Register(const std::string& name, const std::string& help,
                                      const Labels& constant_labels,
                                      const Histogram::BucketBoundaries& buckets = {});

 private:
  absl::Status CheckDefinition(const std::string& name, const std::string& help, MetricType type,
                               const Labels& constant_labels,
                               const Histogram::BucketBoundaries& buckets) const;
  // OK, or why `name` of `type` cannot join the families already here; *existing is set
  // when an identical family is already registered.
  absl::Status CheckCollisions(const std::string& name, const std::string& help, MetricType type,
                               const Labels& constant_labels,
                               const Histogram::BucketBoundaries& buckets,
                               FamilyBase** existing) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex hooks_mu_;
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(hooks_mu_);
};

template <MetricKind T>
absl::StatusOr<Family<T>*> Registry::Register(const std::string& name, const std::string& help,
                                              const Labels& constant_labels,
                                              const Histogram::BucketBoundaries& buckets) {
  constexpr MetricType type = MetricTypeOf<T>();
  PREFILL_RETURN_IF_ERROR(CheckDefinition(name, help, type, constant_labels, buckets));
  Histogram::BucketBoundaries bounds = buckets;
  if (!bounds.empty() && bounds.back() == INFINITY) bounds.pop_back();
  absl::MutexLock lock(&mu_);
  FamilyBase* existing = nullptr;
  if (absl::Status s = CheckCollisions(name, help, type, constant_labels, bounds, &existing);
      !s.ok()) {
    return s;
  }
  if (existing) return static_cast<Family<T>*>(existing);
  auto* family = new Family<T>(name, help, constant_labels, std::move(bounds));
  families_.emplace(name, std::unique_ptr<FamilyBase>(family));
  return family;
}

// Fluent builder: BuildCounter().Name(..).Help(..).Labels(..).Register(registry).
template <MetricKind T>
class Builder {
 public:
  Builder& Name(const std::string& name) {
    name_ = name;
    return *this;
  }
  Builder& Help(const std::string& help) {
    help_ = help;
    return *this;
  }
  // Constant labels, merged into every child of the family.
  Builder& Labels(const monitoring::Labels& labels) {
    labels_ = labels;
    return *this;
  }
  // Histograms: the buckets Add(labels) uses when none are given there.
  Builder& Buckets(const Histogram::BucketBoundaries& buckets) requires std::same_as<T, Histogram> {
    buckets_ = buckets;
    return *this;
  }
  absl::StatusOr<Family<T>*> Register(Registry& registry) const {
    return registry.Register<T>(name_, help_, labels_, buckets_);
  }

 private:
  std::string name_;
  std::string help_;
  monitoring::Labels labels_;
  Histogram::BucketBoundaries buckets_;
};

inline Builder<Counter> BuildCounter() { return {}; }
inline Builder<Gauge> BuildGauge() { return {}; }
inline Builder<Histogram> BuildHistogram() { return {}; }

}  // namespace prefill::monitoring
