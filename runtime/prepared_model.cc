#include "runtime/prepared_model.h"

#include <algorithm>
#include <vector>

#include "kernels/status_macros.h"
#include "parallel/masked_attention_call.h"
#include "runtime/execution_context.h"
#include "runtime/rope.h"

namespace prefill {
namespace {

template <typename T>
absl::StatusOr<BackendBuffer> Upload(AttentionBackend& memory, const std::vector<T>& values) {
  if (values.empty()) return BackendBuffer(nullptr, [](void*) {});
  return UploadBytes(memory, values.data(), values.size() * sizeof(T));
}

// The fused projection's bias: q's, k's and v's end to end (Qwen2 has them; a model with none
// gets none). A model with some but not all gets zeros for the missing.
std::vector<float> QkvBias(const ModelConfig& c, const LayerWeights& l) {
  if (l.q_bias.empty() && l.k_bias.empty() && l.v_bias.empty()) return {};
  const size_t q_dim = size_t{static_cast<size_t>(c.num_heads)} * c.head_dim;
  const size_t kv_dim = size_t{static_cast<size_t>(c.num_kv_heads)} * c.head_dim;
  std::vector<float> bias(q_dim + 2 * kv_dim, 0.0f);
  std::copy(l.q_bias.begin(), l.q_bias.end(), bias.begin());
  std::copy(l.k_bias.begin(), l.k_bias.end(), bias.begin() + q_dim);
  std::copy(l.v_bias.begin(), l.v_bias.end(), bias.begin() + q_dim + kv_dim);
  return bias;
}

// Each kind of Linear a layer runs (bf16 -> bf16; fp32 or strided bf16 into the fp32
// residual; the one-row logits) once on `rows` rows of zeros, on layer 0's matrices.
absl::Status WarmUpLinears(const PreparedModel& m, AttentionBackend& memory, LayerBackend& layers,
                           int64_t rows) {
  if (m.layers.empty()) return absl::OkStatus();
  const PreparedLayer& l = m.layers[0];
  const DType bf16 = layers.activation_dtype();
  const int64_t wide = std::max(l.qkv.rows, l.gate_up.rows), hidden = l.o.rows;
  absl::StatusOr<BackendBuffer> x = memory.Allocate(rows * std::max(hidden, l.o.cols) *
                                                    sizeof(float)),
                                y = memory.Allocate(rows * wide * DTypeSize(bf16)),
                                residual = memory.Allocate(rows * hidden * sizeof(float)),
                                logits = memory.Allocate(m.lm_head.rows * sizeof(float));
  for (const auto* b : {&x, &y, &residual, &logits}) {
    if (!b->ok()) return b->status();
  }
  const LinearParams linears[] = {
      {x->get(), bf16, rows, &l.qkv, nullptr, y->get(), bf16},
      {x->get(), bf16, rows, &l.gate_up, nullptr, y->get(), bf16},
      {x->get(), DType::kF32, rows, &l.o, nullptr, residual->get(), DType::kF32,
       /*accumulate=*/true},
      {y->get(), bf16, rows, &l.down, nullptr, residual->get(), DType::kF32, /*accumulate=*/true,
       l.gate_up.rows},
      {x->get(), bf16, 1, &m.lm_head, nullptr, logits->get(), DType::kF32}};
  for (const LinearParams& p : linears) PREFILL_RETURN_IF_ERROR(layers.Linear(p));
  return memory.Synchronize();
}

// The attention kernel's first launch (module load, shared memory set-up: ~5 ms on an H100)
// on one block of zeros per head, in the output dtypes a request uses.
absl::Status WarmUpAttention(const ModelConfig& c, AttentionBackend& memory, DType dtype) {
  constexpr int kRows = 128;
  const int64_t q_values = int64_t{kRows} * c.num_heads * c.head_dim,
                kv_values = int64_t{kRows} * c.num_kv_heads * c.head_dim;
  std::vector<int32_t> positions(kRows), offsets(c.num_heads + 1), blocks(c.num_heads, 0);
  for (int i = 0; i < kRows; ++i) positions[i] = i;
  for (int h = 0; h <= c.num_heads; ++h) offsets[h] = h;
  absl::StatusOr<BackendBuffer> q = memory.Allocate(q_values * DTypeSize(dtype)),
                                kv = memory.Allocate(kv_values * DTypeSize(dtype)),
                                o = memory.Allocate(q_values * sizeof(float)),
                                lse = memory.Allocate(int64_t{kRows} * c.num_heads * sizeof(float)),
                                pos = Upload(memory, positions),
                                row_offsets = Upload(memory, offsets), ids = Upload(memory, blocks);
  for (const auto* b : {&q, &kv, &o, &lse, &pos, &row_offsets, &ids}) {
    if (!b->ok()) return b->status();
  }
  const CpAttentionShard shard{dtype,           q->get(),   kv->get(), kv->get(), c.num_heads,
                               c.num_kv_heads,  c.head_dim,
                               /*causal=*/true, 1.f};
  const auto* positions_in = static_cast<const int32_t*>(pos->get());
  const KvRows rows{kv->get(),  kv->get(),    int64_t{c.num_kv_heads} * c.head_dim,
                    c.head_dim, positions_in, 0,
                    kRows};
  for (DType out : {DType::kF32, dtype}) {
    PREFILL_RETURN_IF_ERROR(RunMaskedAttentionInBackend(
        memory, shard, positions_in, kRows, kRows, rows,
        static_cast<const int32_t*>(row_offsets->get()), static_cast<const int32_t*>(ids->get()),
        static_cast<float*>(o->get()), static_cast<float*>(lse->get()), out));
  }
  return memory.Synchronize();
}

}  // namespace

absl::StatusOr<PreparedModel> PrepareModel(const ModelConfig& c, const ModelWeights& w,
                                           AttentionBackend& memory, LayerBackend& layers) {
  PreparedModel m;
  m.layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    PreparedLayer& p = m.layers[i];
    PREFILL_ASSIGN_OR_RETURN(p.input_norm, Upload(memory, l.input_norm));
    PREFILL_ASSIGN_OR_RETURN(p.post_norm, Upload(memory, l.post_norm));
    PREFILL_ASSIGN_OR_RETURN(p.qkv_bias, Upload(memory, QkvBias(c, l)));
    const MatrixSource qkv[] = {l.q_proj, l.k_proj, l.v_proj}, gate_up[] = {l.gate_proj, l.up_proj};
    PREFILL_ASSIGN_OR_RETURN(p.qkv, layers.PrepareMatrix(qkv));
    PREFILL_ASSIGN_OR_RETURN(p.o, layers.PrepareMatrix(l.o_proj));
    PREFILL_ASSIGN_OR_RETURN(p.gate_up, layers.PrepareMatrix(gate_up));
    PREFILL_ASSIGN_OR_RETURN(p.down, layers.PrepareMatrix(l.down_proj));
  }
  PREFILL_ASSIGN_OR_RETURN(m.final_norm, Upload(memory, w.final_norm));
  PREFILL_ASSIGN_OR_RETURN(m.inv_freq, Upload(memory, RopeInverseFrequencies(c)));
  PREFILL_ASSIGN_OR_RETURN(m.lm_head, layers.PrepareMatrix(w.output_embedding()));
  if (w.lm_head.data)
    PREFILL_ASSIGN_OR_RETURN(m.embed_tokens, layers.PrepareMatrix(w.embed_tokens));
  if (layers.warm_up_rows() > 0) {
    PREFILL_RETURN_IF_ERROR(WarmUpLinears(m, memory, layers, layers.warm_up_rows()));
    PREFILL_RETURN_IF_ERROR(WarmUpAttention(c, memory, layers.activation_dtype()));
  }
  return m;
}

}  // namespace prefill
