// The first SIGTERM/SIGINT only sets the flag; the second one ends the process.
#include "launch/termination_signal.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>

namespace prefill {
namespace {

TEST(TerminationSignal, FirstSignalSetsTheFlagSecondEndsTheProcess) {
  EXPECT_EXIT(
      {
        InstallTerminationHandlers();
        if (TerminationRequested()) std::_Exit(3);
        std::raise(SIGTERM);
        if (!TerminationRequested()) std::_Exit(4);
        std::raise(SIGTERM);  // default action from here on
        std::_Exit(5);
      },
      testing::KilledBySignal(SIGTERM), "");
}

TEST(TerminationSignal, SigintAsWell) {
  EXPECT_EXIT(
      {
        InstallTerminationHandlers();
        std::raise(SIGINT);
        std::_Exit(TerminationRequested() ? 0 : 1);
      },
      testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace prefill
