// The KV cache streamed into the file sink during a prefill: layers handed over on the
// streamer's thread land in every rank's shard exactly, and a request that never commits
// leaves nothing behind. Runs under mpirun (2 ranks: shards of both, rank 0 publishes).
#include "runtime/kv_layer_streamer.h"

#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "parallel/mpi_communicator.h"
#include "runtime/kv_file_sink.h"
#include "runtime/safetensors.h"

namespace prefill {
namespace {

constexpr int kLayers = 3, kRows = 4, kKvHeads = 2, kHeadDim = 8;

// One folder for every rank: rank 0's mkdtemp, broadcast.
std::string SharedTempDir() {
  char path[256] = {};
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    std::string pattern = (std::filesystem::temp_directory_path() / "kv_stream_XXXXXX").string();
    if (::mkdtemp(pattern.data())) std::strncpy(path, pattern.c_str(), sizeof(path) - 1);
  }
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

KvCacheGeometry Geometry(const Communicator& comm) {
  KvCacheGeometry g;
  g.seq_len = int64_t{kRows} * comm.size();
  g.num_layers = kLayers;
  g.kv_heads = kKvHeads;
  g.head_dim = kHeadDim;
  g.dtype = DType::kBF16;
  g.layout = "contiguous";
  g.rank = comm.rank();
  g.world_size = comm.size();
  g.local_rows = kRows;
  for (int r = 0; r < comm.size(); ++r) g.ranges.push_back({{int64_t{r} * kRows, kRows, 0}});
  return g;
}

// Bytes that differ per rank, layer, key/value and offset.
std::vector<std::byte> LayerBytes(int rank, int layer, bool key) {
  std::vector<std::byte> bytes(size_t{kRows} * kKvHeads * kHeadDim * 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>(rank * 97 + layer * 31 + (key ? 7 : 0) + static_cast<int>(i));
  }
  return bytes;
}

class KvLayerStreamerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    comm_ = *MpiCommunicator::Create(MPI_COMM_WORLD);
    root_ = SharedTempDir();
    ASSERT_FALSE(root_.empty());
  }
  void TearDown() override {
    (void)comm_->Barrier();
    if (comm_->rank() == 0) std::filesystem::remove_all(root_);
  }
  std::unique_ptr<MpiCommunicator> comm_;
  std::string root_;
};

TEST_F(KvLayerStreamerTest, StreamedLayersLandInEveryShardExactly) {
  const std::string dir = root_ + "/kv";
  const KvCacheGeometry g = Geometry(*comm_);
  std::unique_ptr<AttentionBackend> backend = MakeCpuBackend(1);
  std::unique_ptr<KvSink> sink = MakeKvFileSink(*comm_, dir);
  ASSERT_TRUE(sink->takes_layers_during_prefill());
  ASSERT_TRUE(sink->Begin("r", g).ok());
  std::vector<std::shared_ptr<std::vector<std::byte>>> keys, values;
  std::weak_ptr<std::vector<std::byte>> first_key;
  {
    KvLayerStreamer streamer(*backend, {sink.get()}, g);
    for (int l = 0; l < kLayers; ++l) {
      keys.push_back(std::make_shared<std::vector<std::byte>>(LayerBytes(comm_->rank(), l, true)));
      values.push_back(
          std::make_shared<std::vector<std::byte>>(LayerBytes(comm_->rank(), l, false)));
      streamer.Push(l, *keys.back(), *values.back(), keys.back(), backend->DownloadsStarted());
    }
    first_key = keys[0];
    keys[0].reset();  // the streamer's share keeps layer 0's keys until they are handed over
    EXPECT_TRUE(streamer.Finish().ok());
    EXPECT_TRUE(first_key.expired()) << "the streamer let go of a layer once handed over";
    keys[0] = std::make_shared<std::vector<std::byte>>(LayerBytes(comm_->rank(), 0, true));
  }
  ASSERT_TRUE(sink->Commit().ok());
  ASSERT_TRUE(std::filesystem::exists(dir + "/index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + ".partial"));
  for (int r = 0; r < comm_->size(); ++r) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard =
        SafetensorsFile::Open(dir + "/" + KvShardFileName(r));
    ASSERT_TRUE(shard.ok()) << shard.status();
    for (int l = 0; l < kLayers; ++l) {
      for (bool key : {true, false}) {
        const std::string name = "layers." + std::to_string(l) + (key ? ".key" : ".value");
        absl::StatusOr<const SafetensorsEntry*> e = (*shard)->Find(name);
        ASSERT_TRUE(e.ok()) << e.status();
        const std::vector<std::byte> want = LayerBytes(r, l, key);
        ASSERT_EQ((*e)->size, want.size()) << name;
        EXPECT_EQ(std::memcmp((*e)->data, want.data(), want.size()), 0)
            << "rank " << r << " " << name;
      }
    }
  }
}

// A prefill that fails after Begin (its layers partly written): the sink goes without a
// Commit, and neither the folder nor its .partial staging remains.
TEST_F(KvLayerStreamerTest, UncommittedRequestLeavesNothing) {
  const std::string dir = root_ + "/kv";
  const KvCacheGeometry g = Geometry(*comm_);
  {
    std::unique_ptr<KvSink> sink = MakeKvFileSink(*comm_, dir);
    ASSERT_TRUE(sink->Begin("r", g).ok());
    const std::vector<std::byte> k = LayerBytes(comm_->rank(), 0, true),
                                 v = LayerBytes(comm_->rank(), 0, false);
    const std::vector<int64_t> shape = {kRows, kKvHeads, kHeadDim};
    ASSERT_TRUE(sink->PutLayer(0, TensorView(g.dtype, shape, k), TensorView(g.dtype, shape, v),
                               g.ranges[g.rank])
                    .ok());
    ASSERT_TRUE(comm_->Barrier().ok());
  }
  ASSERT_TRUE(comm_->Barrier().ok());
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_FALSE(std::filesystem::exists(dir + ".partial"));
}

}  // namespace
}  // namespace prefill
