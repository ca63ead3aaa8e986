#include "runtime/execution_context.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

#ifdef PREFILL_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_layer_backend.h"
#include "kernels/cuda/device_memory_ledger.h"
#include "parallel/mpi_check.h"
#include "parallel/nccl/host_staged_communicator.h"
#include "parallel/nccl/nccl_communicator.h"
#endif

namespace prefill {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "cpu";
}

enum class GpuTransport { kAuto, kNccl, kHostStaged };

absl::StatusOr<GpuTransport> ParseGpuTransport(const std::string& name) {
  if (name == "auto") return GpuTransport::kAuto;
  if (name == "nccl") return GpuTransport::kNccl;
  if (name == "host-staged") return GpuTransport::kHostStaged;
  return absl::InvalidArgumentError(
      absl::StrCat("--comm '", name, "' is not a transport (valid: auto, nccl, host-staged)"));
}

#ifdef PREFILL_HAVE_CUDA
// Ranks of this node (collective over mpi).
absl::StatusOr<int> RanksOnThisNode(MpiCommunicator& mpi) {
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(
      MPI_Comm_split_type(mpi.comm(), MPI_COMM_TYPE_SHARED, mpi.rank(), MPI_INFO_NULL, &node));
  int size = 1;
  const int rc = MPI_Comm_size(node, &size);
  MPI_Comm_free(&node);
  MPI_CHECK(rc);
  return size;
}

// The GPU ranks' communicator: NCCL, or MPI through host staging where ranks share a GPU.
absl::StatusOr<std::unique_ptr<Communicator>> MakeGpuCommunicator(MpiCommunicator& mpi,
                                                                  GpuTransport transport,
                                                                  int device, cudaStream_t stream) {
  if (transport == GpuTransport::kHostStaged) {
    absl::StatusOr<std::unique_ptr<MpiCommunicator>> own = MpiCommunicator::Create(mpi.comm());
    if (!own.ok()) return own.status();
    absl::StatusOr<std::unique_ptr<HostStagedCommunicator>> staged =
        HostStagedCommunicator::Create(*std::move(own), device, stream);
    if (!staged.ok()) return staged.status();
    return std::unique_ptr<Communicator>(*std::move(staged));
  }
  NcclOptions nccl_options;
  nccl_options.mpi_comm = mpi.comm();
  nccl_options.device_id = device;
  nccl_options.compute_stream = stream;
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> nccl = NcclCommunicator::Create(nccl_options);
  if (!nccl.ok()) return nccl.status();
  return std::unique_ptr<Communicator>(*std::move(nccl));
}
#endif

}  // namespace

absl::StatusOr<ExecutionContext> MakeExecutionContext(const std::string& device, int threads,
                                                      int device_id, MpiCommunicator& mpi,
                                                      const std::string& comm) {
  absl::StatusOr<GpuTransport> transport = ParseGpuTransport(comm);
  if (!transport.ok()) return transport.status();
  ExecutionContext ctx;
  ctx.device = device;
  if (device == "cpu") {
    ctx.device_name = CpuModelName();
    ctx.transport = "mpi";
    ctx.backend = MakeCpuBackend(threads);
    ctx.layers = MakeCpuLayerBackend(threads);
    ctx.comm = &mpi;
    return ctx;
  }
  if (device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device '", device, "' is not a device (valid: cpu, cuda)"));
  }
#ifdef PREFILL_HAVE_CUDA
  // First, while every rank is here: a rank that returns early below must not leave the
  // others in this collective.
  absl::StatusOr<int> node_ranks = RanksOnThisNode(mpi);
  if (!node_ranks.ok()) return node_ranks.status();
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat("rank ", mpi.rank(),
                                               ": --device cuda but no usable GPU (",
                                               cudaGetErrorString(cudaGetLastError()), ")"));
  }
  CudaBackendOptions backend_options;
  backend_options.device_id = ChooseLocalDevice(device_id, count);
  absl::StatusOr<std::unique_ptr<AttentionBackend>> backend = CreateCudaBackend(backend_options);
  if (!backend.ok()) return backend.status();
  absl::StatusOr<std::unique_ptr<LayerBackend>> layers = CreateCudaLayerBackend(**backend);
  if (!layers.ok()) return layers.status();
  cudaDeviceProp props{};
  cudaGetDeviceProperties(&props, backend_options.device_id);
  ctx.device_name = props.name;
  // NCCL refuses two ranks on one device.
  if (*transport == GpuTransport::kAuto) {
    transport = *node_ranks > count ? GpuTransport::kHostStaged : GpuTransport::kNccl;
  }
  absl::StatusOr<std::unique_ptr<Communicator>> gpu_comm =
      MakeGpuCommunicator(mpi, *transport, backend_options.device_id, CudaBackendStream(**backend));
  if (!gpu_comm.ok()) return gpu_comm.status();
  ctx.transport = *transport == GpuTransport::kHostStaged ? "host-staged" : "nccl";
  ctx.device_comm_for = [transport = *transport, device = backend_options.device_id,
                         stream = CudaBackendStream(**backend)](MpiCommunicator& group) {
    return MakeGpuCommunicator(group, transport, device, stream);
  };
  ctx.backend = std::move(*backend);
  ctx.layers = std::move(*layers);
  ctx.owned_comm = std::move(*gpu_comm);
  ctx.comm = ctx.owned_comm.get();
  ctx.device_memory_used = [] {
    size_t free_bytes = 0, total_bytes = 0;
    return cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess
               ? static_cast<int64_t>(total_bytes - free_bytes)
               : int64_t{-1};
  };
  ctx.device_memory = [] {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess)
      return std::pair<int64_t, int64_t>{-1, -1};
    return std::pair<int64_t, int64_t>{static_cast<int64_t>(free_bytes),
                                       static_cast<int64_t>(total_bytes)};
  };
  ctx.device_memory_peak = [] {
    const cuda::DeviceMemoryPeak peak = cuda::GetDeviceMemoryPeak();
    return DeviceMemoryPeakBytes{peak.device_used_peak_bytes, peak.held_peak_bytes};
  };
  return ctx;
#else
  (void)device_id;
  return absl::UnimplementedError(
      "--device cuda: this build has no CUDA backend (configure with -DPREFILL_CUDA=ON on a "
      "machine with nvcc)");
#endif
}

absl::StatusOr<BackendBuffer> UploadBytes(AttentionBackend& backend, const void* host,
                                          size_t bytes) {
  absl::StatusOr<BackendBuffer> buffer = backend.Allocate(bytes);
  if (!buffer.ok()) return buffer.status();
  if (bytes > 0) {
    PREFILL_RETURN_IF_ERROR(backend.CopyToBackend(buffer->get(), host, bytes));
  }
  return buffer;
}

}  // namespace prefill
