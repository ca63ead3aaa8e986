// RankEnvironment from the environments the launchers really set (recorded under Slurm
// 22.05 + OpenMPI 4.1.4 on Debian 12; see tests/slurm/ for the live cluster test).
#include "launch/rank_environment.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace prefill {
namespace {

using ::testing::HasSubstr;

// srun --mpi=pmix -N2 --ntasks-per-node=4, task 6 (node 1, local 2).
std::map<std::string, std::string> SrunTask6() {
  return {{"SLURM_JOB_ID", "4242"},
          {"SLURM_STEP_ID", "0"},
          {"SLURM_PROCID", "6"},
          {"SLURM_LOCALID", "2"},
          {"SLURM_NTASKS", "8"},
          {"SLURM_NODEID", "1"},
          {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_MPI_TYPE", "pmix"},
          {"SLURM_CPUS_PER_TASK", "16"}};
}

TEST(RankEnvironment, SrunWithPmix) {
  absl::StatusOr<RankEnvironment> where =
      DiscoverRankEnvironment(MapEnvironment(SrunTask6()), 6, 8);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->launcher, "slurm");
  EXPECT_EQ(where->rank, 6);
  EXPECT_EQ(where->local_rank, 2);
  EXPECT_EQ(where->world_size, 8);
  EXPECT_EQ(where->local_size, 4);
  EXPECT_EQ(where->job_id, "4242");
  EXPECT_EQ(where->cpus_per_task, 16);
}

TEST(RankEnvironment, UnevenNodesTakeThisNodesCount) {
  // 11 tasks on 3 nodes: 4, 4, 3; task 9 is local rank 1 of the third node.
  auto env = SrunTask6();
  env["SLURM_PROCID"] = "9";
  env["SLURM_LOCALID"] = "1";
  env["SLURM_NTASKS"] = "11";
  env["SLURM_NODEID"] = "2";
  env["SLURM_STEP_TASKS_PER_NODE"] = "4(x2),3";
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 9, 11);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->local_size, 3);
  EXPECT_EQ(where->local_rank, 1);
}

TEST(RankEnvironment, SlurmWithoutPmiRefusesWithTheFix) {
  // srun --mpi=none: every task is "rank 0 of 1".
  auto env = SrunTask6();
  env["SLURM_MPI_TYPE"] = "none";
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 0, 1);
  ASSERT_FALSE(where.ok());
  EXPECT_EQ(where.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      where.status().message(),
      HasSubstr(
          "Slurm says 8 tasks but MPI sees a world of 1: launch with `srun --mpi=pmix` (Debian's "
          "OpenMPI has no PMI2 support) or mpirun inside the allocation"));
  EXPECT_THAT(where.status().message(), HasSubstr("--mpi=none"));
}

TEST(RankEnvironment, StraightFromTheBatchScriptRefuses) {
  // sbatch -n 4 whose script runs prefill itself: the batch step's variables, no step id.
  std::map<std::string, std::string> env = {{"SLURM_JOB_ID", "7"},  {"SLURM_PROCID", "0"},
                                            {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS", "4"},
                                            {"SLURM_NODEID", "0"},  {"SLURM_TASKS_PER_NODE", "4"}};
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 0, 1);
  ASSERT_FALSE(where.ok());
  EXPECT_THAT(where.status().message(), HasSubstr("Slurm says 4 tasks but MPI sees a world of 1"));
  EXPECT_THAT(where.status().message(), HasSubstr("not by srun"));
}

TEST(RankEnvironment, OneTaskJobRunsAlone) {
  std::map<std::string, std::string> env = {{"SLURM_JOB_ID", "7"},
                                            {"SLURM_PROCID", "0"},
                                            {"SLURM_LOCALID", "0"},
                                            {"SLURM_NTASKS", "1"},
                                            {"SLURM_TASKS_PER_NODE", "1"}};
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 0, 1);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->launcher, "slurm");
  EXPECT_EQ(where->world_size, 1);
  EXPECT_EQ(where->local_size, 1);
}

TEST(RankEnvironment, SbatchWithoutNtasksTrustsMpi) {
  // sbatch without -n sets no SLURM_NTASKS.
  std::map<std::string, std::string> env = {
      {"SLURM_JOB_ID", "7"}, {"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}};
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 0, 1);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->world_size, 1);
}

