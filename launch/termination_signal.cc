#include "launch/termination_signal.h"

#include <atomic>
#include <csignal>

namespace prefill {
namespace {

std::atomic<bool> requested{false};

extern "C" void OnTerminationSignal(int signo) {
  requested.store(true, std::memory_order_relaxed);
  std::signal(signo, SIG_DFL);  // the next one ends the process
}

}  // namespace

void InstallTerminationHandlers() {
  struct sigaction action {};
  action.sa_handler = OnTerminationSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

bool TerminationRequested() { return requested.load(std::memory_order_relaxed); }

}  // namespace prefill
