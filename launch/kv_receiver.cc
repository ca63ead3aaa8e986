// kv-receiver: the stand-in for a decode server in the KV handoff (docs/kv-handoff.md).
// Listens on a UCX socket address; every rank of a prefill group connects and streams its
// KV shards (runtime/kv_handoff_protocol.h). A request is acknowledged to each of its ranks
// only when it is complete: every rank of the group, every layer's key and value exactly
// once with a matching checksum, and token ranges that cover the sequence exactly once. Then
// it is written (--out DIR: DIR/kv/<request>/rank{r}.safetensors + index.json, the layout of
// `prefill model --kv-out`, published atomically) or only verified (--verify-only).
// A connection lost mid-request drops the request: nothing partial is ever acknowledged.
//
//   kv-receiver --listen 0.0.0.0:13337 --out /srv/kv
//   kv-receiver --listen 127.0.0.1:0 --verify-only --port-file port.txt --exit-after 1
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "runtime/atomic_file.h"
#include "runtime/kv_file_sink.h"
#include "runtime/kv_handoff_protocol.h"
#include "runtime/ucx_kv_sink.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
namespace wire = kvwire;

volatile std::sig_atomic_t g_stop = 0;
void OnTerminate(int) { g_stop = 1; }

struct ReceiverOptions {
  std::string listen = "0.0.0.0:13337";
  std::string out;
  bool verify_only = false;
  int exit_after = 0;            // 0: run until SIGTERM/SIGINT
  int64_t die_after_bytes = -1;  // test hook: _exit(3) once this many payload bytes arrived
  std::string port_file;
};

struct Connection {
  ucp_ep_h ep = nullptr;
  std::string peer;
  bool failed = false;
  ucs_status_t status = UCS_OK;
};

// One rank's share of a transfer.
struct RankPart {
  std::shared_ptr<Connection> conn;
  wire::BeginMessage begin;
  std::vector<Tensor> keys, values;
  std::vector<uint8_t> state;  // per (layer, kind): 0 absent, 1 arriving, 2 held and verified
  std::vector<uint32_t> crcs;  // per (layer, kind)
  uint64_t bytes = 0;
  std::optional<wire::CommitMessage> commit;
};

// One attempt (transfer id) at one request.
struct Transfer {
  std::string request_id;
  uint64_t transfer_id = 0;
  uint32_t world_size = 0;
  std::map<uint32_t, RankPart> parts;
  Clock::time_point start = Clock::now();
  bool dropped = false;
  int arriving = 0;  // rendezvous receives in flight into parts' buffers
};

// A rendezvous payload: accepted in the AM callback, received from the main loop.
struct ArrivingPayload {
  std::shared_ptr<Transfer> transfer;
  uint32_t rank = 0;
  size_t slot = 0;
  void* desc = nullptr;
  void* dst = nullptr;
  size_t length = 0;
  uint32_t crc = 0;
  ucs_status_ptr_t request = nullptr;
  bool posted = false, done = false;
  ucs_status_t status = UCS_OK;
};

struct AckSend {
  std::string header;
  bool done = false;
};

class Receiver {
 public:
  explicit Receiver(ReceiverOptions o) : o_(std::move(o)) {}

