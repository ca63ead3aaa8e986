// `prefill attention`: one context-parallel attention layer, dense ring or sparse.
#pragma once

#include "CLI/CLI.hpp"
#include "launch/mpi_session.h"

namespace prefill {

// Registers the subcommand; the returned callback runs it after parsing and gives the exit code.
std::function<int()> AddAttentionCommand(CLI::App& app, const MpiSession& session);

}  // namespace prefill
