// KvTransferBook: the receiving side of the KV handoff (docs/kv-handoff.md) without its
// transport. It takes each peer's messages (a peer is one prefill rank's connection) in arrival
// order and keeps one live attempt per request. A request is acknowledged to each of its ranks
// only when it is complete: every rank of the group, every layer's key and value exactly once
// with a matching checksum, commits that agree, and token ranges covering the sequence exactly
// once. Then it is written (`out`: out/kv/<request>/, the `prefill model --kv-out` layout,
// published atomically) or only verified. Anything wrong drops the attempt and tells each of
// its ranks why; nothing partial is ever acknowledged.
//
// The transport (ucx_kv_receiver.cc; the tests) feeds it messages, places the payloads it
// asks for, and sends the acknowledgements and refusals it hands to `Hooks::send_ack`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "runtime/kvhandoff/wire_protocol.h"

namespace prefill {

using KvPeer = uint64_t;  // a connection, as the transport names it

struct KvTransfer;  // one attempt (transfer id) at one request

class KvTransferBook {
 public:
  struct Options {
    std::string out;  // publish under out/kv/<request>/; empty: verify only
  };
  struct Hooks {
    std::function<void(KvPeer, const kvwire::AckMessage&)> send_ack;  // an ack or a refusal
    std::function<void(const std::string&)> log;                      // one line for the operator
    std::function<std::string(KvPeer)> peer_name;                     // "10.0.0.7:40122"
  };
  // Where an accepted layer's payload goes: the transport writes `length` bytes at `dst`, then
  // calls Arrived(slot, ...). The slot keeps its attempt alive until then.
  struct PayloadSlot {
    std::shared_ptr<KvTransfer> transfer;
    uint32_t rank = 0;
    size_t index = 0;  // 2 * layer + kind
    std::byte* dst = nullptr;
    size_t length = 0;
    uint32_t crc = 0;
  };

  KvTransferBook(Options options, Hooks hooks);
  ~KvTransferBook();

  // One message of `peer` (a header, and the length of the payload that comes with a layer).
  // A layer that is accepted gets its slot; anything else is handled here (nullopt).
  std::optional<PayloadSlot> OnMessage(KvPeer peer, std::span<const std::byte> header,
                                       size_t payload_length);
  // `slot`'s payload is in place (OK: its checksum is checked now) or did not arrive.
  void Arrived(const PayloadSlot& slot, const absl::Status& status);
  // The connection of `peer` is gone: every attempt it was part of is dropped.
  void PeerLost(KvPeer peer, const std::string& reason);
  // Checks and publishes every attempt whose ranks all committed and whose payloads all
  // arrived, and acknowledges it to each rank; returns how many were acknowledged.
  int CompleteReady();
  // Drops every live attempt (shutdown).
  void DropAll(const std::string& why);
  bool empty() const { return transfers_.empty(); }

 private:
  void OnBegin(KvPeer peer, std::span<const std::byte> header);
  std::optional<PayloadSlot> OnLayer(KvPeer peer, std::span<const std::byte> header,
                                     size_t payload_length);
  void OnCommit(KvPeer peer, std::span<const std::byte> header);
  std::shared_ptr<KvTransfer> Find(const kvwire::Prefix& p) const;
  absl::Status Check(const KvTransfer& t) const;
  absl::Status Publish(const KvTransfer& t) const;
  std::string KvDir(const std::string& request_id) const;
  void Acknowledge(const KvTransfer& t);
  void Drop(const std::shared_ptr<KvTransfer>& t, const std::string& why);
  void Reject(KvPeer peer, const absl::Status& why);

  const Options options_;
  const Hooks hooks_;
  std::map<std::string, std::shared_ptr<KvTransfer>> transfers_;  // by request id: the live attempt
};

}  // namespace prefill
