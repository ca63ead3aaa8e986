// The flags that choose where a command computes: --device, --device-id, --comm (one wording
// for `prefill attention`, `model` and `run`).
#pragma once

#include <string>

#include "CLI/CLI.hpp"

namespace prefill {

// Binds the three flags to the command's own fields.
void AddDeviceFlags(CLI::App& cmd, std::string& device, int& device_id, std::string& comm);

}  // namespace prefill