  absl::Status Run() {
    absl::StatusOr<std::unique_ptr<UcxWorker>> w = UcxWorker::Create();
    if (!w.ok()) return w.status();
    worker_ = std::move(*w);
    for (wire::MessageType type :
         {wire::MessageType::kBegin, wire::MessageType::kLayer, wire::MessageType::kCommit}) {
      ucp_am_handler_param_t h{};
      h.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                     UCP_AM_HANDLER_PARAM_FIELD_ARG;
      h.id = static_cast<unsigned>(type);
      h.cb = &Receiver::OnMessage;
      h.arg = this;
      UCS_CHECK(ucp_worker_set_am_recv_handler(worker_->worker(), &h));
    }
    absl::StatusOr<SocketAddress> address = ResolveHostPort(o_.listen, true);
    if (!address.ok())
      return absl::InvalidArgumentError(absl::StrCat("--listen ", address.status().message()));
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&address->addr);
    lp.sockaddr.addrlen = address->length;
    lp.conn_handler.cb = &Receiver::OnConnectionRequest;
    lp.conn_handler.arg = this;
    UCS_CHECK(ucp_listener_create(worker_->worker(), &lp, &listener_));
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    UCS_CHECK(ucp_listener_query(listener_, &la));
    const std::string bound = SocketAddressText(la.sockaddr);
    std::printf(
        "kv-receiver: listening on %s (%s)\n", bound.c_str(),
        o_.verify_only ? "verify only" : absl::StrCat("writing to ", o_.out, "/kv").c_str());
    std::fflush(stdout);
    if (!o_.port_file.empty()) {
      const std::string port = bound.substr(bound.rfind(':') + 1);
      PREFILL_RETURN_IF_ERROR(WriteFileAtomically(o_.port_file, port + "\n"));
    }

