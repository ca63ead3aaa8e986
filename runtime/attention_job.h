// One context-parallel attention layer over a synthetic workload or a user's Q/K/V file:
// what `prefill attention` runs. Every rank calls RunAttentionJob with the same config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"
#include "nlohmann/json.hpp"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"
#include "parallel/mpi_communicator.h"
#include "parallel/sparse_balance_plan.h"
#include "runtime/synthetic_workload.h"

namespace prefill {

struct AttentionJobConfig {
  std::string workload = "needle";  // ignored when qkv_path is set
  std::string qkv_path;             // safetensors with q [L, H, D], k and v [L, Hkv, D]
  int64_t seq_len = 32768;
  int heads = 8;
  int kv_heads = 2;
  int head_dim = 64;
  uint64_t seed = 0;
  double concentration = 1.5;  // synthetic workloads: multiplies every structured logit
  bool slash_heads = false;  // synthetic workloads: every 4th head a slash head (docs/workloads.md)
  DType dtype = DType::kF32;  // storage of synthetic Q/K/V
  AttentionMode mode = AttentionMode::kSparse;
  LayoutKind layout = LayoutKind::kZigzag;
  bool causal = true;
  int block = kDefaultBlockSize;
  MaskEstimator estimator = MaskEstimator::kRoundRobin;
  int stride = kDefaultStride;
  float tau = kDefaultTau;
  bool keep_sink = true;
  bool keep_recent = true;
  // Sparse on several ranks: at this estimated density (or more) the dense ring runs instead
  // (SparseOptions::dense_above); above 1: never.
  double dense_above = 0.9;
  // Sparse on several ranks: auto moves mask entries to the ranks holding their KV blocks
  // until the ranks compute about as many (SparseOptions::balance); off: each its own.
  BalanceMode balance = BalanceMode::kAuto;
  int threads = 0;
  std::string device = "cpu";  // cpu, or cuda (one GPU per local rank, NCCL between them)
  int device_id = -1;          // -1: the local rank's GPU
  std::string comm = "auto";   // cuda: auto, nccl or host-staged (MakeExecutionContext)
  bool check = false;
  std::string out_path;
};

struct RankStats {
  double estimate_seconds = 0, exchange_seconds = 0, attention_seconds = 0, total_seconds = 0;
  int64_t kv_bytes_sent = 0, selected_blocks = 0, visible_blocks = 0;
  // After balancing: entries computed by this rank, Q/partial bytes it sent, moves (all ranks).
  int64_t computed_blocks = 0, balance_bytes_sent = 0, balance_moves = 0;
  // GPU memory high-water marks of the rank's process (-1 on the CPU): the device's used
  // memory (cudaMemGetInfo sampled at each backend allocation) and the backend's own buffers.
  int64_t device_memory_peak_bytes = -1, backend_memory_peak_bytes = -1;
  double exchange_exposed_seconds = 0;  // CpAttentionStats::exchange_exposed_seconds
};

struct AttentionJobReport {
  AttentionJobConfig config;  // with seq_len/heads/... as read from the file
  int world_size = 0;
  std::string device = "cpu";
  std::string device_name;
  std::string transport;                  // what moved backend memory: mpi, nccl or host-staged
  int64_t device_memory_used_bytes = -1;  // this rank's GPU memory in use after the job; -1 on CPU
  double density = 1.0;
  int64_t kv_bytes_sent_total = 0;
  int64_t kv_bytes_dense_ring = 0;
  int64_t balance_bytes_sent_total = 0;  // Q rows, mask rows, partials (not KV)
  std::vector<RankStats> ranks;
  // With --check, against fp64 dense attention of the gathered inputs.
  bool checked = false;
  double max_abs_err = 0, rel_l2_err = 0;
  // The needle workload: the fraction of (head, question block) rows whose mask holds the
  // needle's block (1 for dense).
  double needle_recall = -1;
  bool ran_dense = false;  // sparse mode ran the dense ring (the density reached dense_above)

  nlohmann::json ToJson() const;
  std::string Summary() const;  // a few readable lines for rank 0 to print
};

// Checks the flags that do not need the input file; InvalidArgument names the flag.
absl::Status ValidateAttentionConfig(const AttentionJobConfig& config, int world_size);

// `comm` carries host-side agreement; the device's communicator is made from it.
absl::StatusOr<AttentionJobReport> RunAttentionJob(const AttentionJobConfig& config,
                                                   MpiCommunicator& comm);

}  // namespace prefill
