#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace prefill {
namespace {

std::string TempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "safetensors_write_XXXXXX").string();
  return ::mkdtemp(pattern.data()) ? pattern : "";
}

// Bytes that differ at every offset of a tensor and between tensors: a piece written at the
// wrong offset, twice or not at all shows.
std::vector<std::byte> Pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> bytes(n);
  uint32_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    bytes[i] = static_cast<std::byte>(x >> 24);
  }
  return bytes;
}

// Views of memory the writer does not own (the KV cache in the download's host memory), of
// sizes that are not multiples of each other, read back through the mapped reader.
TEST(WriteSafetensors, ViewsReadBackExactly) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  const std::vector<std::byte> small = Pattern(3 * 8 * 2, 1), large = Pattern(size_t{9} << 20, 2),
                               odd = Pattern(7 * 2, 3);
  const std::vector<std::pair<std::string, TensorView>> tensors = {
      {"a", TensorView(DType::kBF16, {3, 8}, small)},
      {"big", TensorView(DType::kBF16, {int64_t{9} << 19}, large)},
      {"c", TensorView(DType::kBF16, {7}, odd)}};
  const std::string path = dir + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [name, view] : tensors) {
    absl::StatusOr<const SafetensorsEntry*> e = (*file)->Find(name);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ((*e)->shape, view.shape) << name;
    ASSERT_EQ((*e)->size, view.bytes.size()) << name;
    EXPECT_EQ(std::memcmp((*e)->data, view.bytes.data(), view.bytes.size()), 0) << name;
  }
  std::filesystem::remove_all(dir);
}

// A folder that cannot be written to: an error naming the file, and no temporary left.
TEST(WriteSafetensors, UnwritableFolderIsAnErrorAndLeavesNothing) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  const std::vector<std::byte> bytes = Pattern(16, 4);
  const std::string path = dir + "/missing/t.safetensors";
  const absl::Status s = WriteSafetensors(path, {{"a", TensorView(DType::kBF16, {8}, bytes)}});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("t.safetensors"), std::string_view::npos) << s;
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace prefill
