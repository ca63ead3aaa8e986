#include "runtime/kvhandoff/ucx_kv_receiver.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/atomic_file.h"
#include "runtime/kvhandoff/transfer_book.h"
#include "runtime/kvhandoff/ucx_worker.h"
#include "runtime/kvhandoff/wire_protocol.h"
#include "runtime/socket_address.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
namespace wire = kvwire;

void Say(const std::string& line) {
  std::printf("kv-receiver: %s\n", line.c_str());
  std::fflush(stdout);
}

struct Connection {
  KvPeer id = 0;
  ucp_ep_h ep = nullptr;
  std::string peer;
  bool failed = false;
  ucs_status_t status = UCS_OK;
};

// A rendezvous payload: accepted in the AM callback, received from the main loop.
struct ArrivingPayload {
  KvTransferBook::PayloadSlot slot;
  void* desc = nullptr;
  ucs_status_ptr_t request = nullptr;
  bool posted = false, done = false;
  ucs_status_t status = UCS_OK;
};

struct AckSend {
  std::string header;
  bool done = false;
};

class UcxKvReceiver {
 public:
  explicit UcxKvReceiver(const KvReceiverOptions& o)
      : o_(o),
        book_({o.out}, {[this](KvPeer peer, const wire::AckMessage& ack) { SendAck(peer, ack); },
                        &Say, [this](KvPeer peer) { return PeerName(peer); }}) {}

  absl::Status Run(const volatile std::sig_atomic_t* stop) {
    PREFILL_RETURN_IF_ERROR(Listen());
    int idle_rounds = 0;
    while (*stop == 0) {
      bool any = worker_->Progress();
      any |= AcceptConnections();
      any |= ReceivePayloads();
      any |= DropLostConnections();
      const int acknowledged = book_.CompleteReady();
      acknowledged_ += acknowledged;
      any |= acknowledged > 0;
      any |= ReapAcks();
      if (o_.exit_after > 0 && acknowledged_ >= o_.exit_after && acks_.empty()) break;
      if (any) {
        idle_rounds = 0;
      } else {
        // Short naps while a request is in flight; 1 ms ones when idle (a connection's wireup
        // takes a few round trips, each waiting out one nap).
        worker_->Backoff(idle_rounds, book_.empty() && acks_.empty() ? 1000 : 160);
      }
    }
    Shutdown();
    return absl::OkStatus();
  }

