// KvTransferBook, the receiver's bookkeeping, driven without a transport: a request is
// acknowledged to each rank only when complete and consistent, and every fault (a corrupt or
// repeated layer, tokens not covered, a lost connection, a newer attempt, an unreadable
// message, a commit that disagrees) drops the attempt and tells each rank why.
#include "runtime/kvhandoff/transfer_book.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace prefill {
namespace {

namespace wire = kvwire;

constexpr int kLayers = 2, kRows = 4, kHeads = 1, kDim = 2;
constexpr size_t kTensorBytes = kRows * kHeads * kDim * 4;  // f32

// What the book asked the transport to do.
struct Recorded {
  std::map<KvPeer, std::vector<wire::AckMessage>> acks;
  std::vector<std::string> log;
};

class Book {
 public:
  explicit Book(std::string out = "")
      : book_({std::move(out)},
              {[this](KvPeer p, const wire::AckMessage& a) { seen_.acks[p].push_back(a); },
               [this](const std::string& line) { seen_.log.push_back(line); },
               [](KvPeer p) { return "peer" + std::to_string(p); }}) {}
  KvTransferBook* operator->() { return &book_; }
  Recorded& seen() { return seen_; }

 private:
  Recorded seen_;
  KvTransferBook book_;
};

// One rank of a 2-rank group sending an 8-token sequence (4 rows each, contiguous).
class Rank {
 public:
  Rank(uint32_t rank, std::string id = "req", uint64_t transfer = 7)
      : rank_(rank), id_(std::move(id)), transfer_(transfer) {
    ranges_ = {{4 * int64_t{rank}, kRows, 0}};
  }
  KvPeer peer() const { return 100 + rank_; }
  std::vector<KvTokenRange>& ranges() { return ranges_; }

  void Begin(KvTransferBook* book) {
    wire::BeginMessage m;
    m.prefix = Prefix(wire::MessageType::kBegin);
    m.world_size = 2;
    m.seq_len = 8;
    m.num_layers = kLayers;
    m.kv_heads = kHeads;
    m.head_dim = kDim;
    m.dtype = "f32";
    m.layout = "contiguous";
    m.local_rows = kRows;
    m.ranges = ranges_;
    Send(book, wire::Encode(m), 0);
  }
  // Sends one layer tensor filled with `fill`; corrupt: the payload differs from its CRC.
  void Layer(KvTransferBook* book, uint32_t layer, uint8_t kind, bool corrupt = false) {
    std::vector<std::byte> payload(kTensorBytes, std::byte(10 * layer + kind + 1));
    wire::LayerMessage m;
    m.prefix = Prefix(wire::MessageType::kLayer);
    m.layer = layer;
    m.kind = kind;
    m.dtype = "f32";
    m.shape = {kRows, kHeads, kDim};
    m.ranges = ranges_;
    m.payload_bytes = payload.size();
    m.payload_crc = wire::Crc32c(payload.data(), payload.size());
    crcs_.push_back(m.payload_crc);
    bytes_ += payload.size();
    if (corrupt) payload[0] ^= std::byte{1};
    const std::string h = wire::Encode(m);
    std::optional<KvTransferBook::PayloadSlot> slot = book->OnMessage(
        peer(), {reinterpret_cast<const std::byte*>(h.data()), h.size()}, payload.size());
    if (!slot) return;
    std::copy(payload.begin(), payload.end(), slot->dst);
    book->Arrived(*slot, absl::OkStatus());
  }
  void AllLayers(KvTransferBook* book) {
    for (uint32_t l = 0; l < kLayers; ++l) {
      Layer(book, l, 0);
      Layer(book, l, 1);
    }
  }
  void Commit(KvTransferBook* book, uint64_t extra_bytes = 0) {
    wire::CommitMessage m;
    m.prefix = Prefix(wire::MessageType::kCommit);
    m.messages = static_cast<uint32_t>(crcs_.size());
    m.payload_bytes = bytes_ + extra_bytes;
    m.payload_crc = wire::CombineCrcs(crcs_);
    Send(book, wire::Encode(m), 0);
  }
  void SendAll(KvTransferBook* book) {
    Begin(book);
    AllLayers(book);
    Commit(book);
  }
  uint32_t combined_crc() const { return wire::CombineCrcs(crcs_); }
  uint64_t bytes() const { return bytes_; }

