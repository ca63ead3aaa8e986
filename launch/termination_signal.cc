#include "launch/termination_signal.h"

#include <atomic>
#include <csignal>

namespace prefill {
namespace {

std::atomic<bool> requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the signal handler needs a lock-free flag");

extern "C" void OnTerminationSignal(int) { requested.store(true, std::memory_order_relaxed); }

}  // namespace

void InstallTerminationHandlers() {
  struct sigaction action {};
  action.sa_handler = OnTerminationSignal;
  sigemptyset(&action.sa_mask);
  // The next signal of the same kind takes the default action: a second Ctrl-C ends it.
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

bool TerminationRequested() { return requested.load(std::memory_order_relaxed); }

}  // namespace prefill
