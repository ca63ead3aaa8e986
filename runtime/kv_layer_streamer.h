// KvLayerStreamer: hands each layer of a request's KV cache to the sinks that take layers
// during the prefill (KvSink::takes_layers_during_prefill) once its download has landed, on
// a thread of its own: the file sink writes and the UCX sink sends layer i while layers
// i+1... compute (a 128K prompt's 2.1 GB shard took ~1.1 s after the prefill on an H100 host).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/kv_sink.h"

namespace prefill {

class KvLayerStreamer {
 public:
  // The sinks have begun (KvSink::Begin) with `geometry` and outlive the streamer.
  KvLayerStreamer(AttentionBackend& backend, std::vector<KvSink*> sinks, KvCacheGeometry geometry);
  KvLayerStreamer(const KvLayerStreamer&) = delete;
  KvLayerStreamer& operator=(const KvLayerStreamer&) = delete;
  ~KvLayerStreamer();  // Finish()

  // Layer `layer`'s K and V in host memory that `owner` keeps (the streamer holds it until the
  // layer is handed over; the sinks read it until their Commit), there once the backend's
  // downloads up to `ticket` have landed (AttentionBackend::DownloadsStarted).
  void Push(int layer, std::span<const std::byte> keys, std::span<const std::byte> values,
            std::shared_ptr<const void> owner, int64_t ticket);
  // Waits until every pushed layer is with the sinks; the first error (a sink's own errors
  // also come back from its Commit).
  absl::Status Finish();

 private:
  struct Layer {
    int layer;
    std::span<const std::byte> keys, values;
    std::shared_ptr<const void> owner;
    int64_t ticket;
  };
  void Run();
  absl::Status Hand(const Layer& l);

  AttentionBackend& backend_;
  const std::vector<KvSink*> sinks_;
  const KvCacheGeometry geometry_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Layer> queue_;  // guarded by mu_
  bool busy_ = false;        // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  absl::Status status_;      // guarded by mu_
  std::thread worker_;
};

}  // namespace prefill
