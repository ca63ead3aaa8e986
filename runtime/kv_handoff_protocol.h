// The KV handoff wire protocol (version 1): what a prefill rank (UcxKvSink) and a decode
// server (kv-receiver) say to each other over a UCX endpoint. docs/kv-handoff.md explains it.
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
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/kv_sink.h"

namespace prefill::kvwire {

inline constexpr uint32_t kMagic = 0x3148564B;  // bytes 'K' 'V' 'H' '1'
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr uint32_t kMaxRanges = 1024;
inline constexpr size_t kPrefixBytes = 24;  // through the transfer id

// Doubles as the UCP active-message id.
enum class MessageType : uint16_t { kBegin = 1, kLayer = 2, kCommit = 3, kAck = 4 };

// ---- CRC32C (Castagnoli), the checksum of headers and payloads ------------------------

namespace detail {
struct Crc32cTable {
  uint32_t v[256];
  constexpr Crc32cTable() : v() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
      v[i] = c;
    }
  }
};
inline constexpr Crc32cTable kCrc32cTable{};

inline uint32_t Crc32cPortable(uint32_t crc, const uint8_t* p, size_t n) {
  while (n--) crc = kCrc32cTable.v[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction: about 8 bytes per cycle-triple, ~8 GB/s on one core.
__attribute__((target("sse4.2"))) inline uint32_t Crc32cSse42(uint32_t crc, const uint8_t* p,
                                                              size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif
}  // namespace detail

// CRC32C of `n` bytes, continuing from `crc` (0 to start). Crc32c("123456789") == 0xE3069283.
inline uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0) {
  const auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return ~detail::Crc32cSse42(~crc, p, n);
#endif
  return ~detail::Crc32cPortable(~crc, p, n);
}

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

// ---- Encoding ---------------------------------------------------------------------------

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U u = static_cast<U>(v);
    for (size_t i = 0; i < sizeof(T); ++i)
      bytes_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  void PutString(std::string_view s) {
    Put(static_cast<uint16_t>(s.size()));
    bytes_.append(s);
  }
  void PutRanges(const std::vector<KvTokenRange>& ranges) {
    Put(static_cast<uint32_t>(ranges.size()));
    for (const KvTokenRange& r : ranges) {
      Put(r.start);
      Put(r.length);
      Put(r.row);
    }
  }
  void PutPrefix(const Prefix& p) {
    Put(kMagic);
    Put(kVersion);
    Put(static_cast<uint16_t>(p.type));
    Put(uint32_t{0});  // header bytes, patched by Finish
    Put(uint32_t{0});  // header CRC, patched by Finish
    Put(p.transfer_id);
    PutString(p.request_id);
    Put(p.rank);
  }
  std::string Finish() {
    Patch(8, static_cast<uint32_t>(bytes_.size()));
    Patch(12, Crc32c(bytes_.data(), bytes_.size()));
    return std::move(bytes_);
  }

 private:
  void Patch(size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i) bytes_[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  std::string bytes_;
};

inline std::string Encode(const BeginMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.world_size);
  w.Put(m.seq_len);
  w.Put(m.num_layers);
  w.Put(m.kv_heads);
  w.Put(m.head_dim);
  w.PutString(m.dtype);
  w.PutString(m.layout);
  w.Put(m.local_rows);
  w.PutRanges(m.ranges);
  return w.Finish();
}

inline std::string Encode(const LayerMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.layer);
  w.Put(m.kind);
  w.PutString(m.dtype);
  w.Put(static_cast<uint8_t>(m.shape.size()));
  for (int64_t d : m.shape) w.Put(d);
  w.PutRanges(m.ranges);
  w.Put(m.payload_bytes);
  w.Put(m.payload_crc);
  return w.Finish();
}

inline std::string Encode(const CommitMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.messages);
  w.Put(m.payload_bytes);
  w.Put(m.payload_crc);
  return w.Finish();
}

inline std::string Encode(const AckMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.status);
  w.PutString(m.message);
  w.Put(m.payload_bytes);
  w.Put(m.payload_crc);
  return w.Finish();
}

// ---- Decoding: every field bounds-checked; a bad header is InvalidArgument, never a crash --

class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  template <typename T>
  T Get() {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U u = 0;
    if (!Need(sizeof(T))) return 0;
    for (size_t i = 0; i < sizeof(T); ++i)
      u |= static_cast<U>(static_cast<uint8_t>(bytes_[at_ + i])) << (8 * i);
    at_ += sizeof(T);
    return static_cast<T>(u);
  }
  std::string GetString() {
    const uint16_t n = Get<uint16_t>();
    if (!Need(n)) return {};
    std::string s(reinterpret_cast<const char*>(bytes_.data() + at_), n);
    at_ += n;
    return s;
  }
  std::vector<KvTokenRange> GetRanges() {
    const uint32_t n = Get<uint32_t>();
    std::vector<KvTokenRange> out;
    if (n > kMaxRanges || !Need(size_t{n} * 24)) {
      ok_ = false;
      return out;
    }
    for (uint32_t i = 0; i < n; ++i) {
      KvTokenRange r;
      r.start = Get<int64_t>();
      r.length = Get<int64_t>();
      r.row = Get<int64_t>();
      out.push_back(r);
    }
    return out;
  }
  bool ok() const { return ok_; }
  bool at_end() const { return at_ == bytes_.size(); }

 private:
  bool Need(size_t n) {
    if (!ok_ || bytes_.size() - at_ < n) ok_ = false;
    return ok_;
  }
  std::span<const std::byte> bytes_;
  size_t at_ = 0;
  bool ok_ = true;
};

