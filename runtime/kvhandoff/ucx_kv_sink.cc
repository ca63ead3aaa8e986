#include "runtime/kvhandoff/ucx_kv_sink.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/kvhandoff/ucx_worker.h"
#include "runtime/kvhandoff/wire_protocol.h"
#include "runtime/socket_address.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One posted active message: its header, and its payload's registration.
struct PendingSend {
  std::string header;
  ucp_mem_h memh = nullptr;
  bool done = false;
  ucs_status_t status = UCS_OK;
  uint64_t bytes = 0;
  uint64_t* activity = nullptr;  // the sink's event count, bumped on completion
};

class UcxKvSink final : public KvSink {
 public:
  UcxKvSink(Communicator& comm, KvTarget target) : comm_(comm), target_(std::move(target)) {}
  ~UcxKvSink() override { Shutdown(true); }

  std::string_view name() const override { return "ucx"; }
  std::string destination() const override { return target_.address; }

  absl::Status Begin(const std::string& request_id, const KvCacheGeometry& geometry) override {
    request_id_ = request_id;
    geometry_ = geometry;
    // Rank 0 names this attempt; every rank sends the same transfer id.
    uint64_t mine = 0;
    if (comm_.rank() == 0) {
      std::random_device rd;
      mine = (uint64_t{rd()} << 32) ^ rd() ^
             static_cast<uint64_t>(Clock::now().time_since_epoch().count());
      if (mine == 0) mine = 1;
    }
    std::vector<uint64_t> ids(comm_.size());
    absl::Status s = comm_.AllGather(&mine, sizeof mine, ids.data());
    if (s.ok()) {
      transfer_id_ = ids[0];
      s = Connect();
    }
    s = AgreeOnStatus(comm_, s);
    if (!s.ok()) {
      error_ = s;  // every rank: later calls return it
      Shutdown(true);
    }
    return s;
  }

