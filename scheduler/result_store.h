// ResultStore: a batch job's output folder, safe to crash in and to rerun.
//   records/<id>.json   one result record per request, written to a temporary name and
//                       renamed: a record is whole or absent;
//   kv/<id>/            the request's KV cache (published whole by the prefill);
//   results.jsonl       every record in manifest order, rebuilt atomically from records/.
// A rerun trusts a request as done only when its record says "ok" and its KV cache exists.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace prefill {

class ResultStore {
 public:
  // Creates the folders; removes what an interrupted run left half-written.
  static absl::StatusOr<ResultStore> Open(const std::string& out_dir);

  std::string KvDir(const std::string& id) const;
  absl::Status WriteRecord(const nlohmann::json& record) const;  // record["id"] names it
  std::map<std::string, nlohmann::json> ReadRecords() const;     // unreadable records are skipped
  bool IsDone(const std::string& id, const std::map<std::string, nlohmann::json>& records) const;
  // results.jsonl: the records of `ids` that exist, in that order.
  absl::Status RewriteResults(const std::vector<std::string>& ids) const;

 private:
  explicit ResultStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace prefill
