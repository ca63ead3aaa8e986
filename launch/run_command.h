// `prefill run`: a batch of prompts from a manifest, resumable, one model load per rank.
#pragma once

#include <functional>

#include "CLI/CLI.hpp"
#include "launch/mpi_session.h"

namespace prefill {

std::function<int()> AddRunCommand(CLI::App& app, const MpiSession& session);

}  // namespace prefill
