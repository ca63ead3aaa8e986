// The Prometheus text exposition format, version 0.0.4:
//   # HELP name help text          (help escapes \ as \\ and newline as \n)
//   # TYPE name counter|gauge|histogram
//   name{label="value",...} 1      (values escape \ as \\, " as \" and newline as \n)
//   name_bucket{...,le="0.5"} 3    (histograms: cumulative buckets in ascending le, then
//   name_bucket{...,le="+Inf"} 4    le="+Inf" equal to _count, then _sum and _count)
//   name_sum{...} 1.25
//   name_count{...} 4
// Each family is one contiguous group; families sorted by name, children by label set;
// families without children are left out; every line ends in '\n'.
#pragma once

#include <string>
#include <vector>

#include "monitoring/collectable.h"

namespace prefill::monitoring {

inline constexpr char kTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// `families` in the order given (Registry::Collect sorts them).
std::string SerializeText(const std::vector<FamilySnapshot>& families);
void AppendFamilyText(const FamilySnapshot& family, std::string* out);

std::string EscapeHelp(const std::string& help);
std::string EscapeLabelValue(const std::string& value);
// Integers below 2^53 exactly ("800000", not "8e+05"), other values in the shortest form
// that reads back to the same double, and NaN, +Inf, -Inf as Prometheus spells them.
std::string FormatValue(double value);

}  // namespace prefill::monitoring
