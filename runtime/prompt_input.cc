#include "runtime/prompt_input.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace prefill {
namespace {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// NumPy format 1.0-3.0: magic, version, header length, a dict literal, then the data.
absl::StatusOr<std::vector<int64_t>> ReadNpy(const std::string& path, const std::string& bytes) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    return Bad(path, "not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    offset = 10;
  } else {
    if (bytes.size() < 12) return Bad(path, "truncated .npy header");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  }
  if (offset + header_len > bytes.size()) return Bad(path, "truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  const bool i4 = absl::StrContains(header, "'<i4'"), i8 = absl::StrContains(header, "'<i8'");
  if (!i4 && !i8) return Bad(path, "token ids must be int32 or int64 ('<i4' or '<i8')");
  if (absl::StrContains(header, "'fortran_order': True"))
    return Bad(path, "fortran_order arrays are not supported");
  const size_t data = offset + header_len, width = i4 ? 4 : 8;
  if ((bytes.size() - data) % width != 0)
    return Bad(path, "data is not a whole number of elements");
  const size_t n = (bytes.size() - data) / width;
  // A 1-D shape "(n,)" must agree with the data present.
  const std::string expect = absl::StrCat("(", n, ",)");
  if (!absl::StrContains(header, expect))
    return Bad(path, absl::StrCat("shape must be 1-D ", expect, " for its ", n, " elements"));
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) {
    if (i4) {
      int32_t v;
      std::memcpy(&v, bytes.data() + data + 4 * i, 4);
      ids[i] = v;
    } else {
      std::memcpy(&ids[i], bytes.data() + data + 8 * i, 8);
    }
  }
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ReadJsonIds(const std::string& path,
                                                 const std::string& bytes) {
  const nlohmann::json j = nlohmann::json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_array())
    return Bad(path, "token file must be a JSON array of integers");
  std::vector<int64_t> ids;
  for (size_t i = 0; i < j.size(); ++i) {
    if (!j[i].is_number_integer())
      return Bad(path, absl::StrCat("element ", i, " is not an integer"));
    ids.push_back(j[i].get<int64_t>());
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ReadTokenIds(const std::string& path, int vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open token file"));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<std::vector<int64_t>> ids =
      absl::EndsWith(path, ".npy") ? ReadNpy(path, bytes) : ReadJsonIds(path, bytes);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) return Bad(path, "no tokens");
  std::vector<int32_t> out(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) {
    if ((*ids)[i] < 0 || (*ids)[i] >= vocab_size) {
      return absl::OutOfRangeError(absl::StrCat(path, ": token ", (*ids)[i], " at position ", i,
                                                " is outside the vocabulary [0, ", vocab_size,
                                                ")"));
    }
    out[i] = static_cast<int32_t>((*ids)[i]);
  }
  return out;
}

}  // namespace prefill
