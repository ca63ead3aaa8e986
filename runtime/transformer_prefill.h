// Prefill of a Llama-family decoder over the context-parallel attention: each rank runs the
// dense math on its own rows (activations O(L/N)) on its LayerBackend, attention is the
// spine's dense ring or sparse CP attention on its AttentionBackend, and the rank holding the
// last token computes its logits. The same code runs on CPU ranks (MPI) and GPU ranks (NCCL):
// activations live in backend memory and only the KV cache and the logits come back to the host.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/layer_backend.h"
#include "parallel/communicator.h"
#include "parallel/cp_layout.h"
#include "parallel/sparse_cp_attention.h"
#include "runtime/model_config.h"
#include "runtime/prefill_workspace.h"
#include "runtime/prepared_model.h"

namespace prefill {

struct PrefillOptions {
  bool sparse = false;
  SparseOptions sparse_options;
  // The KV cache comes back to the host in this dtype, each layer's K and V downloaded while
  // the next layer computes; keep_kv false: it stays behind (no sink wants it).
  bool keep_kv = true;
  DType kv_dtype = DType::kBF16;
  // Optional: called after each layer's K and V downloads have started, with their host
  // memory, a share in its ownership (the consumer may outlive a failed prefill's output) and
  // the ticket they land by (AttentionBackend::WaitForDownloads): a consumer can take them
  // during the prefill.
  std::function<void(int layer, std::span<const std::byte> keys, std::span<const std::byte> values,
                     std::shared_ptr<const void> owner, int64_t ticket)>
      on_kv_layer;
};

// Host bytes of a request's KV cache on one rank: K and V of `layers` layers, `rows` tokens,
// in `dtype` (what the KV download allocates; AttentionBackend::ReserveHost/PrepareHost).
inline size_t KvCacheHostBytes(const ModelConfig& c, int64_t rows, size_t layers, DType dtype) {
  return layers * static_cast<size_t>(KvBytes(rows * c.num_kv_heads, c.head_dim, dtype));
}

struct LayerReport {
  CpAttentionStats attention;  // this rank's, incl. its selected and visible blocks
  // Timed where the work runs (AttentionBackend::NewPhaseTimer: CUDA events on the GPU).
  double gemm_seconds = 0;  // projections, norms, RoPE, MLP
  double attention_device_seconds =
      0;  // the attention call but its estimation: exchange waits, kernels
  double estimate_device_seconds = 0;  // sparse: pooling, the pooled keys' all-gather, estimation
};

struct PrefillOutput {
  std::vector<std::shared_ptr<void>>
      kv_storage;  // host memory (AllocateHost) holding keys and values
  DType kv_dtype = DType::kBF16;
  // Per layer: local rows [n, kv_heads, head_dim] in kv_dtype, after RoPE (empty unless keep_kv).
  std::vector<std::span<const std::byte>> keys, values;
  std::vector<float> last_logits;  // [vocab] on every rank
  std::vector<LayerReport> layers;
  double kv_host_alloc_seconds = 0;  // allocating kv_storage (pageable: ~0)
  double setup_seconds = 0;          // activations allocated and the embeddings uploaded
  double logits_seconds =
      0;  // final norm, lm_head of the last token, the logits shared (timed where they run)
  double kv_download_wait_seconds = 0;  // waiting at the end for downloads still in flight
  // Seconds per op over all layers, timed where the work runs (input_norm, qkv_proj, rope,
  // attention, kv_download, o_proj, post_norm, gate_up_proj, swiglu, down_proj, logits).
  std::map<std::string, double> op_seconds;
};

// Where the prefill computes: `comm` moves `attention`'s memory between the ranks of the group
// (MPI for the CPU backend, NCCL for CUDA); `weights` were prepared on these backends.
struct TransformerBackends {
  AttentionBackend& attention;
  LayerBackend& layers;
  Communicator& comm;
  const PreparedModel& weights;
  // The activations' memory, kept by the caller between requests; null: this call's own.
  PrefillWorkspace* workspace = nullptr;
};

// This rank's input, its rows in local order: token ids (the embeddings are gathered where the
// layers run; -1 marks padding, a row of zeros), or the input embeddings [local_len, hidden]
// on the host (e.g. vision tokens). Exactly one is given.
struct PrefillInput {
  std::vector<int32_t> token_ids;
  std::vector<float> embeddings;
};

// last_position: the token whose logits are wanted (the sequence may be padded past it;
// causal attention keeps padding from touching earlier tokens).
absl::StatusOr<PrefillOutput> RunTransformerPrefill(
    const TransformerBackends& on, const CpLayout& layout, const ModelConfig& config,
    const PrefillInput& input, int64_t last_position, const PrefillOptions& options);

}  // namespace prefill
