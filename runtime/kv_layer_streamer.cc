#include "runtime/kv_layer_streamer.h"

#include "kernels/status_macros.h"

namespace prefill {

KvLayerStreamer::KvLayerStreamer(AttentionBackend& backend, std::vector<KvSink*> sinks,
                                 KvCacheGeometry geometry)
    : backend_(backend),
      sinks_(std::move(sinks)),
      geometry_(std::move(geometry)),
      worker_([this] { Run(); }) {}

KvLayerStreamer::~KvLayerStreamer() {
  (void)Finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void KvLayerStreamer::Push(int layer, std::span<const std::byte> keys,
                           std::span<const std::byte> values, std::shared_ptr<const void> owner,
                           int64_t ticket) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({layer, keys, values, std::move(owner), ticket});
  }
  changed_.notify_all();
}

absl::Status KvLayerStreamer::Finish() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return queue_.empty() && !busy_; });
  return status_;
}

absl::Status KvLayerStreamer::Hand(const Layer& l) {
  PREFILL_RETURN_IF_ERROR(backend_.WaitForDownloads(l.ticket));
  const std::vector<int64_t> shape = {geometry_.local_rows, geometry_.kv_heads, geometry_.head_dim};
  const TensorView key(geometry_.dtype, shape, l.keys), value(geometry_.dtype, shape, l.values);
  absl::Status first;
  for (KvSink* sink : sinks_) {
    absl::Status s = sink->PutLayer(l.layer, key, value, geometry_.ranges[geometry_.rank]);
    if (first.ok()) first = s;
  }
  return first;
}

void KvLayerStreamer::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    Layer l = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    absl::Status s = Hand(l);
    l.owner.reset();  // outside the lock: it may return the memory to the HostArena
    lock.lock();
    if (status_.ok()) status_ = s;
    busy_ = false;
    changed_.notify_all();
  }
}

}  // namespace prefill
