// Fuzzes the KV handoff wire decoders (runtime/kvhandoff/wire_protocol.h): any bytes decode
// to an error or to a message that encodes back to exactly those bytes. The first input byte
// picks the mode: odd reseals the rest (header length and CRC made right) so that mutations
// reach the body parsing instead of stopping at the checksum.
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/kvhandoff/wire_protocol.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

namespace wire = prefill::kvwire;

std::string Reseal(std::string h) {
  if (h.size() < wire::kPrefixBytes) return h;
  const uint32_t n = static_cast<uint32_t>(h.size());
  for (int i = 0; i < 4; ++i) h[8 + i] = static_cast<char>(n >> (8 * i));
  std::memset(h.data() + 12, 0, 4);
  const uint32_t crc = wire::Crc32c(h.data(), h.size());
  for (int i = 0; i < 4; ++i) h[12 + i] = static_cast<char>(crc >> (8 * i));
  return h;
}

template <typename Decode>
void RoundTrip(const std::string& h, Decode decode) {
  auto m =
      decode(std::span<const std::byte>(reinterpret_cast<const std::byte*>(h.data()), h.size()));
  if (m.ok() && wire::Encode(*m) != h) std::abort();  // decoded something these bytes do not say
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string h(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) h = Reseal(std::move(h));
  RoundTrip(h, wire::DecodeBegin);
  RoundTrip(h, wire::DecodeLayer);
  RoundTrip(h, wire::DecodeCommit);
  RoundTrip(h, wire::DecodeAck);
  return 0;
}
