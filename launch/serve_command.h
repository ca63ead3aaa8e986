#pragma once

#include <functional>

#include "CLI/CLI.hpp"
#include "launch/mpi_session.h"

namespace prefill {

// `prefill serve`: the long-running prefill service (scheduler/serve_worker.h, docs/serve.md).
std::function<int()> AddServeCommand(CLI::App& app, const MpiSession& session);

}  // namespace prefill