    int idle_rounds = 0;
    while (g_stop == 0) {
      bool any = worker_->Progress();
      any |= AcceptConnections();
      any |= ReceivePayloads();
      any |= DropLostConnections();
      any |= CompleteTransfers();
      any |= ReapAcks();
      if (o_.exit_after > 0 && acknowledged_ >= o_.exit_after && acks_.empty()) break;
      if (any) {
        idle_rounds = 0;
      } else {
        // Short naps while a request is in flight; 1 ms ones when idle (a connection's wireup
        // takes a few round trips, each waiting out one nap).
        worker_->Backoff(idle_rounds, transfers_.empty() && acks_.empty() ? 1000 : 160);
      }
    }
    Shutdown();
    return absl::OkStatus();
  }

 private:
  // ---- UCX callbacks: record what happened; the main loop acts on it --------------------

  static void OnConnectionRequest(ucp_conn_request_h request, void* arg) {
    static_cast<Receiver*>(arg)->conn_requests_.push_back(request);
  }

  static void OnEndpointError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* conn = static_cast<Connection*>(arg);
    conn->failed = true;
    conn->status = status;
  }

  static void OnPayload(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* p = static_cast<ArrivingPayload*>(user_data);
    p->done = true;
    p->status = status;
    ucp_request_free(request);
  }

  static void OnAckSent(void* request, ucs_status_t, void* user_data) {
    static_cast<AckSend*>(user_data)->done = true;
    ucp_request_free(request);
  }

  static ucs_status_t OnMessage(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Receiver*>(arg);
    const std::span<const std::byte> h(static_cast<const std::byte*>(header), header_length);
    std::shared_ptr<Connection> conn;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0) {
      if (auto it = self->connections_.find(param->reply_ep); it != self->connections_.end())
        conn = it->second;
    }
    const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if (conn == nullptr) {
      std::fprintf(stderr, "kv-receiver: a message from an unknown endpoint was dropped\n");
      return UCS_OK;
    }
    if (header_length >= wire::kPrefixBytes) {
      uint16_t type = static_cast<uint16_t>(static_cast<uint8_t>(h[6])) |
                      static_cast<uint16_t>(static_cast<uint8_t>(h[7])) << 8;
      if (type == static_cast<uint16_t>(wire::MessageType::kBegin)) return self->OnBegin(conn, h);
      if (type == static_cast<uint16_t>(wire::MessageType::kLayer))
        return self->OnLayer(conn, h, data, length, rndv);
      if (type == static_cast<uint16_t>(wire::MessageType::kCommit)) return self->OnCommit(conn, h);
    }
    self->Reject(conn, absl::InvalidArgumentError("a message that is not KV handoff protocol"));
    return UCS_OK;
  }

  // ---- Messages --------------------------------------------------------------------------

  ucs_status_t OnBegin(const std::shared_ptr<Connection>& conn, std::span<const std::byte> h) {
    absl::StatusOr<wire::BeginMessage> m = wire::DecodeBegin(h);
    if (!m.ok()) {
      Reject(conn, m.status());
      return UCS_OK;
    }
    const std::string& id = m->prefix.request_id;
    const uint32_t rank = m->prefix.rank;
    std::shared_ptr<Transfer> t;
    if (auto it = transfers_.find(id); it != transfers_.end()) {
      if (it->second->transfer_id == m->prefix.transfer_id) {
        t = it->second;
      } else {
        Drop(it->second, absl::StrCat("superseded by a newer attempt (transfer ",
                                      absl::Hex(m->prefix.transfer_id), ")"));
      }
    }
    if (t == nullptr) {
      t = std::make_shared<Transfer>();
      t->request_id = id;
      t->transfer_id = m->prefix.transfer_id;
      t->world_size = m->world_size;
      transfers_[id] = t;
    }
    absl::StatusOr<DType> dtype = ParseDType(m->dtype);
    std::string problem;
    if (m->world_size == 0 || m->world_size > 65536 || m->world_size != t->world_size ||
        rank >= m->world_size) {
      problem = absl::StrCat("rank ", rank, " of ", m->world_size, " does not fit a group of ",
                             t->world_size);
    } else if (t->parts.count(rank) != 0) {
      problem = absl::StrCat("rank ", rank, " began twice");
    } else if (!dtype.ok() || m->num_layers == 0 || m->num_layers > 100000 || m->kv_heads == 0 ||
               m->head_dim == 0 || m->seq_len <= 0 || m->local_rows <= 0 || m->layout.empty() ||
               m->local_rows * int64_t{m->kv_heads} * m->head_dim > (int64_t{1} << 36)) {
      problem = absl::StrCat("rank ", rank, " declares a geometry that cannot be right");
    } else if (!t->parts.empty()) {
      const wire::BeginMessage& first = t->parts.begin()->second.begin;
      if (first.seq_len != m->seq_len || first.num_layers != m->num_layers ||
          first.kv_heads != m->kv_heads || first.head_dim != m->head_dim ||
          first.dtype != m->dtype || first.layout != m->layout) {
        problem = absl::StrCat("rank ", rank, "'s geometry differs from rank ",
                               t->parts.begin()->first, "'s");
      }
    }
    for (const KvTokenRange& r : m->ranges) {
      if (problem.empty() && (r.length <= 0 || r.start < 0 || r.start + r.length > m->seq_len ||
                              r.row < 0 || r.row + r.length > m->local_rows)) {
        problem = absl::StrCat("rank ", rank, " declares tokens [", r.start, ", ",
                               r.start + r.length, ") at rows [", r.row, ", ", r.row + r.length,
                               ") outside the sequence or its shard");
      }
    }
    if (!problem.empty()) {
      t->parts[rank].conn = conn;  // so that it hears why
      Drop(t, problem);
      return UCS_OK;
    }
    RankPart& part = t->parts[rank];
    part.conn = conn;
    part.begin = std::move(*m);
    const std::vector<int64_t> shape = {part.begin.local_rows, part.begin.kv_heads,
                                        part.begin.head_dim};
    for (uint32_t l = 0; l < part.begin.num_layers; ++l) {
      part.keys.push_back(Tensor::Zeros(*dtype, shape));
      part.values.push_back(Tensor::Zeros(*dtype, shape));
    }
    part.state.assign(2 * part.begin.num_layers, 0);
    part.crcs.assign(2 * part.begin.num_layers, 0);
    return UCS_OK;
  }

  ucs_status_t OnLayer(const std::shared_ptr<Connection>& conn, std::span<const std::byte> h,
                       void* data, size_t length, bool rndv) {
    absl::StatusOr<wire::LayerMessage> m = wire::DecodeLayer(h);
    if (!m.ok()) {
      Reject(conn, m.status());
      return UCS_OK;
    }
    std::shared_ptr<Transfer> t = Find(m->prefix);
    if (t == nullptr)
      return UCS_OK;  // a dropped or superseded attempt: its ranks already heard why
    const uint32_t rank = m->prefix.rank;
    auto it = t->parts.find(rank);
    if (it == t->parts.end() || it->second.conn != conn) {
      Drop(t, absl::StrCat("rank ", rank, " sent layer ", m->layer, " before beginning"));
      return UCS_OK;
    }
    RankPart& part = it->second;
    const size_t slot = 2 * size_t{m->layer} + m->kind;
    const std::vector<int64_t> shape = {part.begin.local_rows, part.begin.kv_heads,
                                        part.begin.head_dim};
    const char* kind = m->kind == 0 ? "key" : "value";
    std::string problem;
    if (m->layer >= part.begin.num_layers || m->kind > 1) {
      problem = absl::StrCat("rank ", rank, " sent layer ", m->layer, " kind ", int{m->kind},
                             " of a ", part.begin.num_layers, "-layer cache");
    } else if (part.state[slot] != 0) {
      problem = absl::StrCat("rank ", rank, " sent layer ", m->layer, " ", kind, " twice");
    } else if (m->dtype != part.begin.dtype || m->shape != shape ||
               m->ranges != part.begin.ranges || m->payload_bytes != length ||
               length != part.keys[0].bytes.size()) {
      problem = absl::StrCat("rank ", rank, "'s layer ", m->layer, " ", kind,
                             " does not match the geometry it began with");
    }
    if (!problem.empty()) {
      Drop(t, problem);
      return UCS_OK;
    }
    Tensor& dst = m->kind == 0 ? part.keys[m->layer] : part.values[m->layer];
    if (rndv) {
      part.state[slot] = 1;
      ++t->arriving;
      arriving_.push_back(std::make_unique<ArrivingPayload>());
      ArrivingPayload& p = *arriving_.back();
      p.transfer = t;
      p.rank = rank;
      p.slot = slot;
      p.desc = data;
      p.dst = dst.bytes.data();
      p.length = length;
      p.crc = m->payload_crc;
      return UCS_INPROGRESS;  // the main loop receives it into dst
    }
    std::memcpy(dst.bytes.data(), data, length);
    Held(t, part, slot, m->payload_crc, length);
    return UCS_OK;
  }

  ucs_status_t OnCommit(const std::shared_ptr<Connection>& conn, std::span<const std::byte> h) {
    absl::StatusOr<wire::CommitMessage> m = wire::DecodeCommit(h);
    if (!m.ok()) {
      Reject(conn, m.status());
      return UCS_OK;
    }
    std::shared_ptr<Transfer> t = Find(m->prefix);
    if (t == nullptr) return UCS_OK;
    auto it = t->parts.find(m->prefix.rank);
    if (it == t->parts.end() || it->second.conn != conn || it->second.commit.has_value()) {
      Drop(t, absl::StrCat("rank ", m->prefix.rank, " committed without beginning, or twice"));
      return UCS_OK;
    }
    it->second.commit = *m;
    return UCS_OK;
  }

  // A payload is in place: check its CRC against the header's.
  void Held(const std::shared_ptr<Transfer>& t, RankPart& part, size_t slot, uint32_t crc,
            size_t length) {
    total_bytes_ += length;
    if (o_.die_after_bytes >= 0 && total_bytes_ >= static_cast<uint64_t>(o_.die_after_bytes)) {
      std::fprintf(stderr,
                   "kv-receiver: --die-after-bytes %lld reached: exiting without acknowledging\n",
                   static_cast<long long>(o_.die_after_bytes));
      std::fflush(stderr);
      _exit(3);
    }
    const void* bytes = (slot % 2 == 0 ? part.keys : part.values)[slot / 2].bytes.data();
    const uint32_t got = wire::Crc32c(bytes, length);
    if (got != crc) {
      Drop(t, absl::StrCat("rank ", part.begin.prefix.rank, "'s layer ", slot / 2, " ",
                           slot % 2 ? "value" : "key", " arrived with checksum ", absl::Hex(got),
                           ", its header says ", absl::Hex(crc)));
      return;
    }
    part.state[slot] = 2;
    part.crcs[slot] = crc;
    part.bytes += length;
  }

  std::shared_ptr<Transfer> Find(const wire::Prefix& p) {
    auto it = transfers_.find(p.request_id);
    if (it == transfers_.end() || it->second->transfer_id != p.transfer_id) return nullptr;
    return it->second;
  }

  // ---- Main-loop steps -----------------------------------------------------------------

  bool AcceptConnections() {
    bool any = false;
    while (!conn_requests_.empty()) {
      ucp_conn_request_h request = conn_requests_.front();
      conn_requests_.pop_front();
      any = true;
      auto conn = std::make_shared<Connection>();
      ucp_conn_request_attr_t attr{};
      attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
      conn->peer = ucp_conn_request_query(request, &attr) == UCS_OK
                       ? SocketAddressText(attr.client_address)
                       : "?";
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
      ep.conn_request = request;
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep.err_handler.cb = &Receiver::OnEndpointError;
      ep.err_handler.arg = conn.get();
      if (const ucs_status_t s = ucp_ep_create(worker_->worker(), &ep, &conn->ep); s != UCS_OK) {
        std::fprintf(stderr, "kv-receiver: cannot accept %s: %s\n", conn->peer.c_str(),
                     ucs_status_string(s));
        continue;
      }
      connections_[conn->ep] = conn;
    }
    return any;
  }

  bool ReceivePayloads() {
    bool any = false;
    for (auto it = arriving_.begin(); it != arriving_.end();) {
      ArrivingPayload& p = **it;
      if (!p.posted) {
        p.posted = true;
        any = true;
        ucp_request_param_t rp{};
        rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        rp.cb.recv_am = &Receiver::OnPayload;
        rp.user_data = &p;
        ucs_status_ptr_t req =
            ucp_am_recv_data_nbx(worker_->worker(), p.desc, p.dst, p.length, &rp);
        if (req == nullptr) {
          p.done = true;
        } else if (UCS_PTR_IS_ERR(req)) {
          p.done = true;
          p.status = UCS_PTR_STATUS(req);
        }
      }
      if (!p.done) {
        ++it;
        continue;
      }
      any = true;
      Transfer& t = *p.transfer;
      --t.arriving;
      if (!t.dropped) {
        RankPart& part = t.parts.at(p.rank);
        if (p.status != UCS_OK) {
          Drop(p.transfer, absl::StrCat("rank ", p.rank, "'s layer ", p.slot / 2,
                                        " did not arrive: ", ucs_status_string(p.status)));
        } else {
          Held(p.transfer, part, p.slot, p.crc, p.length);
        }
      }
      it = arriving_.erase(it);
    }
    return any;
  }

  bool DropLostConnections() {
    bool any = false;
    for (auto it = connections_.begin(); it != connections_.end();) {
      std::shared_ptr<Connection> conn = it->second;
      if (!conn->failed) {
        ++it;
        continue;
      }
      any = true;
      std::vector<std::shared_ptr<Transfer>> hit;
      for (auto& [id, t] : transfers_) {
        for (auto& [rank, part] : t->parts) {
          if (part.conn == conn) {
            hit.push_back(t);
            break;
          }
        }
      }
      for (const std::shared_ptr<Transfer>& t : hit) {
        uint32_t rank = 0;
        uint64_t held = 0;
        for (auto& [r, part] : t->parts) {
          if (part.conn == conn) rank = r;
          held += part.bytes;
        }
        Drop(t, absl::StrCat("the connection from rank ", rank, " (", conn->peer, ") was lost (",
                             ucs_status_string(conn->status), ") with ", held, " bytes held"));
      }
      worker_->CloseEndpoint(conn->ep, true, 0.1);
      it = connections_.erase(it);
    }
    return any;
  }

  bool CompleteTransfers() {
    bool any = false;
    std::vector<std::shared_ptr<Transfer>> ready;
    for (auto& [id, t] : transfers_) {
      if (t->arriving > 0 || t->parts.size() != t->world_size) continue;
      bool committed = true;
      for (auto& [rank, part] : t->parts) committed = committed && part.commit.has_value();
      if (committed) ready.push_back(t);
    }
    for (const std::shared_ptr<Transfer>& t : ready) {
      any = true;
      absl::Status s = Check(*t);
      if (s.ok()) s = Publish(*t);
      if (!s.ok()) {
        Drop(t, std::string(s.message()));
        continue;
      }
      uint64_t bytes = 0;
      for (auto& [rank, part] : t->parts) {
        bytes += part.bytes;
        wire::AckMessage ack;
        ack.prefix = {wire::MessageType::kAck, t->transfer_id, t->request_id, rank};
        ack.payload_bytes = part.bytes;
        ack.payload_crc = wire::CombineCrcs(part.crcs);
        SendAck(*part.conn, ack);
      }
      const wire::BeginMessage& b = t->parts.begin()->second.begin;
      const double seconds = std::chrono::duration<double>(Clock::now() - t->start).count();
      std::printf(
          "kv-receiver: %s acknowledged: %u ranks, %u layers, %lld tokens, %s, %.2f MiB in %.3f s "
          "(%.2f GB/s)%s\n",
          t->request_id.c_str(), t->world_size, b.num_layers, static_cast<long long>(b.seq_len),
          b.dtype.c_str(), bytes / 1048576.0, seconds, seconds > 0 ? bytes / seconds / 1e9 : 0.0,
          o_.verify_only ? ", checksums verified"
                         : absl::StrCat(", written to ", KvDir(t->request_id)).c_str());
      std::fflush(stdout);
      transfers_.erase(t->request_id);
      ++acknowledged_;
    }
    return any;
  }

  // Complete: every layer of every rank once (CRCs verified on arrival), commits agreeing,
  // token ranges covering [0, seq_len) exactly once.
  absl::Status Check(const Transfer& t) {
    std::vector<KvTokenRange> all;
    int64_t seq_len = 0;
    for (const auto& [rank, part] : t.parts) {
      seq_len = part.begin.seq_len;
      for (size_t slot = 0; slot < part.state.size(); ++slot) {
        if (part.state[slot] != 2) {
          return absl::DataLossError(absl::StrCat("rank ", rank, " committed without layer ",
                                                  slot / 2, " ", slot % 2 ? "value" : "key"));
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
        return absl::InvalidArgumentError(absl::StrCat(
            "token ranges do not cover the sequence exactly once: ",
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

  std::string KvDir(const std::string& id) const { return absl::StrCat(o_.out, "/kv/", id); }

  absl::Status Publish(const Transfer& t) {
    if (o_.verify_only) return absl::OkStatus();
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
      if (absl::Status s = WriteKvShard(
              absl::StrCat(*staging, "/", KvShardFileName(static_cast<int>(rank))), keys, values);
          !s.ok()) {
        return s;
      }
    }
    return PublishKvCache(final_dir, g);
  }

  void SendAck(Connection& conn, const wire::AckMessage& ack) {
    if (conn.failed) return;
    acks_.emplace_back();
    AckSend& a = acks_.back();
    a.header = wire::Encode(ack);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Receiver::OnAckSent;
    p.user_data = &a;
    ucs_status_ptr_t req = ucp_am_send_nbx(conn.ep, static_cast<unsigned>(wire::MessageType::kAck),
                                           a.header.data(), a.header.size(), nullptr, 0, &p);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) a.done = true;
  }

  bool ReapAcks() {
    const size_t before = acks_.size();
    acks_.remove_if([](const AckSend& a) { return a.done; });
    return acks_.size() != before;
  }

  // Drops an unacknowledged attempt and tells each of its ranks why (a refusal, not an ack).
  void Drop(std::shared_ptr<Transfer> t, const std::string& why) {
    if (t == nullptr || t->dropped) return;
    t->dropped = true;
    std::printf("kv-receiver: %s dropped, not acknowledged: %s\n", t->request_id.c_str(),
                why.c_str());
    std::fflush(stdout);
    for (auto& [rank, part] : t->parts) {
      if (part.conn == nullptr) continue;
      wire::AckMessage nack;
      nack.prefix = {wire::MessageType::kAck, t->transfer_id, t->request_id, rank};
      nack.status = static_cast<int32_t>(absl::StatusCode::kAborted);
      nack.message = why.substr(0, 1000);
      SendAck(*part.conn, nack);
    }
    if (auto it = transfers_.find(t->request_id); it != transfers_.end() && it->second == t)
      transfers_.erase(it);
  }

  // A message that cannot be parsed: its attempt is unknown, so the connection is refused.
  void Reject(const std::shared_ptr<Connection>& conn, const absl::Status& why) {
    std::printf("kv-receiver: refused a message from %s: %s\n", conn->peer.c_str(),
                std::string(why.message()).c_str());
    std::fflush(stdout);
    wire::AckMessage nack;
    nack.prefix = {wire::MessageType::kAck, 0, "unknown", 0};
    nack.status = static_cast<int32_t>(absl::StatusCode::kInvalidArgument);
    nack.message = std::string(why.message()).substr(0, 1000);
    SendAck(*conn, nack);
  }

  void Shutdown() {
    for (auto& [id, t] : std::map<std::string, std::shared_ptr<Transfer>>(transfers_))
      Drop(t, "the receiver is shutting down");
    const Clock::time_point start = Clock::now();
    int idle_rounds = 0;
    while ((!acks_.empty() || !arriving_.empty()) &&
           std::chrono::duration<double>(Clock::now() - start).count() < 2.0) {
      bool any = worker_->Progress();
      any |= ReceivePayloads();
      any |= ReapAcks();
      if (!any) worker_->Backoff(idle_rounds);
    }
    for (auto& [ep, conn] : connections_) worker_->CloseEndpoint(ep, false, 0.5);
    connections_.clear();
    if (listener_ != nullptr) ucp_listener_destroy(listener_);
    listener_ = nullptr;
    arriving_.clear();
    acks_.clear();
    worker_.reset();
  }

  const ReceiverOptions o_;
  std::unique_ptr<UcxWorker> worker_;
  ucp_listener_h listener_ = nullptr;
  std::deque<ucp_conn_request_h> conn_requests_;
  std::map<ucp_ep_h, std::shared_ptr<Connection>> connections_;
  std::map<std::string, std::shared_ptr<Transfer>> transfers_;  // by request id: the live attempt
  std::list<std::unique_ptr<ArrivingPayload>> arriving_;
  std::list<AckSend> acks_;
  uint64_t total_bytes_ = 0;
  int acknowledged_ = 0;
};

}  // namespace
}  // namespace prefill

int main(int argc, char** argv) {
  prefill::ReceiverOptions o;
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
  app.add_flag("--verify-only", o.verify_only, "Verify checksums and completeness, write nothing");
  app.add_option("--exit-after", o.exit_after,
                 "Exit after this many acknowledged requests (0: never)")
      ->capture_default_str();
  app.add_option("--die-after-bytes", o.die_after_bytes,
                 "Test hook: _exit(3) once this many payload bytes arrived");
  app.add_option("--port-file", o.port_file, "Write the port listened on to this file");
  CLI11_PARSE(app, argc, argv);
  if (o.out.empty() == !o.verify_only) {
    std::fprintf(stderr, "kv-receiver: error: give exactly one of --out DIR and --verify-only\n");
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = prefill::OnTerminate;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const absl::Status s = prefill::Receiver(o).Run();
  if (!s.ok()) {
    std::fprintf(stderr, "kv-receiver: error: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
