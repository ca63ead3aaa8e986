// PhaseTimer: seconds per named phase of the work a backend queues, measured where the work
// runs. CUDA records events on the backend's stream, so phases are timed without a host
// synchronisation between them (a synchronisation per phase drains the queue and bills the
// host's launch latency to the GPU); the CPU reads the host clock, its ops having run when
// they return.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prefill {

// One entry of a phase: its name and the layer it belongs to (-1: none).
struct PhaseSpan {
  std::string phase;
  int layer = -1;
  double seconds = 0;
};

class PhaseTimer {
 public:
  virtual ~PhaseTimer() = default;
  // Ends the open span at this point of the queued work and opens one of `phase`.
  virtual absl::Status Enter(std::string phase, int layer = -1) = 0;
  // Ends the open span, waits for the queued work and returns every span in entry order.
  virtual absl::StatusOr<std::vector<PhaseSpan>> Finish() = 0;
};

// The host clock's timer (the CPU backend's, and any backend whose ops finish on return).
std::unique_ptr<PhaseTimer> MakeHostPhaseTimer();

}  // namespace prefill
