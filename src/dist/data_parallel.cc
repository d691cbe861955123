// Bucketed gradient all-reduce and the replica check (see data_parallel.h).
#include "dist/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#ifdef MOSAIC_DIST_HAVE_NCCL
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstring>
#include <sstream>

namespace mosaic::dist {
namespace {

class ReadyHook : public torch::autograd::PostAccumulateGradHook {
 public:
  ReadyHook(GradientSync* sync, int index) : sync_(sync), index_(index) {}
  void operator()(const torch::autograd::Variable& /*param*/) override {
    sync_->OnGradReady(index_);
  }

 private:
  GradientSync* sync_;
  int index_;
};

}  // namespace

#ifdef MOSAIC_DIST_HAVE_NCCL
struct GradientSync::CudaState {
  c10::cuda::CUDAStream stream;
};
#else
struct GradientSync::CudaState {};
#endif

GradientSync::GradientSync(Context& ctx, std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : ctx_(ctx) {
  for (auto& p : params)
    if (p.requires_grad()) params_.push_back(p);
  const int n = static_cast<int>(params_.size());
  bucket_of_.assign(static_cast<size_t>(n), -1);
  int64_t bytes = 0;
  for (int i = n - 1; i >= 0; --i) {  // Note [gradient buckets]: reverse registration order
    const int64_t b = params_[i].numel() * static_cast<int64_t>(params_[i].element_size());
    if (buckets_.empty() || (bytes > 0 && bytes + b > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(i);
    bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
    bytes += b;
  }
  ready_.assign(static_cast<size_t>(n), 0);
  pending_in_bucket_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b)
    pending_in_bucket_[b] = static_cast<int>(buckets_[b].size());
  flat_.resize(buckets_.size());
  work_.resize(buckets_.size());
#ifdef MOSAIC_DIST_HAVE_NCCL
  if (ctx_.device().is_cuda()) {
    cuda_.reset(new CudaState{
        c10::cuda::getStreamFromPool(/*isHighPriority=*/true, ctx_.device().index())});
  }
#endif
  for (int i = 0; i < n; ++i)
    torch::autograd::impl::set_post_acc_grad_hooks(params_[i],
                                                   std::make_unique<ReadyHook>(this, i));
}

GradientSync::~GradientSync() {
  for (auto& p : params_)
    torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientSync::Arm(bool last_micro_batch) {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = last_micro_batch;
  if (armed_) launched_in_backward_ = 0;
}

void GradientSync::OnGradReady(int param) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_ || ready_[param]) return;
  ready_[param] = 1;
  --pending_in_bucket_[bucket_of_[param]];
  const int before = next_launch_;
  LaunchReady();
  launched_in_backward_ += next_launch_ - before;
}

void GradientSync::LaunchReady() {
  while (next_launch_ < static_cast<int>(buckets_.size()) &&
         pending_in_bucket_[next_launch_] == 0) {
    Launch(next_launch_);
    ++next_launch_;
  }
}

void GradientSync::Launch(int bucket) {
  if (!error_.ok()) return;  // after a failure, launch nothing more (Finish reports it)
  try {
    std::vector<torch::Tensor> grads;
    for (int i : buckets_[bucket]) {
      torch::Tensor& p = params_[i];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad().reshape({-1}));
    }
    const std::string what = "all-reduce of gradient bucket " + std::to_string(bucket) + " of " +
                             std::to_string(buckets_.size());
    StatusOr<PendingCollective> work = Status::Ok();
#ifdef MOSAIC_DIST_HAVE_NCCL
    if (cuda_) {
      // The bucket's gradients are final on the compute stream; the comm stream waits for them.
      const auto device_index = ctx_.device().index();
      at::cuda::CUDAEvent ready;
      ready.record(c10::cuda::getCurrentCUDAStream(device_index));
      ready.block(cuda_->stream);
      c10::cuda::CUDAStreamGuard guard(cuda_->stream);
      flat_[bucket] = torch::cat(grads);
      work = ctx_.AllReduceSumAsync(flat_[bucket], what);
    } else
#endif
    {
      flat_[bucket] = torch::cat(grads);
      work = ctx_.AllReduceSumAsync(flat_[bucket], what);
    }
    if (!work.ok()) {
      error_ = work.status();
      return;
    }
    work_[bucket] = std::move(*work);
  } catch (const std::exception& e) {
    error_ =
        ctx_.Failure("launching the all-reduce of gradient bucket " + std::to_string(bucket), e);
  }
}

Status GradientSync::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = false;
  // Parameters backward did not reach (unused this step): zeros, the same on every rank.
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!ready_[i]) {
      ready_[i] = 1;
      --pending_in_bucket_[bucket_of_[i]];
    }
  }
  LaunchReady();
  Status status = error_;
  const double inv_world = 1.0 / ctx_.world_size();
  {
#ifdef MOSAIC_DIST_HAVE_NCCL
    std::optional<c10::cuda::CUDAStreamGuard> guard;
    if (cuda_) guard.emplace(cuda_->stream);
#endif
    torch::NoGradGuard no_grad;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      Status s = work_[b].Wait();
      if (status.ok() && !s.ok()) status = s;
      if (!status.ok() || !flat_[b].defined()) continue;
      flat_[b].mul_(inv_world);
      int64_t offset = 0;
      for (int i : buckets_[b]) {
        torch::Tensor g = params_[i].grad();
        const int64_t n = g.numel();
        g.copy_(flat_[b].narrow(0, offset, n).view_as(g));
        offset += n;
      }
    }
  }
