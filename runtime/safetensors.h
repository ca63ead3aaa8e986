// Safetensors files: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and [begin, end) byte range, then the data. The reader maps the
// file and validates every field against the file's size before anything is touched, so a
// malformed file is an InvalidArgument naming the file and tensor, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tensor.h"

namespace prefill {

struct SafetensorsEntry {
  DType dtype;
  std::vector<int64_t> shape;
  const std::byte* data;  // inside the mapping
  size_t size;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // The same parser over bytes in memory; `name` stands for the path in messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(const std::string& name,
                                                                    std::vector<std::byte> bytes);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  // NotFound / InvalidArgument naming the file and the tensor.
  absl::StatusOr<const SafetensorsEntry*> Find(const std::string& name) const;
  // A copy of the rows [row_begin, row_end) of the leading dimension.
  absl::StatusOr<Tensor> ReadRows(const std::string& name, int64_t row_begin,
                                  int64_t row_end) const;

 private:
  SafetensorsFile() = default;
  absl::Status Index(const std::byte* base, size_t size);  // header -> entries_, all bounds checked
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<std::byte> owned_;  // FromBytes' copy
  std::map<std::string, SafetensorsEntry> entries_;
};

// A safetensors file whose tensors' names, dtypes and shapes are known before their bytes:
// the header is written at Create, each tensor at its offset when it comes (in any order,
// e.g. a KV cache layer by layer as it lands). Atomic: a temporary file in the same folder
// until Finish fsyncs and renames it; a writer never finished removes it.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
  };
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<Entry>& entries);
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();

  // entries[index]'s bytes (exactly its size). Writes of different tensors may run at once.
  absl::Status Write(size_t index, std::span<const std::byte> bytes) const;
  // Every tensor written or not, the file is published: call it once all are.
  absl::Status Finish();

 private:
  SafetensorsWriter(std::string path, std::string tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<uint64_t> offsets_, sizes_;  // of each entry in the file
};

// Writes the tensors to `path` atomically (SafetensorsWriter), so a reader never sees half a
// file.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, TensorView>>& tensors);

}  // namespace prefill
