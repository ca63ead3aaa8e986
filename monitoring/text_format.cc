#include "monitoring/text_format.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace prefill::monitoring {
namespace {

void AppendLabels(const Labels& labels, const char* le, std::string* out) {
  if (labels.empty() && !le) return;
  out->push_back('{');
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out->push_back(',');
    first = false;
    *out += name;
    *out += "=\"";
    *out += EscapeLabelValue(value);
    out->push_back('"');
  }
  if (le) {
    if (!first) out->push_back(',');
    *out += "le=\"";
    *out += le;
    out->push_back('"');
  }
  out->push_back('}');
}

void AppendSample(const std::string& name, const char* suffix, const Labels& labels, const char* le,
                  double value, std::string* out) {
  *out += name;
  *out += suffix;
  AppendLabels(labels, le, out);
  out->push_back(' ');
  *out += FormatValue(value);
  out->push_back('\n');
}

}  // namespace

std::string EscapeHelp(const std::string& help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == 0) return "0";  // also -0
  if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
    char text[32];
    std::snprintf(text, sizeof text, "%.0f", value);
    return text;
  }
  char text[64];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

void AppendFamilyText(const FamilySnapshot& family, std::string* out) {
  if (family.metrics.empty()) return;
  const std::string& name = family.name;
  *out += "# HELP ";
  *out += name;
  out->push_back(' ');
  *out += EscapeHelp(family.help);
  *out += "\n# TYPE ";
  *out += name;
  out->push_back(' ');
  *out += MetricTypeName(family.type);
  out->push_back('\n');
  for (const MetricSnapshot& m : family.metrics) {
    if (family.type != MetricType::kHistogram) {
      AppendSample(name, "", m.labels, nullptr, m.value, out);
      continue;
    }
    const HistogramSnapshot& h = m.histogram;
    for (size_t i = 0; i < h.upper_bounds.size(); ++i) {
      const std::string le = FormatValue(h.upper_bounds[i]);
      AppendSample(name, "_bucket", m.labels, le.c_str(),
                   static_cast<double>(h.cumulative_counts[i]), out);
    }
    AppendSample(name, "_bucket", m.labels, "+Inf", static_cast<double>(h.count), out);
    AppendSample(name, "_sum", m.labels, nullptr, h.sum, out);
    AppendSample(name, "_count", m.labels, nullptr, static_cast<double>(h.count), out);
  }
}

std::string SerializeText(const std::vector<FamilySnapshot>& families) {
  std::string out;
  for (const FamilySnapshot& family : families) AppendFamilyText(family, &out);
  return out;
}

}  // namespace prefill::monitoring
