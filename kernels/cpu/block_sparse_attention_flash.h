// The block-sparse flash attention forward, written once over an instruction-set traits
// struct `Isa` and instantiated by block_sparse_attention_avx512.cc (AVX-512 intrinsics) and
// block_sparse_attention_portable.cc (GCC vector extensions, no target flags). Private to
// kernels/cpu: the entry (block_sparse_attention.cc) validates and picks the instantiation.
//
// Queries live in vector lanes. A work item is one (query head, query block). Its Q block is
// packed once, transposed and prescaled to log2 units: q_t [head_dim][bp], bp = block_size
// rounded up to whole vectors. Per selected KV block, K and V are converted to fp32 rows
// [block][head_dim] and
//   scores [key][bp]       = K q_t                     (log2 units; one vector = 16 queries)
//   p = exp2(scores - m),  m and l the running max and sum of each query lane
//   o_t [head_dim][bp]     = rescale * o_t + V^T p
// so neither K nor V is ever transposed, the softmax statistics are plain vectors (no
// horizontal reductions), and Q and O are transposed once per work item, not per KV block.
//
// Isa provides: Vec, kLanes (16), kTileRows and kTileVecs (register block: rows broadcast from
// K or V times vectors of queries), Zero, Set1, Load, Store, Add, Sub, Mul,
// Max(a, b) (b where either is NaN, as x86 max does), Fma(a, b, c) = a * b + c,
// RoundToNearest, ScaleByPow2(x, n) = x * 2^n for integral n, ZeroWhereLess(v, x, bound)
// (0 where x < bound, v elsewhere, NaN x included), HideLaterKeys(s, q_pos, k_pos) (-inf where
// k_pos > q_pos), ConvertRow(dtype, src, dst, n) (n a multiple of kLanes).
//
// NaN inputs propagate to O and LSE of the rows that see them: a poisoned buffer upstream
// shows instead of being averaged away.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numbers>
#include <utility>

#include "kernels/attention_params.h"
#include "kernels/cpu/parallel_for.h"

