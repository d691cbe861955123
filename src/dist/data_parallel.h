// Data parallelism: gradients all-reduced in buckets while backward is still running, then
// averaged; and a check that every rank holds the same parameters.
//
// Note [gradient buckets]: parameters are grouped, in reverse registration order (roughly the
// order backward produces their gradients), into buckets of about bucket_bytes. A post-
// accumulate-grad hook on each parameter marks it ready; when every parameter of a bucket is
// ready the bucket's gradients are flattened into one buffer and its all-reduce launched
// asynchronously, so communication overlaps the rest of backward. Buckets are launched strictly
// in index order (a ready bucket waits for the ones before it), because c10d matches
// collectives across ranks by issue order. Only the last micro-batch's backward launches
// (Arm(true)); earlier ones just accumulate. Finish() launches what backward did not reach
// (parameters without a gradient count as zeros on every rank), waits for everything, divides
// by the world size and writes the averages back into .grad. On CUDA the flattening, the
// collective and the copy back run on a stream of their own; the compute stream waits for it
// in Finish().
//
//   GradientSync sync(ctx, model->parameters(), {});
//   for (int mb = 0; mb < M; ++mb) { sync.Arm(mb == M - 1); loss.backward(); }
//   MOSAIC_RETURN_IF_ERROR(sync.Finish());   // grads are now the mean over ranks
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "dist/process_group.h"

namespace mosaic::dist {

struct DataParallelOptions {
  int64_t bucket_bytes = 25LL << 20;  // gradient bytes per all-reduce (PyTorch DDP's default)
  int64_t check_every = 100;          // steps between parameter checks; 0: only at the ends
};

class GradientSync {
 public:
  // Hooks every parameter that requires a gradient. The Context must outlive this.
  GradientSync(Context& ctx, std::vector<torch::Tensor> params, int64_t bucket_bytes);
  ~GradientSync();  // removes the hooks
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Before each backward: whether its gradients are final for this step (last micro-batch).
  void Arm(bool last_micro_batch);
  // After the last backward: the mean gradient over ranks in every parameter's .grad.
  Status Finish();

  // Parameter indices (into the constructor's list) of each bucket, in launch order.
  const std::vector<std::vector<int>>& buckets() const { return buckets_; }
  // Buckets whose all-reduce was launched from a hook during the last backward (not by
  // Finish): > 0 means communication overlapped backward.
  int launched_during_backward() const { return launched_in_backward_; }

  void OnGradReady(int param);  // called by the hooks

 private:
  void LaunchReady();  // launches buckets next_launch_.. whose parameters are all ready
  void Launch(int bucket);

  Context& ctx_;
  std::vector<torch::Tensor> params_;
  std::vector<std::vector<int>> buckets_;
  std::vector<int> bucket_of_;

  std::mutex mu_;  // hooks may run on autograd's device threads
  bool armed_ = false;
  std::vector<char> ready_;
  std::vector<int> pending_in_bucket_;
  int next_launch_ = 0;
  int launched_in_backward_ = 0;
  std::vector<torch::Tensor> flat_;  // per bucket, while in flight
  std::vector<PendingCollective> work_;
  Status error_;
  struct CudaState;  // the communication stream (CUDA only)
  std::unique_ptr<CudaState> cuda_;
};

// Checks that every rank holds bit-identical parameters: per parameter a float64 sum and sum of
// squares, all-gathered and compared exactly with rank 0's. Internal naming the first
// parameter that differs and the step. All ranks must call it at the same step.
Status CheckReplicasInSync(Context& ctx,
                           const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                           int64_t step);

// Checks that every rank was started with the same settings (model, batch, steps, seed...):
// all-gathers a hash of `description`. InvalidArgument when they differ.
Status CheckSameSettings(Context& ctx, const std::string& description);

}  // namespace mosaic::dist
