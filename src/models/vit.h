// Vision transformer image encoder (ViT / CLIP visual tower) built from a `vit` ModuleSpec:
// patch embedding (a conv with kernel = stride = patch), an optional class token, learned
// positions, a pre-LN, pre-norm blocks, a final LN, pooling and an optional output projection.
//
//   VisionTransformer vit(spec);                 // spec.kind == ModuleKind::kVit
//   torch::Tensor f = vit(images);               // (B, 3, H, W) -> (B, output_dim or width)
//
// Pooling: kCls -> the class token (B, D); kMean -> mean over patches (B, D), no class token;
// kNone -> every patch token (B, N, D), no class token (what a projector/LLM consumes).
#pragma once

#include <torch/torch.h>

#include "core/model_spec.h"
#include "models/blocks.h"

namespace mosaic::models {

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const ModuleSpec& spec);
  // images (B, C, H, W) float -> (B, D) pooled, or (B, N, D) with pool none.
  torch::Tensor forward(const torch::Tensor& images);

  const ModuleSpec& spec() const { return spec_; }
  torch::nn::Conv2d patch_embed{nullptr};  // C -> width, kernel = stride = patch_size
  torch::Tensor class_token;               // (1, 1, width), pool cls only
  torch::Tensor positions;                 // (1, tokens, width)
  torch::nn::LayerNorm ln_pre{nullptr}, ln_post{nullptr};
  TransformerStack blocks{nullptr};
  torch::nn::Linear proj{nullptr};  // width -> output_dim, no bias; only when output_dim > 0

 private:
  ModuleSpec spec_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace mosaic::models
