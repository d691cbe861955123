// Loss heads: the contrastive loss with a learnable temperature (CLIP; ImageBind-like with more
// than two inputs) and the next-token loss on the text part of an image/audio + text sequence.
//
//   ContrastiveLoss clip(spec);                  // spec.loss == LossKind::kContrastive
//   torch::Tensor loss = clip({image_features, text_features});   // each (B, D) -> ()
//   torch::Tensor lm = NextTokenLoss(logits, tokens, mask);        // (B, T, V), (B, T) -> ()
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

#include "core/model_spec.h"

namespace mosaic::models {

// Symmetric InfoNCE between matching rows of a and b (each (B, D), L2-normalized here):
// logits = scale * a_n b_n^T, loss = (CE(logits, arange) + CE(logits^T, arange)) / 2.
torch::Tensor ClipLoss(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& scale);

class ContrastiveLossImpl : public torch::nn::Module {
 public:
  ContrastiveLossImpl();
  explicit ContrastiveLossImpl(const ModuleSpec& spec) : ContrastiveLossImpl() {}
  // features: k >= 2 tensors (B, D) of one D. k = 2: ClipLoss(f0, f1). k > 2 (ImageBind-like,
  // the first input is the anchor): sum over i >= 1 of ClipLoss(f0, fi). Returns a scalar fp32.
  torch::Tensor forward(const std::vector<torch::Tensor>& features);
  // exp(logit_scale) clamped at 100 (CLIP).
  torch::Tensor scale() const;

  // Data-parallel training: in training mode each input is first passed through `gather`
  // ((B_r, D) -> (global B, D), the rows of every rank, differentiably: src/dist's
  // AllGatherWithGrad), so the loss is the global batch's. Empty (the default): local rows only.
  // Evaluation (eval mode) never gathers.
  using FeatureGather = std::function<torch::Tensor(const torch::Tensor&)>;
  void set_gather(FeatureGather gather) { gather_ = std::move(gather); }

  torch::Tensor logit_scale;  // () fp32, initialized to log(1 / 0.07)

 private:
  FeatureGather gather_;
};
TORCH_MODULE(ContrastiveLoss);

// Mean cross-entropy of predicting text token t + 1 from logits[:, t] (CausalLm's output at the
// text positions), over t = 0..T-2 where token t + 1 is real (mask true).
// logits (B, T, V) any float dtype (computed in fp32), tokens (B, T) int64,
// mask (B, T) bool or undefined (all real) -> () fp32.
torch::Tensor NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& tokens,
                            const torch::Tensor& mask = {});

}  // namespace mosaic::models
