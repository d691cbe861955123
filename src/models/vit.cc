#include "models/vit.h"

namespace mosaic::models {

VisionTransformerImpl::VisionTransformerImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kVit, "VisionTransformer needs a vit spec, got ",
              ToString(spec.kind));
  TORCH_CHECK(spec.patch_size > 0 && spec.image_size % spec.patch_size == 0, "patch_size ",
              spec.patch_size, " must divide image_size ", spec.image_size);
  const int64_t C = spec.width, channels = spec.channels > 0 ? spec.channels : 3;
  const int64_t side = spec.image_size / spec.patch_size;
  const int64_t tokens = side * side + (spec.pool == Pooling::kCls ? 1 : 0);
  patch_embed = register_module(
      "patch_embed",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(channels, C, spec.patch_size)
              .stride(spec.patch_size)
              .bias(spec.patch_bias)));
  if (spec.pool == Pooling::kCls) {
    class_token = register_parameter("class_token", torch::randn({1, 1, C}) * 0.02);
  }
  positions = register_parameter("positions", torch::randn({1, tokens, C}) * 0.01);
  const double eps = spec.norm_eps > 0 ? spec.norm_eps : 1e-5;
  ln_pre = register_module("ln_pre",
                           torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(eps)));
  blocks = register_module("blocks", TransformerStack(BlockOptions(C, spec.heads)
                                                          .mlp_dim(spec.mlp_dim)
                                                          .activation(spec.activation)
                                                          .norm_eps(eps),
                                                      spec.depth));
  ln_post = register_module("ln_post",
                            torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(eps)));
  if (spec.output_dim > 0) {
    proj = register_module(
        "proj", torch::nn::Linear(torch::nn::LinearOptions(C, spec.output_dim).bias(false)));
  }
  InitTransformerWeights(*this);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  TORCH_CHECK(
      images.dim() == 4 && images.size(2) == spec_.image_size && images.size(3) == spec_.image_size,
      spec_.name, ": images must be (B, C, ", spec_.image_size, ", ", spec_.image_size, "), got ",
      images.sizes());
  const int64_t B = images.size(0);
  torch::Tensor x = patch_embed(images);  // (B, C, H/p, W/p)
  x = x.flatten(2).transpose(1, 2);       // (B, N, C)
  if (spec_.pool == Pooling::kCls) {
    torch::Tensor cls = class_token.expand({B, 1, x.size(2)}).to(x.scalar_type());  // (B, 1, C)
    x = torch::cat({cls, x}, 1);                                                    // (B, 1 + N, C)
  }
  x = ln_pre(x + positions);  // (B, T, C)
  x = blocks(x);              // (B, T, C)
  switch (spec_.pool) {
    case Pooling::kCls:
      x = x.select(1, 0);  // (B, C)
      break;
    case Pooling::kMean:
      x = x.mean(1);  // (B, C)
      break;
    case Pooling::kNone:
      break;  // (B, N, C)
  }
  x = ln_post(x);
  if (proj) x = proj(x);  // (B, D) or (B, N, D)
  return x;
}

}  // namespace mosaic::models
