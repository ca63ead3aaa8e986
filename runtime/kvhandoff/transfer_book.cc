#include "runtime/kvhandoff/transfer_book.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/kv_file_sink.h"
#include "runtime/tensor.h"

namespace prefill {

namespace wire = kvwire;
using Clock = std::chrono::steady_clock;

// One rank's share of an attempt.
struct KvRankPart {
  KvPeer peer = 0;
  wire::BeginMessage begin;
  std::vector<Tensor> keys, values;
  std::vector<uint8_t> state;  // per (layer, kind): 0 absent, 1 arriving, 2 held and verified
  std::vector<uint32_t> crcs;  // per (layer, kind)
  uint64_t bytes = 0;
  std::optional<wire::CommitMessage> commit;
};

struct KvTransfer {
  std::string request_id;
  uint64_t transfer_id = 0;
  uint32_t world_size = 0;
  std::map<uint32_t, KvRankPart> parts;
  Clock::time_point start = Clock::now();
  bool dropped = false;
  int arriving = 0;  // accepted payloads not yet in place
};

namespace {

const char* KindName(size_t index) { return index % 2 == 0 ? "key" : "value"; }

// Why rank `m`'s Begin cannot join `t` (empty: it can).
std::string BeginProblem(const wire::BeginMessage& m, const KvTransfer& t) {
  const uint32_t rank = m.prefix.rank;
  const absl::StatusOr<DType> dtype = ParseDType(m.dtype);
  if (m.world_size == 0 || m.world_size > 65536 || m.world_size != t.world_size ||
      rank >= m.world_size) {
    return absl::StrCat("rank ", rank, " of ", m.world_size, " does not fit a group of ",
                        t.world_size);
  }
  if (t.parts.count(rank) != 0) return absl::StrCat("rank ", rank, " began twice");
  if (!dtype.ok() || m.num_layers == 0 || m.num_layers > 100000 || m.kv_heads == 0 ||
      m.head_dim == 0 || m.seq_len <= 0 || m.local_rows <= 0 || m.layout.empty() ||
      m.local_rows * int64_t{m.kv_heads} * m.head_dim > (int64_t{1} << 36)) {
    return absl::StrCat("rank ", rank, " declares a geometry that cannot be right");
  }
  if (!t.parts.empty()) {
    const wire::BeginMessage& first = t.parts.begin()->second.begin;
    if (first.seq_len != m.seq_len || first.num_layers != m.num_layers ||
        first.kv_heads != m.kv_heads || first.head_dim != m.head_dim || first.dtype != m.dtype ||
        first.layout != m.layout) {
      return absl::StrCat("rank ", rank, "'s geometry differs from rank ", t.parts.begin()->first,
                          "'s");
    }
  }
  for (const KvTokenRange& r : m.ranges) {
    if (r.length <= 0 || r.start < 0 || r.start + r.length > m.seq_len || r.row < 0 ||
        r.row + r.length > m.local_rows) {
      return absl::StrCat("rank ", rank, " declares tokens [", r.start, ", ", r.start + r.length,
                          ") at rows [", r.row, ", ", r.row + r.length,
                          ") outside the sequence or its shard");
    }
  }
  return "";
}

// Why a rank's ranges do not cover [0, seq_len) exactly once together (OK: they do), given
// every rank's ranges; each rank's own ranges must not share shard rows either.
absl::Status CheckCoverage(const std::map<uint32_t, KvRankPart>& parts) {
  std::vector<KvTokenRange> all;
  int64_t seq_len = 0;
  for (const auto& [rank, part] : parts) {
    seq_len = part.begin.seq_len;
    std::vector<KvTokenRange> rows = part.begin.ranges;
    std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.row < b.row; });
    for (size_t i = 1; i < rows.size(); ++i) {
      if (rows[i].row < rows[i - 1].row + rows[i - 1].length) {
        return absl::InvalidArgumentError(
            absl::StrCat("rank ", rank, "'s token ranges share shard rows"));
      }
    }
    all.insert(all.end(), part.begin.ranges.begin(), part.begin.ranges.end());
  }
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.start < b.start; });
  int64_t next = 0;
  for (const KvTokenRange& r : all) {
    if (r.start != next) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ranges do not cover the sequence exactly once: ",
                       r.start < next ? "overlap" : "gap", " at token ", std::min(r.start, next)));
    }
    next = r.start + r.length;
  }
  if (next != seq_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ranges end at ", next, ", the sequence at ", seq_len));
  }
  return absl::OkStatus();
}

}  // namespace

