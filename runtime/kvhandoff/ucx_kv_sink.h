// UcxKvSink: each rank of a prefill group streams its own KV shards straight to a decode
// server over UCX (UCP active messages, wire_protocol.h), in parallel with the other
// ranks: no gather through rank 0. Commit returns OK only after the server acknowledged the
// whole request (every layer of every rank).
//
// Zero-copy: each tensor is registered (ucp_mem_map) and sent in place from its host buffer;
// UCX picks eager or rendezvous by size and transport (shared memory / CMA, TCP, RDMA when
// present). KV caches are host memory at this point; a UCX built with CUDA could send device
// memory directly, Debian's libucx0 is not (docs/kv-handoff.md).
// The sink takes layers during the prefill (KvLayerStreamer's thread): each PutLayer sends its
// layer before it returns, under the compute of the next layers; Commit then only sends the
// commit message and waits for the acknowledgement.
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "runtime/kv_sink.h"

namespace prefill {

// `target` validated by ValidateKvTarget. A RemoteKvSinkFactory.
std::unique_ptr<KvSink> MakeUcxKvSink(Communicator& comm, const KvTarget& target);

}  // namespace prefill
