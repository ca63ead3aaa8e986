#include "launch/request_flags.h"

#include "launch/enum_flags.h"

namespace prefill {

void AddRequestFlags(CLI::App& cmd, PrefillRequestOptions& d) {
  AddEnumOption(cmd, "--mode", d.mode, "sparse or dense (a request's \"mode\" overrides)",
                ParseAttentionMode, AttentionModeName);
  AddEnumOption(cmd, "--layout", d.layout, "contiguous or zigzag", ParseLayoutKind, LayoutKindName);
  cmd.add_option("--block", d.block, "Block size of the mask")->capture_default_str();
  AddEnumOption(cmd, "--estimator", d.estimator,
                "Mask estimator: rr or rr+heavy (docs/rrattention.md)", ParseMaskEstimator,
                MaskEstimatorName);
  cmd.add_option("--stride", d.stride, "Estimation stride")->capture_default_str();
  cmd.add_option("--tau", d.tau, "Attention mass the mask keeps (a request's \"tau\" overrides)")
      ->capture_default_str();
  cmd.add_option("--dense-above", d.dense_above,
                 "Several ranks: a layer whose estimated density reaches this runs the dense ring "
                 "(above 1: never)")
      ->capture_default_str();
  AddEnumOption(cmd, "--balance", d.balance,
                "Several ranks, sparse: auto evens each layer's work by moving mask entries to the "
                "rank holding their KV blocks; off",
                ParseBalanceMode, BalanceModeName);
  cmd.add_option("--threads", d.threads,
                 "Threads per rank (0: the node's cores / ranks on the node)")
      ->capture_default_str();
  cmd.add_option("--memory-per-rank", d.memory_per_rank,
                 "Bytes one rank may hold, larger requests are refused up front: on cpu its host "
                 "memory (0: the node's available memory / its ranks), on cuda the GPU memory a "
                 "request adds to the weights (0: the GPU's free memory)")
      ->capture_default_str();
  AddEnumOption(cmd, "--kv-dtype", d.kv_dtype, "KV cache storage: bf16, f16, f32", ParseDType,
                DTypeName);
  cmd.add_option(
         "--kv-timeout", d.kv_timeout,
         "Seconds without progress (connect, send, acknowledgement) before a KV handoff fails")
      ->capture_default_str();
}

}  // namespace prefill
