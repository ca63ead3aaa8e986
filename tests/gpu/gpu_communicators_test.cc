// The GPU ranks' communicators over 2+ ranks (mpirun -n 2): NcclCommunicator (one GPU per
// rank; skips when the node has fewer GPUs than ranks) and HostStagedCommunicator (ranks
// sharing one GPU; skips without a GPU). AllGather(V), AllToAllV, a ring of Send/Recv posted
// send-first on every rank (the pattern that deadlocks with unbatched NCCL point-to-point),
// AllReduce on host and device doubles, Barrier, Split (singletons and one group in reverse
// order). Every rank checks its own result against the pattern the senders wrote.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/nccl/host_staged_communicator.h"
#include "parallel/nccl/nccl_communicator.h"

namespace prefill {
namespace {

enum class Transport { kNccl, kHostStaged };

class GpuCommunicatorTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    int world = 0, count = 0, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
    const bool nccl = GetParam() == Transport::kNccl;
    if (world < 2 || count < (nccl ? world : 1)) {
      GTEST_SKIP() << "needs at least 2 ranks and " << (nccl ? "one GPU per rank" : "a GPU") << " ("
                   << world << " ranks, " << count << " GPUs)";
    }
    const int device = rank % count;  // one node: world rank = local rank
    ASSERT_EQ(cudaSetDevice(device), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    if (nccl) {
      NcclOptions options;
      options.comm_timeout_seconds = 60;
      options.device_id = device;
      options.compute_stream = stream_;
      auto comm = NcclCommunicator::Create(options);
      ASSERT_TRUE(comm.ok()) << comm.status();
      comm_ = *std::move(comm);
    } else {
      auto mpi = MpiCommunicator::Create(MPI_COMM_WORLD);
      ASSERT_TRUE(mpi.ok()) << mpi.status();
      auto staged = HostStagedCommunicator::Create(*std::move(mpi), device, stream_);
      ASSERT_TRUE(staged.ok()) << staged.status();
      comm_ = *std::move(staged);
    }
  }
  void TearDown() override {
    comm_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  // Device buffer holding `host`.
  template <typename T>
  T* Upload(const std::vector<T>& host) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T) + 1), cudaSuccess);
    EXPECT_EQ(
        cudaMemcpyAsync(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream_),
        cudaSuccess);
    buffers_.push_back(p);
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> Download(const T* device, size_t n) {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpyAsync(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost, stream_),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return host;
  }
  ~GpuCommunicatorTest() override {
    for (void* p : buffers_) cudaFree(p);
  }

  static uint8_t Pattern(int from, int to, size_t i) {
    return static_cast<uint8_t>(from * 31 + to * 7 + i * 13);
  }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Communicator> comm_;
  std::vector<void*> buffers_;
};

TEST_P(GpuCommunicatorTest, AllToAllV) {
  const int n = comm_->size(), r = comm_->rank();
  std::vector<size_t> send_counts(n), send_displs(n), recv_counts(n), recv_displs(n);
  size_t send_total = 0, recv_total = 0;
  for (int p = 0; p < n; ++p) {
    send_counts[p] = (p + 1) * (r + 1) * 1000 + 3;  // odd sizes on purpose
    send_displs[p] = send_total;
    send_total += send_counts[p];
    recv_counts[p] = (r + 1) * (p + 1) * 1000 + 3;
    recv_displs[p] = recv_total;
    recv_total += recv_counts[p];
  }
  std::vector<uint8_t> send(send_total);
  for (int p = 0; p < n; ++p) {
    for (size_t i = 0; i < send_counts[p]; ++i) send[send_displs[p] + i] = Pattern(r, p, i);
  }
  uint8_t* d_send = Upload(send);
  uint8_t* d_recv = Upload(std::vector<uint8_t>(recv_total, 0));
  ASSERT_TRUE(
      comm_->AllToAllV(d_send, send_counts, send_displs, d_recv, recv_counts, recv_displs).ok());
  const std::vector<uint8_t> recv = Download(d_recv, recv_total);
  for (int p = 0; p < n; ++p) {
    for (size_t i = 0; i < recv_counts[p]; ++i)
      ASSERT_EQ(recv[recv_displs[p] + i], Pattern(p, r, i)) << p << " " << i;
  }
}

TEST_P(GpuCommunicatorTest, RingSendRecvPostedSendFirst) {
  const int n = comm_->size(), r = comm_->rank();
  const size_t bytes = 64 << 20;  // large enough that an unbatched send would block
  std::vector<uint8_t> send(bytes);
  for (size_t i = 0; i < bytes; ++i) send[i] = Pattern(r, (r + 1) % n, i);
  uint8_t* d_send = Upload(send);
  uint8_t* d_recv = Upload(std::vector<uint8_t>(bytes, 0));
  auto s = comm_->Send(d_send, bytes, (r + 1) % n, 0);
  auto v = comm_->Recv(d_recv, bytes, (r + n - 1) % n, 0);
  ASSERT_TRUE(s.ok() && v.ok());
  ASSERT_TRUE((*s)->Wait().ok());
  ASSERT_TRUE((*v)->Wait().ok());
  const std::vector<uint8_t> recv = Download(d_recv, bytes);
  const int from = (r + n - 1) % n;
  for (size_t i = 0; i < bytes; i += 4099) ASSERT_EQ(recv[i], Pattern(from, r, i)) << i;
}