namespace prefill::cpu::flash {

// 2^f on [-1/2, 1/2] as 1 + f * poly(f): the Cephes exp2f coefficients, highest degree first.
// Evaluated in fp32 the relative error stays below 1.7 ulp on the whole range we use.
inline constexpr float kExp2Poly[] = {1.535336188319500e-4f,
                                      1.339887440266574e-3f,
                                      9.618437357674640e-3f,
                                      5.550332471162809e-2f,
                                      2.402264791363012e-1f,
                                      6.931472028550421e-1f,
                                      1.0f};

// 2^x for x <= 0, exactly 0 below -126 (so masked scores and empty rows give exact zeros,
// never denormals), NaN for NaN. Both Isa use this one algorithm, so the two paths agree to
// rounding.
template <class Isa>
inline typename Isa::Vec Exp2(typename Isa::Vec x) {
  using Vec = typename Isa::Vec;
  const Vec clamped = Isa::Max(Isa::Set1(-126.f), x);  // x second: NaN stays NaN
  const Vec whole = Isa::RoundToNearest(clamped);
  const Vec frac = Isa::Sub(clamped, whole);  // in [-1/2, 1/2]
  Vec poly = Isa::Set1(kExp2Poly[0]);
  for (int i = 1; i < static_cast<int>(std::size(kExp2Poly)); ++i) {
    poly = Isa::Fma(poly, frac, Isa::Set1(kExp2Poly[i]));
  }
  return Isa::ZeroWhereLess(Isa::ScaleByPow2(poly, whole), x, -126.f);
}

template <class Fn, int... I>
inline void DispatchCount(int n, Fn&& fn, std::integer_sequence<int, I...>) {
  ((n == I + 1 ? fn(std::integral_constant<int, I + 1>{}) : void()), ...);
}

// Calls fn(std::integral_constant<int, n>{}) for a runtime n in [1, Max]: selects the
// register-blocked variant of a micro-kernel for a tile at the edge of a block.
template <int Max, class Fn>
inline void WithStaticCount(int n, Fn&& fn) {
  DispatchCount(n, fn, std::make_integer_sequence<int, Max>{});
}

// Sizes shared by every work item of one call.
struct Geometry {
  int block = 0;  // rows of a query block and of a KV block
  int bp = 0;     // block rounded up to whole vectors: the row length of lane-major tiles
  int head_dim = 0;
  float log2_scale = 0.f;  // scale * log2(e): scores come out in log2 units for exp2
};

// One work item's scratch. Lane-major arrays ([x][bp]) hold query i in lane i % 16 of vector
// i / 16; lanes past `block` are padding whose results are never written out.
struct ItemTiles {
  float* q_t;          // [head_dim][bp] Q^T, prescaled by log2_scale; padding lanes 0
  float* o_t;          // [head_dim][bp] unnormalised O^T
  float* scores;       // [block][bp] one KV block's scores, then their exp2
  float* keys;         // [block][head_dim] the KV block's K in fp32
  float* values;       // [block][head_dim] the KV block's V in fp32
  float* running_max;  // [bp] max score seen so far (log2 units), -inf before any visible key
  float* block_max;    // [bp] running_max updated with the current block
  float* running_sum;  // [bp] sum of exp2(score - running_max)
  float* rescale;      // [bp] exp2(old max - new max): the factor o_t and the sum take
  int32_t* q_pos;      // [bp] query positions; padding lanes INT32_MAX (see every key)
};

// 64-byte aligned storage for ItemTiles, grown on demand; one per thread, kept across calls.
class ItemScratch {
 public:
  ItemTiles Carve(const Geometry& g) {
    const size_t lane_major = static_cast<size_t>(g.head_dim) * g.bp;
    const size_t row_major = static_cast<size_t>(g.block) * g.head_dim;
    const size_t floats = 2 * lane_major + static_cast<size_t>(g.block) * g.bp + 2 * row_major +
                          5 * static_cast<size_t>(g.bp);
    float* base = Reserve(floats);
    ItemTiles t;
    t.q_t = base;
    t.o_t = t.q_t + lane_major;
    t.scores = t.o_t + lane_major;
    t.keys = t.scores + static_cast<size_t>(g.block) * g.bp;
    t.values = t.keys + row_major;
    t.running_max = t.values + row_major;
    t.block_max = t.running_max + g.bp;
    t.running_sum = t.block_max + g.bp;
    t.rescale = t.running_sum + g.bp;
    t.q_pos = reinterpret_cast<int32_t*>(t.rescale + g.bp);
    return t;
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  float* Reserve(size_t floats) {
    if (floats > capacity_) {
      const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      capacity_ = floats;
    }
    return data_.get();
  }
  std::unique_ptr<float[], Free> data_;
  size_t capacity_ = 0;
};

// scores[r][lanes] = keys[r] . q_t[:, lanes] for R keys (rows key_stride floats apart) and C
// vectors of queries, held in R x C accumulators; k_pos non-null (a partially visible block)
// hides later keys. Folds the tile's column maxima into block_max.
template <class Isa, int R, int C>
void ScoreTile(const float* keys, int64_t key_stride, const float* q_t, const int32_t* k_pos,
               const int32_t* q_pos, int head_dim, int64_t bp, float* scores, float* block_max) {
  using Vec = typename Isa::Vec;
  constexpr int L = Isa::kLanes;
  Vec acc[R][C];
  for (auto& row : acc) {
    for (Vec& a : row) a = Isa::Zero();
  }
  for (int d = 0; d < head_dim; ++d) {
    Vec q[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) q[c] = Isa::Load(q_t + d * bp + c * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec k = Isa::Set1(keys[r * key_stride + d]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = Isa::Fma(k, q[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
    Vec col_max = Isa::Load(block_max + c * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      Vec s = acc[r][c];
      if (k_pos != nullptr) s = Isa::HideLaterKeys(s, q_pos + c * L, k_pos[r]);
      Isa::Store(scores + r * bp + c * L, s);
      col_max = Isa::Max(col_max, s);
    }
    Isa::Store(block_max + c * L, col_max);
  }
}

// o_t[rows][lanes] = rescale * o_t + sum_j values[j][rows] * probs[j][lanes] for R rows of
// O^T (head dims) and C vectors of queries; value rows are value_stride floats apart.
template <class Isa, int R, int C>
void AccumulateTile(const float* probs, const float* values, const float* rescale, int keys,
                    int64_t value_stride, int64_t bp, float* o_t) {
  using Vec = typename Isa::Vec;
  constexpr int L = Isa::kLanes;
  Vec acc[R][C];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
    const Vec factor = Isa::Load(rescale + c * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][c] = Isa::Mul(Isa::Load(o_t + r * bp + c * L), factor);
  }
  for (int j = 0; j < keys; ++j) {
    Vec p[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) p[c] = Isa::Load(probs + j * bp + c * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec v = Isa::Set1(values[j * value_stride + r]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = Isa::Fma(v, p[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) Isa::Store(o_t + r * bp + c * L, acc[r][c]);
  }
}

// Calls tile.operator()<R', C'>(row0, vec0) over a rows x vecs grid in register blocks of
// R' x C' = kTileRows x kTileVecs (smaller at the edges only). Vectors outermost: one strip
// of query vectors stays in L1 while the rows stream past it.
template <class Isa, class Tile>
void ForEachRegisterBlock(int rows, int vecs, Tile&& tile) {
  constexpr int R = Isa::kTileRows, C = Isa::kTileVecs;
  for (int vec0 = 0; vec0 < vecs; vec0 += C) {
    for (int row0 = 0; row0 < rows; row0 += R) {
      WithStaticCount<C>(std::min(C, vecs - vec0), [&](auto c) {
        WithStaticCount<R>(std::min(R, rows - row0), [&](auto r) {
          tile.template operator()<decltype(r)::value, decltype(c)::value>(row0, vec0);
        });
      });
    }
  }
}

// Which keys of a KV block the query block can see under causal masking.
enum class Visibility { kNone, kPartial, kAll };

inline Visibility ClassifyBlock(const int32_t* k_pos, int block, int32_t q_min, int32_t q_max) {
  const auto [k_min, k_max] = std::minmax_element(k_pos, k_pos + block);
  if (*k_min > q_max) return Visibility::kNone;
  return *k_max <= q_min ? Visibility::kAll : Visibility::kPartial;
}

// One (query head, query block): online softmax over the selected KV blocks in mask order.
template <class Isa>
class WorkItem {
 public:
  using Vec = typename Isa::Vec;
  static constexpr int L = Isa::kLanes;

  WorkItem(const AttentionParams& p, const Geometry& g, ItemTiles t, int head, int q_block)
      : p_(p), g_(g), t_(t), head_(head), kv_head_(head / (p.hq / p.hkv)), q_block_(q_block) {}

  void Run() {
    const int32_t mask_row = head_ * (p_.lq / g_.block) + q_block_;
    const int32_t begin = p_.mask_row_offsets[mask_row], end = p_.mask_row_offsets[mask_row + 1];
    // A row without blocks (common in sparse masks, e.g. a remote-only pass) skips packing Q.
    if (begin == end) return WriteEmptyOutputs();
    PrefetchKvBlock(p_.mask_kv_blocks[begin]);
    PackQueries();
    ResetAccumulators();
    for (int32_t e = begin; e < end; ++e) {
      if (e + 1 < end) PrefetchKvBlock(p_.mask_kv_blocks[e + 1]);
      ProcessKvBlock(p_.mask_kv_blocks[e]);
    }
    WriteOutputs();
  }

 private:
  int vecs() const { return g_.bp / L; }

  // Rows this far ahead are prefetched: Q and O rows are hq * head_dim apart, a stride the
  // hardware prefetchers follow poorly, and each is touched once per call (a miss per line).
  static constexpr int kRowsAhead = 8;

  const char* QRow(int i) const {
    const int64_t q_row = static_cast<int64_t>(q_block_) * g_.block + i;
    return static_cast<const char*>(p_.q) +
           (q_row * p_.q_row_stride + head_ * p_.q_head_stride) * DTypeSize(p_.dtype);
  }

  // Index of row i's (query, head) in O (times head_dim) and in LSE.
  int64_t OutRow(int i) const {
    return (static_cast<int64_t>(q_block_) * g_.block + i) * p_.hq + head_;
  }
  float* ORow(int i) const { return static_cast<float*>(p_.o) + OutRow(i) * g_.head_dim; }

  // rw = 1 prefetches for writing (O rows), 0 for reading (Q rows).
  template <int rw>
  static void PrefetchRow(const void* row, size_t bytes) {
    for (size_t b = 0; b < bytes; b += 64)
      __builtin_prefetch(static_cast<const char*>(row) + b, rw);
  }

  // Converts the Q rows into a row-major staging tile first (the free K tile), then writes
  // q_t column by column: strided loads and contiguous stores, rather than a scalar scatter.
  void PackQueries() {
    const size_t row_bytes = g_.head_dim * DTypeSize(p_.dtype);
    float* stage = t_.keys;  // free until the first KV block
    for (int i = 0; i < std::min(kRowsAhead, g_.block); ++i) PrefetchRow<0>(QRow(i), row_bytes);
    for (int i = 0; i < g_.block; ++i) {
      if (i + kRowsAhead < g_.block) PrefetchRow<0>(QRow(i + kRowsAhead), row_bytes);
      Isa::ConvertRow(p_.dtype, QRow(i), stage + static_cast<size_t>(i) * g_.head_dim, g_.head_dim);
      t_.q_pos[i] = p_.causal ? p_.q_pos[static_cast<int64_t>(q_block_) * g_.block + i] : 0;
    }
    for (int d = 0; d < g_.head_dim; ++d) {
      float* column = t_.q_t + d * g_.bp;
      for (int i = 0; i < g_.block; ++i) column[i] = stage[i * g_.head_dim + d] * g_.log2_scale;
      std::fill(column + g_.block, column + g_.bp, 0.f);
    }
    std::fill(t_.q_pos + g_.block, t_.q_pos + g_.bp, INT32_MAX);
    const auto [q_min, q_max] = std::minmax_element(t_.q_pos, t_.q_pos + g_.block);
    q_min_ = *q_min;
    q_max_ = *q_max;
  }

  void ResetAccumulators() {
    std::fill_n(t_.o_t, static_cast<size_t>(g_.head_dim) * g_.bp, 0.f);
    std::fill_n(t_.running_max, g_.bp, -INFINITY);
    std::fill_n(t_.running_sum, g_.bp, 0.f);
  }

  void ProcessKvBlock(int32_t kv_block) {
    const int32_t* k_pos = nullptr;  // stays null when every key of the block is visible
    if (p_.causal) {
      k_pos =
          p_.k_pos + kv_head_ * p_.k_pos_head_stride + static_cast<int64_t>(kv_block) * g_.block;
      const Visibility visibility = ClassifyBlock(k_pos, g_.block, q_min_, q_max_);
      if (visibility == Visibility::kNone) return;
      if (visibility == Visibility::kAll) k_pos = nullptr;
    }
    PackKeysAndValues(kv_block);
    ComputeScores(k_pos);
    ExponentiateScores();
    AccumulateValues();
  }

  int64_t FirstKvElement(int32_t kv_block) const {
    return kv_head_ * p_.kv_head_stride +
           static_cast<int64_t>(kv_block) * g_.block * p_.kv_row_stride;
  }

  // Asks for the next block's K and V rows while this one computes: a row of the mask jumps
  // between blocks, which the hardware prefetchers cannot guess.
  void PrefetchKvBlock(int32_t kv_block) const {
    const size_t elem = DTypeSize(p_.dtype);
    const int64_t first = FirstKvElement(kv_block);
    const size_t row_bytes = g_.head_dim * elem;
    for (int j = 0; j < g_.block; ++j) {
      const size_t offset = (first + j * p_.kv_row_stride) * elem;
      for (size_t b = 0; b < row_bytes; b += 64) {
        __builtin_prefetch(static_cast<const char*>(p_.k) + offset + b);
        __builtin_prefetch(static_cast<const char*>(p_.v) + offset + b);
      }
    }
  }

  // fp32 K and V are read in place (rows kv_row_stride apart); other dtypes are converted
  // into the item's tiles.
  void PackKeysAndValues(int32_t kv_block) {
    const size_t elem = DTypeSize(p_.dtype);
    const int64_t first = FirstKvElement(kv_block);
    if (p_.dtype == DType::kF32) {
      key_rows_ = static_cast<const float*>(p_.k) + first;
      value_rows_ = static_cast<const float*>(p_.v) + first;
      kv_stride_ = p_.kv_row_stride;
      return;
    }
    key_rows_ = t_.keys;
    value_rows_ = t_.values;
    kv_stride_ = g_.head_dim;
    for (int j = 0; j < g_.block; ++j) {
      const int64_t offset = (first + j * p_.kv_row_stride) * elem;
      Isa::ConvertRow(p_.dtype, static_cast<const char*>(p_.k) + offset, t_.keys + j * g_.head_dim,
                      g_.head_dim);
      Isa::ConvertRow(p_.dtype, static_cast<const char*>(p_.v) + offset,
                      t_.values + j * g_.head_dim, g_.head_dim);
    }
  }

  void ComputeScores(const int32_t* k_pos) {
    std::copy_n(t_.running_max, g_.bp, t_.block_max);
    ForEachRegisterBlock<Isa>(g_.block, vecs(), [&]<int R, int C>(int key0, int vec0) {
      ScoreTile<Isa, R, C>(key_rows_ + key0 * kv_stride_, kv_stride_, t_.q_t + vec0 * L,
                           k_pos ? k_pos + key0 : nullptr, t_.q_pos + vec0 * L, g_.head_dim, g_.bp,
                           t_.scores + key0 * g_.bp + vec0 * L, t_.block_max + vec0 * L);
    });
  }

  // scores <- exp2(scores - new max); the running max and sum move to the new max and
  // rescale takes the factor the accumulated O^T needs. A lane that has seen no visible key
  // keeps max -inf; it subtracts -FLT_MAX instead, so every exp2 is of -inf: exactly 0.
  // Column by column, so the shift and the sum of a vector of queries stay in registers.
  void ExponentiateScores() {
    const int bp = g_.bp, block = g_.block;  // locals: the stores below may not alias them
    for (int lane0 = 0; lane0 < bp; lane0 += L) {
      const Vec new_max = Isa::Load(t_.block_max + lane0);
      const Vec shift = Isa::Max(new_max, Isa::Set1(-FLT_MAX));
      const Vec rescale = Exp2<Isa>(Isa::Sub(Isa::Load(t_.running_max + lane0), shift));
      Vec sum = Isa::Zero();
      for (int j = 0; j < block; ++j) {
        float* score = t_.scores + j * bp + lane0;
        const Vec prob = Exp2<Isa>(Isa::Sub(Isa::Load(score), shift));
        Isa::Store(score, prob);
        sum = Isa::Add(sum, prob);
      }
      Isa::Store(t_.rescale + lane0, rescale);
      Isa::Store(t_.running_max + lane0, new_max);
      Isa::Store(t_.running_sum + lane0, Isa::Fma(Isa::Load(t_.running_sum + lane0), rescale, sum));
    }
  }

  void AccumulateValues() {
    ForEachRegisterBlock<Isa>(g_.head_dim, vecs(), [&]<int R, int C>(int d0, int vec0) {
      AccumulateTile<Isa, R, C>(t_.scores + vec0 * L, value_rows_ + d0, t_.rescale + vec0 * L,
                                g_.block, kv_stride_, g_.bp, t_.o_t + d0 * g_.bp + vec0 * L);
    });
  }

  // O = o_t^T / sum, LSE = ln(sum) + max * ln(2); a row that saw no key gets O = 0, LSE = -inf.
  void WriteOutputs() {
    const size_t row_bytes = g_.head_dim * sizeof(float);
    for (int i = 0; i < std::min(kRowsAhead, g_.block); ++i) PrefetchRow<1>(ORow(i), row_bytes);
    for (int i = 0; i < g_.block; ++i) {
      if (i + kRowsAhead < g_.block) PrefetchRow<1>(ORow(i + kRowsAhead), row_bytes);
      WriteOutputRow(i, t_.running_sum[i], t_.running_max[i]);
    }
  }

  void WriteEmptyOutputs() {
    for (int i = 0; i < g_.block; ++i) {
      if (p_.empty_rows_lse_only) {
        p_.lse[OutRow(i)] = -INFINITY;
      } else {
        WriteOutputRow(i, 0.f, -INFINITY);
      }
    }
  }

  void WriteOutputRow(int i, float sum, float max) {
    float* o = ORow(i);
    const int64_t out_row = OutRow(i);
    if (sum == 0.f) {
      std::fill_n(o, g_.head_dim, 0.f);
      p_.lse[out_row] = -INFINITY;
      return;
    }
    for (int d = 0; d < g_.head_dim; ++d) o[d] = t_.o_t[d * g_.bp + i] / sum;
    p_.lse[out_row] =
        static_cast<float>((max + std::log2(static_cast<double>(sum))) * std::numbers::ln2);
  }

  const AttentionParams& p_;
  const Geometry& g_;
  const ItemTiles t_;
  const int head_, kv_head_, q_block_;
  int32_t q_min_ = 0, q_max_ = 0;
  const float* key_rows_ = nullptr;    // the current KV block's K rows in fp32
  const float* value_rows_ = nullptr;  // and its V rows
  int64_t kv_stride_ = 0;              // floats between consecutive K (and V) rows
};

// Runs every (query head, query block) work item; `p` is already validated.
template <class Isa>
void Run(const AttentionParams& p, int threads) {
  Geometry g;
  g.block = p.block_size;
  g.bp = (p.block_size + Isa::kLanes - 1) / Isa::kLanes * Isa::kLanes;
  g.head_dim = p.head_dim;
  g.log2_scale = p.scale * std::numbers::log2e_v<float>;
  const int q_blocks = p.lq / p.block_size;
  ParallelFor(static_cast<int64_t>(p.hq) * q_blocks, threads, [&](int64_t item) {
    thread_local ItemScratch scratch;
    WorkItem<Isa>(p, g, scratch.Carve(g), static_cast<int>(item / q_blocks),
                  static_cast<int>(item % q_blocks))
        .Run();
  });
}

}  // namespace prefill::cpu::flash