KvTransferBook::KvTransferBook(Options options, Hooks hooks)
    : options_(std::move(options)), hooks_(std::move(hooks)) {}
KvTransferBook::~KvTransferBook() = default;

std::optional<KvTransferBook::PayloadSlot> KvTransferBook::OnMessage(
    KvPeer peer, std::span<const std::byte> header, size_t payload_length) {
  switch (static_cast<wire::MessageType>(wire::PeekType(header))) {
    case wire::MessageType::kBegin:
      OnBegin(peer, header);
      return std::nullopt;
    case wire::MessageType::kLayer:
      return OnLayer(peer, header, payload_length);
    case wire::MessageType::kCommit:
      OnCommit(peer, header);
      return std::nullopt;
    default:
      Reject(peer, absl::InvalidArgumentError("a message that is not KV handoff protocol"));
      return std::nullopt;
  }
}

void KvTransferBook::OnBegin(KvPeer peer, std::span<const std::byte> header) {
  absl::StatusOr<wire::BeginMessage> m = wire::DecodeBegin(header);
  if (!m.ok()) return Reject(peer, m.status());
  const std::string& id = m->prefix.request_id;
  const uint32_t rank = m->prefix.rank;
  std::shared_ptr<KvTransfer> t;
  if (auto it = transfers_.find(id); it != transfers_.end()) {
    if (it->second->transfer_id == m->prefix.transfer_id) {
      t = it->second;
    } else {
      Drop(it->second, absl::StrCat("superseded by a newer attempt (transfer ",
                                    absl::Hex(m->prefix.transfer_id), ")"));
    }
  }
  if (t == nullptr) {
    t = std::make_shared<KvTransfer>();
    t->request_id = id;
    t->transfer_id = m->prefix.transfer_id;
    t->world_size = m->world_size;
    transfers_[id] = t;
  }
  if (const std::string problem = BeginProblem(*m, *t); !problem.empty()) {
    t->parts[rank].peer = peer;  // so that it hears why
    return Drop(t, problem);
  }
  KvRankPart& part = t->parts[rank];
  part.peer = peer;
  part.begin = std::move(*m);
  const DType dtype = *ParseDType(part.begin.dtype);
  const std::vector<int64_t> shape = {part.begin.local_rows, part.begin.kv_heads,
                                      part.begin.head_dim};
  for (uint32_t l = 0; l < part.begin.num_layers; ++l) {
    part.keys.push_back(Tensor::Zeros(dtype, shape));
    part.values.push_back(Tensor::Zeros(dtype, shape));
  }
  part.state.assign(2 * part.begin.num_layers, 0);
  part.crcs.assign(2 * part.begin.num_layers, 0);
}

std::optional<KvTransferBook::PayloadSlot> KvTransferBook::OnLayer(
    KvPeer peer, std::span<const std::byte> header, size_t payload_length) {
  absl::StatusOr<wire::LayerMessage> m = wire::DecodeLayer(header);
  if (!m.ok()) {
    Reject(peer, m.status());
    return std::nullopt;
  }
  std::shared_ptr<KvTransfer> t = Find(m->prefix);
  if (t == nullptr)
    return std::nullopt;  // a dropped or superseded attempt: its ranks already heard why
  const uint32_t rank = m->prefix.rank;
  auto it = t->parts.find(rank);
  if (it == t->parts.end() || it->second.peer != peer) {
    Drop(t, absl::StrCat("rank ", rank, " sent layer ", m->layer, " before beginning"));
    return std::nullopt;
  }
  KvRankPart& part = it->second;
  const size_t index = 2 * size_t{m->layer} + m->kind;
  const std::vector<int64_t> shape = {part.begin.local_rows, part.begin.kv_heads,
                                      part.begin.head_dim};
  std::string problem;
  if (m->layer >= part.begin.num_layers || m->kind > 1) {
    problem = absl::StrCat("rank ", rank, " sent layer ", m->layer, " kind ", int{m->kind},
                           " of a ", part.begin.num_layers, "-layer cache");
  } else if (part.state[index] != 0) {
    problem = absl::StrCat("rank ", rank, " sent layer ", m->layer, " ", KindName(index), " twice");
  } else if (m->dtype != part.begin.dtype || m->shape != shape || m->ranges != part.begin.ranges ||
             m->payload_bytes != payload_length || payload_length != part.keys[0].bytes.size()) {
    problem = absl::StrCat("rank ", rank, "'s layer ", m->layer, " ", KindName(index),
                           " does not match the geometry it began with");
  }
  if (!problem.empty()) {
    Drop(t, problem);
    return std::nullopt;
  }
  Tensor& dst = m->kind == 0 ? part.keys[m->layer] : part.values[m->layer];
  part.state[index] = 1;
  ++t->arriving;
  return PayloadSlot{t,
                     rank,
                     index,
                     reinterpret_cast<std::byte*>(dst.bytes.data()),
                     payload_length,
                     m->payload_crc};
}

