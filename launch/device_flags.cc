#include "launch/device_flags.h"

namespace prefill {

void AddDeviceFlags(CLI::App& cmd, std::string& device, int& device_id, std::string& comm) {
  cmd.add_option("--device", device, "cpu, or cuda (one GPU per local rank; bf16 GEMMs on cuBLAS)")
      ->capture_default_str();
  cmd.add_option("--device-id", device_id, "GPU ordinal (-1: the local rank's)")
      ->capture_default_str();
  cmd.add_option("--comm", comm,
                 "cuda: how ranks exchange device memory: nccl (one GPU per rank), host-staged "
                 "(MPI through host "
                 "memory: ranks sharing a GPU, for testing N ranks on one GPU; slow), auto (nccl "
                 "unless the node's "
                 "ranks outnumber its GPUs)")
      ->check(CLI::IsMember({"auto", "nccl", "host-staged"}))
      ->capture_default_str();
}

}  // namespace prefill
