#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/phase_timer.h"

namespace prefill {
namespace {

class HostPhaseTimer final : public PhaseTimer {
 public:
  absl::Status Enter(std::string phase, int layer) override {
    Close();
    spans_.push_back({std::move(phase), layer, 0.0});
    open_ = true;
    start_ = Clock::now();
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<PhaseSpan>> Finish() override {
    Close();
    return std::move(spans_);
  }

 private:
  using Clock = std::chrono::steady_clock;
  void Close() {
    if (open_) spans_.back().seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    open_ = false;
  }
  std::vector<PhaseSpan> spans_;
  bool open_ = false;
  Clock::time_point start_;
};

}  // namespace

std::unique_ptr<PhaseTimer> MakeHostPhaseTimer() { return std::make_unique<HostPhaseTimer>(); }

}  // namespace prefill