void KvTransferBook::Arrived(const PayloadSlot& slot, const absl::Status& status) {
  KvTransfer& t = *slot.transfer;
  --t.arriving;
  if (t.dropped) return;
  const std::string what =
      absl::StrCat("rank ", slot.rank, "'s layer ", slot.index / 2, " ", KindName(slot.index));
  if (!status.ok())
    return Drop(slot.transfer, absl::StrCat(what, " did not arrive: ", status.message()));
  const uint32_t got = wire::Crc32c(slot.dst, slot.length);
  if (got != slot.crc) {
    return Drop(slot.transfer, absl::StrCat(what, " arrived with checksum ", absl::Hex(got),
                                            ", its header says ", absl::Hex(slot.crc)));
  }
  KvRankPart& part = t.parts.at(slot.rank);
  part.state[slot.index] = 2;
  part.crcs[slot.index] = slot.crc;
  part.bytes += slot.length;
}

void KvTransferBook::OnCommit(KvPeer peer, std::span<const std::byte> header) {
  absl::StatusOr<wire::CommitMessage> m = wire::DecodeCommit(header);
  if (!m.ok()) return Reject(peer, m.status());
  std::shared_ptr<KvTransfer> t = Find(m->prefix);
  if (t == nullptr) return;
  auto it = t->parts.find(m->prefix.rank);
  if (it == t->parts.end() || it->second.peer != peer || it->second.commit.has_value()) {
    return Drop(t, absl::StrCat("rank ", m->prefix.rank, " committed without beginning, or twice"));
  }
  it->second.commit = *m;
}

void KvTransferBook::PeerLost(KvPeer peer, const std::string& reason) {
  std::vector<std::shared_ptr<KvTransfer>> hit;
  for (auto& [id, t] : transfers_) {
    for (auto& [rank, part] : t->parts) {
      if (part.peer == peer) {
        hit.push_back(t);
        break;
      }
    }
  }
  for (const std::shared_ptr<KvTransfer>& t : hit) {
    uint32_t rank = 0;
    uint64_t held = 0;
    for (auto& [r, part] : t->parts) {
      if (part.peer == peer) rank = r;
      held += part.bytes;
    }
    Drop(t, absl::StrCat("the connection from rank ", rank, " (", hooks_.peer_name(peer),
                         ") was lost (", reason, ") with ", held, " bytes held"));
  }
}

int KvTransferBook::CompleteReady() {
  std::vector<std::shared_ptr<KvTransfer>> ready;
  for (auto& [id, t] : transfers_) {
    if (t->arriving > 0 || t->parts.size() != t->world_size) continue;
    bool committed = true;
    for (auto& [rank, part] : t->parts) committed = committed && part.commit.has_value();
    if (committed) ready.push_back(t);
  }
  int acknowledged = 0;
  for (const std::shared_ptr<KvTransfer>& t : ready) {
    absl::Status s = Check(*t);
    if (s.ok()) s = Publish(*t);
    if (!s.ok()) {
      Drop(t, std::string(s.message()));
      continue;
    }
    Acknowledge(*t);
    transfers_.erase(t->request_id);
    ++acknowledged;
  }
  return acknowledged;
}

void KvTransferBook::DropAll(const std::string& why) {
  for (auto& [id, t] : std::map<std::string, std::shared_ptr<KvTransfer>>(transfers_)) Drop(t, why);
}

std::shared_ptr<KvTransfer> KvTransferBook::Find(const wire::Prefix& p) const {
  auto it = transfers_.find(p.request_id);
  if (it == transfers_.end() || it->second->transfer_id != p.transfer_id) return nullptr;
  return it->second;
}

// Complete: every layer of every rank once (checksums verified on arrival), commits agreeing,
// token ranges covering [0, seq_len) exactly once.
absl::Status KvTransferBook::Check(const KvTransfer& t) const {
  for (const auto& [rank, part] : t.parts) {
    for (size_t index = 0; index < part.state.size(); ++index) {
      if (part.state[index] != 2) {
        return absl::DataLossError(absl::StrCat("rank ", rank, " committed without layer ",
                                                index / 2, " ", KindName(index)));
      }
    }
    const wire::CommitMessage& c = *part.commit;
    if (c.messages != part.state.size() || c.payload_bytes != part.bytes ||
        c.payload_crc != wire::CombineCrcs(part.crcs)) {
      return absl::DataLossError(absl::StrCat("rank ", rank, " committed ", c.messages,
                                              " messages / ", c.payload_bytes,
                                              " bytes, the receiver holds ", part.state.size(),
                                              " / ", part.bytes, " with other checksums"));
    }
  }
  return CheckCoverage(t.parts);
}

