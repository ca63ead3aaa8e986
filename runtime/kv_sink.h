// KvSink: where a prefill request's KV cache goes once the last layer is computed. Two
// implementations, used alone or together:
//   KvFileSink (kv_file_sink.h): one safetensors shard per rank + index.json in a folder,
//                published atomically (the layout `prefill model --kv-out` always wrote);
//   UcxKvSink  (kvhandoff/ucx_kv_sink.h): every rank streams its own shards over UCX to a
//                decode server (`kv-receiver` stands in for one) and waits for its
//                acknowledgement. runtime does not link UCX: launch/ hands the maker in
//                (RemoteKvSinkFactory).
//
// Contract (every implementation):
//   - Begin and Commit are collective over the request's group: every rank calls them, in the
//     same order, and they return the same status on every rank. PutLayer is local.
//   - PutLayer is called once per layer, in layer order, between Begin and Commit. Its
//     tensors are views read in place (zero-copy senders hand them to the transport): the
//     memory they view must stay alive and unchanged until Commit returns.
//   - A PutLayer error is sticky: later calls return it and Commit reports it (agreed).
//   - Commit returns OK only when the whole request is durable (file: fsynced and renamed into
//     place) or acknowledged (UCX: the receiver holds every layer of every rank). A failed
//     Commit leaves nothing that a rerun would trust: no published folder, no acknowledgement.
//   - A sink serves one request; make a new one for the next.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "parallel/communicator.h"
#include "runtime/tensor.h"

namespace prefill {

// Absolute tokens [start, start + length) are rows [row, row + length) of a rank's shard.
struct KvTokenRange {
  int64_t start = 0;
  int64_t length = 0;
  int64_t row = 0;
  bool operator==(const KvTokenRange&) const = default;
};

// The shape of one request's KV cache over the ranks of its group.
struct KvCacheGeometry {
  int64_t seq_len = 0;  // real tokens (the sequence may be padded past them)
  int num_layers = 0;
  int kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kBF16;
  std::string layout;      // "zigzag" or "contiguous" (recorded in index.json)
  int rank = 0;            // the calling rank
  int world_size = 1;      // ranks of the group
  int64_t local_rows = 0;  // rows of this rank's shard, padding included
  std::vector<std::vector<KvTokenRange>> ranges;  // [world_size]: each rank's real tokens

  // Bytes of one [local_rows, kv_heads, head_dim] tensor of this rank.
  int64_t TensorBytes() const { return local_rows * kv_heads * head_dim * DTypeSize(dtype); }
};

class KvSink {
 public:
  virtual ~KvSink() = default;
  virtual std::string_view name() const = 0;  // "file" or "ucx", for reports
  // Where the cache goes ("/out/kv/p3", "10.0.0.7:13337"), for reports and errors.
  virtual std::string destination() const = 0;

  // request_id: [A-Za-z0-9._-]{1,128}; it names the request on the wire and on disk.
  virtual absl::Status Begin(const std::string& request_id, const KvCacheGeometry& geometry) = 0;
  // key, value: this rank's rows of `layer`, [local_rows, kv_heads, head_dim] in
  // geometry.dtype; ranges: the absolute tokens they hold (geometry.ranges[rank]).
  virtual absl::Status PutLayer(int layer, const TensorView& key, const TensorView& value,
                                std::span<const KvTokenRange> ranges) = 0;
  virtual absl::Status Commit() = 0;
  // Whether the layers may come while the prefill still computes (each PutLayer as its
  // download lands, on another thread than Begin's and Commit's, which come before and after
  // every PutLayer): the file sink writes them and the UCX sink sends them under the compute;
  // a sink that says no gets them after the prefill, on the caller's thread.
  virtual bool takes_layers_during_prefill() const { return false; }
};

// [A-Za-z0-9._-]{1,128}, not "." or "..": it names a request on the wire and on disk.
bool ValidKvRequestId(std::string_view id);

// A decode server (`--kv-target`, a serve request's kv_target).
struct KvTarget {
  std::string address;          // host:port
  double timeout_seconds = 60;  // no progress for this long (connect, send, acknowledgement): fail
};

// InvalidArgument naming --kv-target / --kv-timeout unless the address resolves and the
// timeout is positive.
absl::Status ValidateKvTarget(const KvTarget& target);

// Makes the sink that streams one request's cache to `target`; empty where the program has no
// transport for it.
using RemoteKvSinkFactory =
    std::function<std::unique_ptr<KvSink>(Communicator& comm, const KvTarget& target)>;

}  // namespace prefill
