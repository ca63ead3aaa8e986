// `prefill attention`: one context-parallel attention layer, dense ring or sparse.
#pragma once

#include <functional>
#include <string>

#include "CLI/CLI.hpp"
#include "launch/job_metrics.h"
#include "launch/mpi_session.h"
#include "runtime/attention_job.h"

namespace prefill {

struct AttentionFlags {
  AttentionJobConfig config;
  std::string json_path;
  bool no_keep_recent = false;
  MetricsFlags metrics;
};

// Declares the subcommand's flags into `flags` (also what the CLI fuzzer parses).
CLI::App* AddAttentionFlags(CLI::App& app, AttentionFlags& flags);

// Registers the subcommand; the returned callback runs it after parsing and gives the exit code.
std::function<int()> AddAttentionCommand(CLI::App& app, const MpiSession& session);

}  // namespace prefill
