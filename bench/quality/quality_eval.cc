// quality_eval: how much of full attention the sparse path recovers, against the oracle and
// the peer estimators, on the synthetic workloads and on users' Q/K/V files. Runs under
// mpirun (1 or more ranks, zigzag layout); rank 0 writes one JSON report. The table and plots
// come from plot_quality.py; run_quality.sh runs the committed sweep.
//
//   mpirun -np 4 quality_eval --workloads needle,stripes,sinks,video,random --seq-len 8192
//       --strides 4,8,16 --taus 0.8,0.9,0.95,0.99 --json quality.json
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench/quality/quality_evaluation.h"
#include "parallel/mpi_communicator.h"
#include "runtime/safetensors.h"
#include "runtime/synthetic_workload.h"
#include "runtime/tensor.h"

namespace prefill::quality {
namespace {

struct Flags {
  std::vector<std::string> workloads = {"needle", "stripes", "sinks", "video", "heavy", "random"};
  std::vector<std::string> qkv_files;
  int64_t seq_len = 8192;
  int heads = 8, kv_heads = 2, head_dim = 64;
  uint64_t seed = 0;
  double concentration = 1.0;
  bool diffuse_head = false;
  std::string layout = "zigzag";
  std::vector<std::string> oracle_curve;  // parsed as floats
  SweepConfig sweep;
  std::string json_path;
};

absl::StatusOr<WorkloadShard> SyntheticShard(const Flags& f, const std::string& name,
                                             const CpLayout& layout, int rank) {
  absl::StatusOr<WorkloadKind> kind = ParseWorkloadKind(name);
  if (!kind.ok()) return kind.status();
  WorkloadSpec spec{*kind,      f.seq_len, f.heads,         f.kv_heads,
                    f.head_dim, f.seed,    f.concentration, f.diffuse_head};
  const std::vector<int32_t> positions = layout.Positions(rank);
  QkvRows rows = GenerateQkvRows(spec, positions);
  WorkloadShard shard;
  shard.name = name;
  shard.q = std::move(rows.q);
  shard.k = std::move(rows.k);
  shard.v = std::move(rows.v);
  shard.heads = f.heads;
  shard.kv_heads = f.kv_heads;
  shard.head_dim = f.head_dim;
  if (*kind != WorkloadKind::kRandom) {
    for (int h = 0; h < f.heads; ++h) shard.head_roles.push_back(HeadRoleName(RoleOfHead(spec, h)));
  }
  if (*kind == WorkloadKind::kNeedle) {
    const NeedlePlacement n = PlaceNeedle(f.seq_len, f.sweep.block);
    shard.needle = WorkloadShard::Needle{n.needle_position, n.needle_position + kNeedleTokens - 1,
                                         static_cast<int32_t>(n.question_begin / f.sweep.block)};
  }
  return shard;
}

// q [L, H, D], k and v [L, Hkv, D] from a safetensors file (f32, bf16 or f16), this rank's rows.
absl::StatusOr<WorkloadShard> FileShard(const std::string& path, const CpLayout& layout, int rank) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  WorkloadShard shard;
  shard.name = path;
  for (auto [name, dst] :
       {std::pair{"q", &shard.q}, std::pair{"k", &shard.k}, std::pair{"v", &shard.v}}) {
    for (const Chunk& chunk : layout.Chunks(rank)) {
      absl::StatusOr<Tensor> rows =
          (*file)->ReadRows(name, chunk.start, chunk.start + chunk.length);
      if (!rows.ok()) return rows.status();
      if (rows->shape.size() != 3) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is ",
                                                       rows->ShapeString(),
                                                       ", expected [L, heads, head_dim]"));
      }
      if (std::string(name) == "q") {
        shard.heads = static_cast<int>(rows->shape[1]);
        shard.head_dim = static_cast<int>(rows->shape[2]);
      } else {
        shard.kv_heads = static_cast<int>(rows->shape[1]);
      }
      const std::vector<float> values = ToF32(*rows);
      dst->insert(dst->end(), values.begin(), values.end());
    }
  }
  return shard;
}