  absl::Status PutLayer(int layer, const TensorView& key, const TensorView& value,
                        std::span<const KvTokenRange> ranges) override {
    if (!error_.ok()) return error_;
    if (layer != next_layer_ || layer >= geometry_.num_layers) {
      return Fail(absl::InternalError(
          absl::StrCat("KV layer ", layer, " out of order (expected ", next_layer_, ")")));
    }
    const std::vector<int64_t> shape = {geometry_.local_rows, geometry_.kv_heads,
                                        geometry_.head_dim};
    for (const TensorView* t : {&key, &value}) {
      if (t->dtype != geometry_.dtype || t->shape != shape) {
        return Fail(
            absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": tensor ", t->ShapeString(),
                                                    " does not match the KV cache geometry")));
      }
    }
    ++next_layer_;
    for (uint8_t kind = 0; kind < 2; ++kind) {
      const TensorView& t = kind == 0 ? key : value;
      kvwire::LayerMessage m;
      m.prefix = Prefix(kvwire::MessageType::kLayer);
      m.layer = static_cast<uint32_t>(layer);
      m.kind = kind;
      m.dtype = std::string(DTypeName(t.dtype));
      m.shape = t.shape;
      m.ranges.assign(ranges.begin(), ranges.end());
      m.payload_bytes = t.bytes.size();
      m.payload_crc = kvwire::Crc32c(t.bytes.data(), t.bytes.size());
      crcs_.push_back(m.payload_crc);
      if (absl::Status s =
              Post(kvwire::MessageType::kLayer, kvwire::Encode(m), t.bytes.data(), t.bytes.size());
          !s.ok()) {
        return Fail(s);
      }
    }
    // Sent before returning: during the prefill this runs on the streamer's thread, under the
    // compute of the next layers, and nothing else would progress the worker meanwhile.
    if (absl::Status s = WaitForSends(absl::StrCat("sending KV layer ", layer)); !s.ok())
      return Fail(s);
    return absl::OkStatus();
  }

  bool takes_layers_during_prefill() const override { return true; }

  absl::Status Commit() override {
    absl::Status s = error_;
    if (s.ok() && next_layer_ != geometry_.num_layers) {
      s = absl::InternalError(absl::StrCat("KV handoff committed with ", next_layer_, " of ",
                                           geometry_.num_layers, " layers"));
    }
    if (s.ok()) {
      kvwire::CommitMessage m;
      m.prefix = Prefix(kvwire::MessageType::kCommit);
      m.messages = static_cast<uint32_t>(crcs_.size());
      m.payload_bytes = payload_bytes_;
      m.payload_crc = kvwire::CombineCrcs(crcs_);
      s = Post(kvwire::MessageType::kCommit, kvwire::Encode(m), nullptr, 0);
    }
    if (s.ok()) s = WaitForSends("sending the KV cache");
    if (s.ok()) s = WaitForAck();
    const bool ok = s.ok();
    Shutdown(!ok);
    return AgreeOnStatus(comm_, s);
  }

 private:
  kvwire::Prefix Prefix(kvwire::MessageType type) const {
    return kvwire::Prefix{type, transfer_id_, request_id_, static_cast<uint32_t>(geometry_.rank)};
  }

  std::string Where() const { return absl::StrCat("KV receiver at ", target_.address); }

  absl::Status Fail(absl::Status s) {
    if (error_.ok()) error_ = std::move(s);
    return error_;
  }

  // Payload bytes whose sends completed.
  uint64_t SentBytes() const {
    uint64_t n = 0;
    for (const PendingSend& s : sends_) n += s.done && s.status == UCS_OK ? s.bytes : 0;
    return n;
  }

  // The connection's failure, in words a user can act on.
  absl::Status Lost(const std::string& during) const {
    const int64_t total = 2 * int64_t{geometry_.num_layers} * geometry_.TensorBytes();
    return absl::UnavailableError(absl::StrCat(
        Where(), ": connection lost while ", during, " (", ucs_status_string(ep_status_),
        "), rank ", geometry_.rank, " had sent ", SentBytes(), " of ", total, " bytes; request '",
        request_id_, "' was not acknowledged"));
  }

  absl::Status Connect() {
    absl::StatusOr<SocketAddress> address = ResolveHostPort(target_.address, false);
    if (!address.ok()) return address.status();
    // Begin and Commit on the caller's thread, PutLayer on the streamer's, in turn.
    absl::StatusOr<std::unique_ptr<UcxWorker>> w = UcxWorker::Create(UCS_THREAD_MODE_SERIALIZED);
    if (!w.ok())
      return absl::UnavailableError(
          absl::StrCat("UCX initialisation failed: ", w.status().message()));
    worker_ = std::move(*w);
    ucp_am_handler_param_t h{};
    h.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                   UCP_AM_HANDLER_PARAM_FIELD_ARG;
    h.id = static_cast<unsigned>(kvwire::MessageType::kAck);
    h.cb = &UcxKvSink::OnAck;
    h.arg = this;
    UCS_CHECK(ucp_worker_set_am_recv_handler(worker_->worker(), &h));
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &UcxKvSink::OnEndpointError;
    ep.err_handler.arg = this;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&address->addr);
    ep.sockaddr.addrlen = address->length;
    if (const ucs_status_t st = ucp_ep_create(worker_->worker(), &ep, &ep_); st != UCS_OK) {
      ep_ = nullptr;
      return absl::UnavailableError(
          absl::StrCat("cannot reach the ", Where(), ": ", ucs_status_string(st)));
    }
    kvwire::BeginMessage m;
    m.prefix = Prefix(kvwire::MessageType::kBegin);
    m.world_size = static_cast<uint32_t>(geometry_.world_size);
    m.seq_len = geometry_.seq_len;
    m.num_layers = static_cast<uint32_t>(geometry_.num_layers);
    m.kv_heads = static_cast<uint32_t>(geometry_.kv_heads);
    m.head_dim = static_cast<uint32_t>(geometry_.head_dim);
    m.dtype = std::string(DTypeName(geometry_.dtype));
    m.layout = geometry_.layout;
    m.local_rows = geometry_.local_rows;
    m.ranges = geometry_.ranges.at(geometry_.rank);
    if (absl::Status s = Post(kvwire::MessageType::kBegin, kvwire::Encode(m), nullptr, 0); !s.ok())
      return s;
    // The flush completes once the connection is up and the Begin has left: a receiver that
    // is not there fails the request here, before any KV moves.
    ucp_request_param_t p{};
    ucs_status_ptr_t flush = ucp_ep_flush_nbx(ep_, &p);
    absl::Status s = worker_->ProgressUntil(
        [&] {
          return ep_failed_ || flush == nullptr || UCS_PTR_IS_ERR(flush) ||
                 ucp_request_check_status(flush) != UCS_INPROGRESS;
        },
        target_.timeout_seconds, "connecting", &activity_);
    ucs_status_t flushed = UCS_OK;
    if (UCS_PTR_IS_ERR(flush)) {
      flushed = UCS_PTR_STATUS(flush);
    } else if (flush != nullptr) {
      flushed = ucp_request_check_status(flush);
      ucp_request_free(flush);
    }
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot reach the ", Where(),
                                                 ": no connection within ", target_.timeout_seconds,
                                                 " s (--kv-timeout)"));
    }
    if (ep_failed_ || flushed != UCS_OK) {
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the ", Where(), ": ", ucs_status_string(ep_failed_ ? ep_status_ : flushed),
          " (is kv-receiver running and listening there?)"));
    }
    return absl::OkStatus();
  }

  // Posts one active message; data (may be null) is registered and sent in place.
  absl::Status Post(kvwire::MessageType type, std::string header, const void* data, size_t bytes) {
    if (ep_failed_) return Lost("sending the KV cache");
    if (header.size() > worker_->max_am_header()) {
      return absl::InternalError(absl::StrCat("KV handoff header of ", header.size(),
                                              " bytes exceeds UCX's limit of ",
                                              worker_->max_am_header()));
    }
    sends_.emplace_back();
    PendingSend& send = sends_.back();
    send.header = std::move(header);
    send.bytes = bytes;
    send.activity = &activity_;
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &UcxKvSink::OnSent;
    p.user_data = &send;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    if (bytes > 0) {
      ucp_mem_map_params_t mp{};
      mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      mp.address = const_cast<void*>(data);
      mp.length = bytes;
      UCS_CHECK(ucp_mem_map(worker_->context(), &mp, &send.memh));
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = send.memh;
      payload_bytes_ += bytes;
    }
    ucs_status_ptr_t req = ucp_am_send_nbx(ep_, static_cast<unsigned>(type), send.header.data(),
                                           send.header.size(), data, bytes, &p);
    if (req == nullptr) {
      send.done = true;
    } else if (UCS_PTR_IS_ERR(req)) {
      send.done = true;
      send.status = UCS_PTR_STATUS(req);
      if (ep_status_ == UCS_OK) ep_status_ = send.status;
      return Lost("sending the KV cache");
    }
    return absl::OkStatus();
  }

  absl::Status WaitForSends(const std::string& what) {
    auto all_done = [&] {
      for (const PendingSend& s : sends_) {
        if (!s.done) return ep_failed_;
      }
      return true;
    };
    absl::Status s = worker_->ProgressUntil(all_done, target_.timeout_seconds, what, &activity_);
    if (!s.ok()) {
      return absl::DeadlineExceededError(
          absl::StrCat(Where(), ": ", what, " stalled for ", target_.timeout_seconds,
                       " s (--kv-timeout) after ", SentBytes(), " of ", payload_bytes_,
                       " bytes; request '", request_id_, "' was not acknowledged"));
    }
    for (const PendingSend& p : sends_) {
      if (p.status != UCS_OK && ep_status_ == UCS_OK) ep_status_ = p.status;
    }
    if (ep_failed_ || ep_status_ != UCS_OK) return Lost(what);
    return absl::OkStatus();
  }

  absl::Status WaitForAck() {
    absl::Status s = worker_->ProgressUntil([&] { return ack_.has_value() || ep_failed_; },
                                            target_.timeout_seconds,
                                            "waiting for the acknowledgement", &activity_);
    if (!s.ok()) {
      return absl::DeadlineExceededError(
          absl::StrCat(Where(), ": no acknowledgement of request '", request_id_, "' within ",
                       target_.timeout_seconds, " s (--kv-timeout); it was not acknowledged"));
    }
    if (!ack_.has_value()) return Lost("waiting for the acknowledgement");
    if (!ack_status_.ok()) return ack_status_;
    const uint32_t crc = kvwire::CombineCrcs(crcs_);
    if (ack_->status != 0) {
      const bool known = ack_->status > 0 && ack_->status <= 16;
      return absl::Status(
          known ? static_cast<absl::StatusCode>(ack_->status) : absl::StatusCode::kAborted,
          absl::StrCat(Where(), " refused request '", request_id_, "': ", ack_->message));
    }
    if (ack_->payload_bytes != payload_bytes_ || ack_->payload_crc != crc) {
      return absl::DataLossError(absl::StrCat(
          Where(), " acknowledged ", ack_->payload_bytes, " bytes (crc ", ack_->payload_crc,
          ") of rank ", geometry_.rank, "'s ", payload_bytes_, " (crc ", crc, ")"));
    }
    return absl::OkStatus();
  }

  // Ends the connection and releases everything UCX holds, so nothing reads the caller's
  // tensors after Commit returns.
  void Shutdown(bool force) {
    if (!worker_) return;
    if (ep_ != nullptr) {
      worker_->CloseEndpoint(ep_, force || ep_failed_,
                             force ? 1.0 : std::min(target_.timeout_seconds, 5.0));
    }
    ep_ = nullptr;
    // Forced closes complete outstanding sends with an error; let their callbacks run.
    const Clock::time_point start = Clock::now();
    int idle_rounds = 0;
    while (SecondsSince(start) < 1.0) {
      bool pending = false;
      for (const PendingSend& s : sends_) pending = pending || !s.done;
      if (!pending) break;
      if (!worker_->Progress()) worker_->Backoff(idle_rounds);
    }
    for (PendingSend& s : sends_) {
      if (s.memh != nullptr) ucp_mem_unmap(worker_->context(), s.memh);
      s.memh = nullptr;
    }
    worker_.reset();  // destroys the worker (and any request still in it), then the context
    sends_.clear();
  }

  static void OnSent(void* request, ucs_status_t status, void* user_data) {
    auto* send = static_cast<PendingSend*>(user_data);
    send->done = true;
    send->status = status;
    ++*send->activity;
    ucp_request_free(request);
  }

  static void OnEndpointError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* self = static_cast<UcxKvSink*>(arg);
    self->ep_failed_ = true;
    if (self->ep_status_ == UCS_OK) self->ep_status_ = status;
    ++self->activity_;
  }

  static ucs_status_t OnAck(void* arg, const void* header, size_t header_length, void*, size_t,
                            const ucp_am_recv_param_t*) {
    auto* self = static_cast<UcxKvSink*>(arg);
    ++self->activity_;
    absl::StatusOr<kvwire::AckMessage> ack =
        kvwire::DecodeAck({static_cast<const std::byte*>(header), header_length});
    if (!ack.ok()) {
      self->ack_status_ = absl::DataLossError(
          absl::StrCat(self->Where(), " sent a bad acknowledgement: ", ack.status().message()));
      self->ack_ = kvwire::AckMessage{};
      return UCS_OK;
    }
    const bool mine = ack->prefix.transfer_id == self->transfer_id_ &&
                      ack->prefix.rank == static_cast<uint32_t>(self->geometry_.rank);
    if (!mine && ack->prefix.transfer_id != 0) return UCS_OK;  // a stale attempt's
    self->ack_ = std::move(*ack);
    return UCS_OK;
  }

  Communicator& comm_;
  const KvTarget target_;
  std::string request_id_;
  KvCacheGeometry geometry_;
  uint64_t transfer_id_ = 0;
  std::unique_ptr<UcxWorker> worker_;
  ucp_ep_h ep_ = nullptr;
  bool ep_failed_ = false;
  ucs_status_t ep_status_ = UCS_OK;
  uint64_t activity_ = 0;
  std::deque<PendingSend> sends_;  // stable addresses: the callbacks hold pointers
  std::vector<uint32_t> crcs_;     // payload CRCs in (layer, kind) order
  uint64_t payload_bytes_ = 0;
  int next_layer_ = 0;
  std::optional<kvwire::AckMessage> ack_;
  absl::Status ack_status_;
  absl::Status error_;
};

}  // namespace

std::unique_ptr<KvSink> MakeUcxKvSink(Communicator& comm, const KvTarget& target) {
  return std::make_unique<UcxKvSink>(comm, target);
}

}  // namespace prefill