TEST(RankEnvironment, MpirunInsideAnAllocationWinsOverTheBatchStep) {
  // mpirun inside sbatch -n 8: the ranks inherit the batch step's SLURM_PROCID=0 and
  // SLURM_LOCALID=0; OpenMPI's own variables are the truth.
  std::map<std::string, std::string> env = {{"SLURM_JOB_ID", "99"},
                                            {"SLURM_PROCID", "0"},
                                            {"SLURM_LOCALID", "0"},
                                            {"SLURM_NTASKS", "8"},
                                            {"OMPI_COMM_WORLD_RANK", "5"},
                                            {"OMPI_COMM_WORLD_SIZE", "8"},
                                            {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                            {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 5, 8);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->launcher, "openmpi");
  EXPECT_EQ(where->rank, 5);
  EXPECT_EQ(where->local_rank, 1);
  EXPECT_EQ(where->local_size, 4);
  EXPECT_EQ(where->job_id, "99");
}

TEST(RankEnvironment, MpirunOutsideSlurm) {
  std::map<std::string, std::string> env = {{"OMPI_COMM_WORLD_RANK", "2"},
                                            {"OMPI_COMM_WORLD_SIZE", "4"},
                                            {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                                            {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 2, 4);
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->launcher, "openmpi");
  EXPECT_EQ(where->job_id, "");
  EXPECT_EQ(where->cpus_per_task, 0);
}

TEST(RankEnvironment, MpirunOfOneInsideAnAllocationIsFine) {
  // mpirun -np 1 inside sbatch -n 4 is what the user asked for, not a broken launch.
  std::map<std::string, std::string> env = {{"SLURM_PROCID", "0"},
                                            {"SLURM_NTASKS", "4"},
                                            {"OMPI_COMM_WORLD_RANK", "0"},
                                            {"OMPI_COMM_WORLD_SIZE", "1"},
                                            {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                            {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}};
  EXPECT_TRUE(DiscoverRankEnvironment(MapEnvironment(env), 0, 1).ok());
}

TEST(RankEnvironment, NoLauncherIsOneProcessOrMpich) {
  absl::StatusOr<RankEnvironment> alone = DiscoverRankEnvironment(MapEnvironment({}), 0, 1);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->launcher, "none");
  EXPECT_EQ(alone->world_size, 1);
  EXPECT_EQ(alone->local_size, 1);

  absl::StatusOr<RankEnvironment> hydra = DiscoverRankEnvironment(
      MapEnvironment({{"MPI_LOCALRANKID", "1"}, {"MPI_LOCALNRANKS", "2"}}), 3, 4);
  ASSERT_TRUE(hydra.ok()) << hydra.status();
  EXPECT_EQ(hydra->launcher, "none");
  EXPECT_EQ(hydra->rank, 3);
  EXPECT_EQ(hydra->local_rank, 1);
  EXPECT_EQ(hydra->local_size, 2);
}

TEST(RankEnvironment, DamagedVariablesAreNamed) {
  auto env = SrunTask6();
  env["SLURM_LOCALID"] = "two";
  absl::StatusOr<RankEnvironment> where = DiscoverRankEnvironment(MapEnvironment(env), 6, 8);
  ASSERT_FALSE(where.ok());
  EXPECT_EQ(where.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(where.status().message(), HasSubstr("SLURM_LOCALID='two'"));

  env = SrunTask6();
  env["SLURM_STEP_TASKS_PER_NODE"] = "4(x2";
  where = DiscoverRankEnvironment(MapEnvironment(env), 6, 8);
  ASSERT_FALSE(where.ok());
  EXPECT_THAT(where.status().message(), HasSubstr("SLURM_STEP_TASKS_PER_NODE='4(x2'"));
}

TEST(RankEnvironment, InconsistentFiguresRefuse) {
  auto env = SrunTask6();
  env["SLURM_LOCALID"] = "4";  // 4 tasks on the node: local ranks 0..3
  EXPECT_EQ(DiscoverRankEnvironment(MapEnvironment(env), 6, 8).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      DiscoverRankEnvironment(MapEnvironment(SrunTask6()), 5, 8).status().code(),  // MPI: rank 5
      absl::StatusCode::kFailedPrecondition);
  env = SrunTask6();
  env["SLURM_NODEID"] = "2";  // only two nodes listed
  EXPECT_THAT(DiscoverRankEnvironment(MapEnvironment(env), 6, 8).status().message(),
              HasSubstr("lists 2 nodes"));
}

TEST(RankEnvironment, ProcessEnvironmentReadsGetenv) {
  setenv("PREFILL_RANK_ENVIRONMENT_TEST", "x", 1);
  EXPECT_EQ(ProcessEnvironment()("PREFILL_RANK_ENVIRONMENT_TEST"), "x");
  unsetenv("PREFILL_RANK_ENVIRONMENT_TEST");
  EXPECT_EQ(ProcessEnvironment()("PREFILL_RANK_ENVIRONMENT_TEST"), std::nullopt);
}

TEST(GpuForLocalRank, OneGpuPerLocalRank) {
  RankEnvironment where;
  where.local_rank = 3;
  where.local_size = 8;
  EXPECT_EQ(GpuForLocalRank(where, 8).value(), 3);
  // --gpus-per-task=1: each rank sees only its own GPU.
  EXPECT_EQ(GpuForLocalRank(where, 1).value(), 0);
  // 8 ranks, 4 GPUs: two ranks would share a GPU (NCCL: "Duplicate GPU detected").
  absl::StatusOr<int> shared = GpuForLocalRank(where, 4);
  ASSERT_FALSE(shared.ok());
  EXPECT_THAT(shared.status().message(), HasSubstr("--ntasks-per-node = --gpus-per-node"));
  EXPECT_EQ(GpuForLocalRank(where, 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace prefill
