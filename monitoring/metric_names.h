// The naming rules of the Prometheus data model, checked where a metric is registered or a
// labelled child is added, so that a bad name is an InvalidArgument at the call site and
// never a scrape that Prometheus rejects as a whole.
//   metric names  [a-zA-Z_:][a-zA-Z0-9_:]*  (colons are legal but reserved for recording
//                                            rules; our own metrics do not use them)
//   label names   [a-zA-Z_][a-zA-Z0-9_]*    and not starting with "__" (reserved)
//   label values and HELP text: any valid UTF-8
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"

namespace prefill::monitoring {

// A metric's label set: name -> value, ordered by name so output is deterministic.
using Labels = std::map<std::string, std::string>;

absl::Status ValidateMetricName(const std::string& name);
absl::Status ValidateLabelName(const std::string& name);
// Every label name valid, every value valid UTF-8.
absl::Status ValidateLabels(const Labels& labels);
bool IsValidUtf8(const std::string& text);

}  // namespace prefill::monitoring
