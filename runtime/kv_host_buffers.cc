#include "runtime/kv_host_buffers.h"

#include <chrono>

namespace prefill {

KvHostBuffers::KvHostBuffers(AttentionBackend& backend, int layers, size_t layer_bytes)
    : thread_([this, &backend, layers, layer_bytes] { Allocate(backend, layers, layer_bytes); }) {}

KvHostBuffers::~KvHostBuffers() { thread_.join(); }

void KvHostBuffers::Allocate(AttentionBackend& backend, int layers, size_t layer_bytes) {
  for (int i = 0; i < layers; ++i) {
    absl::StatusOr<BackendBuffer> b = backend.AllocateHost(layer_bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (!b.ok()) {
      status_ = b.status();
    } else {
      buffers_.push_back(*std::move(b));
    }
    ready_.notify_all();
    if (!status_.ok()) return;
  }
}

absl::StatusOr<std::byte*> KvHostBuffers::Layer(int i) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [&] { return !status_.ok() || static_cast<int>(buffers_.size()) > i; });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (static_cast<int>(buffers_.size()) > i) return static_cast<std::byte*>(buffers_[i].get());
  return status_;
}

std::vector<BackendBuffer> KvHostBuffers::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(buffers_);
}

}  // namespace prefill
