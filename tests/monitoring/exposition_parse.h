// Reads back the sample names and label names of a text exposition (tests only).
#pragma once

#include <set>
#include <sstream>
#include <string>

namespace prefill::monitoring::testing {

struct ExpositionNames {
  std::set<std::string> samples;  // e.g. prefill_request_prefill_time_seconds_bucket
  std::set<std::string> labels;   // e.g. rank, phase, le
};

inline ExpositionNames ParseExpositionNames(const std::string& text) {
  ExpositionNames names;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end = line.find_first_of("{ ");
    names.samples.insert(line.substr(0, end));
    if (end == std::string::npos || line[end] != '{') continue;
    size_t pos = end + 1;
    while (pos < line.size() && line[pos] != '}') {
      const size_t eq = line.find('=', pos);
      names.labels.insert(line.substr(pos, eq - pos));
      size_t v = eq + 2;  // past ="
      while (v < line.size() && line[v] != '"') v += (line[v] == '\\') ? 2 : 1;
      pos = v + 1;
      if (pos < line.size() && line[pos] == ',') ++pos;
    }
  }
  return names;
}

}  // namespace prefill::monitoring::testing