// L of a file, so that the layout can be built before reading rows.
absl::StatusOr<int64_t> FileSeqLen(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<const SafetensorsEntry*> q = (*file)->Find("q");
  if (!q.ok()) return q.status();
  if ((*q)->shape.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor 'q' has no rows"));
  return (*q)->shape[0];
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

int Run(const Flags& f, int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> comm = MpiCommunicator::Create(MPI_COMM_WORLD);
  if (!comm.ok()) {
    std::fprintf(stderr, "quality_eval: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  const int rank = (*comm)->rank();
  absl::StatusOr<LayoutKind> layout_kind = ParseLayoutKind(f.layout);
  if (!layout_kind.ok()) {
    if (rank == 0)
      std::fprintf(stderr, "quality_eval: %s\n",
                   std::string(layout_kind.status().message()).c_str());
    return 2;
  }
  SweepConfig sweep = f.sweep;
  sweep.verbose = true;
  for (const std::string& t : f.oracle_curve) sweep.oracle_curve_taus.push_back(std::stof(t));

  std::vector<std::pair<std::string, bool>> inputs;  // (name, is_file)
  for (const std::string& w : f.workloads) inputs.emplace_back(w, false);
  for (const std::string& path : f.qkv_files) inputs.emplace_back(path, true);

  nlohmann::json out;
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out["config"] = {{"command", command},
                   {"date", date},
                   {"cpu", CpuModel()},
                   {"ranks", (*comm)->size()},
                   {"layout", f.layout},
                   {"seq_len", f.seq_len},
                   {"heads", f.heads},
                   {"kv_heads", f.kv_heads},
                   {"head_dim", f.head_dim},
                   {"seed", f.seed},
                   {"concentration", f.concentration},
                   {"diffuse_head", f.diffuse_head},
                   {"block", sweep.block},
                   {"strides", sweep.strides},
                   {"taus", sweep.taus},
                   {"threads", sweep.threads},
                   {"causal", sweep.causal},
                   {"keep_sink", sweep.keep_sink},
                   {"keep_recent", sweep.keep_recent}};
  out["workloads"] = nlohmann::json::array();
  for (const auto& [name, is_file] : inputs) {
    const auto start = std::chrono::steady_clock::now();
    int64_t seq_len = f.seq_len;
    absl::Status s;
    if (is_file) {
      absl::StatusOr<int64_t> len = FileSeqLen(name);
      s = len.status();
      if (len.ok()) seq_len = *len;
    }
    absl::StatusOr<CpLayout> layout = absl::InvalidArgumentError("no layout");
    if (s.ok()) {
      layout = CpLayout::Create(*layout_kind, seq_len, (*comm)->size(), sweep.block);
      s = layout.status();
    }
    absl::StatusOr<WorkloadShard> shard = absl::InvalidArgumentError("no shard");
    if (s.ok()) {
      shard = is_file ? FileShard(name, *layout, rank) : SyntheticShard(f, name, *layout, rank);
      s = shard.status();
    }
    if (s = AgreeOnStatus(**comm, s); !s.ok()) {
      // File errors name the file already.
      if (rank == 0) {
        std::fprintf(stderr, "quality_eval: %s%s\n", is_file ? "" : (name + ": ").c_str(),
                     std::string(s.message()).c_str());
      }
      return 2;
    }
    if (rank == 0) {
      std::printf("%s: L=%lld H=%d Hkv=%d D=%d on %d ranks\n", name.c_str(),
                  static_cast<long long>(seq_len), shard->heads, shard->kv_heads, shard->head_dim,
                  (*comm)->size());
      std::fflush(stdout);
    }
    absl::StatusOr<WorkloadReport> report = EvaluateWorkload(**comm, *layout, *shard, sweep);
    if (!report.ok()) {
      std::fprintf(stderr, "quality_eval: rank %d: %s: %s\n", rank, name.c_str(),
                   std::string(report.status().message()).c_str());
      (*comm)->Abort(1, "evaluation failed");
    }
    nlohmann::json j = report->ToJson();
    j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rank == 0)
      std::printf("%s: done in %.1f s (reference %.1f s)\n", name.c_str(),
                  j["seconds"].get<double>(), report->reference_seconds);
    out["workloads"].push_back(j);
  }
  if (rank == 0 && !f.json_path.empty()) {
    std::ofstream file(f.json_path);
    file << out.dump(1) << "\n";
    if (!file) {
      std::fprintf(stderr, "quality_eval: cannot write %s\n", f.json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace prefill::quality

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  using prefill::quality::Flags;
  Flags f;
  CLI::App app{
      "quality_eval: attention recovered by sparse masks vs the oracle and peer estimators"};
  app.add_option("--workloads", f.workloads,
                 "Synthetic workloads (random, needle, stripes, sinks, video, heavy); "
                 "'--workloads none' for files only")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--qkv", f.qkv_files, "Safetensors file(s) with q [L,H,D], k and v [L,Hkv,D]")
      ->delimiter(',');
  app.add_option("--seq-len", f.seq_len, "Tokens of the synthetic workloads")
      ->capture_default_str();
  app.add_option("--heads", f.heads)->capture_default_str();
  app.add_option("--kv-heads", f.kv_heads)->capture_default_str();
  app.add_option("--head-dim", f.head_dim)->capture_default_str();
  app.add_option("--seed", f.seed)->capture_default_str();
  app.add_option(
         "--concentration", f.concentration,
         "Multiplies every structured logit of the synthetic workloads (1: calibrated default)")
      ->capture_default_str();
  app.add_flag("--diffuse-head", f.diffuse_head,
               "Query heads h % 4 == 3 attend broadly (default: local heads)");
  app.add_option("--layout", f.layout, "contiguous or zigzag")->capture_default_str();
  app.add_option("--block", f.sweep.block)->capture_default_str();
  app.add_option("--strides", f.sweep.strides)->delimiter(',')->capture_default_str();
  app.add_option("--taus", f.sweep.taus)->delimiter(',')->capture_default_str();
  app.add_option("--oracle-curve", f.oracle_curve,
                 "Extra taus for the oracle's frontier (density, recall)")
      ->delimiter(',');
  app.add_option("--threads", f.sweep.threads, "Threads per rank")->capture_default_str();
  app.add_option("--json", f.json_path, "Write the report here (rank 0)");
  int code = 0;
  try {
    app.parse(argc, argv);
    if (f.workloads.size() == 1 && f.workloads[0] == "none") f.workloads.clear();
    code = prefill::quality::Run(f, argc, argv);
  } catch (const CLI::ParseError& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    code = rank == 0 ? app.exit(e) : (e.get_exit_code() ? 2 : 0);
    if (e.get_exit_code()) code = 2;
  }
  MPI_Finalize();
  return code;
}
