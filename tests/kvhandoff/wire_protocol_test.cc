// The KV handoff wire protocol: each message round-trips, the layout is the documented one
// (little-endian, fixed prefix, CRC32C over the header), and every malformed header is an
// InvalidArgument naming the fault rather than a crash or a wrong message.
#include "runtime/kvhandoff/wire_protocol.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace prefill::kvwire {
namespace {

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

BeginMessage SampleBegin() {
  BeginMessage m;
  m.prefix = {MessageType::kBegin, 0x0123456789abcdefULL, "doc-7.a_b", 3};
  m.world_size = 4;
  m.seq_len = 500;
  m.num_layers = 2;
  m.kv_heads = 2;
  m.head_dim = 64;
  m.dtype = "bf16";
  m.layout = "zigzag";
  m.local_rows = 128;
  m.ranges = {{0, 64, 0}, {436, 64, 64}};
  return m;
}

// Rewrites the header's length and CRC fields after a deliberate edit, so that the edit is
// what the decoder sees (not a checksum mismatch).
std::string Reseal(std::string h) {
  const uint32_t n = static_cast<uint32_t>(h.size());
  for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<char>(n >> (8 * i));
  std::memset(h.data() + 12, 0, 4);
  const uint32_t crc = Crc32c(h.data(), h.size());
  for (int i = 0; i < 4; ++i) h[12 + i] = static_cast<char>(crc >> (8 * i));
  return h;
}

TEST(Crc32c, KnownVectorAndContinuation) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("6789", 4, Crc32c("12345", 5)), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(WireProtocol, BeginRoundTripsWithTheDocumentedPrefix) {
  const BeginMessage m = SampleBegin();
  const std::string h = Encode(m);
  ASSERT_GE(h.size(), kPrefixBytes);
  EXPECT_EQ(std::string(h.data(), 4), "KVH1");  // magic, little-endian
  EXPECT_EQ(h[4], 1);                           // version
  EXPECT_EQ(PeekType(Bytes(h)), static_cast<uint16_t>(MessageType::kBegin));
  uint32_t length = 0;
  std::memcpy(&length, h.data() + 8, 4);
  EXPECT_EQ(length, h.size());
  absl::StatusOr<BeginMessage> d = DecodeBegin(Bytes(h));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->prefix.transfer_id, m.prefix.transfer_id);
  EXPECT_EQ(d->prefix.request_id, m.prefix.request_id);
  EXPECT_EQ(d->prefix.rank, 3u);
  EXPECT_EQ(d->world_size, 4u);
  EXPECT_EQ(d->seq_len, 500);
  EXPECT_EQ(d->dtype, "bf16");
  EXPECT_EQ(d->layout, "zigzag");
  EXPECT_EQ(d->ranges, m.ranges);
  EXPECT_EQ(Encode(*d), h);
}

TEST(WireProtocol, LayerCommitAndAckRoundTrip) {
  LayerMessage l;
  l.prefix = {MessageType::kLayer, 9, "r", 1};
  l.layer = 5;
  l.kind = 1;
  l.dtype = "f32";
  l.shape = {128, 2, 64};
  l.ranges = {{0, 128, 0}};
  l.payload_bytes = 65536;
  l.payload_crc = 0xdeadbeef;
  absl::StatusOr<LayerMessage> dl = DecodeLayer(Bytes(Encode(l)));
  ASSERT_TRUE(dl.ok()) << dl.status();
  EXPECT_EQ(Encode(*dl), Encode(l));
  EXPECT_EQ(dl->shape, l.shape);

  CommitMessage c;
  c.prefix = {MessageType::kCommit, 9, "r", 1};
  c.messages = 4;
  c.payload_bytes = 1 << 20;
  c.payload_crc = CombineCrcs({1, 2, 3, 4});
  absl::StatusOr<CommitMessage> dc = DecodeCommit(Bytes(Encode(c)));
  ASSERT_TRUE(dc.ok()) << dc.status();
  EXPECT_EQ(dc->payload_crc, c.payload_crc);

  AckMessage a;
  a.prefix = {MessageType::kAck, 9, "r", 1};
  a.status = 10;
  a.message = "dropped: rank 1 sent layer 5 twice";
  absl::StatusOr<AckMessage> da = DecodeAck(Bytes(Encode(a)));
  ASSERT_TRUE(da.ok()) << da.status();
  EXPECT_EQ(da->status, 10);
  EXPECT_EQ(da->message, a.message);
}

TEST(WireProtocol, CombineCrcsIsTheCrcOfLittleEndianWords) {
  const char words[] = {1, 0, 0, 0, 2, 0, 0, 0};
  EXPECT_EQ(CombineCrcs({1, 2}), Crc32c(words, 8));
  EXPECT_NE(CombineCrcs({1, 2}), CombineCrcs({2, 1}));
}

// Decodes h as a Begin and expects InvalidArgument mentioning `why`.
void ExpectRefused(const std::string& h, const std::string& why) {
  absl::StatusOr<BeginMessage> d = DecodeBegin(Bytes(h));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find(why), std::string_view::npos) << d.status();
}

TEST(WireProtocol, MalformedHeadersAreRefusedWithTheirFault) {
  const std::string good = Encode(SampleBegin());
  ExpectRefused(good.substr(0, 10), "shorter than the fixed prefix");
  std::string h = good;
  h[0] = 'X';
  ExpectRefused(h, "bad magic");
  h = good;
  h[4] = 2;
  ExpectRefused(Reseal(h), "protocol version 2");
  h = good;
  h[h.size() - 1] ^= 1;
  ExpectRefused(h, "header checksum mismatch");
  ExpectRefused(good + "x", "declares");                       // length field disagrees
  ExpectRefused(Reseal(good + "x"), "truncated or overlong");  // one byte too many
  ExpectRefused(Reseal(good.substr(0, good.size() - 3)), "truncated or overlong");
  BeginMessage bad_id = SampleBegin();
  bad_id.prefix.request_id = "../etc";
  ExpectRefused(Encode(bad_id), "is not [A-Za-z0-9._-]{1,128}");
  BeginMessage many = SampleBegin();
  many.ranges.assign(kMaxRanges + 1, {0, 1, 0});
  ExpectRefused(Encode(many), "truncated or overlong");
}

TEST(WireProtocol, EveryTruncationIsRefused) {
  const std::string h = Encode(SampleBegin());
  for (size_t n = 0; n < kPrefixBytes; ++n)
    EXPECT_FALSE(DecodeBegin(Bytes(h.substr(0, n))).ok()) << n;
  for (size_t n = kPrefixBytes; n < h.size(); ++n) {
    EXPECT_FALSE(DecodeBegin(Bytes(Reseal(h.substr(0, n)))).ok()) << "first " << n << " bytes";
  }
}

TEST(WireProtocol, ADecoderRefusesAnotherType) {
  CommitMessage c;
  c.prefix = {MessageType::kCommit, 1, "r", 0};
  ExpectRefused(Encode(c), "a commit message where a begin one was expected");
  absl::StatusOr<AckMessage> a = DecodeAck(Bytes(Encode(SampleBegin())));
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("a begin message where an acknowledgement one was expected"),
            std::string_view::npos)
      << a.status();
  EXPECT_EQ(PeekType({}), 0);
}

}  // namespace
}  // namespace prefill::kvwire