 private:
  absl::Status Listen() {
    absl::StatusOr<std::unique_ptr<UcxWorker>> w = UcxWorker::Create();
    if (!w.ok()) return w.status();
    worker_ = std::move(*w);
    for (wire::MessageType type :
         {wire::MessageType::kBegin, wire::MessageType::kLayer, wire::MessageType::kCommit}) {
      ucp_am_handler_param_t h{};
      h.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                     UCP_AM_HANDLER_PARAM_FIELD_ARG;
      h.id = static_cast<unsigned>(type);
      h.cb = &UcxKvReceiver::OnMessage;
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
    lp.conn_handler.cb = &UcxKvReceiver::OnConnectionRequest;
    lp.conn_handler.arg = this;
    UCS_CHECK(ucp_listener_create(worker_->worker(), &lp, &listener_));
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    UCS_CHECK(ucp_listener_query(listener_, &la));
    const std::string bound = SocketAddressText(la.sockaddr);
    Say(absl::StrCat("listening on ", bound, " (",
                     o_.out.empty() ? "verify only" : absl::StrCat("writing to ", o_.out, "/kv"),
                     ")"));
    if (!o_.port_file.empty()) {
      const std::string port = bound.substr(bound.rfind(':') + 1);
      PREFILL_RETURN_IF_ERROR(WriteFileAtomically(o_.port_file, port + "\n"));
    }
    return absl::OkStatus();
  }

  // ---- UCX callbacks: record what happened; the main loop acts on it --------------------

  static void OnConnectionRequest(ucp_conn_request_h request, void* arg) {
    static_cast<UcxKvReceiver*>(arg)->conn_requests_.push_back(request);
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
    auto* self = static_cast<UcxKvReceiver*>(arg);
    Connection* conn = nullptr;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0) {
      if (auto it = self->connections_.find(param->reply_ep); it != self->connections_.end())
        conn = it->second.get();
    }
    if (conn == nullptr) {
      std::fprintf(stderr, "kv-receiver: a message from an unknown endpoint was dropped\n");
      return UCS_OK;
    }
    std::optional<KvTransferBook::PayloadSlot> slot = self->book_.OnMessage(
        conn->id, {static_cast<const std::byte*>(header), header_length}, length);
    if (!slot.has_value()) return UCS_OK;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
      self->arriving_.push_back(std::make_unique<ArrivingPayload>());
      self->arriving_.back()->slot = std::move(*slot);
      self->arriving_.back()->desc = data;
      return UCS_INPROGRESS;  // the main loop receives it into the slot
    }
    std::memcpy(slot->dst, data, length);
    self->Arrived(*slot, absl::OkStatus());
    return UCS_OK;
  }

  void Arrived(const KvTransferBook::PayloadSlot& slot, const absl::Status& status) {
    if (status.ok()) total_bytes_ += slot.length;
    if (o_.die_after_bytes >= 0 && total_bytes_ >= static_cast<uint64_t>(o_.die_after_bytes)) {
      std::fprintf(stderr,
                   "kv-receiver: --die-after-bytes %lld reached: exiting without acknowledging\n",
                   static_cast<long long>(o_.die_after_bytes));
      std::fflush(stderr);
      _exit(3);
    }
    book_.Arrived(slot, status);
  }

  // ---- Main-loop steps -----------------------------------------------------------------

  bool AcceptConnections() {
    bool any = false;
    while (!conn_requests_.empty()) {
      ucp_conn_request_h request = conn_requests_.front();
      conn_requests_.pop_front();
      any = true;
      auto conn = std::make_unique<Connection>();
      conn->id = ++last_peer_;
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
      ep.err_handler.cb = &UcxKvReceiver::OnEndpointError;
      ep.err_handler.arg = conn.get();
      if (const ucs_status_t s = ucp_ep_create(worker_->worker(), &ep, &conn->ep); s != UCS_OK) {
        std::fprintf(stderr, "kv-receiver: cannot accept %s: %s\n", conn->peer.c_str(),
                     ucs_status_string(s));
        continue;
      }
      peers_[conn->id] = conn.get();
      connections_[conn->ep] = std::move(conn);
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
        rp.cb.recv_am = &UcxKvReceiver::OnPayload;
        rp.user_data = &p;
        ucs_status_ptr_t req =
            ucp_am_recv_data_nbx(worker_->worker(), p.desc, p.slot.dst, p.slot.length, &rp);
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
      Arrived(p.slot, p.status == UCS_OK ? absl::OkStatus()
                                         : UcsError(p.status, "receive", __FILE__, __LINE__));
      it = arriving_.erase(it);
    }
    return any;
  }

  bool DropLostConnections() {
    bool any = false;
    for (auto it = connections_.begin(); it != connections_.end();) {
      Connection& conn = *it->second;
      if (!conn.failed) {
        ++it;
        continue;
      }
      any = true;
      book_.PeerLost(conn.id, ucs_status_string(conn.status));
      worker_->CloseEndpoint(conn.ep, true, 0.1);
      peers_.erase(conn.id);
      it = connections_.erase(it);
    }
    return any;
  }

  std::string PeerName(KvPeer peer) const {
    auto it = peers_.find(peer);
    return it == peers_.end() ? "?" : it->second->peer;
  }

  void SendAck(KvPeer peer, const wire::AckMessage& ack) {
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second->failed) return;
    acks_.emplace_back();
    AckSend& a = acks_.back();
    a.header = wire::Encode(ack);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &UcxKvReceiver::OnAckSent;
    p.user_data = &a;
    ucs_status_ptr_t req =
        ucp_am_send_nbx(it->second->ep, static_cast<unsigned>(wire::MessageType::kAck),
                        a.header.data(), a.header.size(), nullptr, 0, &p);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) a.done = true;
  }

  bool ReapAcks() {
    const size_t before = acks_.size();
    acks_.remove_if([](const AckSend& a) { return a.done; });
    return acks_.size() != before;
  }

  void Shutdown() {
    book_.DropAll("the receiver is shutting down");
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
    peers_.clear();
    connections_.clear();
    if (listener_ != nullptr) ucp_listener_destroy(listener_);
    listener_ = nullptr;
    arriving_.clear();
    acks_.clear();
    worker_.reset();
  }

  const KvReceiverOptions o_;
  KvTransferBook book_;
  std::unique_ptr<UcxWorker> worker_;
  ucp_listener_h listener_ = nullptr;
  std::deque<ucp_conn_request_h> conn_requests_;
  std::map<ucp_ep_h, std::unique_ptr<Connection>>
      connections_;  // the endpoint error handler holds the address
  std::map<KvPeer, Connection*> peers_;
  KvPeer last_peer_ = 0;
  std::list<std::unique_ptr<ArrivingPayload>> arriving_;
  std::list<AckSend> acks_;
  uint64_t total_bytes_ = 0;
  int acknowledged_ = 0;
};

}  // namespace

absl::Status RunUcxKvReceiver(const KvReceiverOptions& options,
                              const volatile std::sig_atomic_t* stop) {
  return UcxKvReceiver(options).Run(stop);
}

}  // namespace prefill
