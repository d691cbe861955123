#include "models/text.h"

namespace mosaic::models {

TextTransformerImpl::TextTransformerImpl(const ModuleSpec& spec) : spec_(spec) {
  TORCH_CHECK(spec.kind == ModuleKind::kText, "TextTransformer needs a text spec, got ",
              ToString(spec.kind));
  const int64_t C = spec.width;
  token_embed = register_module("token_embed", torch::nn::Embedding(spec.vocab_size, C));
  positions = register_parameter("positions", torch::randn({1, spec.seq_len, C}) * 0.01);
  const double eps = spec.norm_eps > 0 ? spec.norm_eps : 1e-5;
  blocks = register_module("blocks", TransformerStack(BlockOptions(C, spec.heads)
                                                          .mlp_dim(spec.mlp_dim)
                                                          .causal(spec.causal)
                                                          .activation(spec.activation)
                                                          .norm_eps(eps),
                                                      spec.depth));
  ln_final = register_module("ln_final",
                             torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(eps)));
  if (spec.output_dim > 0) {
    proj = register_module(
        "proj", torch::nn::Linear(torch::nn::LinearOptions(C, spec.output_dim).bias(false)));
  }
  InitTransformerWeights(*this);
}

torch::Tensor TextTransformerImpl::forward(const torch::Tensor& tokens, const torch::Tensor& mask) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) <= spec_.seq_len, spec_.name,
              ": tokens must be (B, T <= ", spec_.seq_len, "), got ", tokens.sizes());
  const int64_t B = tokens.size(0), T = tokens.size(1);
  torch::Tensor x = token_embed(tokens) + positions.narrow(1, 0, T);  // (B, T, C)
  // Causal attention never looks right, so right padding needs no mask there.
  x = blocks(x, spec_.causal ? torch::Tensor() : mask);  // (B, T, C)
  x = ln_final(x);
  switch (spec_.pool) {
    case Pooling::kCls: {  // the end-of-text token (TextPoolAt in core/model_spec.h)
      torch::Tensor last;  // (B)
      if (spec_.pool_at == TextPoolAt::kArgmaxId) {
        last = tokens.argmax(1);
      } else if (spec_.pool_at == TextPoolAt::kFirstEos) {
        last = tokens.eq(spec_.eos_token_id).to(torch::kInt).argmax(1);  // first match (or 0)
      } else {
        last = mask.defined() ? mask.to(torch::kLong).sum(1) - 1
                              : torch::full({B}, T - 1, tokens.options());
      }
      last = last.clamp_min(0);
      x = x.index({torch::arange(B, tokens.options()), last});  // (B, C)
      break;
    }
    case Pooling::kMean:
      if (mask.defined()) {
        torch::Tensor m = mask.to(x.scalar_type()).unsqueeze(-1);  // (B, T, 1)
        x = (x * m).sum(1) / m.sum(1).clamp_min(1.0);              // (B, C)
      } else {
        x = x.mean(1);  // (B, C)
      }
      break;
    case Pooling::kNone:
      break;  // (B, T, C)
  }
  if (proj) x = proj(x);
  return x;
}

}  // namespace mosaic::models
