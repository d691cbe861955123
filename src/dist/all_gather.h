// A differentiable all-gather for the global contrastive loss.
//
// Note [global contrastive loss]: CLIP's loss on a batch split over W ranks must see every
// rank's rows as negatives, or it is a different (easier) loss than the one-process run. Each
// rank gathers all ranks' features (forward) and computes the same loss L over the whole global
// batch. In backward every rank holds the same gradient G = dL/d(gathered); this rank's rows of
// sum_r G_r (an all-reduce) are W * dL/d(its features). After the data-parallel average (sum
// over ranks / W) the encoder gradients are exactly sum_r dL/d(features_r) = dL/dθ of the
// one-process loss, and the temperature's gradient (the same dL/dscale on every rank) is
// unchanged by the average. So W ranks and one process take the same step.
//
//   torch::Tensor all = AllGatherWithGrad(ctx, features);   // (B_r, D) -> (sum_r B_r, D)
#pragma once

#include <torch/torch.h>

#include <stdexcept>

#include "core/status.h"
#include "dist/process_group.h"

namespace mosaic::dist {

// Thrown by the autograd function (its failures surface through forward() or backward(), which
// return tensors): the trainer catches it around forward/backward and returns status().
class CollectiveError : public std::runtime_error {
 public:
  explicit CollectiveError(Status s) : std::runtime_error(s.message()), status_(std::move(s)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// x (B_r, ...) on every rank (B_r may differ) -> (sum_r B_r, ...) in rank order. The gradient
// flows back to x as described in Note [global contrastive loss]. Throws CollectiveError.
torch::Tensor AllGatherWithGrad(Context& ctx, const torch::Tensor& x);

}  // namespace mosaic::dist
