// Fuzzes `prefill attention`'s flags: NUL-separated arguments are parsed by the real CLI
// definition, then validated; numbers out of range, garbage and overflow give errors.
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "launch/attention_command.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = {"prefill", "attention"};
  std::string current;
  for (size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == 0) {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (!current.empty()) args.push_back(current);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  CLI::App app("fuzz");
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  prefill::AttentionFlags flags;
  prefill::AddAttentionFlags(app, flags);
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::Error&) {
    return 0;
  }
  (void)prefill::ValidateAttentionConfig(flags.config, 4);
  return 0;
}