#ifdef MOSAIC_DIST_HAVE_NCCL
  if (cuda_) {
    at::cuda::CUDAEvent done;
    done.record(cuda_->stream);
    done.block(c10::cuda::getCurrentCUDAStream(ctx_.device().index()));
  }
#endif
  // Ready for the next step.
  std::fill(ready_.begin(), ready_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    pending_in_bucket_[b] = static_cast<int>(buckets_[b].size());
    flat_[b] = torch::Tensor();
    work_[b] = PendingCollective();
  }
  next_launch_ = 0;
  error_ = Status::Ok();
  return status;
}

Status CheckReplicasInSync(Context& ctx,
                           const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                           int64_t step) {
  torch::NoGradGuard no_grad;
  if (named_params.empty()) return Status::Ok();
  std::vector<torch::Tensor> rows;
  rows.reserve(named_params.size());
  for (const auto& [name, p] : named_params) {
    torch::Tensor d = p.detach().to(torch::kFloat64);
    rows.push_back(torch::stack({d.sum(), d.square().sum()}));
  }
  torch::Tensor local = torch::stack(rows);  // (P, 2) float64
  MOSAIC_ASSIGN_OR_RETURN(torch::Tensor all,
                          ctx.AllGather(local, "all-gather of the parameter checksums"));
  all = all.cpu().contiguous();  // (W * P, 2)
  const int64_t P = static_cast<int64_t>(named_params.size());
  const double* a = all.data_ptr<double>();
  for (int r = 1; r < ctx.world_size(); ++r) {
    for (int64_t i = 0; i < P; ++i) {
      const double* mine = a + (r * P + i) * 2;
      const double* ref = a + i * 2;
      if (std::memcmp(mine, ref, 2 * sizeof(double)) != 0) {
        std::ostringstream m;
        m.precision(17);
        m << "parameters differ across ranks after step " << step << ": '"
          << named_params[static_cast<size_t>(i)].first << "' on rank " << r << " (sum " << mine[0]
          << ", sum of squares " << mine[1] << ") vs rank 0 (sum " << ref[0] << ", sum of squares "
          << ref[1] << "); the ranks no longer train one model";
        return Internal(m.str());
      }
    }
  }
  return Status::Ok();
}

Status CheckSameSettings(Context& ctx, const std::string& description) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : description) {
    h ^= c;
    h *= 1099511628211ull;
  }
  torch::Tensor mine = torch::tensor({static_cast<int64_t>(h)}, torch::kInt64).to(ctx.device());
  MOSAIC_ASSIGN_OR_RETURN(torch::Tensor all, ctx.AllGather(mine, "all-gather of the run settings"));
  all = all.cpu();
  for (int r = 1; r < ctx.world_size(); ++r) {
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) {
      return InvalidArgument("rank " + std::to_string(r) +
                             " was started with other settings than rank 0 (" + description +
                             " on rank " + std::to_string(ctx.rank()) +
                             "): give every rank the same flags");
    }
  }
  return Status::Ok();
}

}  // namespace mosaic::dist
