// prefill: the command line of the context-parallel prefill system. Run it under mpirun
// (or srun): every rank runs the same command on its shard.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>

#include "CLI/CLI.hpp"
#include "launch/attention_command.h"
#include "launch/model_command.h"
#include "launch/mpi_session.h"
#include "launch/run_command.h"
#include "launch/serve_command.h"

int main(int argc, char** argv) {
  // UCX's memory hooks (libucm patches malloc/mmap) crashed civetweb's idle worker threads at
  // exit; we register the memory UCX sends explicitly, so the hooks buy nothing. Set before
  // MPI or UCX load; an operator's own setting wins.
  setenv("UCX_MEM_MALLOC_HOOKS", "no", 0);
  setenv("UCX_MEM_MMAP_HOOK_MODE", "none", 0);
  // Only the service calls MPI from two threads; the other commands keep the cheaper level.
  const bool serve = argc > 1 && std::string(argv[1]) == "serve";
  prefill::MpiSession session(&argc, &argv, serve ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED);
  CLI::App app(
      "prefill: context-parallel block-sparse prefill of very long sequences.\n"
      "Run under MPI, e.g.\n"
      "  mpirun -np 4 --oversubscribe prefill attention --workload needle --seq-len 32768 "
      "--check\n",
      "prefill");
  app.require_subcommand(1);
  // A flag given twice takes its last value, so wrappers can append overrides.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::map<std::string, std::function<int()>> commands;
  commands["attention"] = prefill::AddAttentionCommand(app, session);
  commands["model"] = prefill::AddModelCommand(app, session);
  commands["run"] = prefill::AddRunCommand(app, session);
  commands["serve"] = prefill::AddServeCommand(app, session);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    if (session.world_rank() == 0) app.exit(e);
    return 0;
  } catch (const CLI::CallForAllHelp& e) {
    if (session.world_rank() == 0) app.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    // Every rank parsed the same arguments, so every rank fails here alike: no rank waits.
    if (session.world_rank() == 0) {
      std::fprintf(stderr, "prefill: error: %s (see --help)\n", e.what());
    }
    return 2;
  }
  // A wrong launch (Slurm's N tasks started as N singletons) must not run N whole jobs: each
  // process is a world of 1, so each prints the fix.
  if (!session.rank_environment().ok()) {
    const std::string message(session.rank_environment().status().message());
    std::fprintf(stderr, "prefill: error: %s\n", message.c_str());
    return 2;
  }
  for (CLI::App* sub : app.get_subcommands()) return commands.at(sub->get_name())();
  return 2;
}
