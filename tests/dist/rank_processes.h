// Helpers for the multi-process dist tests: start `mosaic train` as rank r of a run on loopback
// (torchrun's variables set, output to a file), wait for a process with a deadline, and read a
// checkpoint's parameters back.
//
//   pid_t p0 = StartRank(0, 2, port, args, dir / "rank0.log");
//   int code = WaitForExit(p0, /*deadline_s=*/60);   // kTimedOut if it had to be killed
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "core/model_spec.h"
#include "models/multimodal_model.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace mosaic::dist::testing {

constexpr int kTimedOut = -2;  // WaitForExit: still running at the deadline (then killed)
constexpr int kSignalled = -1;

// Forks `mosaic <args>` with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set;
// stdout and stderr go to log_path.
inline pid_t StartRank(int rank, int world, int port, const std::string& args,
                       const std::string& log_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("RANK", std::to_string(rank).c_str(), 1);
    ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    const std::string cmd =
        "exec " + std::string(MOSAIC_BIN) + " " + args + " >" + log_path + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// The exit code, kSignalled, or kTimedOut (the process is then killed and reaped).
inline int WaitForExit(pid_t pid, double deadline_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000));
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : kSignalled;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return kTimedOut;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct CheckpointContents {
  std::map<std::string, torch::Tensor> params;
  std::map<std::string, torch::Tensor> exp_avg;  // AdamW's first moment: linear in the gradients
  train::TrainState state;
};

// Loads `path` (a run with `seed`) into a fresh model of `model_path` (with an AdamW to
// receive the moments).
inline StatusOr<CheckpointContents> ReadCheckpoint(const std::string& model_path,
                                                   const std::string& path, uint64_t seed) {
  MOSAIC_ASSIGN_OR_RETURN(ModelSpec spec, LoadModelSpec(model_path));
  MOSAIC_ASSIGN_OR_RETURN(models::MultimodalModel model,
                          models::BuildMultimodalModel(spec, torch::kCPU));
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<torch::optim::AdamW> opt,
                          train::MakeAdamW(model->named_parameters(), {}));
  CheckpointContents c;
  c.state.model_name = spec.name;
  c.state.seed = seed;  // LoadCheckpoint refuses a checkpoint of another seed
  MOSAIC_RETURN_IF_ERROR(train::LoadCheckpoint(path, *model, *opt, &c.state));
  for (const auto& item : model->named_parameters()) {
    c.params[item.key()] = item.value().detach().clone();
    auto it = opt->state().find(item.value().unsafeGetTensorImpl());
    if (it != opt->state().end()) {
      c.exp_avg[item.key()] =
          static_cast<torch::optim::AdamWParamState&>(*it->second).exp_avg().clone();
    }
  }
  return c;
}

}  // namespace mosaic::dist::testing