TEST_P(GpuCommunicatorTest, AllGatherAndAllGatherV) {
  const int n = comm_->size(), r = comm_->rank();
  const size_t bytes = 1000;
  std::vector<uint8_t> mine(bytes);
  for (size_t i = 0; i < bytes; ++i) mine[i] = Pattern(r, 0, i);
  uint8_t* d_mine = Upload(mine);
  uint8_t* d_all = Upload(std::vector<uint8_t>(n * bytes, 0));
  ASSERT_TRUE(comm_->AllGather(d_mine, bytes, d_all).ok());
  std::vector<uint8_t> all = Download(d_all, n * bytes);
  for (int p = 0; p < n; ++p) {
    for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(all[p * bytes + i], Pattern(p, 0, i));
  }
  // V: every rank sends the same `bytes`; slots in reverse rank order with gaps.
  std::vector<size_t> counts(n, bytes), displs(n);
  for (int p = 0; p < n; ++p) displs[p] = (n - 1 - p) * (bytes + 16);
  uint8_t* d_v = Upload(std::vector<uint8_t>(n * (bytes + 16), 0));
  ASSERT_TRUE(comm_->AllGatherV(d_mine, bytes, d_v, counts, displs).ok());
  all = Download(d_v, n * (bytes + 16));
  for (int p = 0; p < n; ++p) {
    for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(all[displs[p] + i], Pattern(p, 0, i));
  }
}

TEST_P(GpuCommunicatorTest, AllReduceOnHostDoublesAndBarrier) {
  const int n = comm_->size(), r = comm_->rank();
  std::vector<double> sum = {1.0, static_cast<double>(r), 0.5 * r};
  ASSERT_TRUE(comm_->AllReduceSum(sum.data(), sum.size()).ok());
  EXPECT_EQ(sum[0], n);
  EXPECT_EQ(sum[1], n * (n - 1) / 2.0);
  std::vector<double> max = {static_cast<double>(r), -static_cast<double>(r)};
  ASSERT_TRUE(comm_->AllReduceMax(max.data(), max.size()).ok());
  EXPECT_EQ(max[0], n - 1);
  EXPECT_EQ(max[1], 0.0);
  EXPECT_TRUE(comm_->Barrier().ok());
}

TEST_P(GpuCommunicatorTest, SplitIntoSingletonsAndReversedGroup) {
  const int n = comm_->size(), r = comm_->rank();
  // Singletons: every rank alone; a sum over one rank leaves the values as they were.
  {
    auto split = comm_->Split(r, 0);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_NE(*split, nullptr);
    Communicator* alone = split->get();
    if (GetParam() == Transport::kNccl) {
      auto* nccl = dynamic_cast<NcclCommunicator*>(alone);
      ASSERT_NE(nccl, nullptr) << "a split of an NcclCommunicator moves device memory too";
      EXPECT_EQ(nccl->device(), dynamic_cast<NcclCommunicator&>(*comm_).device());
      EXPECT_NE(nccl->comm_stream(), dynamic_cast<NcclCommunicator&>(*comm_).comm_stream());
    } else {
      EXPECT_NE(dynamic_cast<HostStagedCommunicator*>(alone), nullptr)
          << "a split stages device memory too";
    }
    EXPECT_EQ(alone->size(), 1);
    EXPECT_EQ(alone->rank(), 0);
    const std::vector<double> mine = {r + 1.0, 10.0 * r};
    double* d = Upload(mine);
    ASSERT_TRUE(alone->AllReduceSum(d, mine.size()).ok());
    EXPECT_EQ(Download(d, mine.size()), mine);
  }
  // One group of all ranks, keys reversed: new rank = n - 1 - r.
  {
    auto split = comm_->Split(0, -r);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_NE(*split, nullptr);
    Communicator& group = **split;
    EXPECT_EQ(group.size(), n);
    EXPECT_EQ(group.rank(), n - 1 - r);
    double* d =
        Upload(std::vector<double>{1.0, static_cast<double>(group.rank()), static_cast<double>(r)});
    ASSERT_TRUE(group.AllReduceSum(d, 3).ok());
    const std::vector<double> sum = Download(d, 3);
    EXPECT_EQ(sum[0], n);
    EXPECT_EQ(sum[1], n * (n - 1) / 2.0);
    EXPECT_EQ(sum[2], n * (n - 1) / 2.0);
    // AllGather lands slot i = new rank i, holding world rank n - 1 - i.
    const std::vector<int> me = {r};
    int* d_me = Upload(me);
    int* d_all = Upload(std::vector<int>(n, -1));
    ASSERT_TRUE(group.AllGather(d_me, sizeof(int), d_all).ok());
    const std::vector<int> all = Download(d_all, n);
    for (int i = 0; i < n; ++i) EXPECT_EQ(all[i], n - 1 - i) << i;
  }
  // The parent still reduces over every rank.
  double* d = Upload(std::vector<double>{r + 1.0});
  ASSERT_TRUE(comm_->AllReduceSum(d, 1).ok());
  EXPECT_EQ(Download(d, 1)[0], n * (n + 1) / 2.0);
  EXPECT_TRUE(comm_->Barrier().ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, GpuCommunicatorTest,
                         ::testing::Values(Transport::kNccl, Transport::kHostStaged),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(info.param == Transport::kNccl ? "Nccl"
                                                                             : "HostStaged");
                         });

TEST(ChooseLocalDevice, FlagWinsThenLocalRank) {
  const char* saved = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  const std::string saved_value = saved ? saved : "";
  EXPECT_EQ(ChooseLocalDevice(3, 8), 3);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "5", 1);
  EXPECT_EQ(ChooseLocalDevice(-1, 4), 1);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  setenv("SLURM_LOCALID", "2", 1);
  EXPECT_EQ(ChooseLocalDevice(-1, 4), 2);
  unsetenv("SLURM_LOCALID");
  if (saved) setenv("OMPI_COMM_WORLD_LOCAL_RANK", saved_value.c_str(), 1);
}

}  // namespace
}  // namespace prefill
