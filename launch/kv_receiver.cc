// kv-receiver: the stand-in for a decode server in the KV handoff (docs/kv-handoff.md).
// Listens on a UCX socket address; every rank of a prefill group connects and streams its
// KV shards (runtime/kvhandoff/wire_protocol.h). A request is acknowledged to each of its ranks
// only when it is complete: every rank of the group, every layer's key and value exactly
// once with a matching checksum, and token ranges that cover the sequence exactly once. Then
// it is written (--out DIR: DIR/kv/<request>/rank{r}.safetensors + index.json, the layout of
// `prefill model --kv-out`, published atomically) or only verified (--verify-only).
// A connection lost mid-request drops the request: nothing partial is ever acknowledged.
//
//   kv-receiver --listen 0.0.0.0:13337 --out /srv/kv
//   kv-receiver --listen 127.0.0.1:0 --verify-only --port-file port.txt --exit-after 1
#include <csignal>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "runtime/kvhandoff/ucx_kv_receiver.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnTerminate(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
  prefill::KvReceiverOptions o;
  bool verify_only = false;
  CLI::App app(
      "kv-receiver: receives KV caches streamed by `prefill model|run --kv-target HOST:PORT` "
      "(UCX),\n"
      "acknowledges each request once every layer of every rank is held, and writes it in the\n"
      "--kv-out layout or only verifies its checksums. Ends on SIGTERM/SIGINT.",
      "kv-receiver");
  app.add_option("--listen", o.listen, "HOST:PORT to listen on (port 0: any free port, printed)")
      ->capture_default_str();
  app.add_option("--out", o.out,
                 "Write each request to DIR/kv/<request>/ (rank{r}.safetensors + index.json)");
  app.add_flag("--verify-only", verify_only, "Verify checksums and completeness, write nothing");
  app.add_option("--exit-after", o.exit_after,
                 "Exit after this many acknowledged requests (0: never)")
      ->capture_default_str();
  app.add_option("--die-after-bytes", o.die_after_bytes,
                 "Test hook: _exit(3) once this many payload bytes arrived");
  app.add_option("--port-file", o.port_file, "Write the port listened on to this file");
  CLI11_PARSE(app, argc, argv);
  if (o.out.empty() == !verify_only) {
    std::fprintf(stderr, "kv-receiver: error: give exactly one of --out DIR and --verify-only\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = OnTerminate;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const absl::Status s = prefill::RunUcxKvReceiver(o, &g_stop);
  if (!s.ok()) {
    std::fprintf(stderr, "kv-receiver: error: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
