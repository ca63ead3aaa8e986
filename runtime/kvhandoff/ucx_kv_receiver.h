// The receiving end of the KV handoff over UCX, as `kv-receiver` runs it (a stand-in for a
// decode server): listens on a UCX socket address, accepts every rank of every prefill group
// that connects, places their layers (eager or rendezvous) and leaves the bookkeeping, the
// acknowledgements and the publishing to KvTransferBook.
#pragma once

#include <csignal>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace prefill {

struct KvReceiverOptions {
  std::string listen = "0.0.0.0:13337";
  std::string out;               // publish under out/kv/<request>/; empty: verify only
  int exit_after = 0;            // return after this many acknowledged requests (0: never)
  int64_t die_after_bytes = -1;  // test hook: _exit(3) once this many payload bytes arrived
  std::string port_file;         // written (atomically) with the port listened on
};

// Runs until *stop becomes non-zero (a signal handler sets it) or exit_after requests were
// acknowledged; live attempts are then dropped and their ranks told why.
absl::Status RunUcxKvReceiver(const KvReceiverOptions& options,
                              const volatile std::sig_atomic_t* stop);

}  // namespace prefill
