#include "kernels/cuda/event_phase_timer.h"

#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/status_macros.h"

namespace prefill::cuda {
namespace {

class EventPhaseTimer final : public PhaseTimer {
 public:
  EventPhaseTimer(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~EventPhaseTimer() override {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
  }

  absl::Status Enter(std::string phase, int layer) override {
    PREFILL_RETURN_IF_ERROR(Mark());
    spans_.push_back({std::move(phase), layer, 0.0});
    return absl::OkStatus();
  }

  // events_[i] opened spans_[i]; events_[i + 1] closed it.
  absl::StatusOr<std::vector<PhaseSpan>> Finish() override {
    if (spans_.empty()) return std::vector<PhaseSpan>{};
    PREFILL_RETURN_IF_ERROR(Mark());
    CUDA_CHECK(cudaEventSynchronize(events_.back()));
    for (size_t i = 0; i < spans_.size(); ++i) {
      float ms = 0.f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      spans_[i].seconds = ms * 1e-3;
    }
    return std::move(spans_);
  }

 private:
  absl::Status Mark() {
    CUDA_CHECK(cudaSetDevice(device_));
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
    CUDA_CHECK(cudaEventRecord(e, stream_));
    return absl::OkStatus();
  }

  const int device_;
  const cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  std::vector<PhaseSpan> spans_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PhaseTimer>> MakeEventPhaseTimer(int device, cudaStream_t stream) {
  return std::make_unique<EventPhaseTimer>(device, stream);
}

}  // namespace prefill::cuda
