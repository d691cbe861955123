// Text transformer (CLIP text tower) built from a `text` ModuleSpec: token + learned position
// embeddings, causal (CLIP) or bidirectional pre-norm blocks, final LN, pooling and an
// optional output projection.
//
//   TextTransformer text(spec);                  // spec.kind == ModuleKind::kText
//   torch::Tensor f = text(tokens, mask);        // (B, T) int64 -> (B, output_dim or width)
//
// Sequences are right-padded; `mask` (B, T) bool is true at real tokens (undefined: all real).
// Pooling: kCls -> the last real token (the end-of-text token, as CLIP pools at EOT);
// kMean -> mean over real tokens; kNone -> every token (B, T, D).
// A bidirectional tower masks padded keys; a causal one needs no mask for right padding.
#pragma once

#include <torch/torch.h>

#include "core/model_spec.h"
#include "models/blocks.h"

namespace mosaic::models {

class TextTransformerImpl : public torch::nn::Module {
 public:
  explicit TextTransformerImpl(const ModuleSpec& spec);
  // tokens (B, T) int64 with T <= seq_len, mask (B, T) bool or undefined -> (B, D) or (B, T, D).
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& mask = {});

  const ModuleSpec& spec() const { return spec_; }
  torch::nn::Embedding token_embed{nullptr};  // vocab_size -> width
  torch::Tensor positions;                    // (1, seq_len, width)
  TransformerStack blocks{nullptr};
  torch::nn::LayerNorm ln_final{nullptr};
  torch::nn::Linear proj{nullptr};  // width -> output_dim, no bias; only when output_dim > 0

 private:
  ModuleSpec spec_;
};
TORCH_MODULE(TextTransformer);

}  // namespace mosaic::models
