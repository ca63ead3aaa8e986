// SIGTERM/SIGINT as a request to stop, not an abrupt end: Slurm sends SIGTERM before a
// job's time limit (--signal=TERM@120) or on preemption. Long loops poll the flag between
// units of work, finish or abandon the unit in flight cleanly and exit 0 with resumable
// state; a second signal restores the default action, so a user can still force an exit.
#pragma once

namespace prefill {

void InstallTerminationHandlers();
bool TerminationRequested();

}  // namespace prefill