inline bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes || id == "." || id == "..") return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

// Checks magic, version, length and CRC, and reads the prefix; the body follows in `r`.
inline absl::StatusOr<Prefix> ReadPrefix(std::span<const std::byte> header, Reader& r) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV handoff header (", header.size(), " bytes): ", why));
  };
  if (header.size() < kPrefixBytes) return bad("shorter than the fixed prefix");
  if (r.Get<uint32_t>() != kMagic) return bad("bad magic (not a KV handoff message)");
  const uint16_t version = r.Get<uint16_t>();
  if (version != kVersion)
    return bad(absl::StrCat("protocol version ", version, ", this build speaks ", kVersion));
  Prefix p;
  p.type = static_cast<MessageType>(r.Get<uint16_t>());
  const uint32_t length = r.Get<uint32_t>();
  const uint32_t crc = r.Get<uint32_t>();
  if (length != header.size()) return bad(absl::StrCat("declares ", length, " bytes"));
  std::vector<std::byte> copy(header.begin(), header.end());
  std::memset(copy.data() + 12, 0, 4);
  if (Crc32c(copy.data(), copy.size()) != crc) return bad("header checksum mismatch");
  p.transfer_id = r.Get<uint64_t>();
  p.request_id = r.GetString();
  p.rank = r.Get<uint32_t>();
  if (!r.ok()) return bad("truncated prefix");
  if (!ValidRequestId(p.request_id))
    return bad(absl::StrCat("request id '", p.request_id, "' is not [A-Za-z0-9._-]{1,128}"));
  return p;
}

inline absl::Status Finished(const Reader& r, const char* what) {
  if (!r.ok() || !r.at_end())
    return absl::InvalidArgumentError(
        absl::StrCat("KV handoff ", what, " header: truncated or overlong"));
  return absl::OkStatus();
}

inline absl::StatusOr<BeginMessage> DecodeBegin(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, r);
  if (!p.ok()) return p.status();
  BeginMessage m;
  m.prefix = *p;
  m.world_size = r.Get<uint32_t>();
  m.seq_len = r.Get<int64_t>();
  m.num_layers = r.Get<uint32_t>();
  m.kv_heads = r.Get<uint32_t>();
  m.head_dim = r.Get<uint32_t>();
  m.dtype = r.GetString();
  m.layout = r.GetString();
  m.local_rows = r.Get<int64_t>();
  m.ranges = r.GetRanges();
  PREFILL_RETURN_IF_ERROR(Finished(r, "begin"));
  return m;
}

inline absl::StatusOr<LayerMessage> DecodeLayer(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, r);
  if (!p.ok()) return p.status();
  LayerMessage m;
  m.prefix = *p;
  m.layer = r.Get<uint32_t>();
  m.kind = r.Get<uint8_t>();
  m.dtype = r.GetString();
  const uint8_t ndim = r.Get<uint8_t>();
  for (uint8_t i = 0; i < ndim && r.ok(); ++i) m.shape.push_back(r.Get<int64_t>());
  m.ranges = r.GetRanges();
  m.payload_bytes = r.Get<uint64_t>();
  m.payload_crc = r.Get<uint32_t>();
  PREFILL_RETURN_IF_ERROR(Finished(r, "layer"));
  return m;
}

inline absl::StatusOr<CommitMessage> DecodeCommit(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, r);
  if (!p.ok()) return p.status();
  CommitMessage m;
  m.prefix = *p;
  m.messages = r.Get<uint32_t>();
  m.payload_bytes = r.Get<uint64_t>();
  m.payload_crc = r.Get<uint32_t>();
  PREFILL_RETURN_IF_ERROR(Finished(r, "commit"));
  return m;
}

inline absl::StatusOr<AckMessage> DecodeAck(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, r);
  if (!p.ok()) return p.status();
  AckMessage m;
  m.prefix = *p;
  m.status = r.Get<int32_t>();
  m.message = r.GetString();
  m.payload_bytes = r.Get<uint64_t>();
  m.payload_crc = r.Get<uint32_t>();
  PREFILL_RETURN_IF_ERROR(Finished(r, "ack"));
  return m;
}

// The Commit/Ack combined CRC: CRC32C over the payload CRCs (as little-endian u32) in
// (layer, kind) order.
inline uint32_t CombineCrcs(const std::vector<uint32_t>& crcs) {
  std::string bytes;
  for (uint32_t c : crcs) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((c >> (8 * i)) & 0xff));
  }
  return Crc32c(bytes.data(), bytes.size());
}

}  // namespace prefill::kvwire