std::string KvTransferBook::KvDir(const std::string& request_id) const {
  return absl::StrCat(options_.out, "/kv/", request_id);
}

absl::Status KvTransferBook::Publish(const KvTransfer& t) const {
  if (options_.out.empty()) return absl::OkStatus();
  const wire::BeginMessage& b = t.parts.begin()->second.begin;
  KvCacheGeometry g;
  g.seq_len = b.seq_len;
  g.num_layers = static_cast<int>(b.num_layers);
  g.kv_heads = static_cast<int>(b.kv_heads);
  g.head_dim = static_cast<int>(b.head_dim);
  g.dtype = *ParseDType(b.dtype);
  g.layout = b.layout;
  g.world_size = static_cast<int>(t.world_size);
  const std::string final_dir = KvDir(t.request_id);
  absl::StatusOr<std::string> staging = StageKvCache(final_dir);
  if (!staging.ok()) return staging.status();
  for (const auto& [rank, part] : t.parts) {
    g.ranges.push_back(part.begin.ranges);
    const std::vector<TensorView> keys(part.keys.begin(), part.keys.end()),
        values(part.values.begin(), part.values.end());
    const std::string shard = absl::StrCat(*staging, "/", KvShardFileName(static_cast<int>(rank)));
    if (absl::Status s = WriteKvShard(shard, keys, values); !s.ok()) return s;
  }
  return PublishKvCache(final_dir, g);
}

void KvTransferBook::Acknowledge(const KvTransfer& t) {
  uint64_t bytes = 0;
  for (const auto& [rank, part] : t.parts) {
    bytes += part.bytes;
    wire::AckMessage ack;
    ack.prefix = {wire::MessageType::kAck, t.transfer_id, t.request_id, rank};
    ack.payload_bytes = part.bytes;
    ack.payload_crc = wire::CombineCrcs(part.crcs);
    hooks_.send_ack(part.peer, ack);
  }
  const wire::BeginMessage& b = t.parts.begin()->second.begin;
  const double seconds = std::chrono::duration<double>(Clock::now() - t.start).count();
  hooks_.log(absl::StrFormat(
      "%s acknowledged: %u ranks, %u layers, %d tokens, %s, %.2f MiB in %.3f s (%.2f GB/s)%s",
      t.request_id, t.world_size, b.num_layers, b.seq_len, b.dtype, bytes / 1048576.0, seconds,
      seconds > 0 ? bytes / seconds / 1e9 : 0.0,
      options_.out.empty() ? ", checksums verified"
                           : absl::StrCat(", written to ", KvDir(t.request_id))));
}

// Drops an unacknowledged attempt and tells each of its ranks why (a refusal, not an ack).
void KvTransferBook::Drop(const std::shared_ptr<KvTransfer>& t, const std::string& why) {
  if (t == nullptr || t->dropped) return;
  t->dropped = true;
  hooks_.log(absl::StrCat(t->request_id, " dropped, not acknowledged: ", why));
  for (auto& [rank, part] : t->parts) {
    wire::AckMessage nack;
    nack.prefix = {wire::MessageType::kAck, t->transfer_id, t->request_id, rank};
    nack.status = static_cast<int32_t>(absl::StatusCode::kAborted);
    nack.message = why.substr(0, 1000);
    hooks_.send_ack(part.peer, nack);
  }
  if (auto it = transfers_.find(t->request_id); it != transfers_.end() && it->second == t)
    transfers_.erase(it);
}

// A message that cannot be parsed: its attempt is unknown, so the peer is refused.
void KvTransferBook::Reject(KvPeer peer, const absl::Status& why) {
  hooks_.log(absl::StrCat("refused a message from ", hooks_.peer_name(peer), ": ", why.message()));
  wire::AckMessage nack;
  nack.prefix = {wire::MessageType::kAck, 0, "unknown", 0};
  nack.status = static_cast<int32_t>(absl::StatusCode::kInvalidArgument);
  nack.message = std::string(why.message()).substr(0, 1000);
  hooks_.send_ack(peer, nack);
}

}  // namespace prefill
