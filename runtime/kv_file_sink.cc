#include "runtime/kv_file_sink.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/atomic_file.h"
#include "runtime/safetensors.h"

namespace prefill {
namespace {

// Shape and dtype of one tensor handed to a sink, checked against the geometry.
absl::Status CheckKvTensor(const KvCacheGeometry& g, const TensorView& t, int layer,
                           const char* what) {
  const std::vector<int64_t> want = {g.local_rows, g.kv_heads, g.head_dim};
  if (t.dtype != g.dtype || t.shape != want ||
      static_cast<int64_t>(t.bytes.size()) != g.TensorBytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " ", what, ": ", std::string(DTypeName(t.dtype)), " ",
                     t.ShapeString(), ", the KV cache needs ", std::string(DTypeName(g.dtype)),
                     " [", g.local_rows, ", ", g.kv_heads, ", ", g.head_dim, "]"));
  }
  return absl::OkStatus();
}

std::string KvTensorName(int layer, bool key) {
  return absl::StrCat("layers.", layer, key ? ".key" : ".value");
}

// Each rank's shard is created at Begin with its whole header (the geometry fixes every
// tensor's place) and each layer written into it at PutLayer: during the prefill, as the
// layers land, where the caller hands them over then (takes_layers_during_prefill).
class KvFileSink final : public KvSink {
 public:
  KvFileSink(Communicator& comm, std::string dir) : comm_(comm), dir_(std::move(dir)) {}
  ~KvFileSink() override {
    shard_.reset();  // removes the unfinished temporary file
    if (begun_ && comm_.rank() == 0) {
      std::error_code ec;
      std::filesystem::remove_all(dir_ + ".partial", ec);
    }
  }

  std::string_view name() const override { return "file"; }
  std::string destination() const override { return dir_; }
  bool takes_layers_during_prefill() const override { return true; }

  absl::Status Begin(const std::string& /*request_id*/, const KvCacheGeometry& geometry) override {
    geometry_ = geometry;
    layers_ = 0;
    shard_.reset();
    error_ = absl::OkStatus();
    absl::Status s;
    if (comm_.rank() == 0) s = StageKvCache(dir_).status();
    if (s = AgreeOnStatus(comm_, s); !s.ok()) return s;
    begun_ = true;
    std::vector<SafetensorsWriter::Entry> entries;
    const std::vector<int64_t> shape = {geometry.local_rows, geometry.kv_heads, geometry.head_dim};
    for (int i = 0; i < geometry.num_layers; ++i) {
      for (bool key : {true, false})
        entries.push_back({KvTensorName(i, key), geometry.dtype, shape});
    }
    // A failure here is this rank's: Commit reports it to all.
    absl::StatusOr<std::unique_ptr<SafetensorsWriter>> shard = SafetensorsWriter::Create(
        absl::StrCat(dir_, ".partial/", KvShardFileName(comm_.rank())), entries);
    if (shard.ok()) {
      shard_ = *std::move(shard);
    } else {
      error_ = shard.status();
    }
    return absl::OkStatus();
  }

  absl::Status PutLayer(int layer, const TensorView& key, const TensorView& value,
                        std::span<const KvTokenRange>) override {
    if (!error_.ok()) return error_;
    if (layer != layers_ || layer >= geometry_.num_layers) {
      error_ = absl::InternalError(
          absl::StrCat("KV layer ", layer, " out of order (expected ", layers_, ")"));
    } else if (absl::Status s = CheckKvTensor(geometry_, key, layer, "key"); !s.ok()) {
      error_ = s;
    } else if (absl::Status s = CheckKvTensor(geometry_, value, layer, "value"); !s.ok()) {
      error_ = s;
    } else if (absl::Status s = shard_->Write(2 * layer, key.bytes); !s.ok()) {
      error_ = s;
    } else if (absl::Status s = shard_->Write(2 * layer + 1, value.bytes); !s.ok()) {
      error_ = s;
    }
    if (!error_.ok()) return error_;
    ++layers_;
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    absl::Status s = error_;
    if (s.ok() && layers_ != geometry_.num_layers) {
      s = absl::InternalError(absl::StrCat("KV cache committed with ", layers_, " of ",
                                           geometry_.num_layers, " layers"));
    }
    if (s.ok()) s = shard_->Finish();
    shard_.reset();
    s = AgreeOnStatus(comm_, s);
    if (comm_.rank() == 0) {
      if (s.ok()) {
        s = PublishKvCache(dir_, geometry_);
      } else {
        std::error_code ec;
        std::filesystem::remove_all(dir_ + ".partial", ec);
      }
    }
    begun_ = false;
    return AgreeOnStatus(comm_, s);
  }

 private:
  Communicator& comm_;
  const std::string dir_;
  KvCacheGeometry geometry_;
  int layers_ = 0;  // put so far
  bool begun_ = false;
  std::unique_ptr<SafetensorsWriter> shard_;
  absl::Status error_;
};

}  // namespace

std::string KvShardFileName(int rank) { return absl::StrCat("rank", rank, ".safetensors"); }

nlohmann::json KvCacheIndex(const KvCacheGeometry& g) {
  nlohmann::json index = {{"seq_len", g.seq_len},
                          {"num_layers", g.num_layers},
                          {"kv_heads", g.kv_heads},
                          {"head_dim", g.head_dim},
                          {"dtype", std::string(DTypeName(g.dtype))},
                          {"layout", g.layout},
                          {"ranges", nlohmann::json::array()}};
  for (size_t r = 0; r < g.ranges.size(); ++r) {
    for (const KvTokenRange& range : g.ranges[r]) {
      index["ranges"].push_back({{"start", range.start},
                                 {"length", range.length},
                                 {"file", KvShardFileName(static_cast<int>(r))},
                                 {"row", range.row}});
    }
  }
  return index;
}

absl::Status WriteKvShard(const std::string& path, const std::vector<TensorView>& keys,
                          const std::vector<TensorView>& values) {
  std::vector<std::pair<std::string, TensorView>> named;
  named.reserve(2 * keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    named.emplace_back(KvTensorName(static_cast<int>(i), true), keys[i]);
    named.emplace_back(KvTensorName(static_cast<int>(i), false), values[i]);
  }
  return WriteSafetensors(path, named);
}

absl::StatusOr<std::string> StageKvCache(const std::string& final_dir) {
  const std::string tmp_dir = final_dir + ".partial";
  std::error_code ec;
  std::filesystem::remove_all(tmp_dir, ec);
  std::filesystem::create_directories(tmp_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(tmp_dir, ": cannot create: ", ec.message()));
  return tmp_dir;
}

absl::Status PublishKvCache(const std::string& final_dir, const KvCacheGeometry& g) {
  const std::string tmp_dir = final_dir + ".partial";
  const absl::Status written =
      WriteFileAtomically(tmp_dir + "/index.json", KvCacheIndex(g).dump(2) + "\n");
  std::error_code ec;
  if (written.ok()) {
    std::filesystem::remove_all(final_dir, ec);
    std::filesystem::rename(tmp_dir, final_dir, ec);
  }
  if (!written.ok() || ec) {
    std::filesystem::remove_all(tmp_dir, ec);
    return absl::InternalError(
        absl::StrCat(final_dir, ": cannot publish the KV cache",
                     written.ok() ? "" : absl::StrCat(": ", written.message())));
  }
  return absl::OkStatus();
}

std::unique_ptr<KvSink> MakeKvFileSink(Communicator& comm, std::string dir) {
  return std::make_unique<KvFileSink>(comm, std::move(dir));
}

}  // namespace prefill
