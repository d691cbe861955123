// Audio encoder (Whisper-style) built from an `audio` ModuleSpec: log-mel frames through two
// conv1d layers with GELU (the second with stride 2, halving the frames), learned positions
// initialized to the sinusoidal table (Whisper's), pre-norm blocks, a final LN, pooling and an
// optional output projection.
//
//   AudioEncoder audio(spec);                    // spec.kind == ModuleKind::kAudio
//   torch::Tensor f = audio(mels);               // (B, n_mels, frames) -> (B, D)
//
// Pooling: kCls and kMean -> mean over the frames / 2 positions (B, D); audio has no class
// token. kNone -> every position (B, frames / 2, D). frames is even (the spec checks).
//
// Whisper's encoder (src/interop) is this module with the spec options activation "gelu" (exact,
// on the convs and the MLP), key_bias false (no k bias), freeze_positions true (its
// embed_positions are not trained) and norm_before_pool true (the final LayerNorm on every
// position, then the mean); the defaults are Mosaic's own: GELU(tanh), a k bias, learned
// positions, the LayerNorm after the mean.
#pragma once

#include <torch/torch.h>

#include "core/model_spec.h"
#include "models/blocks.h"

namespace mosaic::models {

class AudioEncoderImpl : public torch::nn::Module {
 public:
  explicit AudioEncoderImpl(const ModuleSpec& spec);
  // mels (B, n_mels, F) float, F even, F <= frames -> (B, D) or (B, F / 2, D).
  torch::Tensor forward(const torch::Tensor& mels);

  const ModuleSpec& spec() const { return spec_; }
  torch::nn::Conv1d conv1{nullptr};  // n_mels -> width, kernel 3, padding 1
  torch::nn::Conv1d conv2{nullptr};  // width -> width, kernel 3, stride 2, padding 1
  torch::Tensor positions;           // (1, frames / 2, width); no gradient with freeze_positions
  TransformerStack blocks{nullptr};
  torch::nn::LayerNorm ln_post{nullptr};
  torch::nn::Linear proj{nullptr};  // width -> output_dim, no bias; only when output_dim > 0

 private:
  ModuleSpec spec_;
};
TORCH_MODULE(AudioEncoder);

}  // namespace mosaic::models
