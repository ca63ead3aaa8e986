// Batch manifests: JSON lines, one request a line:
//   {"id": "doc-17", "tokens": "docs/17.npy", "mode": "sparse", "tau": 0.9, "priority": 1}
//   {"id": "clip-3", "embeddings": "clips/3.safetensors"}
// The whole manifest is validated before anything runs, and every bad line is reported.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cp_attention.h"

namespace prefill {

struct BatchRequest {
  std::string id;  // [A-Za-z0-9._-]+, unique: it names the request's output folder
  std::string tokens_path;
  std::string embeddings_path;
  std::optional<AttentionMode> mode;  // "dense" or "sparse"; the job's default otherwise
  std::optional<float> tau;
  int priority = 0;  // higher first
  int line = 0;      // 1-based line in the manifest
};

struct ManifestProblem {
  int line;
  std::string message;
};

struct Manifest {
  std::vector<BatchRequest> requests;
  std::vector<ManifestProblem> problems;  // empty when every line is good
};

// Parses one line (no file checks); InvalidArgument says what is wrong with it.
absl::StatusOr<BatchRequest> ParseManifestLine(const std::string& text, int line);

// Reads and validates the manifest: JSON, fields, duplicate ids, and (relative to the
// manifest's folder when not absolute) that each input file exists. NotFound if the
// manifest itself cannot be read.
absl::StatusOr<Manifest> LoadManifest(const std::string& path);

// "line 3: duplicate id 'a' (first on line 1)\nline 7: ..." for the error message.
std::string DescribeProblems(const std::vector<ManifestProblem>& problems);

}  // namespace prefill
