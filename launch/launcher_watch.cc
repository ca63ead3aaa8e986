#include "launch/launcher_watch.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace prefill {

void WatchLauncher(int rank) {
  const pid_t launcher = ::getppid();
  std::thread([rank, launcher] {
    while (::getppid() == launcher) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::fprintf(stderr,
                 "prefill: rank %d: its launcher (pid %d) is gone, so the job was killed; ending "
                 "this rank\n",
                 rank, static_cast<int>(launcher));
    std::fflush(stderr);
    // No destructors, no MPI_Finalize: the peers are ending the same way, and finalizing
    // against a dead daemon would hang.
    std::_Exit(1);
  }).detach();
}

}  // namespace prefill
