// AgreeOnStatus: one collective turns per-rank outcomes into one job-wide outcome.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/status_macros.h"
#include "parallel/communicator.h"

namespace prefill {
namespace {

// Fixed-size record so one AllGather carries every rank's verdict.
struct StatusRecord {
  int32_t code;
  char message[4092];
};

}  // namespace

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& local) {
  StatusRecord mine{};
  mine.code = static_cast<int32_t>(local.code());
  const std::string text(local.message());
  std::memcpy(mine.message, text.data(), std::min(text.size(), sizeof mine.message - 1));
  std::vector<StatusRecord> all(comm.size());
  PREFILL_RETURN_IF_ERROR(comm.AllGather(&mine, sizeof mine, all.data()));
  for (const StatusRecord& r : all) {
    if (r.code != 0) return absl::Status(static_cast<absl::StatusCode>(r.code), r.message);
  }
  return absl::OkStatus();
}

}  // namespace prefill
