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

// Note [patch embedding as one GEMM]: a conv with kernel = stride = patch is a GEMM of the
// image's patches, each flattened in the weight's (channels, p, p) order, against the weight seen
// as (width, channels * p * p). cuDNN runs the conv on (B, C, H, W) images by first transposing
// them to NHWC and then an implicit-GEMM kernel built for general convs: on an H200 at
// clip-b16's batch 128 that took about 1.5 ms a step (fprop 0.70, layout transposes 0.66,
// wgrad 0.23) for 30 GFLOP, 0.05 ms of tensor-core time. With SetPatchGemm(true) the forward
// runs one permuting copy of the images and Linear (models/linear.h) instead, with the same
// parameters (`patch_embed` stays a Conv2d, so checkpoints and interop see no change). Off by
// default until a same-GPU A/B shows the step faster (docs/design.md); `mosaic train|bench|
// profile --patch-gemm` (MOSAIC_PATCH_GEMM=1) turn it on.
void SetPatchGemm(bool on);
bool PatchGemm();

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const ModuleSpec& spec);
  // images (B, C, H, W) float -> (B, D) pooled, or (B, N, D) with pool none.
  torch::Tensor forward(const torch::Tensor& images);

  // The patch embedding: images (B, C, H, W) -> (B, N, width), N = (H / p) * (W / p) in row-major
  // patch order; the conv, or one GEMM under SetPatchGemm(true) (same result, same parameters).
  torch::Tensor EmbedPatches(const torch::Tensor& images);

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
