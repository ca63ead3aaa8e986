// The KV handoff wire protocol (version 1): what a prefill rank (UcxKvSink) and a decode
// server (the receiver (KvTransferBook)) say to each other over a UCX endpoint. docs/kv-handoff.md
// explains it.
//
// Every message is one UCP active message whose id is its type; its AM header is encoded
// here, and only Layer messages carry data (the tensor's bytes, sent from registered memory
// as the AM payload). Header layout, all integers little-endian whatever the host:
//   u32 magic "KVH1" | u16 version | u16 type | u32 header bytes | u32 header CRC32C (computed
//   with this field zero) | u64 transfer id | str request id | u32 rank | body by type
// where str is u16 length + bytes. Bodies:
//   Begin  (rank -> receiver): u32 world size, i64 seq_len, u32 layers, u32 kv_heads,
//          u32 head_dim, str dtype, str layout, i64 local rows, ranges
//   Layer  (rank -> receiver): u32 layer, u8 kind (0 key, 1 value), str dtype, u8 ndim + i64
//          dims, ranges, u64 payload bytes, u32 payload CRC32C
//   Commit (rank -> receiver): u32 layer messages, u64 payload bytes, u32 CRC32C over the
//          payload CRCs in (layer, kind) order
//   Ack    (receiver -> rank): i32 status (absl code, 0 = acknowledged), str message, u64
//          payload bytes received from this rank, u32 the same combined CRC
// ranges: u32 count + count x (i64 start, i64 length, i64 row).
// A transfer id names one attempt at one request (rank 0 draws it, every rank sends it), so a
// rerun's resend never mixes with a dead attempt's leftovers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv_sink.h"
#include "runtime/kvhandoff/crc32c.h"

namespace prefill::kvwire {

inline constexpr uint32_t kMagic = 0x3148564B;  // bytes 'K' 'V' 'H' '1'
inline constexpr uint16_t kVersion = 1;
inline constexpr uint32_t kMaxRanges = 1024;
inline constexpr size_t kPrefixBytes = 24;  // through the transfer id

// Doubles as the UCP active-message id.
enum class MessageType : uint16_t { kBegin = 1, kLayer = 2, kCommit = 3, kAck = 4 };

// ---- Messages --------------------------------------------------------------------------

struct Prefix {
  MessageType type = MessageType::kBegin;
  uint64_t transfer_id = 0;
  std::string request_id;
  uint32_t rank = 0;
};

struct BeginMessage {
  Prefix prefix;
  uint32_t world_size = 0;
  int64_t seq_len = 0;
  uint32_t num_layers = 0, kv_heads = 0, head_dim = 0;
  std::string dtype, layout;
  int64_t local_rows = 0;
  std::vector<KvTokenRange> ranges;
};

struct LayerMessage {
  Prefix prefix;
  uint32_t layer = 0;
  uint8_t kind = 0;  // 0 key, 1 value
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<KvTokenRange> ranges;
  uint64_t payload_bytes = 0;
  uint32_t payload_crc = 0;
};

struct CommitMessage {
  Prefix prefix;
  uint32_t messages = 0;
  uint64_t payload_bytes = 0;
  uint32_t payload_crc = 0;  // CRC32C of the little-endian u32 payload CRCs in (layer, kind) order
};

struct AckMessage {
  Prefix prefix;
  int32_t status = 0;  // absl::StatusCode; 0: the whole request is held
  std::string message;
  uint64_t payload_bytes = 0;
  uint32_t payload_crc = 0;
};

// ---- Encoding and decoding ---------------------------------------------------------------

std::string Encode(const BeginMessage& m);
std::string Encode(const LayerMessage& m);
std::string Encode(const CommitMessage& m);
std::string Encode(const AckMessage& m);

// The message type of a header, read from its fixed prefix without checking the rest; 0 when
// the header is shorter than the prefix. Dispatch only: the Decode* functions check everything.
uint16_t PeekType(std::span<const std::byte> header);

// Every field bounds-checked; a bad header (truncated, overlong, wrong magic, version or
// checksum, an invalid request id, too many ranges) is InvalidArgument, never a crash.
absl::StatusOr<BeginMessage> DecodeBegin(std::span<const std::byte> header);
absl::StatusOr<LayerMessage> DecodeLayer(std::span<const std::byte> header);
absl::StatusOr<CommitMessage> DecodeCommit(std::span<const std::byte> header);
absl::StatusOr<AckMessage> DecodeAck(std::span<const std::byte> header);

// The Commit/Ack combined CRC: CRC32C over the payload CRCs (as little-endian u32) in
// (layer, kind) order.
uint32_t CombineCrcs(const std::vector<uint32_t>& crcs);

}  // namespace prefill::kvwire
