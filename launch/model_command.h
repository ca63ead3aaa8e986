// `prefill model`: whole-model prefill of a Hugging Face Llama-family model.
#pragma once

#include <functional>

#include "CLI/CLI.hpp"
#include "launch/mpi_session.h"

namespace prefill {

std::function<int()> AddModelCommand(CLI::App& app, const MpiSession& session);

}  // namespace prefill
