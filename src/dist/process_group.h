// Context: this process's membership in a data-parallel run over PyTorch's c10d, Gloo on the
// CPU and NCCL on CUDA, rendezvoused through a TCPStore at MASTER_ADDR:MASTER_PORT (rank 0
// hosts it). Every collective is blocking or returns a PendingCollective, and every failure
// (a peer that died, a timeout) comes back as a Status naming the collective and the rank: c10d's
// exceptions stop here.
//
//   MOSAIC_ASSIGN_OR_RETURN(LaunchEnv env, ReadLaunchEnv());
//   ContextOptions o;  o.timeout_s = 60;
//   MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<Context> ctx, Context::Connect(env, torch::kCPU, o));
//   torch::Tensor t = torch::ones({4});
//   MOSAIC_RETURN_IF_ERROR(ctx->AllReduceSum(t, "example"));   // t = world_size everywhere
//
// Note [bounded waits]: the timeout bounds the rendezvous (every rank must join within it) and
// each collective (Gloo's per-operation timeout, NCCL's watchdog). A rank that is killed is
// noticed sooner: its TCP connections close and the peers' next collective fails at once with
// "Connection closed by peer"; the timeout covers a rank that hangs without exiting.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "dist/launch_env.h"

namespace mosaic::dist {

struct ContextOptions {
  double timeout_s = 300;  // rendezvous and each collective (Note [bounded waits])
};

// An asynchronous collective in flight (an all-reduce launched from a gradient hook).
class PendingCollective {
 public:
  struct Impl;  // the c10d::Work
  PendingCollective();
  explicit PendingCollective(std::unique_ptr<Impl> impl);
  ~PendingCollective();
  PendingCollective(PendingCollective&&) noexcept;
  PendingCollective& operator=(PendingCollective&&) noexcept;
  // Blocks the host (Gloo) or makes the current CUDA stream wait (NCCL) until it is done.
  Status Wait();

 private:
  std::unique_ptr<Impl> impl_;
};

class Context {
 public:
  // Joins the run: TCPStore rendezvous, then a Gloo (CPU) or NCCL (CUDA) process group.
  // On CUDA, sets NCCL_NVLS_ENABLE=0 unless the environment sets it (NVLink multicast can take
  // shared GPUs out of service). Unavailable when the peers do not join within the timeout.
  static StatusOr<std::unique_ptr<Context>> Connect(const LaunchEnv& env, torch::Device device,
                                                    const ContextOptions& options);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  torch::Device device() const { return device_; }
  std::string backend_name() const;  // "gloo" or "nccl"

  // In place: t = sum over ranks of t. `what` names the collective in errors.
  Status AllReduceSum(torch::Tensor& t, const std::string& what);
  // Launches t = sum over ranks of t; t must stay alive until Wait().
  StatusOr<PendingCollective> AllReduceSumAsync(torch::Tensor& t, const std::string& what);
  // Rank r's t (same shape on every rank) -> (world_size * t.size(0), ...), rank order.
  StatusOr<torch::Tensor> AllGather(const torch::Tensor& t, const std::string& what);
  Status Barrier(const std::string& what);

  // The error for a c10d exception raised while doing `what` (also used by the autograd
  // functions, whose exceptions surface through backward()).
  Status Failure(const std::string& what, const std::exception& e) const;

 private:
  struct Impl;  // the store and the c10d backend
  Context(LaunchEnv env, torch::Device device, std::unique_ptr<Impl> impl);

  LaunchEnv env_;
  torch::Device device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mosaic::dist
