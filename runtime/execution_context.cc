#include "runtime/execution_context.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "cpu";
}

}  // namespace

absl::StatusOr<ExecutionContext> MakeExecutionContext(const std::string& device, int threads, int device_id,
                                                      MpiCommunicator& mpi) {
  ExecutionContext ctx;
  ctx.device = device;
  if (device == "cpu") {
    ctx.device_name = CpuModelName();
    ctx.backend = MakeCpuBackend(threads);
    ctx.comm = &mpi;
    return ctx;
  }
  if (device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device '", device, "' is not a device (valid: cpu, cuda)"));
  }
  (void)device_id;
  return absl::UnimplementedError(
      "--device cuda: this build has no CUDA backend (configure with -DPREFILL_CUDA=ON on a machine with nvcc)");
}

absl::StatusOr<BackendBuffer> UploadBytes(AttentionBackend& backend, const void* host, size_t bytes) {
  absl::StatusOr<BackendBuffer> buffer = backend.Allocate(bytes);
  if (!buffer.ok()) return buffer.status();
  if (bytes > 0) {
    if (absl::Status s = backend.CopyToBackend(buffer->get(), host, bytes); !s.ok()) return s;
  }
  return buffer;
}

}  // namespace prefill
