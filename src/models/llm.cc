#include "models/llm.h"

namespace mosaic::models {

int64_t DefaultSwiGluHidden(int64_t width) {
  return ((8 * width / 3 + 255) / 256) * 256;
}

CausalLmImpl::CausalLmImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kLlm, "CausalLm needs an llm spec, got ",
              ToString(spec.kind));
  const int64_t C = spec.width;
  const int64_t hidden = spec.mlp_dim > 0 ? spec.mlp_dim : DefaultSwiGluHidden(C);
  token_embed = register_module("token_embed", torch::nn::Embedding(spec.vocab_size, C));
  blocks = register_module(
      "blocks", TransformerStack(BlockOptions(C, spec.heads)
                                     .kv_heads(spec.kv_heads)
                                     .mlp_dim(hidden)
                                     .causal(true)
                                     .rope_theta(spec.rope_theta > 0 ? spec.rope_theta : 10000.0)
                                     .norm(NormKind::kRmsNorm)
                                     .mlp(MlpKind::kSwiGlu)
                                     .bias(false)
                                     .norm_eps(spec.norm_eps),
                                 spec.depth));
  norm = register_module("norm", RmsNorm(C, spec.norm_eps > 0 ? spec.norm_eps : 1e-6));
  if (!spec.tie_embeddings) {
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(C, spec.vocab_size).bias(false)));
  }
  InitTransformerWeights(*this);
}

torch::Tensor CausalLmImpl::forward(const torch::Tensor& prefix, const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 2, spec_.name, ": tokens must be (B, T), got ", tokens.sizes());
  const int64_t T = tokens.size(1);
  torch::Tensor x = token_embed(tokens);  // (B, T, C)
  if (prefix.defined() && prefix.size(1) > 0) {
    TORCH_CHECK(
        prefix.dim() == 3 && prefix.size(0) == tokens.size(0) && prefix.size(2) == spec_.width,
        spec_.name, ": prefix must be (B, P, ", spec_.width, "), got ", prefix.sizes());
    x = torch::cat({prefix.to(x.scalar_type()), x}, 1);  // (B, P + T, C)
  }
  x = blocks(x);                            // (B, P + T, C)
  x = norm(x.narrow(1, x.size(1) - T, T));  // (B, T, C): the text positions
  // Tied: the head is the token embedding (B, T, C) x (V, C)^T.
  return lm_head ? lm_head(x) : torch::matmul(x, token_embed->weight.t());  // (B, T, V)
}

}  // namespace mosaic::models
