// Family<T>: all children of one metric name, one per label set, each a Counter, Gauge or
// Histogram. The family carries the name, HELP text and the constant labels given when it
// was built; a child's labels are merged with them in the exposition.
//
// Add is the only place that takes the family's mutex: call it once, keep the reference
// (it stays valid as long as the Registry lives) and update the child lock-free on hot
// paths. Calling Add per event works but pays a lock and a map lookup each time.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/status_macros.h"
#include "monitoring/collectable.h"
#include "monitoring/counter.h"
#include "monitoring/gauge.h"
#include "monitoring/histogram.h"
#include "monitoring/metric_names.h"

namespace prefill::monitoring {

template <typename T>
concept MetricKind =
    std::same_as<T, Counter> || std::same_as<T, Gauge> || std::same_as<T, Histogram>;

template <MetricKind T>
constexpr MetricType MetricTypeOf() {
  if constexpr (std::is_same_v<T, Counter>) return MetricType::kCounter;
  if constexpr (std::is_same_v<T, Gauge>) return MetricType::kGauge;
  return MetricType::kHistogram;
}

class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const Labels& constant_labels() const { return constant_labels_; }
  // Histogram families: the buckets Add(labels) uses; empty means Add must be given them.
  const Histogram::BucketBoundaries& default_buckets() const { return default_buckets_; }

  // The children, sorted by their merged label sets. Families without children are
  // skipped by the serializer.
  virtual FamilySnapshot Collect() const = 0;

 protected:
  FamilyBase(std::string name, std::string help, MetricType type, Labels constant_labels,
             Histogram::BucketBoundaries default_buckets)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        constant_labels_(std::move(constant_labels)),
        default_buckets_(std::move(default_buckets)) {}

  // InvalidArgument when `labels` cannot be a child's labels in this family.
  absl::Status CheckChildLabels(const Labels& labels) const {
    if (absl::Status s = ValidateLabels(labels); !s.ok()) return Annotate(s);
    for (const auto& [label, value] : labels) {
      if (constant_labels_.count(label)) {
        return Annotate(absl::InvalidArgumentError(
            absl::StrCat("label '", label, "' is already a constant label of the family")));
      }
      if (type_ == MetricType::kHistogram && label == "le") {
        return Annotate(absl::InvalidArgumentError("label 'le' is reserved for histogram buckets"));
      }
    }
    return absl::OkStatus();
  }
  absl::Status Annotate(const absl::Status& s) const {
    return absl::Status(s.code(), absl::StrCat("metric ", name_, ": ", std::string(s.message())));
  }
  Labels Merged(const Labels& child) const {
    Labels merged = constant_labels_;
    merged.insert(child.begin(), child.end());
    return merged;
  }

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const Labels constant_labels_;
  const Histogram::BucketBoundaries default_buckets_;
};

template <MetricKind T>
class Family final : public FamilyBase {
 public:
  // The child for `labels`, created on first use. Bad labels (an invalid name, one that
  // repeats a constant label, `le` on a histogram, a value that is not UTF-8) still give a
  // working child, but it is kept out of the exposition and the first such call per family
  // prints a warning on stderr: use TryAdd to get the error instead.
  T& Add(const Labels& labels) { return Resolve(labels, TryAdd(labels)); }
  T& Add(const Labels& labels,
         const Histogram::BucketBoundaries& buckets) requires std::same_as<T, Histogram> {
    return Resolve(labels, TryAdd(labels, buckets), &buckets);
  }

  absl::StatusOr<T*> TryAdd(const Labels& labels) {
    if constexpr (std::is_same_v<T, Histogram>) {
      if (default_buckets().empty()) {
        return Annotate(absl::InvalidArgumentError(
            "a histogram family built without Buckets() needs buckets at Add(labels, buckets)"));
      }
      return TryAddImpl(labels, default_buckets());
    } else {
      return TryAddImpl(labels);
    }
  }
  // An existing child is returned as it is; asking for it with other buckets is an error.
  absl::StatusOr<T*> TryAdd(
      const Labels& labels,
      const Histogram::BucketBoundaries& buckets) requires std::same_as<T, Histogram> {
    if (absl::Status s = Histogram::ValidateBuckets(buckets); !s.ok()) return Annotate(s);
    return TryAddImpl(labels, buckets);
  }

  FamilySnapshot Collect() const override {
    FamilySnapshot snapshot{name(), help(), type(), {}};
    {
      absl::MutexLock lock(&mu_);
      snapshot.metrics.reserve(children_.size());
      for (const auto& [labels, child] : children_) {
        MetricSnapshot m;
        m.labels = Merged(labels);
        if constexpr (std::is_same_v<T, Histogram>) {
          m.histogram = child->Snapshot();
        } else {
          m.value = child->Value();
        }
        snapshot.metrics.push_back(std::move(m));
      }
    }
    std::sort(snapshot.metrics.begin(), snapshot.metrics.end(),
              [](const MetricSnapshot& a, const MetricSnapshot& b) { return a.labels < b.labels; });
    return snapshot;
  }

 private:
  friend class Registry;
  Family(std::string name, std::string help, Labels constant_labels,
         Histogram::BucketBoundaries buckets)
      : FamilyBase(std::move(name), std::move(help), MetricTypeOf<T>(), std::move(constant_labels),
                   std::move(buckets)) {}

  template <typename... Args>
  absl::StatusOr<T*> TryAddImpl(const Labels& labels, const Args&... args) {
    PREFILL_RETURN_IF_ERROR(CheckChildLabels(labels));
    absl::MutexLock lock(&mu_);
    auto it = children_.find(labels);
    if (it == children_.end()) {
      it = children_.emplace(labels, std::make_unique<T>(args...)).first;
    } else if constexpr (std::is_same_v<T, Histogram>) {
      Histogram::BucketBoundaries wanted(args...);
      if (!wanted.empty() && wanted.back() == INFINITY) wanted.pop_back();
      if (wanted != it->second->bounds()) {
        return Annotate(
            absl::InvalidArgumentError("this label set was added before with other buckets"));
      }
    }
    return it->second.get();
  }

  T& Resolve(const Labels& labels, absl::StatusOr<T*> child,
             const Histogram::BucketBoundaries* buckets = nullptr) {
    if (child.ok()) return **child;
    absl::MutexLock lock(&mu_);
    if (!warned_) {
      warned_ = true;
      std::fprintf(stderr, "monitoring: %s; this child is kept out of the exposition\n",
                   std::string(child.status().message()).c_str());
    }
    (void)labels;
    if constexpr (std::is_same_v<T, Histogram>) {
      const bool usable = buckets && Histogram::ValidateBuckets(*buckets).ok();
      detached_.push_back(std::make_unique<T>(usable ? *buckets : default_buckets()));
    } else {
      detached_.push_back(std::make_unique<T>());
    }
    return *detached_.back();
  }

  mutable absl::Mutex mu_;
  std::map<Labels, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<T>> detached_ ABSL_GUARDED_BY(mu_);  // children with bad labels
  bool warned_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace prefill::monitoring
