// KvFileSink: the KV cache as files, and the on-disk layout it shares with kv-receiver.
//   <dir>/rank{r}.safetensors  layers.{i}.key / layers.{i}.value [local rows, kv_heads, head_dim]
//                              (padding rows included), one shard per rank;
//   <dir>/index.json           seq_len, num_layers, kv_heads, head_dim, dtype, layout and the
//                              ranges (absolute start, length -> file, row), real tokens only.
// Everything is written into <dir>.partial/ and renamed into place once whole, so a KV cache
// folder is whole or absent.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "parallel/communicator.h"
#include "runtime/kv_sink.h"

namespace prefill {

// The layout, for any writer of it (KvFileSink writes one shard per rank; kv-receiver writes
// every rank's shard in one process).
std::string KvShardFileName(int rank);  // "rank3.safetensors"
nlohmann::json KvCacheIndex(
    const KvCacheGeometry& g);  // index.json (geometry.ranges of every rank)
// keys[i], values[i]: layer i, [local_rows, kv_heads, head_dim]. Atomic (temporary file + fsync +
// rename).
absl::Status WriteKvShard(const std::string& path, const std::vector<TensorView>& keys,
                          const std::vector<TensorView>& values);
// Empties and creates <final_dir>.partial (returned).
absl::StatusOr<std::string> StageKvCache(const std::string& final_dir);
// Writes index.json into <final_dir>.partial and renames it to final_dir (replacing it).
absl::Status PublishKvCache(const std::string& final_dir, const KvCacheGeometry& g);

// Every rank writes its shard; rank 0 publishes after all have written.
std::unique_ptr<KvSink> MakeKvFileSink(Communicator& comm, std::string dir);

}  // namespace prefill
