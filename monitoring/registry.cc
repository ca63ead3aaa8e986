#include "monitoring/registry.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace prefill::monitoring {
namespace {

constexpr const char* kHistogramSuffixes[] = {"_bucket", "_sum", "_count"};

}  // namespace

const char* MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::vector<FamilySnapshot> Registry::Collect() const {
  {
    absl::MutexLock lock(&hooks_mu_);
    for (const auto& hook : hooks_) hook();
  }
  std::vector<const FamilyBase*> families;
  {
    absl::MutexLock lock(&mu_);
    families.reserve(families_.size());
    for (const auto& [name, family] : families_) families.push_back(family.get());
  }
  // Families are never removed, so they can be read without the registry's lock.
  std::vector<FamilySnapshot> snapshots;
  snapshots.reserve(families.size());
  for (const FamilyBase* family : families) snapshots.push_back(family->Collect());
  return snapshots;
}

void Registry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&hooks_mu_);
  hooks_.push_back(std::move(hook));
}

absl::Status Registry::CheckDefinition(const std::string& name, const std::string& help,
                                       MetricType type, const Labels& constant_labels,
                                       const Histogram::BucketBoundaries& buckets) const {
  PREFILL_RETURN_IF_ERROR(ValidateMetricName(name));
  auto error = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": ", why));
  };
  if (type == MetricType::kCounter && !absl::EndsWith(name, "_total")) {
    return error("a counter's name must end in _total");
  }
  if (!IsValidUtf8(help)) return error("HELP text is not valid UTF-8");
  if (absl::Status s = ValidateLabels(constant_labels); !s.ok()) {
    return error(std::string(s.message()));
  }
  if (type == MetricType::kHistogram) {
    if (constant_labels.count("le")) return error("label 'le' is reserved for histogram buckets");
    if (absl::Status s = Histogram::ValidateBuckets(buckets); !s.ok())
      return error(std::string(s.message()));
  } else if (!buckets.empty()) {
    return error("only histograms have buckets");
  }
  return absl::OkStatus();
}

absl::Status Registry::CheckCollisions(const std::string& name, const std::string& help,
                                       MetricType type, const Labels& constant_labels,
                                       const Histogram::BucketBoundaries& buckets,
                                       FamilyBase** existing) const {
  if (auto it = families_.find(name); it != families_.end()) {
    const FamilyBase& f = *it->second;
    if (f.type() == type && f.help() == help && f.constant_labels() == constant_labels &&
        f.default_buckets() == buckets) {
      *existing = it->second.get();
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(absl::StrCat("metric ", name, " is already registered as a ",
                                                 MetricTypeName(f.type()),
                                                 " with other HELP, constant labels or buckets"));
  }
  // A histogram `x` exposes x_bucket, x_sum and x_count: none may be a family of its own.
  for (const char* suffix : kHistogramSuffixes) {
    if (type == MetricType::kHistogram && families_.count(name + suffix)) {
      return absl::AlreadyExistsError(absl::StrCat("histogram ", name, " would expose ", name,
                                                   suffix, ", which is already registered"));
    }
    if (absl::EndsWith(name, suffix)) {
      const std::string base = name.substr(0, name.size() - std::string(suffix).size());
      auto it = families_.find(base);
      if (it != families_.end() && it->second->type() == MetricType::kHistogram) {
        return absl::AlreadyExistsError(
            absl::StrCat("metric ", name, " collides with the series of histogram ", base));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace prefill::monitoring
