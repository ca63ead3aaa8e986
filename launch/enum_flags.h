// Flags whose value is one of an enum's names (--mode, --layout, --estimator, --balance,
// --dtype, --kv-dtype): parsed once, here at the command line, by the enum's own Parse
// function (its message is the error CLI11 prints); below the CLI the option structs carry the
// enums. The help shows the default by the enum's Name function.
#pragma once

#include <string>

#include "CLI/CLI.hpp"

namespace prefill {

template <typename E, typename Parse, typename Name>
CLI::Option* AddEnumOption(CLI::App& cmd, const std::string& flag, E& value,
                           const std::string& help, Parse parse, Name name) {
  return cmd
      .add_option_function<std::string>(
          flag,
          [&value, parse](const std::string& text) {
            const auto parsed = parse(text);
            if (!parsed.ok()) throw CLI::ValidationError(std::string(parsed.status().message()));
            value = *parsed;
          },
          help)
      ->default_str(std::string(name(value)));
}

}  // namespace prefill
