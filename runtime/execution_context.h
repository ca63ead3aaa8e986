// ExecutionContext: the backend a job computes on and the communicator that moves its
// backend memory: the CPU backend with MPI, or the CUDA backend with NCCL (one GPU per
// local rank) or, where ranks share a GPU, with MPI through host staging (for testing N ranks
// on one GPU). Host-side agreement (statuses, reports, checks) always goes over MPI.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/layer_backend.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "runtime/kv_sink.h"

namespace prefill {

// High-water marks of device memory since the process started (CUDA: kernels/cuda/
// device_memory_ledger.h); -1 on the CPU.
struct DeviceMemoryPeakBytes {
  int64_t device_used =
      -1;  // the device's used memory (cudaMemGetInfo), sampled at each allocation
  int64_t backend_held = -1;  // what the attention backend itself held: buffers + scratch
};

struct ExecutionContext {
  std::string device;       // "cpu" or "cuda"
  std::string transport;    // what moves backend memory: "mpi", "nccl" or "host-staged"
  std::string device_name;  // e.g. the GPU's name; the CPU's model
  std::unique_ptr<AttentionBackend> backend;
  std::unique_ptr<LayerBackend> layers;  // the model's dense math, on backend's memory and stream
  std::unique_ptr<Communicator> owned_comm;  // the GPU ranks' communicator, when there is one
  Communicator* comm = nullptr;              // moves backend memory: owned_comm or the MPI one
  // A communicator for backend memory over the ranks of `group` (a sub-communicator of the
  // MPI world this context was made on), of the same transport as `comm`; empty on the CPU,
  // where `group` itself moves backend memory. Collective over `group`.
  std::function<absl::StatusOr<std::unique_ptr<Communicator>>(MpiCommunicator& group)>
      device_comm_for;
  // Bytes of device memory in use (CUDA: cudaMemGetInfo); -1 on the CPU.
  std::function<int64_t()> device_memory_used = [] { return int64_t{-1}; };
  std::function<DeviceMemoryPeakBytes()> device_memory_peak = [] {
    return DeviceMemoryPeakBytes{};
  };
  // {free, total} bytes of the device (cudaMemGetInfo); {-1, -1} on the CPU.
  std::function<std::pair<int64_t, int64_t>()> device_memory = [] {
    return std::pair<int64_t, int64_t>{-1, -1};
  };
  // Where `--kv-target` caches go: set by launch/ (the UCX sink of runtime/kvhandoff).
  RemoteKvSinkFactory remote_kv_sink;
};

// device: "cpu" or "cuda". device_id < 0 picks the local rank's GPU. comm (--comm, cuda):
// how GPU ranks move device memory: "nccl" (one GPU per rank), "host-staged" (MPI through host
// staging: ranks sharing a GPU, correct but not fast) or "auto" (nccl unless the node's ranks
// outnumber its GPUs). InvalidArgument for another comm; Unimplemented when the build has no
// CUDA backend; Unavailable when no GPU can be used. Collective over mpi on cuda.
absl::StatusOr<ExecutionContext> MakeExecutionContext(const std::string& device, int threads,
                                                      int device_id, MpiCommunicator& mpi,
                                                      const std::string& comm = "auto");

// Uploads host bytes into a new backend buffer.
absl::StatusOr<BackendBuffer> UploadBytes(AttentionBackend& backend, const void* host,
                                          size_t bytes);

}  // namespace prefill
