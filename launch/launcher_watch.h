// Ends this rank when the launcher that started it (mpirun's daemon, or srun's slurmstepd)
// is gone. When mpirun is killed with SIGKILL it cannot take its ranks along: they start in
// process groups of their own, keep computing, and a rerun of the same batch would then race
// them for the output folder. Shared-memory transports never notice the loss, so the ranks
// would run to the end of the job and hang in MPI_Finalize.
#pragma once

namespace prefill {

// Starts a background thread that checks the parent process twice a second; when it has
// changed (the rank was re-parented to init), prints one line naming the rank and exits the
// process with status 1. Call once, after MPI_Init, only under a launcher (never for a
// singleton run from a shell: its parent may legitimately go away, e.g. under nohup).
void WatchLauncher(int rank);

}  // namespace prefill
