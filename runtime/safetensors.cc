#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"

namespace prefill {
namespace {

// Header bytes beyond this are not a header but a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::Status Malformed(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": malformed safetensors file: ", what));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const nlohmann::json& j, const std::byte* data,
                                            size_t data_size) {
  auto bad = [&](const std::string& what) {
    return Malformed(path, "tensor '" + name + "': " + what);
  };
  if (!j.is_object() || !j.contains("dtype") || !j.contains("shape") ||
      !j.contains("data_offsets")) {
    return bad("needs dtype, shape and data_offsets");
  }
  if (!j["dtype"].is_string()) return bad("dtype is not a string");
  absl::StatusOr<DType> dtype = ParseDType(j["dtype"].get<std::string>());
  if (!dtype.ok()) return bad(std::string(dtype.status().message()));
  SafetensorsEntry e{*dtype, {}, nullptr, 0};
  if (!j["shape"].is_array()) return bad("shape is not an array");
  uint64_t numel = 1;
  for (const auto& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      return bad("shape has a non-integer or negative dim");
    e.shape.push_back(d.get<int64_t>());
    if (e.shape.back() > 0 && numel > (uint64_t{1} << 60) / e.shape.back())
      return bad("shape overflows");
    numel *= e.shape.back();
  }
  const auto& off = j["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return bad("data_offsets must be two non-negative integers");
  }
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, ") outside the ", data_size,
                            " data bytes"));
  }
  if (end - begin != numel * DTypeSize(*dtype)) {
    return bad(absl::StrCat("holds ", end - begin, " bytes but its shape and dtype need ",
                            numel * DTypeSize(*dtype)));
  }
  e.data = data + begin;
  e.size = end - begin;
  return e;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_size_ = static_cast<size_t>(st.st_size);
  if (file->map_size_ < 8) {  // mmap of an empty file fails: report the real problem
    ::close(fd);
    return file->Index(nullptr, file->map_size_);
  }
  file->map_ = ::mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (file->map_ == MAP_FAILED) {
    file->map_ = nullptr;
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot map: ", std::strerror(errno)));
  }
  absl::Status s = file->Index(static_cast<const std::byte*>(file->map_), file->map_size_);
  if (!s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    const std::string& name, std::vector<std::byte> bytes) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = name;
  file->owned_ = std::move(bytes);
  absl::Status s = file->Index(file->owned_.data(), file->owned_.size());
  if (!s.ok()) return s;
  return file;
}

absl::Status SafetensorsFile::Index(const std::byte* base, size_t size) {
  const std::string& path = path_;
  if (size < 8)
    return Malformed(path,
                     absl::StrCat("only ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every host we build for
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return Malformed(
        path, absl::StrCat("header length ", header_len, " exceeds the file (", size, " bytes)"));
  }
  const nlohmann::json header = nlohmann::json::parse(
      reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + header_len),
      nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Malformed(path, "header is not a JSON object");
  }
  const std::byte* data = base + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;
    absl::StatusOr<SafetensorsEntry> e = ParseEntry(path, name, value, data, data_size);
    if (!e.ok()) return e.status();
    entries_.emplace(name, std::move(*e));
  }
  return absl::OkStatus();
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<const SafetensorsEntry*> SafetensorsFile::Find(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  return &it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::ReadRows(const std::string& name, int64_t row_begin,
                                                 int64_t row_end) const {
  absl::StatusOr<const SafetensorsEntry*> e = Find(name);
  if (!e.ok()) return e.status();
  const SafetensorsEntry& entry = **e;
  if (entry.shape.empty() || row_begin < 0 || row_end > entry.shape[0] || row_begin > row_end) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor '", name, "' has no rows [", row_begin, ", ", row_end, ")"));
  }
  std::vector<int64_t> shape = entry.shape;
  shape[0] = row_end - row_begin;
  Tensor t = Tensor::Zeros(entry.dtype, shape);
  const size_t row_bytes = entry.shape[0] ? entry.size / entry.shape[0] : 0;
  // An empty range (or a tensor with a zero dimension) has no bytes and a null data().
  if (!t.bytes.empty())
    std::memcpy(t.bytes.data(), entry.data + row_begin * row_bytes, t.bytes.size());
  return t;
}

namespace {

// 0, or the errno of the failed write.
int WriteAt(int fd, const void* data, size_t n, uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    p += w;
    offset += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<Entry>& entries) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    const uint64_t size = static_cast<uint64_t>(numel) * DTypeSize(e.dtype);
    std::string dtype(DTypeName(e.dtype));
    for (char& c : dtype) c = static_cast<char>(std::toupper(c));
    header[e.name] = {
        {"dtype", dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + size}}};
    sizes.push_back(size);
    offset += size;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  const uint64_t header_len = text.size();

  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter(path, tmp, fd));
  uint64_t at = 8 + header_len;
  for (uint64_t size : sizes) {
    w->offsets_.push_back(at);
    at += size;
  }
  w->sizes_ = std::move(sizes);
  int error = WriteAt(fd, &header_len, 8, 0);
  if (error == 0) error = WriteAt(fd, text.data(), text.size(), 8);
  if (error != 0)
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(error)));
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

absl::Status SafetensorsWriter::Write(size_t index, std::span<const std::byte> bytes) const {
  if (index >= sizes_.size() || bytes.size() != sizes_[index]) {
    return absl::InternalError(absl::StrCat(path_, ": tensor ", index, " of ", bytes.size(),
                                            " bytes, the header says ",
                                            index < sizes_.size() ? sizes_[index] : 0));
  }
  if (const int e = WriteAt(fd_, bytes.data(), bytes.size(), offsets_[index]); e != 0) {
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(e)));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  int error = ::fsync(fd_) == 0 ? 0 : errno;
  if (::close(fd_) != 0 && error == 0) error = errno;
  fd_ = -1;
  if (error == 0 && ::rename(tmp_.c_str(), path_.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(tmp_.c_str());
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, TensorView>>& tensors) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.dtype, t.shape});
  absl::StatusOr<std::unique_ptr<SafetensorsWriter>> w = SafetensorsWriter::Create(path, entries);
  if (!w.ok()) return w.status();
  for (size_t i = 0; i < tensors.size(); ++i) {
    PREFILL_RETURN_IF_ERROR((*w)->Write(i, tensors[i].second.bytes));
  }
  return (*w)->Finish();
}

}  // namespace prefill
