#include "models/vit.h"

#include <atomic>

#include "models/linear.h"

namespace mosaic::models {
namespace {
std::atomic<bool> patch_gemm{false};
}  // namespace

void SetPatchGemm(bool on) { patch_gemm.store(on); }
bool PatchGemm() { return patch_gemm.load(); }

VisionTransformerImpl::VisionTransformerImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kVit, "VisionTransformer needs a vit spec, got ",
              ToString(spec.kind));
  TORCH_CHECK(spec.patch_size > 0 && spec.image_size % spec.patch_size == 0, "patch_size ",
              spec.patch_size, " must divide image_size ", spec.image_size);
  const int64_t C = spec.width, channels = spec.channels > 0 ? spec.channels : 3;
  const int64_t side = spec.image_size / spec.patch_size;
  const bool has_cls = spec.pool == Pooling::kCls || spec.drop_cls;
  const int64_t tokens = side * side + (has_cls ? 1 : 0);
  TORCH_CHECK(spec.feature_layer >= -spec.depth && spec.feature_layer <= spec.depth, spec.name,
              ": feature_layer ", spec.feature_layer, " is not in [-depth, depth]");
  TORCH_CHECK(!spec.drop_cls || spec.pool == Pooling::kNone, spec.name,
              ": drop_cls needs pool none");
  patch_embed = register_module(
      "patch_embed",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(channels, C, spec.patch_size)
              .stride(spec.patch_size)
              .bias(spec.patch_bias)));
  if (has_cls) {
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
  torch::Tensor x = EmbedPatches(images);  // (B, N, C)
  if (class_token.defined()) {
    torch::Tensor cls = class_token.expand({B, 1, x.size(2)}).to(x.scalar_type());  // (B, 1, C)
    x = torch::cat({cls, x}, 1);                                                    // (B, 1 + N, C)
  }
  x = ln_pre(x + positions);  // (B, T, C)
  if (spec_.feature_layer == 0) {
    x = blocks(x);  // (B, T, C)
  } else {
    // Hugging Face's hidden_states[feature_layer]: the output of the first `applied` blocks,
    // without the final LayerNorm and proj (the later blocks and ln_post stay unused).
    const int64_t depth = static_cast<int64_t>(blocks->layers->size());
    const int64_t applied =
        spec_.feature_layer > 0 ? spec_.feature_layer : depth + 1 + spec_.feature_layer;
    for (int64_t i = 0; i < applied; ++i)
      x = blocks->layers[i]->as<TransformerBlockImpl>()->forward(x);  // (B, T, C)
  }
  switch (spec_.pool) {
    case Pooling::kCls:
      x = x.select(1, 0);  // (B, C)
      break;
    case Pooling::kMean:
      x = x.mean(1);  // (B, C)
      break;
    case Pooling::kNone:
      if (spec_.drop_cls) x = x.narrow(1, 1, x.size(1) - 1);  // (B, N, C): patches only
      break;                                                  // (B, N, C)
  }
  if (spec_.feature_layer != 0) return x;
  x = ln_post(x);
  if (proj) x = proj(x);  // (B, D) or (B, N, D)
  return x;
}

torch::Tensor VisionTransformerImpl::EmbedPatches(const torch::Tensor& images) {
  if (!PatchGemm()) {
    return patch_embed(images).flatten(2).transpose(1, 2);  // (B, C, H/p, W/p) -> (B, N, C)
  }
  // Note [patch embedding as one GEMM]
  const int64_t p = spec_.patch_size;
  TORCH_CHECK(images.dim() == 4 && images.size(2) % p == 0 && images.size(3) % p == 0, spec_.name,
              ": the patch GEMM needs (B, C, H, W) images with H and W multiples of the patch ",
              p, ", got ", images.sizes());
  const int64_t B = images.size(0), ch = images.size(1);
  const int64_t rows = images.size(2) / p, cols = images.size(3) / p;
  const torch::Tensor patches = images.reshape({B, ch, rows, p, cols, p})
                                    .permute({0, 2, 4, 1, 3, 5})  // (B, rows, cols, ch, p, p)
                                    .reshape({B, rows * cols, ch * p * p});  // (B, N, ch p p)
  const torch::Tensor& bias = patch_embed->bias;  // undefined without patch_bias
  return Linear(patches, patch_embed->weight.flatten(1), bias);  // (B, N, C)
}

}  // namespace mosaic::models
