#include "models/audio.h"

namespace mosaic::models {

AudioEncoderImpl::AudioEncoderImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kAudio, "AudioEncoder needs an audio spec, got ",
              ToString(spec.kind));
  const int64_t C = spec.width;
  conv1 = register_module(
      "conv1", torch::nn::Conv1d(torch::nn::Conv1dOptions(spec.n_mels, C, 3).padding(1)));
  conv2 = register_module(
      "conv2", torch::nn::Conv1d(torch::nn::Conv1dOptions(C, C, 3).stride(2).padding(1)));
  positions = register_parameter("positions",
                                 SinusoidalPositions(spec.frames / 2, C, torch::kCPU).unsqueeze(0),
                                 /*requires_grad=*/!spec.freeze_positions);
  const double eps = spec.norm_eps > 0 ? spec.norm_eps : 1e-5;
  blocks = register_module("blocks", TransformerStack(BlockOptions(C, spec.heads)
                                                          .mlp_dim(spec.mlp_dim)
                                                          .norm_eps(eps)
                                                          .activation(spec.activation)
                                                          .key_bias(spec.key_bias),
                                                      spec.depth));
  ln_post =
      register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(eps)));
  if (spec.output_dim > 0) {
    proj = register_module(
        "proj", torch::nn::Linear(torch::nn::LinearOptions(C, spec.output_dim).bias(false)));
  }
  InitTransformerWeights(*this);
}

torch::Tensor AudioEncoderImpl::forward(const torch::Tensor& mels) {
  TORCH_CHECK(mels.dim() == 3 && mels.size(1) == spec_.n_mels && mels.size(2) % 2 == 0 &&
                  mels.size(2) <= spec_.frames,
              spec_.name, ": mels must be (B, ", spec_.n_mels, ", F <= ", spec_.frames,
              ", F even), got ", mels.sizes());
  torch::Tensor x = Activate(conv1(mels), spec_.activation);  // (B, C, F)
  x = Activate(conv2(x), spec_.activation);                   // (B, C, F/2)
  x = x.transpose(1, 2);                                      // (B, F/2, C)
  x = x + positions.narrow(1, 0, x.size(1));
  x = blocks(x);  // (B, F/2, C)
  if (spec_.norm_before_pool) x = ln_post(x);
  if (spec_.pool != Pooling::kNone) x = x.mean(1);  // (B, C): audio has no class token
  if (!spec_.norm_before_pool) x = ln_post(x);
  if (proj) x = proj(x);
  return x;
}

}  // namespace mosaic::models
