#include "runtime/kvhandoff/wire_protocol.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace prefill::kvwire {
namespace {

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

// Checks magic, version, length and CRC, and reads the prefix; the body follows in `r`.
const char* TypeName(MessageType type) {  // with its article
  switch (type) {
    case MessageType::kBegin:
      return "a begin";
    case MessageType::kLayer:
      return "a layer";
    case MessageType::kCommit:
      return "a commit";
    case MessageType::kAck:
      return "an acknowledgement";
  }
  return "an unknown";
}

absl::StatusOr<Prefix> ReadPrefix(std::span<const std::byte> header, MessageType expected,
                                  Reader& r) {
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
  if (p.type != expected)
    return bad(
        absl::StrCat(TypeName(p.type), " message where ", TypeName(expected), " one was expected"));
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
  if (!ValidKvRequestId(p.request_id))
    return bad(absl::StrCat("request id '", p.request_id, "' is not [A-Za-z0-9._-]{1,128}"));
  return p;
}

absl::Status Finished(const Reader& r, const char* what) {
  if (!r.ok() || !r.at_end())
    return absl::InvalidArgumentError(
        absl::StrCat("KV handoff ", what, " header: truncated or overlong"));
  return absl::OkStatus();
}

}  // namespace

std::string Encode(const BeginMessage& m) {
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

std::string Encode(const LayerMessage& m) {
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

std::string Encode(const CommitMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.messages);
  w.Put(m.payload_bytes);
  w.Put(m.payload_crc);
  return w.Finish();
}

std::string Encode(const AckMessage& m) {
  Writer w;
  w.PutPrefix(m.prefix);
  w.Put(m.status);
  w.PutString(m.message);
  w.Put(m.payload_bytes);
  w.Put(m.payload_crc);
  return w.Finish();
}

uint16_t PeekType(std::span<const std::byte> header) {
  if (header.size() < kPrefixBytes) return 0;
  return static_cast<uint16_t>(static_cast<uint8_t>(header[6]) | static_cast<uint8_t>(header[7])
                                                                     << 8);
}

absl::StatusOr<BeginMessage> DecodeBegin(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, MessageType::kBegin, r);
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

absl::StatusOr<LayerMessage> DecodeLayer(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, MessageType::kLayer, r);
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

absl::StatusOr<CommitMessage> DecodeCommit(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, MessageType::kCommit, r);
  if (!p.ok()) return p.status();
  CommitMessage m;
  m.prefix = *p;
  m.messages = r.Get<uint32_t>();
  m.payload_bytes = r.Get<uint64_t>();
  m.payload_crc = r.Get<uint32_t>();
  PREFILL_RETURN_IF_ERROR(Finished(r, "commit"));
  return m;
}

absl::StatusOr<AckMessage> DecodeAck(std::span<const std::byte> header) {
  Reader r(header);
  absl::StatusOr<Prefix> p = ReadPrefix(header, MessageType::kAck, r);
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

uint32_t CombineCrcs(const std::vector<uint32_t>& crcs) {
  std::string bytes;
  for (uint32_t c : crcs) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((c >> (8 * i)) & 0xff));
  }
  return Crc32c(bytes.data(), bytes.size());
}

}  // namespace prefill::kvwire
