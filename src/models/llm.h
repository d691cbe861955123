// Causal decoder LLM (LLaMA-style) built from an `llm` ModuleSpec: token embeddings, pre-norm
// blocks with RMSNorm, rotary positions, grouped-query attention (kv_heads) and a SwiGLU MLP,
// no biases, a final RMSNorm and an LM head (untied, or the token embedding with tie_embeddings).
//
//   CausalLm llm(spec);                          // spec.kind == ModuleKind::kLlm
//   torch::Tensor logits = llm(prefix, tokens);  // (B, P, C) + (B, T) -> (B, T, vocab)
//
// `prefix` holds embeddings that come before the text (projected image/audio tokens), already
// of the LLM's width; undefined or P = 0 for a text-only LM. The whole P + T sequence goes
// through the blocks, but the LM head runs on the T text positions only (logits[:, t] predicts
// text token t + 1): the prefix is never a target, and the head, the largest GEMM of a small
// LLM, is not spent on it (core/cost.h counts it the same way).
#pragma once

#include <torch/torch.h>

#include "core/model_spec.h"
#include "models/blocks.h"

namespace mosaic::models {

class CausalLmImpl : public torch::nn::Module {
 public:
  explicit CausalLmImpl(const ModuleSpec& spec);
  // prefix (B, P, width) or undefined, tokens (B, T) int64 -> logits (B, T, vocab_size) at the
  // text positions.
  torch::Tensor forward(const torch::Tensor& prefix, const torch::Tensor& tokens);

  const ModuleSpec& spec() const { return spec_; }
  torch::nn::Embedding token_embed{nullptr};  // vocab_size -> width
  TransformerStack blocks{nullptr};
  RmsNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // width -> vocab_size, no bias; none with tie_embeddings

 private:
  ModuleSpec spec_;
};
TORCH_MODULE(CausalLm);

// The SwiGLU hidden size used when spec.mlp_dim is 0: 8/3 * width rounded up to a multiple
// of 256 (LLaMA's rule), so that the MLP has about the parameters of a 4x GELU MLP.
int64_t DefaultSwiGluHidden(int64_t width);

}  // namespace mosaic::models