 private:
  wire::Prefix Prefix(wire::MessageType type) const { return {type, transfer_, id_, rank_}; }
  void Send(KvTransferBook* book, const std::string& h, size_t payload) {
    EXPECT_FALSE(
        book->OnMessage(peer(), {reinterpret_cast<const std::byte*>(h.data()), h.size()}, payload));
  }
  uint32_t rank_;
  std::string id_;
  uint64_t transfer_;
  std::vector<KvTokenRange> ranges_;
  std::vector<uint32_t> crcs_;
  uint64_t bytes_ = 0;
};

// The attempt was dropped: each peer heard one Aborted refusal naming `why`; nothing acked.
void ExpectDropped(Book& book, const std::vector<KvPeer>& peers, const std::string& why) {
  EXPECT_EQ(book->CompleteReady(), 0);
  EXPECT_TRUE(book->empty());
  for (KvPeer p : peers) {
    ASSERT_EQ(book.seen().acks[p].size(), 1u) << "peer " << p;
    const wire::AckMessage& nack = book.seen().acks[p][0];
    EXPECT_EQ(nack.status, static_cast<int32_t>(absl::StatusCode::kAborted));
    EXPECT_NE(nack.message.find(why), std::string::npos) << nack.message;
  }
}

TEST(KvTransferBook, AcknowledgesACompleteRequestToEachRank) {
  Book book;
  Rank r0(0), r1(1);
  r0.SendAll(book.operator->());
  EXPECT_EQ(book->CompleteReady(), 0) << "one rank of two";
  r1.SendAll(book.operator->());
  EXPECT_EQ(book->CompleteReady(), 1);
  EXPECT_TRUE(book->empty());
  for (Rank* r : {&r0, &r1}) {
    ASSERT_EQ(book.seen().acks[r->peer()].size(), 1u);
    const wire::AckMessage& ack = book.seen().acks[r->peer()][0];
    EXPECT_EQ(ack.status, 0);
    EXPECT_EQ(ack.payload_bytes, r->bytes());
    EXPECT_EQ(ack.payload_crc, r->combined_crc());
    EXPECT_EQ(ack.prefix.transfer_id, 7u);
  }
  ASSERT_FALSE(book.seen().log.empty());
  EXPECT_NE(book.seen().log.back().find("req acknowledged: 2 ranks, 2 layers, 8 tokens"),
            std::string::npos);
}

TEST(KvTransferBook, PublishesTheKvOutLayout) {
  const std::filesystem::path out =
      std::filesystem::temp_directory_path() / ("transfer_book_test_" + std::to_string(getpid()));
  std::filesystem::remove_all(out);
  Book book(out.string());
  Rank r0(0), r1(1);
  r0.SendAll(book.operator->());
  r1.SendAll(book.operator->());
  EXPECT_EQ(book->CompleteReady(), 1);
  EXPECT_TRUE(std::filesystem::exists(out / "kv" / "req" / "index.json"));
  EXPECT_TRUE(std::filesystem::exists(out / "kv" / "req" / "rank0.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out / "kv" / "req" / "rank1.safetensors"));
  std::filesystem::remove_all(out);
}

TEST(KvTransferBook, ACorruptPayloadDropsTheRequest) {
  Book book;
  Rank r0(0), r1(1);
  r0.Begin(book.operator->());
  r1.SendAll(book.operator->());
  r0.Layer(book.operator->(), 0, 0, /*corrupt=*/true);
  ExpectDropped(book, {r0.peer(), r1.peer()}, "rank 0's layer 0 key arrived with checksum");
}

TEST(KvTransferBook, ALayerSentTwiceDropsTheRequest) {
  Book book;
  Rank r0(0), r1(1);
  r1.Begin(book.operator->());
  r0.Begin(book.operator->());
  r0.Layer(book.operator->(), 1, 1);
  r0.Layer(book.operator->(), 1, 1);
  ExpectDropped(book, {r0.peer(), r1.peer()}, "rank 0 sent layer 1 value twice");
}

TEST(KvTransferBook, TokensNotCoveredExactlyOnceDropTheRequest) {
  Book book;
  Rank r0(0), r1(1);
  r1.ranges() = {{5, 3, 0}};  // token 4 is nobody's
  r0.SendAll(book.operator->());
  r1.SendAll(book.operator->());
  ExpectDropped(book, {r0.peer(), r1.peer()},
                "do not cover the sequence exactly once: gap at token 4");
}

TEST(KvTransferBook, ACommitThatDisagreesDropsTheRequest) {
  Book book;
  Rank r0(0), r1(1);
  r0.SendAll(book.operator->());
  r1.Begin(book.operator->());
  r1.AllLayers(book.operator->());
  r1.Commit(book.operator->(), /*extra_bytes=*/1);
  ExpectDropped(book, {r0.peer(), r1.peer()}, "rank 1 committed 4 messages");
}

TEST(KvTransferBook, ALostConnectionDropsItsRequests) {
  Book book;
  Rank r0(0), r1(1);
  r0.SendAll(book.operator->());
  r1.Begin(book.operator->());
  r1.Layer(book.operator->(), 0, 0);
  book->PeerLost(r1.peer(), "Connection reset by remote peer");
  ExpectDropped(book, {r0.peer(), r1.peer()},
                "the connection from rank 1 (peer101) was lost (Connection reset by remote peer)");
}

TEST(KvTransferBook, ANewerAttemptSupersedesTheOldOne) {
  Book book;
  Rank old0(0, "req", 7), new0(0, "req", 8), new1(1, "req", 8);
  old0.Begin(book.operator->());
  new0.SendAll(book.operator->());
  new1.SendAll(book.operator->());
  EXPECT_EQ(book->CompleteReady(), 1);
  // The old attempt's rank heard why; the new one's ranks got their acks.
  const std::vector<wire::AckMessage>& to_rank0 = book.seen().acks[old0.peer()];
  ASSERT_EQ(to_rank0.size(), 2u);
  EXPECT_EQ(to_rank0[0].prefix.transfer_id, 7u);
  EXPECT_NE(to_rank0[0].message.find("superseded by a newer attempt"), std::string::npos);
  EXPECT_EQ(to_rank0[1].prefix.transfer_id, 8u);
  EXPECT_EQ(to_rank0[1].status, 0);
}

TEST(KvTransferBook, AnUnreadableMessageIsRefusedToItsPeer) {
  Book book;
  const std::string junk = "not a KV handoff message at all";
  EXPECT_FALSE(
      book->OnMessage(5, {reinterpret_cast<const std::byte*>(junk.data()), junk.size()}, 0));
  ASSERT_EQ(book.seen().acks[5].size(), 1u);
  EXPECT_EQ(book.seen().acks[5][0].status,
            static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(book.seen().acks[5][0].prefix.transfer_id, 0u);
  EXPECT_TRUE(book->empty());
}

TEST(KvTransferBook, AGeometryThatCannotBeRightIsRefused) {
  Book book;
  Rank r0(0);
  r0.ranges() = {{0, 9, 0}};  // 9 tokens of an 8-token sequence
  r0.Begin(book.operator->());
  ExpectDropped(book, {r0.peer()}, "outside the sequence or its shard");
}

}  // namespace
}  // namespace prefill
