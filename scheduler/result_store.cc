#include "scheduler/result_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/atomic_file.h"

namespace prefill {

namespace fs = std::filesystem;

absl::StatusOr<ResultStore> ResultStore::Open(const std::string& out_dir) {
  std::error_code ec;
  for (const char* sub : {"records", "kv"}) {
    fs::create_directories(fs::path(out_dir) / sub, ec);
    if (ec)
      return absl::PermissionDeniedError(
          absl::StrCat(out_dir, "/", sub, ": cannot create: ", ec.message()));
  }
  for (const char* sub : {"records", "kv"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(out_dir) / sub, ec)) {
      const std::string name = entry.path().filename().string();
      if (absl::StrContains(name, ".tmp.") || absl::EndsWith(name, ".partial"))
        fs::remove_all(entry.path(), ec);
    }
  }
  return ResultStore(out_dir);
}

std::string ResultStore::KvDir(const std::string& id) const {
  return (fs::path(dir_) / "kv" / id).string();
}

absl::Status ResultStore::WriteRecord(const nlohmann::json& record) const {
  const std::string id = record.at("id").get<std::string>();
  return WriteFileAtomically((fs::path(dir_) / "records" / (id + ".json")).string(),
                             record.dump() + "\n");
}

std::map<std::string, nlohmann::json> ResultStore::ReadRecords() const {
  std::map<std::string, nlohmann::json> records;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(dir_) / "records", ec)) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("id") && j["id"].is_string())
      records[j["id"]] = j;
  }
  return records;
}

bool ResultStore::IsDone(const std::string& id,
                         const std::map<std::string, nlohmann::json>& records) const {
  auto it = records.find(id);
  if (it == records.end() || it->second.value("status", "") != "ok") return false;
  return fs::exists(fs::path(KvDir(id)) / "index.json");
}

absl::Status ResultStore::RewriteResults(const std::vector<std::string>& ids) const {
  const std::map<std::string, nlohmann::json> records = ReadRecords();
  std::string text;
  for (const std::string& id : ids) {
    if (auto it = records.find(id); it != records.end()) text += it->second.dump() + "\n";
  }
  return WriteFileAtomically((fs::path(dir_) / "results.jsonl").string(), text);
}

}  // namespace prefill
