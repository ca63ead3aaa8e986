// SIGTERM/SIGINT as a request to stop, not an abrupt end: Slurm sends SIGTERM before a
// job's time limit (--signal=B:TERM@120 to the batch shell, which launch/slurm/prefill-job.sh
// passes on to the ranks; --signal=TERM@120 sends it to the ranks directly) and on
// preemption; a user sends SIGINT with Ctrl-C. The first signal only sets a flag; a second
// one gets the default action (the process ends), so a user can still force an exit.
//
// How a long job uses it (`prefill run`, scheduler/batch_runner.cc, is the model):
//   1. InstallTerminationHandlers() once, before the long loop (after MPI_Init: OpenMPI
//      leaves SIGTERM/SIGINT alone under srun and mpirun);
//   2. between units of work (a wave of requests), every rank reads TerminationRequested()
//      and the ranks agree (an all-reduce of the flag, max): Slurm signals the ranks one by
//      one, so without agreement one rank would stop while its peers wait for it;
//   3. when any rank asked: finish or drop the unit in flight (its output is written
//      atomically, so a half-written result never exists), leave what is done on disk, say
//      so ("stopped by a signal: rerun to finish") and exit 0;
//   4. the rerun (the requeued Slurm job, or the same command again) skips what is done.
// Exit 0 is deliberate: the job did not fail, and prefill-job.sh requeues only a clean stop.
#pragma once

namespace prefill {

// Installs the handlers for SIGTERM and SIGINT (idempotent). Async-signal-safe: the handler
// only stores to a lock-free atomic; SA_RESETHAND restores the default for the next signal.
void InstallTerminationHandlers();

// True once SIGTERM or SIGINT arrived after InstallTerminationHandlers().
bool TerminationRequested();

}  // namespace prefill
